"""oneDNN's convolutions as XLA:CPU custom calls (``cnn.ops._onednn``): every derivative and batching of the three
passes against ``lax.conv_general_dilated``, what the default CPU lowering compiles to, and the build's fallbacks.
(Values and gradients over the lowering cases: ``tests/ops/test_lowering.py``.)"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.ops import _onednn
from cnn.ops._lowering import _conv, set_conv_lowering
from cnn.ops.conv import conv_transpose, correlate
from tests.ops.test_lowering import lax_grouped
from tests.reference import assert_close, normal, require_onednn

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="oneDNN's custom calls are CPU only")

CASES = [
    # (input shape, kernel shape, stride, pads, dilation, groups)
    ((2, 9, 10, 6), (3, 3, 6, 8), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ((2, 9, 10, 6), (3, 2, 3, 8), (2, 1), ((0, 2), (1, 0)), (2, 1), 2),  # stride, dilation, uneven pads, groups
    ((3, 8, 8, 4), (3, 3, 1, 8), (2, 2), ((1, 1), (1, 1)), (1, 1), 4),  # depthwise, channel multiplier 2
    ((2, 4, 7, 6, 3), (3, 3, 3, 3, 5), (1, 2, 1), ((1, 1), (1, 1), (0, 2)), (1, 1, 2), 1),  # 3D
    ((2, 17, 6), (5, 6, 4), (3,), ((2, 0),), (1,), 1),  # 1D
    # 1,105,920 weights over 32 output positions: the forward pass reads them unreordered (PlainWeights)
    ((2, 4, 4, 384), (3, 3, 384, 320), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
]


@pytest.fixture(autouse=True)
def onednn_lowering():
    require_onednn()
    set_conv_lowering("onednn")
    yield
    set_conv_lowering("auto")


def functions(stride, pads, dilation, groups):
    def ours(x, w):
        return _onednn.conv(x, w, stride, pads, dilation, groups)

    def reference(x, w):
        return lax_grouped(x, w, stride, list(pads), dilation, groups, 1)

    return ours, reference


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "pads", "dilation", "groups"), CASES)
def test_forward_mode_and_second_derivatives_equal_lax(x_shape, w_shape, stride, pads, dilation, groups):
    """``jax.jvp``, and gradients of gradients (each pass's transposes are the other passes), equal lax's."""
    rng = np.random.default_rng(3)
    x, w = normal(rng, *x_shape), normal(rng, *w_shape)
    ours, reference = functions(stride, pads, dilation, groups)
    tangents = normal(rng, *x_shape), normal(rng, *w_shape)
    assert_close(jax.jvp(ours, (x, w), tangents)[1], jax.jvp(reference, (x, w), tangents)[1], rtol=1e-4)

    def second(f):  # d/dx |d/dw sum(f^2)|^2: the kernel gradient differentiated in its input and cotangent
        return jax.grad(lambda x, w: jnp.sum(jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), 1)(x, w) ** 2), (0, 1))

    for got, want in zip(jax.jit(second(ours))(x, w), jax.jit(second(reference))(x, w), strict=True):
        assert_close(got, want, rtol=1e-4)
    hvp = [jax.jvp(jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))), 1), (x, w), tangents)[1]
           for f in (ours, reference)]
    assert_close(*hvp, rtol=1e-4)


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "pads", "dilation", "groups"), CASES[:4])
def test_vmap_equals_lax(x_shape, w_shape, stride, pads, dilation, groups):
    """A mapped input joins the batch (one call, no loop); mapped kernels and per-example kernel gradients loop."""
    rng = np.random.default_rng(4)
    xs, ws = normal(rng, 3, *x_shape), normal(rng, 3, *w_shape)
    ours, reference = functions(stride, pads, dilation, groups)
    in_axes = (0, None)
    assert_close(jax.vmap(ours, in_axes)(xs, ws[0]), jax.vmap(reference, in_axes)(xs, ws[0]))
    assert "scan[" not in str(jax.make_jaxpr(jax.vmap(ours, in_axes))(xs, ws[0]))
    assert_close(jax.vmap(ours)(xs, ws), jax.vmap(reference)(xs, ws))
    per_example = [jax.vmap(jax.grad(lambda x, w, f=f: jnp.sum(jnp.tanh(f(x, w))), (0, 1)), in_axes)(xs, ws[0])
                   for f in (ours, reference)]
    for got, want in zip(*per_example, strict=True):
        assert_close(got, want, rtol=1e-4)


def custom_calls(fn, *args) -> list[str]:
    """oneDNN's custom calls and XLA's convolutions in ``fn``'s compiled program, traced now (a new function: jit
    would reuse a trace made under another lowering)."""
    hlo = jax.jit(functools.partial(fn)).lower(*args).compile().as_text()
    return sorted(re.findall(r'custom_call_target="(Onednn\w+)"', hlo)) + [" convolution("] * hlo.count(" convolution(")


def test_cpu_training_step_runs_on_onednn():
    """The default lowering puts a layer's three passes on oneDNN and none on XLA's convolution."""
    set_conv_lowering("auto")
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 6))
    grad = jax.grad(lambda x, w: jnp.sum(correlate(x, w, padding=1) ** 2), argnums=(0, 1))
    assert custom_calls(grad, x, w) == ["OnednnConvBackwardData", "OnednnConvBackwardWeights", "OnednnConvForward"]
    set_conv_lowering("lax")
    assert custom_calls(grad, x, w) == [" convolution("] * 3


@pytest.mark.parametrize("case", ["bfloat16", "cropped", "transposed"])
def test_what_onednn_does_not_take_stays_on_xla(case):
    """Other dtypes than float32, negative padding (cropping) and input dilation keep XLA's lowering."""
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 6))
    if case == "bfloat16":
        fn, args = (lambda x, w: correlate(x, w, padding=1)), (x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    elif case == "cropped":  # as conv_transpose's internal convolution may be
        fn, args = (lambda x, w: _conv(x, w, (1, 1), ((-1, 1), (0, 0)), (1, 1), 1, (1, 1))), (x, w)
    else:  # zeros inserted between the input's entries
        fn, args = (lambda y, w: conv_transpose(y, w, stride=2)), (jnp.ones((2, 8, 8, 6)), w)
    assert not [c for c in custom_calls(fn, *args) if c.startswith("Onednn")]


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          check=True, timeout=300, cwd=pathlib.Path(__file__).parents[2])


