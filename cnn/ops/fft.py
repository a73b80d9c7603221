"""Convolution through the Fourier transform (Goodfellow et al., Deep Learning, sec. 9.8).

The convolution theorem: the DFT turns circular convolution into a pointwise product of spectra,

    DFT(x ⊛ w)[f] = X[f] · W[f],          (x ⊛ w)[j] = sum_m x[(j - m) mod L] w[m],

and, for a real kernel, circular *cross-correlation* into a product with the conjugate spectrum,

    DFT(x ⋆ w)[f] = X[f] · conj(W[f]),    (x ⋆ w)[j] = sum_i x[(j + i) mod L] w[i].

With a multichannel kernel ``w[i, c, o]`` the sum over input channels ``c`` is linear, so it moves into the
frequency domain: ``Y[f, o] = sum_c X[f, c] · conj(W[f, c, o])`` (one einsum over complex spectra). The cost
is O(L log L) per transform instead of O(L · k) for the direct sum, which wins for large kernels.

Zero padding against wrap-around. The valid correlation of a (padded) input of length N with a kernel of
length k is ``y[j] = sum_i x[j + i] w[i]`` for ``0 <= j <= N - k``. There ``j + i <= N - 1``, so the circular
correlation at any transform length L >= N never wraps on the outputs we keep: padding the input to L >= N
suffices (not N + k - 1, which the *full* linear convolution would need). L is then rounded up to the next
5-smooth size 2^a 3^b 5^c, for which FFTs are fast.

Every padding form is handled by zero-padding the input first (``args.resolve_padding``) and keeping the
valid part. Only stride 1, dilation 1 and groups 1 are covered: a strided output would compute the full
output and subsample it, which the direct convolution does better.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from cnn.ops.args import Padding, check_kernel, float_array, output_size, pad_boundary, resolve_padding


def _next_fast_len(n: int) -> int:
    """Smallest 5-smooth integer (2^a 3^b 5^c) that is >= n: a transform length the FFT handles fast."""
    m = n
    while True:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 1


def _circular_correlate(x: jax.Array, kernel: jax.Array, fft_shape: tuple[int, ...], flip: bool) -> jax.Array:
    """Circular cross-correlation at transform size ``fft_shape``: ``irfftn(X · conj(W))``, summed over ``c``.

    ``x`` is ``(batch, *spatial, in)`` with spatial sizes <= ``fft_shape`` (zero-filled up to it);
    ``kernel`` is ``(*k, in, out)``, reversed spatially when ``flip`` (convolution is correlation with the
    reversed kernel). Returns ``(batch, *fft_shape, out)``.
    """
    ndim = len(fft_shape)
    x_axes, kernel_axes = tuple(range(1, ndim + 1)), tuple(range(ndim))
    if flip:
        kernel = jnp.flip(kernel, axis=kernel_axes)
    spectrum_x = jnp.fft.rfftn(x, s=fft_shape, axes=x_axes)
    spectrum_w = jnp.fft.rfftn(kernel, s=fft_shape, axes=kernel_axes)
    spectrum_y = jnp.einsum("b...c,...co->b...o", spectrum_x, jnp.conj(spectrum_w))
    return jnp.fft.irfftn(spectrum_y, s=fft_shape, axes=x_axes).astype(jnp.result_type(x, kernel))


# The public functions validate, then run one compiled program (eagerly, each op would be its own dispatch).
@partial(jax.jit, static_argnums=(2, 3))
def _fft_conv_zero_padded(
    x: jax.Array, kernel: jax.Array, pads: tuple[tuple[int, int], ...], flip: bool
) -> jax.Array:
    x = pad_boundary(x, pads)
    padded = x.shape[1:-1]
    y = _circular_correlate(x, kernel, tuple(_next_fast_len(n) for n in padded), flip)
    return y[(slice(None), *(slice(0, n - k + 1) for n, k in zip(padded, kernel.shape[:-2], strict=True)))]


@partial(jax.jit, static_argnums=2)
def _fft_conv_periodic(x: jax.Array, kernel: jax.Array, flip: bool) -> jax.Array:
    y = _circular_correlate(x, kernel, x.shape[1:-1], flip)
    ndim = x.ndim - 2
    return jnp.roll(y, tuple((k - 1) // 2 for k in kernel.shape[:-2]), axis=tuple(range(1, ndim + 1)))


def fft_conv(x: jax.Array, kernel: jax.Array, *, padding: Padding = "VALID", flip: bool = False) -> jax.Array:
    """Cross-correlation (or convolution with ``flip=True``) computed with FFTs.

        y[b, j, o] = sum_i sum_c xpad[b, j + i, c] · w[i, c, o]            (flip=False, as ``correlate``)
        y[b, j, o] = sum_i sum_c xpad[b, j + i, c] · w[k - 1 - i, c, o]    (flip=True, as ``convolve``)

    with ``xpad`` the input zero-padded by ``padding`` and ``j`` over the valid range ``0 <= j <= N - k``
    (``N`` the padded size) on each spatial axis. Computed as ``irfftn(X · conj(W))`` with the input and
    kernel spectra taken at the next 5-smooth size >= N per axis and the first ``N - k + 1`` outputs kept
    (see the module docstring for why no wrap-around reaches them).

    Args:
      x: ``(batch, *spatial, in_channels)``, 1 to 3 spatial axes, real floating point.
      kernel: ``(*kernel_spatial, in_channels, out_channels)``.
      padding: ``"VALID" | "SAME" | "FULL" | int | [(low, high), ...]`` (stride 1, dilation 1).
      flip: False for cross-correlation, True for true convolution.

    Returns:
      ``(batch, *out_spatial, out_channels)``, equal to ``correlate(x, kernel, padding=padding)`` (or
      ``convolve``) up to float rounding.
    """
    x, kernel = float_array(x, "x"), float_array(kernel, "kernel")
    ndim = check_kernel(x, kernel)
    ones = (1,) * ndim
    kernel_size = kernel.shape[:ndim]
    pads = resolve_padding(padding, x.shape[1:-1], kernel_size, ones, ones)
    output_size(x.shape[1:-1], kernel_size, ones, ones, pads)  # raises if the kernel does not fit
    return _fft_conv_zero_padded(x, kernel, tuple(pads), bool(flip))


def fft_conv_circular(x: jax.Array, kernel: jax.Array, *, flip: bool = False) -> jax.Array:
    """Circular ("SAME" with periodic boundary) correlation, or convolution with ``flip=True``, by FFT.

        y[b, j, o] = sum_i sum_c x[b, (j + i - lo) mod N, c] · w[i, c, o],   lo = (k - 1) // 2,

    per spatial axis (``w`` reversed when ``flip``), with output size N = input size. This is what the DFT
    computes natively at transform size exactly N, with no zero padding: the product ``X · conj(W)`` is the
    circular correlation with origin 0, rolled by ``lo`` to centre the kernel as ``padding="SAME"`` does.
    It equals ``correlate(x, kernel, padding="SAME", boundary="circular")`` (``convolve`` when ``flip``).

    Args:
      x: ``(batch, *spatial, in_channels)``, 1 to 3 spatial axes, real floating point.
      kernel: ``(*kernel_spatial, in_channels, out_channels)``, no larger than the input on any axis.
      flip: False for cross-correlation, True for true convolution.

    Returns:
      ``(batch, *spatial, out_channels)``.
    """
    x, kernel = float_array(x, "x"), float_array(kernel, "kernel")
    ndim = check_kernel(x, kernel)
    spatial = x.shape[1:-1]
    kernel_size = kernel.shape[:ndim]
    if any(k > n for k, n in zip(kernel_size, spatial, strict=True)):
        raise ValueError(
            f"kernel spatial size {tuple(kernel_size)} must not exceed the input spatial size "
            f"{tuple(spatial)} for circular correlation"
        )
    return _fft_conv_periodic(x, kernel, bool(flip))
