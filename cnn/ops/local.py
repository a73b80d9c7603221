"""Unshared and tiled convolution (Goodfellow et al., Deep Learning, section 9.5).

A convolution shares one kernel across all output positions. Section 9.5 relaxes the sharing:

Locally connected (unshared) layer, one kernel per output position p (a multi-index over the spatial axes):

    out[n, p, o] = sum_{k, c} x_pad[n, p * s + k * d, c] * W[p, k, c, o]

with W of shape (*out_spatial, *kernel_spatial, in_channels, out_channels), stride s, dilation d and
x_pad the zero-padded input.

Tiled convolution, a compromise: t kernels per axis are cycled through as the output moves,

    out[n, p, o] = sum_{k, c} x_pad[n, p * s + k * d, c] * W[p mod t, k, c, o]

with W of shape (*tile, *kernel_spatial, in_channels, out_channels). A tile of ones is the ordinary
(shared) correlation; a tile equal to the output shape is the locally connected layer.

Two evaluation strategies (chosen in `tiled_conv`):

* Patches then einsum (`_phase_einsum`): `lax.conv_general_dilated_patches` extracts every receptive
  field, the output axes are reshaped into (tile_count, tile) phases and one einsum contracts each phase
  with its own kernel. Exact flop count, but the patches take prod(kernel_spatial) times the memory of
  the padded input. Locally connected layers always use it (their kernel is as large anyway).
* Sub-pixel convolution (`_phase_conv`): with p = t * q + r (r the phase),
  p * s + k * d = q * (t * s) + (r * s + k * d), so all phases are one ordinary correlation with stride
  t * s whose kernel V[u, c, r, o] = W[r, k, c, o] at u = r * s + k * d (zero elsewhere) has
  prod(tile) * out_channels outputs; a depth-to-space reshape interleaves the phases. V lives on a grid of
  step gcd(s, d) (d for a tile of one, so that case is exactly the dilated correlation). No patches are
  materialized; the zeros in V cost extra flops, so it is used only while that overhead is small.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn.ops.args import IntOrSeq, Padding, as_tuple, check_input, float_array, output_size, resolve_padding

_DIMENSION_NUMBERS = {
    1: ("NWC", "WIO", "NWC"),
    2: ("NHWC", "HWIO", "NHWC"),
    3: ("NDHWC", "DHWIO", "NDHWC"),
}

# The sub-pixel kernel computes prod(extent) / prod(kernel_spatial) times the flops of the unshared sum
# (the zeros between phases). On CPU (batch 8, 32x32, 64->64, 3x3, SAME) against patches + einsum it won at
# overhead 4 (tile 4x4: 56 vs 77 ms forward, 125 vs 465 ms forward+backward) and lost at 11 (tile 8x8:
# 345 vs 110 ms forward, 9.3 s vs 0.53 s forward+backward). Measured again by
# `python benchmarks/ops.py --sections tiled` (BENCHMARKS.md, "The two other constants").
_MAX_PHASE_CONV_OVERHEAD = 4.0


def _prepare(x, kernel, lead_name: str, stride: IntOrSeq, padding: Padding, dilation: IntOrSeq):
    """Validate ``x`` and a ``(*lead, *kernel_spatial, in, out)`` kernel; return them and the geometry."""
    x, kernel = float_array(x, "x"), float_array(kernel, "kernel")
    # One common dtype: lax convolutions need equal operand dtypes.
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if kernel.ndim not in (4, 6, 8):
        raise ValueError(
            f"kernel must have shape (*{lead_name}, *kernel_spatial, in_channels, out_channels) with 1, 2 or 3 "
            f"spatial axes (rank 4, 6 or 8), got shape {tuple(kernel.shape)}"
        )
    ndim = (kernel.ndim - 2) // 2
    check_input(x, ndim)
    if kernel.shape[-2] != x.shape[-1]:
        raise ValueError(
            f"channel mismatch: x {tuple(x.shape)} has {x.shape[-1]} channels, kernel {tuple(kernel.shape)} "
            f"expects in_channels={kernel.shape[-2]}"
        )
    if 0 in kernel.shape[: 2 * ndim]:
        raise ValueError(f"kernel {lead_name} and kernel_spatial sizes must be >= 1, got {tuple(kernel.shape)}")
    lead, ksize = tuple(kernel.shape[:ndim]), tuple(kernel.shape[ndim : 2 * ndim])
    stride = as_tuple(stride, ndim, "stride")
    dilation = as_tuple(dilation, ndim, "dilation")
    pads = resolve_padding(padding, x.shape[1:-1], ksize, stride, dilation)
    out = output_size(x.shape[1:-1], ksize, stride, dilation, pads)
    return x, kernel, lead, ksize, stride, dilation, pads, out


def _whole_tiles_padding(in_spatial, ksize, stride, dilation, pads, out, tile):
    """Padding that extends each output axis to a whole number of tiles; return it and the tile counts."""
    counts = tuple(-(-o // t) for o, t in zip(out, tile, strict=True))
    padded = []
    for n, k, s, d, (lo, hi), q, t in zip(in_spatial, ksize, stride, dilation, pads, counts, tile, strict=True):
        needed = (q * t - 1) * s + d * (k - 1) + 1
        padded.append((lo, max(hi, needed - n - lo)))
    return padded, counts


def _interleave(y, counts, tile, out):
    """``(n, q_1, t_1, ..., q_m, t_m, o)`` phases to ``(n, *out, o)``: output position ``q * t + r``."""
    y = y.reshape(y.shape[0], *(q * t for q, t in zip(counts, tile, strict=True)), y.shape[-1])
    return y[(slice(None), *(slice(0, o) for o in out))]


def _phase_einsum(x, kernel, tile, ksize, stride, dilation, pads, out):
    """Tiled correlation by patches and one einsum over the tile phases (the unshared flop count)."""
    ndim = len(ksize)
    pads, counts = _whole_tiles_padding(x.shape[1:-1], ksize, stride, dilation, pads, out, tile)
    # Patches are exact copies of x: HIGHEST keeps TPU/GPU from rounding them through bf16/tf32.
    patches = lax.conv_general_dilated_patches(
        x, ksize, stride, pads, rhs_dilation=dilation,
        dimension_numbers=_DIMENSION_NUMBERS[ndim], precision=lax.Precision.HIGHEST,
    )
    # The patch features are channel-major: feature c * prod(ksize) + ravel(k) holds x_pad[p * s + k * d, c].
    taps = math.prod(ksize)
    patches = patches.reshape(x.shape[0], *(v for qt in zip(counts, tile, strict=True) for v in qt), -1, taps)
    weights = kernel.reshape(*tile, taps, kernel.shape[-2], kernel.shape[-1])
    q, t = "uvw"[:ndim], "xyz"[:ndim]
    phases = "".join(a + b for a, b in zip(q, t, strict=True))
    y = jnp.einsum(f"n{phases}ck,{t}kco->n{phases}o", patches, weights)
    return _interleave(y, counts, tile, out)


def _phase_steps(tile, stride, dilation):
    """Per axis, the grid step g of the sub-pixel kernel: every offset r * s + k * d is a multiple of g."""
    return tuple(d if t == 1 else math.gcd(s, d) for t, s, d in zip(tile, stride, dilation, strict=True))


def _phase_extent(tile, ksize, stride, dilation):
    """Per axis, the sub-pixel kernel's size in steps of ``_phase_steps``."""
    steps = _phase_steps(tile, stride, dilation)
    return tuple(
        ((t - 1) * s + (k - 1) * d) // g + 1 for t, k, s, d, g in zip(tile, ksize, stride, dilation, steps, strict=True)
    )


