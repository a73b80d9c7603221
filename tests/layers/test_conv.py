"""Conv and ConvTranspose against brute-force numpy loops on the kernel and bias read from their parameters."""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnn.ops
from cnn.errors import ConfigError
from cnn.layers import Conv, ConvTranspose
from tests.reference import correlate_loop, explicit_pads, with_random_params


@pytest.mark.parametrize(
    ("shape", "kernel_size", "strides", "dilation", "groups", "padding", "boundary"),
    [
        ((2, 9, 3), 3, 1, 1, 1, "SAME", "zeros"),
        ((2, 9, 4), (4,), 2, 2, 2, "VALID", "zeros"),
        ((2, 7, 8, 4), (3, 2), (2, 1), 1, 1, "FULL", "zeros"),
        ((2, 7, 8, 4), (3, 3), 1, (1, 2), 4, 1, "zeros"),
        ((2, 7, 8, 4), (3, 3), 2, 1, 2, [(0, 2), (1, 0)], "zeros"),
        ((2, 7, 8, 2), (3, 3), 1, 1, 1, "SAME", "circular"),
        ((1, 4, 5, 4, 2), (2, 3, 2), (1, 2, 1), 1, 1, "SAME", "zeros"),
    ],
)
def test_conv_equals_loop(shape, kernel_size, strides, dilation, groups, padding, boundary):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    layer = Conv(6 if groups == 1 else 4 * groups, kernel_size, strides, padding, dilation, groups,
                 boundary=boundary)
    y, params = with_random_params(layer, x)
    ndim = len(shape) - 2
    kernel = params["kernel"]
    stride, dil = (np.broadcast_to(v, ndim).tolist() for v in (strides, dilation))
    pads = explicit_pads(padding, shape[1:-1], kernel.shape[:ndim], stride, dil)
    mode = {"zeros": "constant", "circular": "wrap"}[boundary]
    expected = correlate_loop(x, kernel, stride, pads, dil, groups, mode) + params["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("padding", "boundary"), [("SAME", "zeros"), ("VALID", "zeros"), ("SAME", "reflect")])
def test_fft_method_equals_loop(padding, boundary):
    x = np.random.default_rng(1).normal(size=(2, 10, 9, 3)).astype(np.float32)
    y, params = with_random_params(Conv(4, (5, 4), padding=padding, method="fft", boundary=boundary), x)
    pads = explicit_pads(padding, (10, 9), (5, 4), (1, 1), (1, 1))
    mode = {"zeros": "constant", "reflect": "reflect"}[boundary]
    expected = correlate_loop(x, params["kernel"], (1, 1), pads, (1, 1), 1, mode) + params["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture
def op_calls(monkeypatch):
    """Which of ``cnn.ops.fft_conv`` / ``cnn.ops.correlate`` each Conv call ran (a spy around both)."""
    calls = []
    for name in ("fft_conv", "correlate"):
        original = getattr(cnn.ops, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cnn.ops, name, spy)
    return calls


FIGURES = Path(__file__).resolve().parents[2] / "docs" / "figures"


def _measured_crossovers() -> dict[int, tuple[list[int], int]]:
    """Per spatial rank, the kernel sizes ``benchmarks/ops.py`` timed (section fft, BENCHMARKS.md) and the smallest
    from which ``fft_conv`` was faster forward+backward at that and every larger one, recomputed from the timings.

    1D and 2D come from the full run on the idle machine (``ops_benchmark.json``), 3D from its own run
    (``fft_crossover_3d.json``, ``--sections fft --fft-ranks 3D``).
    """
    full = json.loads((FIGURES / "ops_benchmark.json").read_text())["results"]["fft"]
    three = json.loads((FIGURES / "fft_crossover_3d.json").read_text())["results"]["fft"]
    crossovers = {}
    for ndim, run in ((1, full["1D"]), (2, full["2D"]), (3, three["3D"])):
        faster = [f < d for f, d in zip(run["fft_fwd_bwd"], run["direct_fwd_bwd"], strict=True)]
        first_of_last_run = next(i for i in range(len(faster)) if all(faster[i:]))
        crossovers[ndim] = (run["kernels"], run["kernels"][first_of_last_run])
    return crossovers


MEASURED = _measured_crossovers()
CROSSOVER_2D = MEASURED[2][1]


@pytest.mark.parametrize(
    ("kernel", "strides", "dilation", "groups", "expected"),
    [
        ((CROSSOVER_2D, CROSSOVER_2D), 1, 1, 1, "fft_conv"),
        ((CROSSOVER_2D + 2, CROSSOVER_2D), 1, 1, 1, "fft_conv"),
        ((CROSSOVER_2D - 1, CROSSOVER_2D - 1), 1, 1, 1, "correlate"),
        ((CROSSOVER_2D + 1, CROSSOVER_2D - 2), 1, 1, 1, "correlate"),  # geometric mean below the crossover
        ((CROSSOVER_2D, CROSSOVER_2D), 2, 1, 1, "correlate"),
        ((CROSSOVER_2D, CROSSOVER_2D), 1, 2, 1, "correlate"),
        ((CROSSOVER_2D, CROSSOVER_2D), 1, 1, 2, "correlate"),
    ],
)
def test_auto_picks_fft_from_the_crossover(op_calls, kernel, strides, dilation, groups, expected):
    x = jnp.ones((1, 3 * CROSSOVER_2D, 3 * CROSSOVER_2D, 2))
    jax.eval_shape(Conv(2, kernel, strides, "SAME", dilation, groups, method="auto").init, jax.random.key(0), x)
    assert op_calls == [expected]


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_auto_follows_the_measured_crossover(op_calls, ndim):
    """At every kernel size the benchmark measured, "auto" takes the FFT exactly where it was measured faster."""
    kernels, crossover = MEASURED[ndim]
    for k in kernels:
        x = jnp.ones((1, *(k + 2,) * ndim, 1))
        jax.eval_shape(Conv(1, k, method="auto").init, jax.random.key(0), x)
        assert op_calls.pop() == ("fft_conv" if k >= crossover else "correlate"), f"{ndim}D kernel size {k}"


def test_auto_result_matches_both_ops_in_x64():
    """Above the crossover the FFT result (not the direct sum) comes out: they differ in float rounding only."""
    with jax.enable_x64(True):
        k = CROSSOVER_2D
        x = jnp.asarray(np.random.default_rng(2).normal(size=(1, k + 5, k + 3, 2)))
        y, params = with_random_params(Conv(3, k, method="auto", use_bias=False, param_dtype=jnp.float64), x)
        kernel = params["kernel"]
        via_fft = cnn.ops.fft_conv(x, kernel, padding="SAME")
        direct = cnn.ops.correlate(x, kernel, padding="SAME")
        assert y.dtype == jnp.float64
        np.testing.assert_array_equal(y, via_fft)
        np.testing.assert_allclose(y, direct, rtol=1e-10, atol=1e-10)
        assert not np.array_equal(y, direct)


def test_he_normal_default_init():
    """Default kernel init: He et al. (2015), std sqrt(2 / fan_in) with fan_in = kh·kw·in_channels."""
    kernel = Conv(256, (3, 3), use_bias=False).init(jax.random.key(0), jnp.ones((1, 3, 3, 64)))["params"]["kernel"]
    assert abs(float(np.std(kernel)) / np.sqrt(2 / (9 * 64)) - 1) < 0.02


def test_dtype_promotion():
    y = jax.eval_shape(Conv(2, 3, dtype=jnp.bfloat16).init_with_output, jax.random.key(0), jnp.ones((1, 5, 5, 2)))[0]
    assert y.dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "fast"}, ConfigError, "method must be one of"),
        ({"method": "fft", "strides": 2}, ValueError, "method='fft' needs strides 1"),
        ({"feature_group_count": 3}, ValueError, "feature_group_count"),
        ({"features": 0}, ValueError, "features must be a positive int"),
        ({"kernel_size": (3, 3, 3)}, ValueError, "kernel_size must have 2 entries"),
        ({"padding": "HALF"}, ValueError, "padding must be one of"),
        ({"boundary": "mirror"}, ValueError, "boundary must be one of"),
        ({"x_shape": (1, 3, 3, 3, 3, 4)}, ValueError, "only 1, 2 or 3 spatial dimensions"),
    ],
)
def test_conv_bad_arguments(kwargs, error, match):
    x = jnp.ones(kwargs.pop("x_shape", (1, 6, 6, 4)))
    with pytest.raises(error, match=match):
        jax.eval_shape(Conv(**{"features": 2, "kernel_size": 3, **kwargs}).init, jax.random.key(0), x)


