"""How a validated convolution is computed: channels-last ``lax.conv_general_dilated``, except grouped
convolutions on CPU.

XLA:CPU's grouped convolution (``feature_group_count > 1``) is slow, its kernel gradient by orders of magnitude.
There grouped convolutions are rewritten: as a sum of shifted, strided slices times per-group weights when groups
have few channels (depthwise included), else as one dense convolution with a block-diagonal kernel. Both rewrites
are tested equal to ``lax`` (values and gradients) in ``tests/ops/test_conv.py``.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from cnn.ops.args import output_size

# XLA:CPU's grouped convolution (feature_group_count > 1) is slow, its kernel gradient catastrophically so.
# Measured on 8x32x32x256 inputs, 3x3 kernels; ms for forward / input gradient / kernel gradient:
#   groups (channels in -> out per group)  lax                 shifted slices       block-diagonal dense
#   256 (1 -> 1, depthwise)                47 / 148 / 524      3 / 9 / 44           (256x the FLOPs)
#   256 (1 -> 2)                           47 / 119 s fwd+bwd  8 / 26 / 74
#   256 (1 -> 8)                                               168 / 268 / 427 [1]  1028 / 1995 / 4980
#   128 (2 -> 2)                           89 / 175 / 24720    15 / 42 / 102        37 / 103 / 356
#   64 (4 -> 4)                            73 / 147 / 10951    22 / 88 / 180        124 / 236 / 775
#   32 (8 -> 8)                            114 / 216 / 15328   164 / 9064 / 15301   154 / 312 / 714
#   2 (128 -> 128)                         190 / 282 / 400                          36 / 88 / 207
# [1] 5334 with a cotangent independent of the output: the slices' gradient degrades with many channels.
# Hence on CPU: shifted slices for depthwise (any channel multiplier) and for groups with at most this many
# input and output channels; otherwise the block-diagonal dense kernel, groups times the FLOPs yet faster.
# Measured again by `python benchmarks/ops.py --sections grouped` (BENCHMARKS.md, "The two other constants").
_SHIFTED_SLICE_MAX_CHANNELS = 4


def _dimension_numbers(ndim: int) -> tuple[str, str, str]:
    """Channels-last layouts for ``ndim`` spatial axes, e.g. ``("NHWC", "HWIO", "NHWC")``."""
    spatial = "DHW"[3 - ndim :]
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


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
    zero = jnp.zeros((), x.dtype)
    dilated_pads = [(lo, hi, l - 1) for (lo, hi), l in zip(pads, lhs_dilation, strict=True)]
    x_pad = lax.pad(x, zero, [(0, 0, 0), *dilated_pads, (0, 0, 0)])
    out_spatial = output_size(x_pad.shape[1:-1], kernel_size, stride, dilation, [(0, 0)] * ndim)
    weights = kernel.reshape(*kernel_size, in_per_group, groups, out_channels // groups)  # [k, c, g, j]

    def patch(k: tuple[int, ...], c: int) -> jax.Array:
        """``x_pad[n, i·s + k·d, g·C_g + c]`` for all output positions ``i`` and groups ``g``."""
        start = [ki * di for ki, di in zip(k, dilation, strict=True)]
        limit = [st + (o - 1) * s + 1 for st, o, s in zip(start, out_spatial, stride, strict=True)]
        return lax.slice(x_pad, (0, *start, c), (x_pad.shape[0], *limit, x_pad.shape[-1]), (1, *stride, in_per_group))

    offsets = [(k, c) for c in range(in_per_group) for k in itertools.product(*map(range, kernel_size))]
    patches = {kc: patch(*kc) for kc in offsets}
    outputs = [
        sum(patches[k, c] * weights[(*k, c, slice(None), j)] for k, c in offsets) for j in range(out_channels // groups)
    ]
    out = jnp.stack(outputs, axis=-1)  # [n, i, g, j]
    return out.reshape(*out.shape[:-2], out_channels)


def _block_diagonal(kernel: jax.Array, groups: int) -> jax.Array:
    """The dense ``(*K, C_in, C_out)`` kernel equivalent to a grouped one: group ``g``'s block on the diagonal.

    ``dense[k, g·C_g + c, h·O_g + j] = w[k, c, h·O_g + j]`` if ``g == h`` else 0.
    """
    ndim = kernel.ndim - 2
    kernel_size, (in_per_group, out_channels) = kernel.shape[:ndim], kernel.shape[ndim:]
    blocks = kernel.reshape(*kernel_size, in_per_group, groups, out_channels // groups)  # [k, c, h, j]
    dense = jnp.einsum("...chj,gh->...gchj", blocks, jnp.eye(groups, dtype=kernel.dtype))
    return dense.reshape(*kernel_size, groups * in_per_group, out_channels)


# Jitted (with hashable static arguments) so that an eager call compiles one fused program instead of
# dispatching the many small operations of the shifted-slice and block-diagonal lowerings one by one.
@functools.partial(jax.jit, static_argnames=("stride", "pads", "dilation", "groups", "lhs_dilation"))
def _conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int,
    lhs_dilation: tuple[int, ...],
) -> jax.Array:
    """Channels-last ``lax.conv_general_dilated`` on validated arguments, lowered to what is fast here.

    Grouped convolutions are rewritten on CPU only (see ``_SHIFTED_SLICE_MAX_CHANNELS``): on GPU cuDNN has
    dedicated grouped and depthwise kernels, so there the fused convolution stays (not measured here: the
    development machine has no GPU).
    """
    if groups > 1 and jax.default_backend() == "cpu":
        in_per_group, out_per_group = kernel.shape[-2], kernel.shape[-1] // groups
        if in_per_group == 1 or max(in_per_group, out_per_group) <= _SHIFTED_SLICE_MAX_CHANNELS:
            return _shifted_slice_conv(x, kernel, stride, pads, dilation, groups, lhs_dilation)
        kernel, groups = _block_diagonal(kernel, groups), 1
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=stride,
        padding=pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=dilation,
        dimension_numbers=_dimension_numbers(len(stride)),
        feature_group_count=groups,
    )
