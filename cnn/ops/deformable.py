"""Deformable convolution, v1 (Dai et al. 2017) and modulated v2 (Zhu et al. 2019), 2D.

A correlation reads its input on a fixed grid; a deformable one shifts every kernel tap of every output
position by a learned, fractional offset (dy, dx) and optionally scales it by a learned mask m:

    out[n, i, j, o] = sum_{a, b, c} W[a, b, c, o] * m[n, i, j, g(c), a, b]
                      * bilinear(x[n, :, :, c], y, x)
    y = i * s_h - pad_top  + a * d_h + dy[n, i, j, g(c), a, b]
    x = j * s_w - pad_left + b * d_w + dx[n, i, j, g(c), a, b]

with m = 1 for v1. The channels are split into offset_groups contiguous groups, g(c) = c // (C / groups),
each group with its own offsets and mask. Bilinear sampling with zeros outside the input:

    bilinear(f, y, x) = sum over the corners (y0 + u, x0 + v), u, v in {0, 1}, y0 = floor(y), x0 = floor(x),
                        of (1 - |y - y0 - u|) * (1 - |x - x0 - v|) * f[y0 + u, x0 + v]   (f = 0 outside)

This is the convention of torchvision.ops.deform_conv2d (offsets laid out (dy, dx) per tap, taps in
row-major (kh, kw) order, per offset group).

Evaluation: gather the four corners of every tap from the zero-bordered input (rows of C / groups
channels, flat indices, no loops), blend them into columns (batch * out_h * out_w, kh * kw * C), then one
matmul with the kernel reshaped to (kh * kw * C, out_channels). The gradients in x (a scatter-add),
kernel, offsets (through the bilinear weights) and mask come from autodiff; a custom JVP for the blend
only chooses the layout of its transpose and resamples the corners in the backward pass instead of
storing them (torchvision's backward also resamples). Forward and reverse mode both work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cnn.ops.args import (
    IntOrSeq,
    Padding,
    as_tuple,
    check_input,
    check_kernel,
    float_array,
    output_size,
    resolve_padding,
)


def _corner_sum(weights, samples):
    """``sum_z weights[z, ...] * samples[z, ..., :]`` over the four stacked corners."""
    return jnp.einsum("z...,z...c->...c", weights, samples)


@jax.custom_jvp
def _blend(rows, corners, weights):
    """Bilinear samples ``sum_z weights[z, ...] * rows[corners[z, ...]]``, shape ``(..., row_size)``."""
    # Four gathers, each fused with its weight: no (4, ..., row_size) array is materialized.
    return sum(w[..., None] * jnp.take(rows, i, axis=0, mode="clip") for w, i in zip(weights, corners, strict=True))


@_blend.defjvp
def _blend_jvp(primals, tangents):
    # Written on stacked corners so the transpose (reverse mode) is one scatter-add into rows and one
    # batched dot for the weights. The checkpoint regathers the corner samples in the backward pass
    # rather than keeping all four (4x the columns) alive between the passes.
    rows, corners, weights = primals
    rows_dot, _, weights_dot = tangents
    through_weights = jax.checkpoint(
        lambda rows, weights_dot: _corner_sum(weights_dot, jnp.take(rows, corners, axis=0, mode="clip"))
    )
    through_rows = _corner_sum(weights, jnp.take(rows_dot, corners, axis=0, mode="clip"))
    return _blend(rows, corners, weights), through_weights(rows, weights_dot) + through_rows


def _sample_columns(x, offsets, mask, stride, dilation, pads, out):
    """Bilinear samples ``(batch, out_h, out_w, kh, kw, C)`` of x at the deformed taps, times the mask."""
    batch, height, width, channels = x.shape
    groups, kh, kw = offsets.shape[3:6]
    # (batch, out_h, out_w, kh, kw, groups): the order of the columns, so no large transpose is needed later.
    offsets = offsets.transpose(0, 1, 2, 4, 5, 3, 6)
    grid_y = (jnp.arange(out[0]) * stride[0] - pads[0][0])[:, None] + jnp.arange(kh) * dilation[0]
    grid_x = (jnp.arange(out[1]) * stride[1] - pads[1][0])[:, None] + jnp.arange(kw) * dilation[1]
    # At least float32: a bf16 position of 100.5 would lose its fraction.
    offsets = offsets.astype(jnp.promote_types(offsets.dtype, jnp.float32))
    # Every corner of a point outside [-1, size] is outside the input, so clipping there changes no sample
    # (and keeps floor() in int32 range); the zero border below then makes out-of-range corners read 0.
    pos_y = jnp.clip(grid_y[None, :, None, :, None, None] + offsets[..., 0], -1, height)
    pos_x = jnp.clip(grid_x[None, None, :, None, :, None] + offsets[..., 1], -1, width)
    y0, x0 = jnp.floor(pos_y), jnp.floor(pos_x)
    frac_y, frac_x = pos_y - y0, pos_x - x0
    # Border of 1 above/left and 2 below/right: the corner rows y0 and y0 + 1 in [-1, height + 1] all exist.
    padded_width = width + 3
    rows = jnp.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0))).reshape(-1, channels // groups)
    padded_row = jnp.arange(batch)[:, None, None, None, None, None] * (height + 3) + y0.astype(jnp.int32) + 1
    top_left = (padded_row * padded_width + x0.astype(jnp.int32) + 1) * groups + jnp.arange(groups)
    corners = jnp.stack([top_left, top_left + groups, top_left + padded_width * groups,
                         top_left + (padded_width + 1) * groups])
    weights = jnp.stack([(1 - frac_y) * (1 - frac_x), (1 - frac_y) * frac_x, frac_y * (1 - frac_x), frac_y * frac_x])
    if mask is not None:
        weights = weights * mask.transpose(0, 1, 2, 4, 5, 3)
    columns = _blend(rows, corners, weights.astype(x.dtype))
    return columns.reshape(batch, *out, kh, kw, channels)


def deformable_conv(
    x: jax.Array,
    kernel: jax.Array,
    offsets: jax.Array,
    mask: jax.Array | None = None,
    *,
    stride: IntOrSeq = 1,
    padding: Padding = "VALID",
    dilation: IntOrSeq = 1,
    offset_groups: int = 1,
) -> jax.Array:
    """Deformable correlation: every tap (a, b) of output (i, j) reads x bilinearly at its shifted position.

        out[n, i, j, o] = sum_{a, b, c} W[a, b, c, o] * m[n, i, j, g(c), a, b] * bilinear(x[n, ..., c],
                              i * s_h - pad_top + a * d_h + dy,  j * s_w - pad_left + b * d_w + dx)

    with (dy, dx) = offsets[n, i, j, g(c), a, b], g(c) = c // (C / offset_groups), m = 1 without a mask,
    and x taken as zero outside the input (torchvision.ops.deform_conv2d's convention).

    Args:
      x: ``(batch, height, width, in_channels)``.
      kernel: ``(kh, kw, in_channels, out_channels)``.
      offsets: ``(batch, out_h, out_w, offset_groups, kh, kw, 2)``, (dy, dx) in input pixels.
      mask: ``(batch, out_h, out_w, offset_groups, kh, kw)`` modulation (v2), or None (v1).
      stride, padding, dilation: as for every operator (see ``cnn.ops.args``), 2D.
      offset_groups: number of contiguous channel groups with their own offsets; divides in_channels.

    Returns:
      ``(batch, out_h, out_w, out_channels)``.
    """
    x, kernel, offsets = float_array(x, "x"), float_array(kernel, "kernel"), float_array(offsets, "offsets")
    mask = None if mask is None else float_array(mask, "mask")
    check_input(x, 2)
    if kernel.ndim != 4:
        raise ValueError(f"kernel must have shape (kh, kw, in_channels, out_channels), got {tuple(kernel.shape)}")
    check_kernel(x, kernel)
    if not isinstance(offset_groups, int) or isinstance(offset_groups, bool) or offset_groups < 1:
        raise ValueError(f"offset_groups must be a positive int, got {offset_groups!r}")
    if x.shape[-1] % offset_groups:
        raise ValueError(f"offset_groups={offset_groups} must divide in_channels={x.shape[-1]}")
    ksize = tuple(kernel.shape[:2])
    stride = as_tuple(stride, 2, "stride")
    dilation = as_tuple(dilation, 2, "dilation")
    pads = resolve_padding(padding, x.shape[1:3], ksize, stride, dilation)
    out = output_size(x.shape[1:3], ksize, stride, dilation, pads)
    expected = (x.shape[0], *out, offset_groups, *ksize)
    if offsets.shape != (*expected, 2):
        raise ValueError(
            f"offsets must have shape (batch, out_h, out_w, offset_groups, kh, kw, 2) = {(*expected, 2)}, "
            f"got {tuple(offsets.shape)}"
        )
    if mask is not None and mask.shape != expected:
        raise ValueError(
            f"mask must have shape (batch, out_h, out_w, offset_groups, kh, kw) = {expected}, got {tuple(mask.shape)}"
        )
    columns = _sample_columns(x, offsets, mask, stride, dilation, pads, out)
    columns = columns.reshape(-1, kernel.shape[0] * kernel.shape[1] * kernel.shape[2])
    y = columns @ kernel.reshape(columns.shape[1], kernel.shape[3])
    return y.reshape(x.shape[0], *out, kernel.shape[3])