def transpose_loop(y, kernel, stride, pads, dilation, in_spatial):
    """The adjoint by scattering: ``x[p] += y[i] · w[k]^T`` for every ``p = i·s + k·d - low`` inside the input."""
    y, kernel = np.asarray(y, np.float64), np.asarray(kernel, np.float64)
    ndim = y.ndim - 2
    x = np.zeros((y.shape[0], *in_spatial, kernel.shape[-2]))
    for i in np.ndindex(*y.shape[1:-1]):
        for k in np.ndindex(*kernel.shape[:ndim]):
            p = tuple(a * s + b * d - lo for a, b, s, d, (lo, _) in zip(i, k, stride, dilation, pads, strict=True))
            if all(0 <= q < n for q, n in zip(p, in_spatial, strict=True)):
                x[(slice(None), *p)] += y[(slice(None), *i)] @ kernel[k].T
    return x


@pytest.mark.parametrize(
    ("spatial", "kernel_size", "strides", "dilation", "padding", "out_spatial"),
    [
        ((5, 4), (3, 3), (2, 2), (1, 1), "SAME", (10, 8)),  # n·s, as nn.ConvTranspose
        ((5, 4), (3, 2), (2, 1), (1, 1), "VALID", (11, 5)),  # (n - 1)·s + k
        ((6,), (3,), (1,), (2,), "SAME", (6,)),
        ((4, 4), (3, 3), (2, 2), (1, 1), 1, (7, 7)),  # (n - 1)·s + k - low - high
    ],
)
def test_conv_transpose_equals_scatter_loop(spatial, kernel_size, strides, dilation, padding, out_spatial):
    y = np.random.default_rng(3).normal(size=(2, *spatial, 3)).astype(np.float32)
    layer = ConvTranspose(5, kernel_size, strides, padding, dilation)
    x, params = with_random_params(layer, y)
    assert params["kernel"].shape == (*kernel_size, 5, 3)  # the kernel of the correlation 5 -> 3 channels
    assert x.shape == (2, *out_spatial, 5)
    pads = explicit_pads(padding, out_spatial, kernel_size, strides, dilation)
    expected = transpose_loop(y, params["kernel"], strides, pads, dilation, out_spatial) + params["bias"]
    np.testing.assert_allclose(x, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [1, 2])
def test_conv_transpose_shape_as_flax(padding, strides):
    y = jnp.ones((1, 5, 6, 3))
    ours = jax.eval_shape(ConvTranspose(4, (3, 3), strides, padding).init_with_output, jax.random.key(0), y)[0]
    flax_ = jax.eval_shape(
        nn.ConvTranspose(4, (3, 3), (strides, strides), padding).init_with_output, jax.random.key(0), y
    )[0]
    assert ours.shape == flax_.shape