AVAILABLE = "from cnn.ops import _onednn; print(_onednn.available())"


def test_a_failed_build_falls_back_to_xla(tmp_path):
    """Without a working compiler the build fails, a warning says why, and convolutions stay on XLA."""
    code = AVAILABLE + "; import jax.numpy as jnp; from cnn.ops import correlate; " \
        "print(correlate(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1))).sum())"
    result = run_python(code, {"CNN_CACHE_DIR": str(tmp_path), "CXX": "false"})
    assert result.stdout.split() == ["False", "36.0"]
    assert "oneDNN convolutions unavailable" in result.stderr
    assert not list((tmp_path / "onednn").glob("*.so"))


def test_concurrent_builds_share_one_cached_library(tmp_path):
    """Processes building at once into an empty cache each succeed and leave one library and no scratch files; a
    later process loads that library without building it again."""
    env = {"CNN_CACHE_DIR": str(tmp_path)}
    builds = [subprocess.Popen([sys.executable, "-c", AVAILABLE], env={**os.environ, **env}, stdout=subprocess.PIPE,
                               text=True, cwd=pathlib.Path(__file__).parents[2]) for _ in range(2)]
    assert [b.communicate(timeout=300)[0].split() for b in builds] == [["True"], ["True"]]
    (library,) = (tmp_path / "onednn").iterdir()
    assert library.suffix == ".so"
    built = library.stat().st_mtime_ns
    assert run_python(AVAILABLE, env).stdout.split() == ["True"]
    assert list((tmp_path / "onednn").iterdir()) == [library] and library.stat().st_mtime_ns == built


def test_several_devices_split_the_batch():
    """Over a mesh of two CPU devices each device runs the three passes on its half of the batch (no gather; the
    kernel gradient summed across devices), with the batch split along one axis of a 2D mesh too, and the gradients
    equal lax's on the same mesh: 3D grouped and strided, and 2D."""
    code = r"""
import json, re, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from cnn.ops import correlate
from cnn.ops._lowering import set_conv_lowering
rng = np.random.default_rng(0)
for shape, kernel, mesh_shape in [((8, 4, 6, 6, 4), (3, 3, 3, 2, 6), (2,)), ((8, 6, 6, 3), (3, 3, 3, 4), (2, 1))]:
    mesh = Mesh(np.array(jax.devices()).reshape(mesh_shape), ("data", "model")[:len(mesh_shape)])
    x = jax.device_put(rng.normal(size=shape).astype(np.float32), NamedSharding(mesh, P("data")))
    w = jax.device_put(rng.normal(size=kernel).astype(np.float32), NamedSharding(mesh, P()))
    groups = shape[-1] // kernel[-2]
    grads = {}
    for lowering in ("lax", "auto"):
        set_conv_lowering(lowering)
        f = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(correlate(x, w, stride=2, padding=1, groups=groups))),
                             argnums=(0, 1)))
        hlo = f.lower(x, w).compile().as_text()
        grads[lowering] = f(x, w)
    calls = re.findall(r'= f32\[(\d+),[^=]*custom_call_target="OnednnConv(\w+)"', hlo)
    error = max(float(jnp.abs(a - b).max()) for a, b in zip(grads["auto"], grads["lax"]))
    print(json.dumps([sorted(calls), "all-gather" in hlo, error]))
"""
    lines = run_python(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}).stdout.strip().split("\n")
    assert len(lines) == 2
    for line in lines:
        calls, gathered, error = json.loads(line)
        assert calls == [["3", "BackwardWeights"], ["4", "BackwardData"], ["4", "Forward"]], line
        assert not gathered and error < 1e-4, line


def test_bad_operands_are_refused_where_they_enter():
    """The custom call refuses what it cannot compute (a bfloat16 operand) with an error naming the dtype, and
    ``CNN_CONV_LOWERING=onednn`` without the library fails on the first convolution saying so, instead of running
    something else."""
    x, w = jnp.ones((1, 4, 4, 2), jnp.bfloat16), jnp.ones((3, 3, 2, 2), jnp.bfloat16)
    call = jax.ffi.ffi_call("OnednnConvForward", jax.ShapeDtypeStruct((1, 2, 2, 2), jnp.bfloat16))
    one, zero = np.ones(2, np.int64), np.zeros(2, np.int64)
    with pytest.raises(Exception, match="float32 operands only"):
        jax.block_until_ready(call(x, w, strides=one, dilation=one, pad_lo=zero, pad_hi=zero, groups=np.int64(1)))
    code = ("import jax.numpy as jnp; from cnn.ops import correlate; "
            "correlate(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)))")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_python(code, {"CNN_ONEDNN": "0", "CNN_CONV_LOWERING": "onednn"})
    assert "CNN_CONV_LOWERING=onednn, but oneDNN's convolutions are not built" in failed.value.stderr