def _phase_conv(x, kernel, tile, ksize, stride, dilation, pads, out):
    """Tiled correlation as one strided correlation with ``prod(tile) * out`` channels, then depth-to-space."""
    ndim = len(ksize)
    pads, counts = _whole_tiles_padding(x.shape[1:-1], ksize, stride, dilation, pads, out, tile)
    steps = _phase_steps(tile, stride, dilation)
    extent = _phase_extent(tile, ksize, stride, dilation)
    # One-hot placement per axis: place[u, r, k] = 1 where u * g = r * s + k * d.
    places = [
        jnp.asarray(np.arange(e)[:, None, None] * g == np.arange(t)[:, None] * s + np.arange(k) * d, kernel.dtype)
        for e, t, k, s, d, g in zip(extent, tile, ksize, stride, dilation, steps, strict=True)
    ]
    u, t, k = "uvw"[:ndim], "xyz"[:ndim], "abc"[:ndim]
    specs = ",".join(a + b + c for a, b, c in zip(u, t, k, strict=True))
    # HIGHEST: the placement only copies weights, it must not round them.
    phase_kernel = jnp.einsum(f"{t}{k}io,{specs}->{u}i{t}o", kernel, *places, precision=lax.Precision.HIGHEST)
    phase_kernel = phase_kernel.reshape(*extent, kernel.shape[-2], -1)
    y = lax.conv_general_dilated(
        x, phase_kernel, tuple(s * n for s, n in zip(stride, tile, strict=True)), pads,
        rhs_dilation=steps, dimension_numbers=_DIMENSION_NUMBERS[ndim],
    )
    y = y.reshape(x.shape[0], *counts, *tile, kernel.shape[-1])
    y = y.transpose(0, *(a for i in range(ndim) for a in (1 + i, 1 + ndim + i)), 1 + 2 * ndim)
    return _interleave(y, counts, tile, out)


