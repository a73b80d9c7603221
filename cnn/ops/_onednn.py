"""Dense and grouped channels-last convolutions on oneDNN, the library behind PyTorch's CPU convolutions, as XLA:CPU
custom calls: three JAX primitives, one per pass, closed under differentiation like ``lax.conv_general_dilated``.

Each pass is bilinear in its two operands, and each one's transposes are the other two:

    forward           y  = F(x, w)       transposes: dx = D(dy, w),   dw = W(x, dy)
    backward data     dx = D(dy, w)      transposes: dy = F(ct, w),   dw = W(ct, dy)
    backward weights  dw = W(x, dy)      transposes: x  = D(dy, ct),  dy = F(x, ct)

so reverse mode, forward mode and their nestings all stay on oneDNN. ``vmap`` folds a mapped activation into the
batch; a mapped kernel (or both operands of ``W``: per-example kernel gradients) runs the pass once per mapped entry.
Under ``jit`` over several devices each pass is partitioned along the batch (``custom_partitioning``).

The C++ side (``_onednn_conv.cc``, against the XLA FFI headers of jaxlib and oneDNN's ``onednn-cpu-gomp`` wheels,
both in requirements.txt) is compiled on first use with the system's C++ compiler into a per-user cache, keyed by
the source, the compile command (the compiler and oneDNN's resolved, versioned paths) and jax's version; several
processes may build at once (each writes its own file, then renames it into place). Without a compiler or the
wheels, ``available()`` is false and convolutions stay on XLA.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax
import numpy as np
from jax._src import dispatch
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.sharding import NamedSharding, PartitionSpec

from cnn.ops.args import output_size

_SOURCE = pathlib.Path(__file__).with_name("_onednn_conv.cc")
_TARGETS = {"forward": "OnednnConvForward", "backward_data": "OnednnConvBackwardData",
            "backward_weights": "OnednnConvBackwardWeights"}
_log = logging.getLogger(__name__)


def _wheel_file(distribution: str, suffix: str) -> pathlib.Path:
    """The installed file of ``distribution`` whose path ends with ``suffix``."""
    for file in importlib.metadata.files(distribution) or ():
        if str(file).endswith(suffix):
            return pathlib.Path(file.locate()).resolve()
    raise FileNotFoundError(f"{distribution} has no file ending in {suffix}")


def _build() -> pathlib.Path:
    """The compiled custom-call library: from the cache, or compiled now and renamed into the cache atomically."""
    library = _wheel_file("onednn-cpu-gomp", "/libdnnl.so.3")
    header = _wheel_file("onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.h")
    include = header.parents[2]
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise FileNotFoundError("no C++ compiler (g++, c++ or $CXX) to build the oneDNN custom calls")
    command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", str(_SOURCE), f"-I{jax.ffi.include_dir()}",
               f"-I{include}", str(library), f"-Wl,-rpath,{library.parent}"]
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join(command).encode() + jax.__version__.encode()).hexdigest()
    cache = pathlib.Path(os.environ.get("CNN_CACHE_DIR", pathlib.Path.home() / ".cache" / "cnn")) / "onednn"
    target = cache / f"libcnn_onednn_{key[:16]}.so"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            built = pathlib.Path(scratch) / target.name
            subprocess.run([*command, "-o", str(built)], check=True, capture_output=True, text=True)
            os.replace(built, target)
    return target


@functools.cache
def available() -> bool:
    """Whether the oneDNN convolutions are built and registered with XLA:CPU (once per process)."""
    if os.environ.get("CNN_ONEDNN", "1") == "0":
        return False
    try:
        library = ctypes.cdll.LoadLibrary(str(_build()))
    except (OSError, subprocess.CalledProcessError, importlib.metadata.PackageNotFoundError) as error:
        detail = getattr(error, "stderr", "") or error
        _log.warning("oneDNN convolutions unavailable, XLA's used instead: %s", detail)
        return False
    for target in _TARGETS.values():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)), platform="cpu")
    return True


def _shape(pass_name: str, a, b, stride, pads, dilation, groups, shape):
    """The output's shape: the forward's from its operands, a gradient's its operand's (given)."""
    if pass_name != "forward":
        return shape
    spatial = output_size(a.shape[1:-1], b.shape[:-2], stride, dilation, pads)
    return (a.shape[0], *spatial, b.shape[-1])


@functools.cache
def _compiled(primitive: Primitive, **geometry):
    """An eager call's program: the pass alone, compiled once per geometry."""
    return jax.jit(functools.partial(primitive.bind, **geometry))


