"""Dense convolutions that XLA:CPU runs slowly, computed as reshaped ones it runs fast (used by
``cnn.ops._lowering`` on CPU; tested equal to ``lax`` there):

* a transposed convolution whose stride equals its kernel (U-Net's up-convolution) is one matrix product and a
  depth-to-space: each input entry writes its own block of the output;
* a dense 3D convolution is one 2D convolution: depth folded into the batch and its taps into the channels, or,
  for a kernel that spans depth alone, height and width flattened into one axis.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jax import lax

from cnn.ops.args import output_size

# U-Net's 2×2 up-convolutions (transposed, stride 2), 4 images, ms forward / forward and both gradients, lax ->
# one matrix product (`_block_transpose_conv`), 2 shared cores under load average ~12:
#   8x8x1024 -> 512: 44 / 3601 -> 35 / 132;  16x16x512 -> 256: 16 / 2156 -> 12 / 72
#   32x32x256 -> 128: 12 / 3540 -> 30 / 68;  64x64x128 -> 64: 19 / 1916 -> 15 / 48
# Dense 3D convolutions as 2D ones: ms for forward / input gradient / kernel gradient, lax -> rewrite, measured by
# `python benchmarks/conv_paths.py --dims 3 --skip-steps --rounds 2` (2 shared cores, load average 4-8):
#   4x8x56x56x3 -> 64, 3x7x7 /1x2x2 (r3d_18 stem)          257 / 36175 / 333   ->  51 / 171 / 37
#   4x8x28x28x64 -> 64, 3x3x3 (r3d_18 stage 1)            576 / 341 / 904     ->  232 / 116 / 492
#   4x8x28x28x64 -> 128, 3x3x3 /2                         146 / 3496 / 307    ->  46 / 77 / 67
#   4x8x28x28x64 -> 144, 1x3x3 ((2+1)D spatial)           222 / 323 / 160     ->  96 / 122 / 97
#   4x28x28x28x64 -> 64, 3x3x3 (MedMNIST ResNet-18, 28³)   1840 / 2021 / 3287  ->  860 / 748 / 890
#   4x28x28x28x64 -> 128, 3x3x3 /2                        324 / 7824 / 1168   ->  311 / 246 / 316
# A 3x1x1 kernel ((2+1)D temporal, 4x8x28x28x144 -> 64) folded is slower than lax (0.5-0.7x: the stacked slabs
# copy the input three times for a 1x1 2D kernel); as a 2D convolution over (depth, height·width) it is faster
# (fwd+grads 122 ms against lax's 249).


def _dimension_numbers(ndim: int) -> tuple[str, str, str]:
    """Channels-last layouts for ``ndim`` spatial axes, e.g. ``("NHWC", "HWIO", "NHWC")``."""
    spatial = "DHW"[3 - ndim :]
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


def _depth_folded_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    lhs_dilation: tuple[int, ...],
) -> jax.Array:
    """Dense 3D convolution as one 2D convolution of depth slabs stacked along the channels:

        slab_k[n, t, h, w, c] = x_pad[n, t·s_D + k·d_D, h, w, c]                  (k < K_D, x_pad padded in depth)
        out[n, t] = conv2d(concat_k slab_k[n, t], w'),   w'[i, j, k·C_in + c, o] = w[k, i, j, c, o]

    The output depths ``t`` join the batch (``N·T`` images) and the depth taps join the channels (``K_D·C_in``),
    so XLA:CPU's 2D convolution does the work of its much slower 3D one; the gradients are 2D convolutions,
    slices and pads again. Height and width keep their strides, pads and dilations in the 2D convolution.
    """
    kernel_depth = kernel.shape[0]
    (lo, hi), zeros_between = pads[0], lhs_dilation[0] - 1
    no_pad = (0, 0, 0)
    x_pad = lax.pad(x, jnp.zeros((), x.dtype), [no_pad, (lo, hi, zeros_between), no_pad, no_pad, no_pad])
    (out_depth,) = output_size(x_pad.shape[1:2], (kernel_depth,), stride[:1], dilation[:1], [(0, 0)])
    slabs = [
        lax.slice_in_dim(x_pad, k * dilation[0], k * dilation[0] + (out_depth - 1) * stride[0] + 1, stride[0], axis=1)
        for k in range(kernel_depth)
    ]
    folded = jnp.concatenate(slabs, axis=-1) if kernel_depth > 1 else slabs[0]
    n, _, height, width, channels = folded.shape
    kernel_2d = jnp.moveaxis(kernel, 0, 2).reshape(*kernel.shape[1:3], channels, kernel.shape[-1])
    out = lax.conv_general_dilated(
        folded.reshape(n * out_depth, height, width, channels),
        kernel_2d,
        window_strides=stride[1:],
        padding=pads[1:],
        lhs_dilation=lhs_dilation[1:],
        rhs_dilation=dilation[1:],
        dimension_numbers=_dimension_numbers(2),
    )
    return out.reshape(n, out_depth, *out.shape[1:])


def _is_block_transpose(
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    lhs_dilation: tuple[int, ...],
) -> bool:
    """Whether this is a transposed convolution whose stride equals its kernel (U-Net's 2×2 up-convolution):
    ``K - 1`` zeros between input entries, padded by ``K - 1`` on both sides, read by a ``K``-wide kernel."""
    kernel_size = kernel.shape[:-2]
    return (
        lhs_dilation == kernel_size
        and max(kernel_size) > 1
        and all(s == d == 1 for s, d in zip(stride, dilation, strict=True))
        and pads == tuple((k - 1, k - 1) for k in kernel_size)
    )


def _block_transpose_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A transposed convolution with stride equal to its kernel size ``K`` as one matrix product:

        out[n, j·K + a, o] = sum_c x[n, j, c] · w[K - 1 - a, c, o]        (0 <= a < K, per spatial axis)

    Every input position writes its own ``K``-block of the output (no overlap), so the output is the product
    ``x · w'`` with ``w'[c, (a, o)]`` the flipped kernel, its ``(a, o)`` columns moved into space (depth to
    space). Its gradients are matrix products too, where XLA:CPU's zero-inserting convolution is slow (U-Net's
    up-convolutions: 30-50× forward plus backward).
    """
    ndim = kernel.ndim - 2
    kernel_size, (in_channels, out_channels) = kernel.shape[:ndim], kernel.shape[ndim:]
    flipped = lax.rev(kernel, tuple(range(ndim)))
    columns = jnp.moveaxis(flipped, ndim, 0).reshape(in_channels, -1)  # [c, (a, o)]
    blocks = (x.reshape(-1, in_channels) @ columns).reshape(*x.shape[:-1], *kernel_size, out_channels)
    # (n, j_1..j_d, a_1..a_d, o) -> (n, j_1, a_1, ..., j_d, a_d, o) -> (n, j_1·K_1 + a_1, ..., o)
    order = [0, *itertools.chain.from_iterable((1 + i, 1 + ndim + i) for i in range(ndim)), 1 + 2 * ndim]
    out_spatial = [size * k for size, k in zip(x.shape[1:-1], kernel_size, strict=True)]
    return blocks.transpose(order).reshape(x.shape[0], *out_spatial, out_channels)


def _is_depth_only(
    kernel: jax.Array, stride: tuple[int, ...], pads: tuple[tuple[int, int], ...], lhs_dilation: tuple[int, ...]
) -> bool:
    """Whether a 3D convolution mixes along depth alone: a ``K_D×1×1`` kernel, height and width untouched."""
    return kernel.shape[1:3] == (1, 1) and stride[1:] == lhs_dilation[1:] == (1, 1) and pads[1:] == ((0, 0), (0, 0))


def _depth_only_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    lhs_dilation: tuple[int, ...],
) -> jax.Array:
    """A ``K_D×1×1`` 3D convolution (the temporal half of (2+1)D) as a 2D one over ``(depth, height·width)``:

        out[n, t, h, w, o] = sum_k sum_c x_pad[n, t·s_D + k·d_D, h, w, c] · w[k, 0, 0, c, o]

    touches each ``(h, w)`` column on its own, so height and width flatten into one axis of kernel size 1
    (stacking depth slabs as ``_depth_folded_conv`` does would copy the input ``K_D`` times for a 1×1 kernel).
    """
    n, _, height, width, channels = x.shape
    out = lax.conv_general_dilated(
        x.reshape(n, x.shape[1], height * width, channels),
        kernel.reshape(kernel.shape[0], 1, channels, kernel.shape[-1]),
        window_strides=(stride[0], 1),
        padding=(pads[0], (0, 0)),
        lhs_dilation=(lhs_dilation[0], 1),
        rhs_dilation=(dilation[0], 1),
        dimension_numbers=_dimension_numbers(2),
    )
    return out.reshape(n, out.shape[1], height, width, kernel.shape[-1])
