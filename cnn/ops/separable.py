"""Separable convolutions (Goodfellow et al., Deep Learning, sec. 9.8).

Depthwise separable convolution (MobileNet / Xception): a per-channel spatial correlation followed by a 1x1
correlation that mixes channels,

    h[b, j, c·m + q] = sum_i x[b, j·s + i·d, c] · D[i, 0, c·m + q]      (depthwise, groups = C, multiplier m)
    y[b, j, o]       = sum_r h[b, j, r] · P[r, o]                         (pointwise)

costing prod(k)·C·m + C·m·out multiply-adds per output position instead of prod(k)·C·out for a dense kernel.

Spatially separable kernel: when a d-D kernel is an outer product of 1D kernels,
``K[i_1, ..., i_d, c] = k_1[i_1, c] · ... · k_d[i_d, c]``, the correlation factorizes (2D shown; d-D nests
the same way),

    y[j1, j2, c] = sum_{i1} k_1[i1, c] · ( sum_{i2} k_2[i2, c] · x[j1·s1 + i1·d1, j2·s2 + i2·d2, c] ),

so d passes of 1D correlations compute it with O(w·d) instead of O(w^d) work per output (w the kernel width).
Each inner sum only touches the index along its own axis, so each pass can pad, dilate and *stride* along its
axis alone: the composition of the strided 1D passes reads exactly the positions the strided d-D correlation
reads, and striding early saves the later passes work.

Separable approximation: by Eckart–Young, the best rank-r approximation of a 2D kernel in Frobenius norm is
its truncated SVD ``K ≈ sum_{t<r} σ_t u_t v_t^T``; each term is a separable kernel, so a rank-r kernel is r
separable correlations.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from cnn.ops.args import (
    IntOrSeq,
    Padding,
    as_tuple,
    check_input,
    float_array,
    output_size,
    pad_boundary,
    resolve_padding,
)
from cnn.ops.conv import correlate


def _pointwise_matrix(pointwise_kernel: jax.Array, ndim: int, channels: int) -> jax.Array:
    """The ``(channels, out)`` matrix of a pointwise kernel given as such or as ``(1,.., channels, out)``."""
    shape = tuple(pointwise_kernel.shape)
    if pointwise_kernel.ndim not in (2, ndim + 2) or any(s != 1 for s in shape[:-2]) or shape[-2] != channels:
        raise ValueError(
            f"pointwise_kernel must have shape ({channels}, out) or ({'1, ' * ndim}{channels}, out) "
            f"(in_channels = depthwise output channels {channels}), got {shape}"
        )
    return pointwise_kernel.reshape(shape[-2:])


def depthwise_separable(
    x: jax.Array,
    depthwise_kernel: jax.Array,
    pointwise_kernel: jax.Array,
    *,
    stride: IntOrSeq = 1,
    padding: Padding = "VALID",
    dilation: IntOrSeq = 1,
) -> jax.Array:
    """Depthwise correlation (groups = C, channel multiplier m) followed by a pointwise (1x1) correlation.

        h[b, j, c·m + q] = sum_i xpad[b, j·s + i·d, c] · depthwise_kernel[i, 0, c·m + q]
        y[b, j, o]       = sum_r h[b, j, r] · pointwise_kernel[r, o]

    Depthwise output channel ``c·m + q`` is the q-th filter applied to input channel ``c`` (the group order of
    ``correlate(..., groups=C)``). The pointwise step is a matrix product over channels, cheaper than a 1x1
    convolution on CPU.

    Args:
      x: ``(batch, *spatial, C)``, 1 to 3 spatial axes.
      depthwise_kernel: ``(*kernel_spatial, 1, C·m)``.
      pointwise_kernel: ``(C·m, out)``, or ``(1, ..., 1, C·m, out)`` with one 1 per spatial axis (the 1x1
        kernel in the usual kernel layout); both mean the same.
      stride, padding, dilation: of the depthwise step, as in ``correlate``.

    Returns:
      ``(batch, *out_spatial, out)``.
    """
    x = float_array(x, "x")
    depthwise_kernel = float_array(depthwise_kernel, "depthwise_kernel")
    pointwise_kernel = float_array(pointwise_kernel, "pointwise_kernel")
    if depthwise_kernel.ndim < 3:
        raise ValueError(
            f"depthwise_kernel must have shape (*kernel_spatial, 1, C*m), got {tuple(depthwise_kernel.shape)}"
        )
    ndim = depthwise_kernel.ndim - 2
    check_input(x, ndim)
    channels = x.shape[-1]
    if depthwise_kernel.shape[-2] != 1 or depthwise_kernel.shape[-1] % channels:
        raise ValueError(
            f"depthwise_kernel must have shape (*kernel_spatial, 1, C*m) with C = {channels} input channels, "
            f"got {tuple(depthwise_kernel.shape)}"
        )
    pointwise = _pointwise_matrix(pointwise_kernel, ndim, depthwise_kernel.shape[-1])
    h = correlate(x, depthwise_kernel, stride=stride, padding=padding, dilation=dilation, groups=channels)
    return jnp.einsum("...r,ro->...o", h, pointwise)


def _correlate_along(
    x: jax.Array, kernel_1d: jax.Array, axis: int, stride: int, dilation: int, pad: tuple[int, int], size: int
) -> jax.Array:
    """One 1D depthwise pass along ``axis``: ``y[.., j, .., c] = sum_i xpad[.., j·s + i·d, .., c] · k[i, c]``.

    A sum of ``k`` strided slices of the padded input, each scaled per channel: no grouped convolution needed.
    ``size`` is the output length along ``axis``.
    """
    x = pad_boundary(x, [pad if a == axis else (0, 0) for a in range(1, x.ndim - 1)])
    span = (size - 1) * stride + 1
    return sum(
        lax.slice_in_dim(x, i * dilation, i * dilation + span, stride, axis) * kernel_1d[i]
        for i in range(kernel_1d.shape[0])
    )


def separable_conv(
    x: jax.Array,
    kernels_1d: Sequence[jax.Array],
    *,
    stride: IntOrSeq = 1,
    padding: Padding = "VALID",
    dilation: IntOrSeq = 1,
) -> jax.Array:
    """Depthwise correlation with a separable kernel, one 1D pass per spatial axis.

        y[b, j, c] = sum_i xpad[b, j·s + i·d, c] · prod_a k_a[i_a, c]

    i.e. ``correlate(x, K[..., None, :], groups=C, ...)`` with the outer-product kernel
    ``K[i_1, ..., i_d, c] = prod_a k_a[i_a, c]``, computed as d passes of 1D correlations. Padding is resolved
    for the full kernel ``(k_1, ..., k_d)`` (so ``"SAME"`` / ``"FULL"`` mean what they mean for ``K``); pass a
    applies the padding, dilation and stride of axis a only (see the module docstring for why that is exact).

    Args:
      x: ``(batch, *spatial, C)``, 1 to 3 spatial axes.
      kernels_1d: one 1D kernel per spatial axis, in axis order, each ``(k_a, C)`` (per channel).
      stride, padding, dilation: as in ``correlate``.

    Returns:
      ``(batch, *out_spatial, C)``.
    """
    x = float_array(x, "x")
    kernels = [float_array(k, f"kernels_1d[{a}]") for a, k in enumerate(kernels_1d)]
    ndim = len(kernels)
    if x.ndim - 2 != ndim:
        raise ValueError(
            f"kernels_1d needs one kernel per spatial axis: x of shape {tuple(x.shape)} has {x.ndim - 2} "
            f"spatial axes, got {ndim} kernels"
        )
    check_input(x, ndim)
    channels = x.shape[-1]
    for a, k in enumerate(kernels):
        if k.ndim != 2 or k.shape[0] < 1 or k.shape[1] != channels:
            raise ValueError(
                f"kernels_1d[{a}] must have shape (k, C={channels}) with k >= 1, got {tuple(k.shape)}"
            )
    kernel_size = tuple(k.shape[0] for k in kernels)
    strides = as_tuple(stride, ndim, "stride")
    dilations = as_tuple(dilation, ndim, "dilation")
    pads = resolve_padding(padding, x.shape[1:-1], kernel_size, strides, dilations)
    sizes = output_size(x.shape[1:-1], kernel_size, strides, dilations, pads)
    return _separable_passes(x, tuple(kernels), strides, dilations, tuple(pads), sizes)


# Compiled as one program: called eagerly, the d·k slices would otherwise each be a separate dispatch.
@partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _separable_passes(
    x: jax.Array,
    kernels: tuple[jax.Array, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    sizes: tuple[int, ...],
) -> jax.Array:
    """The d 1D passes of ``separable_conv`` on validated, resolved arguments."""
    for a, kernel_1d in enumerate(kernels):
        x = _correlate_along(x, kernel_1d, a + 1, strides[a], dilations[a], pads[a], sizes[a])
    return x


def separable_approximation(kernel: jax.Array, rank: int = 1) -> tuple[jax.Array, jax.Array]:
    """Best rank-``rank`` approximation of a 2D kernel as a sum of separable (outer-product) kernels.

        K ≈ sum_{t < r} col[t] ⊗ row[t],    col[t] = sqrt(σ_t) u_t,    row[t] = sqrt(σ_t) v_t,

    from the SVD ``K = U diag(σ) V^T`` (per channel for a ``(kh, kw, C)`` kernel). By Eckart–Young this is the
    closest rank-r kernel in Frobenius norm, with error ``sqrt(sum_{t >= r} σ_t^2)``; rank 1 of an exactly
    separable kernel is exact. The singular values are split evenly between the two factors.

    Only 2D kernels: a 3-axis array is read as per-channel ``(kh, kw, C)``, not as a 3D spatial kernel
    (a rank-1 3D factorization is a CP decomposition, which has no closed form).

    Args:
      kernel: ``(kh, kw)`` or ``(kh, kw, C)``.
      rank: number of separable terms, ``1 <= rank <= min(kh, kw)``.

    Returns:
      ``(col_factors, row_factors)`` of shapes ``(rank, kh)`` and ``(rank, kw)``, or ``(rank, kh, C)`` and
      ``(rank, kw, C)`` per channel. ``separable_reconstruct`` sums them back to the kernel; for a per-channel
      kernel, ``[col_factors[t], row_factors[t]]`` are the ``kernels_1d`` of ``separable_conv`` for term t.
    """
    kernel = float_array(kernel, "kernel")
    if kernel.ndim not in (2, 3):
        raise ValueError(f"kernel must have shape (kh, kw) or (kh, kw, C), got {tuple(kernel.shape)}")
    kh, kw = kernel.shape[:2]
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= min(kh, kw):
        raise ValueError(f"rank must be an int in [1, min(kh, kw) = {min(kh, kw)}], got {rank!r}")
    if kernel.ndim == 3:
        return _truncated_svd_factors(kernel, rank)
    col, row = _truncated_svd_factors(kernel[..., None], rank)
    return col[..., 0], row[..., 0]


@partial(jax.jit, static_argnums=1)
def _truncated_svd_factors(kernel: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
    """Factors ``sqrt(σ_t) u_t`` ``(r, kh, C)`` and ``sqrt(σ_t) v_t`` ``(r, kw, C)`` of each channel's SVD."""
    u, s, vt = jnp.linalg.svd(jnp.moveaxis(kernel, -1, 0), full_matrices=False)  # per channel: (kh, kw)
    root = jnp.sqrt(s[:, :rank])  # (C, r)
    col = jnp.transpose(u[:, :, :rank] * root[:, None, :], (2, 1, 0))
    row = jnp.transpose(vt[:, :rank, :] * root[:, :, None], (1, 2, 0))
    return col, row


def separable_reconstruct(col_factors: jax.Array, row_factors: jax.Array) -> jax.Array:
    """The kernel ``K[i, j(, c)] = sum_t col[t, i(, c)] · row[t, j(, c)]`` from ``separable_approximation``.

    Args:
      col_factors: ``(r, kh)`` or ``(r, kh, C)``.
      row_factors: ``(r, kw)`` or ``(r, kw, C)``, the same rank and channels.

    Returns:
      ``(kh, kw)`` or ``(kh, kw, C)``.
    """
    col, row = float_array(col_factors, "col_factors"), float_array(row_factors, "row_factors")
    same_ndim = col.ndim in (2, 3) and row.ndim == col.ndim
    if not same_ndim or col.shape[0] != row.shape[0] or col.shape[2:] != row.shape[2:]:
        raise ValueError(
            "col_factors and row_factors must have shapes (r, kh[, C]) and (r, kw[, C]) with equal r and C, "
            f"got {tuple(col.shape)} and {tuple(row.shape)}"
        )
    return jnp.sum(col[:, :, None] * row[:, None, :], axis=0)