def _custom_call(pass_name: str, a: jax.Array, b: jax.Array, geometry: tuple, shape) -> jax.Array:
    """One pass's custom call on the arrays it is given: whole, or one device's part of a batch under a mesh."""
    stride, pads, dilation, groups = geometry
    if pass_name == "backward_data":
        shape = (a.shape[0], *shape[1:])  # this part's batch
    out = jax.ShapeDtypeStruct(_shape(pass_name, a, b, stride, pads, dilation, groups, shape), a.dtype)
    as_array = functools.partial(np.asarray, dtype=np.int64)
    return jax.ffi.ffi_call(_TARGETS[pass_name], out)(
        a, b, strides=as_array(stride), dilation=as_array(dilation), pad_lo=as_array([lo for lo, _ in pads]),
        pad_hi=as_array([hi for _, hi in pads]), groups=np.int64(groups))


# Over a mesh of several devices XLA cannot split a custom call by itself (it would gather the whole batch onto each
# device), so each pass says how: activations split along the batch, kernels whole on every device, the kernel
# gradient each device's part summed over the batch's mesh axes.
@functools.partial(custom_partitioning, static_argnums=(2, 3, 4))
def _partitioned(a, b, pass_name, geometry, shape):
    return _custom_call(pass_name, a, b, geometry, shape)


def _batch_axes(operand) -> tuple | str | None:
    spec = getattr(operand.sharding, "spec", ())
    return spec[0] if len(spec) else None


def _part(pass_name, geometry, shape, summed_over, a, b):
    out = _custom_call(pass_name, a, b, geometry, shape)
    return out if summed_over is None else jax.lax.psum(out, summed_over)


def _partition(pass_name, geometry, shape, mesh, operands, result):
    batch = _batch_axes(operands[0])
    split, whole = NamedSharding(mesh, PartitionSpec(batch)), NamedSharding(mesh, PartitionSpec())
    if pass_name == "backward_weights":
        return mesh, functools.partial(_part, pass_name, geometry, shape, batch), whole, (split, split)
    return mesh, functools.partial(_part, pass_name, geometry, shape, None), split, (split, whole)


def _infer_sharding(pass_name, geometry, shape, mesh, operands, result):
    batch = None if pass_name == "backward_weights" else _batch_axes(operands[0])
    return NamedSharding(mesh, PartitionSpec(batch))


def _sharding_rule(pass_name, geometry, shape, mesh, operands, results):
    """Shardy's rule: the batch ``n`` may be split (a sum for the kernel gradient), no other factor."""
    spatial = range(len(geometry[0]))
    x, y = (" ".join(["n", *(f"{a}{i}" for i in spatial), c]) for a, c in (("s", "c"), ("t", "o")))
    w = " ".join([*(f"k{i}" for i in spatial), "c", "o"])
    rule = {"forward": f"{x}, {w} -> {y}", "backward_data": f"{y}, {w} -> {x}",
            "backward_weights": f"{x}, {y} -> {w}"}[pass_name]
    others = tuple(f for f in dict.fromkeys(rule.replace(",", " ").split()) if f not in ("n", "->"))
    factors = {"need_replication_factors": others}
    if pass_name == "backward_weights":
        factors["reduction_factors"] = ("n",)
    return rule, factors


_partitioned.def_partition(_partition, infer_sharding_from_operands=_infer_sharding, sharding_rule=_sharding_rule)


