"""Convolutions as sums of shifted slices times weights and as one matrix product of patches (im2col): the XLA:CPU
rewrites of ``cnn/ops/_lowering.py`` that compute a convolution from slices, and the custom JVPs' shared tangent.

Each function takes validated channels-last arguments (``pads`` per spatial axis, possibly negative: cropping) and
equals ``lax.conv_general_dilated`` (``tests/ops/test_lowering.py``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from cnn.ops.args import output_size

# A shifted-slice convolution's kernel gradient is one reduction per tap over the whole batch of input and cotangent,
# each a pass over memory. Over chunks of the batch that fit in cache (input and cotangent together at most this many
# bytes), the taps re-read the cache: depthwise kernel gradients, 64 images, ms whole batch -> chunks (idle machine):
#   32x32x96, 3x3     81-92 -> 14-17 (2-4 images a chunk; one image 34)
#   16x16x240, 5x5    123-128 -> 24-26 (2-4; 8 images 47)
#   8x8x672, 5x5      82-92 -> 18-21 (2-4; 8 images 35)
# (the kernel gradient alone, jitted, both ways in one process; a value above the batch's bytes, set before tracing,
# gives the whole-batch reduction back)
_KERNEL_GRADIENT_CHUNK_BYTES = 5 * 2**19


def _pad(x: jax.Array, pads: tuple[tuple[int, int], ...], lhs_dilation: tuple[int, ...]) -> jax.Array:
    """``x`` with ``l - 1`` zeros inserted between entries (``lhs_dilation``), then padded (negative: cropped)."""
    dilated_pads = [(lo, hi, l - 1) for (lo, hi), l in zip(pads, lhs_dilation, strict=True)]
    return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *dilated_pads, (0, 0, 0)])


def _tap(
    x_pad: jax.Array,
    k: tuple[int, ...],
    dilation: tuple[int, ...],
    stride: tuple[int, ...],
    out_spatial: tuple[int, ...],
    channel: int = 0,
    channel_step: int = 1,
) -> jax.Array:
    """``x_pad[n, i·s + k·d, channel + j·channel_step]`` for every output position ``i``: one strided slice."""
    start = [ki * di for ki, di in zip(k, dilation, strict=True)]
    limit = [st + (o - 1) * s + 1 for st, o, s in zip(start, out_spatial, stride, strict=True)]
    return lax.slice(
        x_pad, (0, *start, channel), (x_pad.shape[0], *limit, x_pad.shape[-1]), (1, *stride, channel_step)
    )


def _im2col_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
) -> jax.Array:
    """Dense convolution as one matrix product of the input's patches and the flattened kernel (im2col):

        patches[n, i, (k, c)] = x_pad[n, i·s + k·d, c]
        out[n, i, o] = sum_{(k, c)} patches[n, i, (k, c)] · w[k, c, o]

    ``(k, c)`` runs over kernel offsets, then channels: the order of ``w.reshape(K·C_in, C_out)``. A 1×1 kernel
    has one patch, the strided input itself; a kernel covering the whole input has one output position. The
    gradients are matrix products again: ``dw = patches^T · dy`` over all ``(n, i)``, and the input gradient
    ``dy · w^T`` scattered back to the slices (pads).
    """
    ndim = kernel.ndim - 2
    kernel_size = kernel.shape[:ndim]
    x_pad = _pad(x, pads, (1,) * ndim)
    out_spatial = output_size(x_pad.shape[1:-1], kernel_size, stride, dilation, [(0, 0)] * ndim)
    taps = [_tap(x_pad, k, dilation, stride, out_spatial) for k in itertools.product(*map(range, kernel_size))]
    patches = jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]
    # A 2D product: XLA:CPU hands it to its matmul library; a dot_general over the 4D patches it runs slowly.
    out = patches.reshape(-1, patches.shape[-1]) @ kernel.reshape(-1, kernel.shape[-1])
    return out.reshape(*patches.shape[:-1], kernel.shape[-1])


def _shifted_slice_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int,
    lhs_dilation: tuple[int, ...],
) -> jax.Array:
    """Grouped convolution as a sum of shifted slices times per-group weights (fast on XLA:CPU).

    Same result as channels-last ``lax.conv_general_dilated`` with ``feature_group_count=groups``:

        out[n, i, g·O_g + j] = sum_k sum_{c < C_g} x_pad[n, i·s + k·d, g·C_g + c] · w[k, c, g·O_g + j]

    For a fixed offset ``k`` and in-group channels ``c``, ``j``, the factor ``x_pad[n, i·s + k·d, g·C_g + c]``
    over all ``(n, i, g)`` is one strided slice of the padded input (step ``s`` in space, ``C_g`` across
    channels), and ``w[k, c, g·O_g + j]`` is a vector over the groups ``g``. The output is a sum of
    ``K·C_g·O_g`` elementwise products, which XLA fuses into a few loops, and whose gradients are again
    slices, pads and products. ``lhs_dilation`` first inserts ``l - 1`` zeros between input entries (the
    transposed convolution); ``pads`` may be negative (crop), as in ``lax``.
    """
    ndim = kernel.ndim - 2
    kernel_size, (in_per_group, out_channels) = kernel.shape[:ndim], kernel.shape[ndim:]
    x_pad = _pad(x, pads, lhs_dilation)
    out_spatial = output_size(x_pad.shape[1:-1], kernel_size, stride, dilation, [(0, 0)] * ndim)
    weights = kernel.reshape(*kernel_size, in_per_group, groups, out_channels // groups)  # [k, c, g, j]
    offsets = [(k, c) for c in range(in_per_group) for k in itertools.product(*map(range, kernel_size))]
    # x_pad[n, i·s + k·d, g·C_g + c] for all output positions i and groups g
    patches = {(k, c): _tap(x_pad, k, dilation, stride, out_spatial, c, in_per_group) for k, c in offsets}
    outputs = [
        sum(patches[k, c] * weights[(*k, c, slice(None), j)] for k, c in offsets) for j in range(out_channels // groups)
    ]
    out = jnp.stack(outputs, axis=-1)  # [n, i, g, j]
    return out.reshape(*out.shape[:-2], out_channels)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def _slice_conv_chunked_kernel_gradient(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int,
    lhs_dilation: tuple[int, ...],
) -> jax.Array:
    """``_shifted_slice_conv``, its kernel gradient summed over chunks of the batch (``_KERNEL_GRADIENT_CHUNK_BYTES``).

    The JVP's kernel part is the same linear map of the kernel's tangent, given its transpose explicitly
    (``linear_call``): ``dw = sum over chunks b of dw_b``, each chunk's the transpose of the slices on that chunk alone.
    Forward mode and the input's part are the slices' own derivatives.
    """
    return _shifted_slice_conv(x, kernel, stride, pads, dilation, groups, lhs_dilation)


def _chunked_kernel_gradient_jvp(stride, pads, dilation, groups, lhs_dilation, primals, tangents):
    (x, kernel), (x_dot, kernel_dot) = primals, tangents

    def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
        return _shifted_slice_conv(x, kernel, stride, pads, dilation, groups, lhs_dilation)

    def kernel_gradient(x: jax.Array, cotangent: jax.Array) -> jax.Array:
        def of_chunk(chunk: tuple[jax.Array, jax.Array]) -> jax.Array:
            x, cotangent = chunk
            (gradient,) = jax.linear_transpose(functools.partial(conv, x), kernel_struct)(cotangent)
            return gradient

        n = x.shape[0]
        per_example = (x[0].size + cotangent[0].size) * x.dtype.itemsize
        fits = _KERNEL_GRADIENT_CHUNK_BYTES // per_example
        size = max(d for d in range(1, min(max(fits, 1), n) + 1) if n % d == 0)
        if size == n:
            return of_chunk((x, cotangent))
        chunks = (x.reshape(n // size, size, *x.shape[1:]), cotangent.reshape(n // size, size, *cotangent.shape[1:]))
        return lax.map(of_chunk, chunks).sum(axis=0)

    kernel_struct = jax.ShapeDtypeStruct(kernel.shape, kernel.dtype)
    out = conv(x, kernel)
    return out, _tangent(out, (x_dot, lambda x_dot: conv(x_dot, kernel)),
                         (kernel_dot, lambda kernel_dot: jax.custom_derivatives.linear_call(conv, kernel_gradient, x,
                                                                                             kernel_dot)))


def _tangent(out: jax.Array, *parts: tuple[jax.Array, Callable[[jax.Array], jax.Array]]) -> jax.Array:
    """A JVP's tangent: the sum of its linear parts ``(tangent, part)``, skipping symbolic zeros (a first layer's
    input, a frozen kernel), which contribute nothing and cost nothing."""
    tangent = jnp.zeros_like(out)
    for dot, part in parts:
        if not isinstance(dot, jax.custom_derivatives.SymbolicZero):
            tangent = tangent + part(dot)
    return tangent


_slice_conv_chunked_kernel_gradient.defjvp(_chunked_kernel_gradient_jvp, symbolic_zeros=True)