def locally_connected(
    x: jax.Array, kernel: jax.Array, *, stride: IntOrSeq = 1, padding: Padding = "VALID", dilation: IntOrSeq = 1
) -> jax.Array:
    """Unshared convolution: ``out[n, p, o] = sum_{k, c} x_pad[n, p * s + k * d, c] * W[p, k, c, o]``.

    Args:
      x: ``(batch, *spatial, in_channels)`` with 1, 2 or 3 spatial axes.
      kernel: ``(*out_spatial, *kernel_spatial, in_channels, out_channels)``, one kernel per output
        position; ``out_spatial`` must equal the output size implied by stride, padding and dilation.
      stride, padding, dilation: as for every operator (see ``cnn.ops.args``).

    Returns:
      ``(batch, *out_spatial, out_channels)``.
    """
    x, kernel, positions, ksize, stride, dilation, pads, out = _prepare(
        x, kernel, "out_spatial", stride, padding, dilation
    )
    if positions != out:
        raise ValueError(
            f"kernel {tuple(kernel.shape)} has out_spatial {positions}, but x {tuple(x.shape)} with kernel_spatial "
            f"{ksize}, stride {stride}, padding {pads} and dilation {dilation} gives output spatial shape {out}"
        )
    return _phase_einsum(x, kernel, out, ksize, stride, dilation, pads, out)


def tiled_conv(
    x: jax.Array, kernel: jax.Array, *, stride: IntOrSeq = 1, padding: Padding = "VALID", dilation: IntOrSeq = 1
) -> jax.Array:
    """Tiled convolution: ``out[n, p, o] = sum_{k, c} x_pad[n, p * s + k * d, c] * W[p mod t, k, c, o]``.

    Args:
      x: ``(batch, *spatial, in_channels)`` with 1, 2 or 3 spatial axes.
      kernel: ``(*tile, *kernel_spatial, in_channels, out_channels)``; output position p uses kernel
        ``p mod tile``. A tile larger than the output on some axis uses only its first ``out`` kernels there.
      stride, padding, dilation: as for every operator (see ``cnn.ops.args``).

    Returns:
      ``(batch, *out_spatial, out_channels)``.
    """
    x, kernel, tile, ksize, stride, dilation, pads, out = _prepare(x, kernel, "tile", stride, padding, dilation)
    # Kernels beyond the output are never used: drop them so no phase is computed for nothing.
    tile = tuple(min(t, o) for t, o in zip(tile, out, strict=True))
    kernel = kernel[tuple(slice(0, t) for t in tile)]
    overhead = math.prod(_phase_extent(tile, ksize, stride, dilation)) / math.prod(ksize)
    strategy = _phase_conv if overhead <= _MAX_PHASE_CONV_OVERHEAD else _phase_einsum
    return strategy(x, kernel, tile, ksize, stride, dilation, pads, out)