def _make_primitive(pass_name: str) -> Primitive:
    primitive = Primitive(f"onednn_conv_{pass_name}")
    primitive.def_impl(lambda a, b, **geometry: _compiled(primitive, **geometry)(a, b))
    primitive.def_abstract_eval(
        lambda a, b, **geometry: jax.core.ShapedArray(_shape(pass_name, a, b, **geometry), a.dtype))

    def lowering(ctx, a, b, *, stride, pads, dilation, groups, shape):
        geometry = (stride, pads, dilation, groups)
        if getattr(ctx.module_context.axis_context, "num_devices", 1) > 1:  # XLA partitions the program
            call = functools.partial(_partitioned, pass_name=pass_name, geometry=geometry, shape=shape)
        else:
            call = functools.partial(_custom_call, pass_name, geometry=geometry, shape=shape)
        return mlir.lower_fun(call, multiple_results=False)(ctx, a, b)

    mlir.register_lowering(primitive, lowering, platform="cpu")
    # As JAX's own partitioned custom calls (cuDNN attention): a jit holding one is lowered with its devices known,
    # which the partitioning needs (a nested jit's body is otherwise lowered without them).
    dispatch.prim_requires_devices_during_lowering.add(primitive)
    return primitive


forward_p, backward_data_p, backward_weights_p = map(_make_primitive, _TARGETS)


# The transposes: each pass's cotangent with respect to its first (lhs) or second (rhs) operand, the undefined one.
def _forward_lhs(ct, x, w, *, shape, **geometry):
    return backward_data_p.bind(ct, w, **geometry, shape=x.aval.shape)


def _forward_rhs(ct, x, w, *, shape, **geometry):
    return backward_weights_p.bind(x, ct, **geometry, shape=w.aval.shape)


def _backward_data_lhs(ct, dy, w, *, shape, **geometry):
    return forward_p.bind(ct, w, **geometry, shape=None)


def _backward_data_rhs(ct, dy, w, *, shape, **geometry):
    return backward_weights_p.bind(ct, dy, **geometry, shape=w.aval.shape)


def _backward_weights_lhs(ct, x, dy, *, shape, **geometry):
    return backward_data_p.bind(dy, ct, **geometry, shape=x.aval.shape)


def _backward_weights_rhs(ct, x, dy, *, shape, **geometry):
    return forward_p.bind(x, ct, **geometry, shape=None)


ad.defbilinear(forward_p, _forward_lhs, _forward_rhs)
ad.defbilinear(backward_data_p, _backward_data_lhs, _backward_data_rhs)
ad.defbilinear(backward_weights_p, _backward_weights_lhs, _backward_weights_rhs)


def _batching_rule(primitive: Primitive):
    """A mapped activation (the first operand of F and D, with the other unmapped) joins the batch: one call. Any
    other mapping (a mapped kernel, or W's two activations) runs the pass once per mapped entry."""

    def rule(args, dims, *, shape, **geometry):
        (a, b), (a_dim, b_dim) = args, dims
        if b_dim is None and primitive is not backward_weights_p:
            a = jax.numpy.moveaxis(a, a_dim, 0)
            mapped, n = a.shape[:2]
            joined_shape = None if shape is None else (mapped * n, *shape[1:])
            out = primitive.bind(a.reshape(mapped * n, *a.shape[2:]), b, **geometry, shape=joined_shape)
            return out.reshape(mapped, n, *out.shape[1:]), 0
        size = a.shape[a_dim] if a_dim is not None else b.shape[b_dim]
        a, b = (batching.bdim_at_front(v, d, size) for v, d in ((a, a_dim), (b, b_dim)))
        return jax.lax.map(lambda ab: primitive.bind(*ab, **geometry, shape=shape), (a, b)), 0

    return rule


for _primitive in (forward_p, backward_data_p, backward_weights_p):
    batching.primitive_batchers[_primitive] = _batching_rule(_primitive)


def conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int,
) -> jax.Array:
    """Channels-last ``lax.conv_general_dilated`` (float32, non-negative ``pads``, no input dilation) on oneDNN."""
    return forward_p.bind(x, kernel, stride=stride, pads=pads, dilation=dilation, groups=groups, shape=None)
