"""FFT convolution against brute-force numpy loops and scipy.signal."""

import math

import jax
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from cnn.ops.fft import _next_fast_len, fft_conv, fft_conv_circular

SHAPES = {1: (2, 10, 3), 2: (2, 7, 6, 3), 3: (1, 5, 4, 6, 2)}
KERNELS = {1: (4,), 2: (3, 2), 3: (2, 3, 3)}
# Every padding form, each flip on a few of them (flipping does not interact with the padding).
PADDING_FLIPS = [("VALID", False), ("SAME", False), ("FULL", False), (2, False), ("pairs", False)]
PADDING_FLIPS += [("VALID", True), ("SAME", True), ("pairs", True)]


def explicit_pads(padding, in_spatial, kernel_size):
    """(low, high) per axis at stride 1: SAME keeps the size (odd pixel high), FULL pads k - 1 each side."""
    if padding == "VALID":
        return [(0, 0)] * len(kernel_size)
    if padding == "FULL":
        return [(k - 1, k - 1) for k in kernel_size]
    if padding == "SAME":
        return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_size]
    if isinstance(padding, int):
        return [(padding, padding)] * len(kernel_size)
    return list(padding)


def pairs_for(ndim):
    return [(2, 0), (1, 3), (0, 1)][:ndim]


def brute_correlate(x, kernel, pads, flip=False):
    """y[b, j, o] = sum_i sum_c xpad[b, j + i, c] * w[i, c, o] (w reversed on the spatial axes when flip)."""
    x = np.pad(np.asarray(x, np.float64), [(0, 0), *pads, (0, 0)])
    kernel = np.asarray(kernel, np.float64)
    kernel_size = kernel.shape[:-2]
    if flip:
        kernel = kernel[(slice(None, None, -1),) * len(kernel_size)]
    out = [n - k + 1 for n, k in zip(x.shape[1:-1], kernel_size, strict=True)]
    y = np.zeros((x.shape[0], *out, kernel.shape[-1]))
    for j in np.ndindex(*out):
        for i in np.ndindex(*kernel_size):
            pos = tuple(jj + ii for jj, ii in zip(j, i, strict=True))
            y[(slice(None), *j)] += x[(slice(None), *pos)] @ kernel[i]
    return y


def random_case(ndim, seed, out_channels=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPES[ndim])
    kernel = rng.standard_normal((*KERNELS[ndim], x.shape[-1], out_channels))
    return x, kernel


@pytest.mark.parametrize(("padding", "flip"), PADDING_FLIPS)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_fft_conv_matches_brute_force_x64(ndim, padding, flip):
    x, kernel = random_case(ndim, seed=ndim)
    padding = pairs_for(ndim) if padding == "pairs" else padding
    expected = brute_correlate(x, kernel, explicit_pads(padding, x.shape[1:-1], kernel.shape[:-2]), flip)
    with jax.enable_x64(True):
        y = fft_conv(x, kernel, padding=padding, flip=flip)
        assert y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_fft_conv_float32(ndim):
    x, kernel = random_case(ndim, seed=10 + ndim)
    x, kernel = x.astype(np.float32), kernel.astype(np.float32)
    expected = brute_correlate(x, kernel, explicit_pads("SAME", x.shape[1:-1], kernel.shape[:-2]))
    y = fft_conv(x, kernel, padding="SAME")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("mode", ["valid", "full"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_fft_conv_matches_scipy(ndim, mode):
    # One image, one output channel: scipy correlates over (*spatial, C); a kernel spanning all C channels
    # in "valid" mode sums over them, as the multichannel correlation does. "full" is checked per channel.
    x, kernel = random_case(ndim, seed=20 + ndim, out_channels=1)
    with jax.enable_x64(True):
        corr = fft_conv(x, kernel, padding=mode.upper())
        conv = fft_conv(x, kernel, padding=mode.upper(), flip=True)
    image, w = x[0], kernel[..., 0]
    if mode == "valid":
        np.testing.assert_allclose(
            corr[0], scipy.signal.correlate(image, w, mode="valid"), rtol=1e-10, atol=1e-10
        )
        w_spatial_flip = w[(slice(None, None, -1),) * ndim]
        np.testing.assert_allclose(
            conv[0], scipy.signal.correlate(image, w_spatial_flip, mode="valid"), rtol=1e-10, atol=1e-10
        )
    else:
        corr_ref = sum(
            scipy.signal.correlate(image[..., c], w[..., c], mode="full") for c in range(x.shape[-1])
        )
        conv_ref = sum(
            scipy.signal.convolve(image[..., c], w[..., c], mode="full") for c in range(x.shape[-1])
        )
        np.testing.assert_allclose(corr[0, ..., 0], corr_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(conv[0, ..., 0], conv_ref, rtol=1e-10, atol=1e-10)


@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_fft_conv_full_is_numpy_convolve(n, k, seed):
    # 1D, one channel: the full convolution is np.convolve; the kernel may be longer than the signal.
    rng = np.random.default_rng(seed)
    signal, taps = rng.standard_normal(n), rng.standard_normal(k)
    with jax.enable_x64(True):
        y = fft_conv(signal[None, :, None], taps[:, None, None], padding="FULL", flip=True)
    np.testing.assert_allclose(y[0, :, 0], np.convolve(signal, taps), rtol=1e-10, atol=1e-10)


def test_fft_conv_grads():
    x, kernel = random_case(2, seed=30)
    with jax.enable_x64(True):
        check_grads(
            jax.jit(lambda x, w: fft_conv(x, w, padding=[(1, 0), (2, 1)], flip=True)),
            (x[:1], kernel),
            order=1,
            modes=("fwd", "rev"),
            eps=1e-4,
        )


def test_fft_conv_under_jit_and_circular_match_sibling_correlate():
    from cnn.ops.conv import convolve, correlate

    x, kernel = random_case(2, seed=31)
    with jax.enable_x64(True):
        for flip, reference in [(False, correlate), (True, convolve)]:
            y = jax.jit(lambda x, w, flip=flip: fft_conv(x, w, padding="SAME", flip=flip))(x, kernel)
            np.testing.assert_allclose(y, reference(x, kernel, padding="SAME"), rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(
                fft_conv_circular(x, kernel, flip=flip),
                reference(x, kernel, padding="SAME", boundary="circular"),
                rtol=1e-10,
                atol=1e-10,
            )


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize(("ndim", "kernel_size"), [(1, (4,)), (1, (10,)), (2, (3, 2)), (3, (2, 3, 3))])
def test_fft_conv_circular_matches_periodic_brute_force(ndim, kernel_size, flip):
    rng = np.random.default_rng(40 + ndim)
    x = rng.standard_normal(SHAPES[ndim])
    kernel = rng.standard_normal((*kernel_size, x.shape[-1], 2))
    # Periodic extension by the SAME padding, then the valid correlation: y[j] = sum_i x[(j+i-lo) mod n] w[i].
    pads = explicit_pads("SAME", x.shape[1:-1], kernel_size)
    periodic = np.pad(x, [(0, 0), *pads, (0, 0)], mode="wrap")
    expected = brute_correlate(periodic, kernel, [(0, 0)] * ndim, flip)
    with jax.enable_x64(True):
        y = fft_conv_circular(x, kernel, flip=flip)
    assert y.shape == (*x.shape[:-1], 2)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_fft_conv_circular_commutes_with_cyclic_shifts():
    # Circular correlation is exactly shift-equivariant: rolling the input rolls the output.
    x, kernel = random_case(2, seed=50)
    with jax.enable_x64(True):
        y = fft_conv_circular(x, kernel)
        y_shifted = fft_conv_circular(np.roll(x, (2, -3), axis=(1, 2)), kernel)
    np.testing.assert_allclose(y_shifted, np.roll(y, (2, -3), axis=(1, 2)), rtol=1e-10, atol=1e-10)


def test_fft_conv_circular_grads():
    x, kernel = random_case(1, seed=51)
    with jax.enable_x64(True):
        check_grads(jax.jit(fft_conv_circular), (x, kernel), order=1, modes=("fwd", "rev"), eps=1e-4)


def test_next_fast_len_is_the_smallest_5_smooth_size():
    smooth = sorted(
        2**a * 3**b * 5**c
        for a in range(12)
        for b in range(8)
        for c in range(6)
        if 2**a * 3**b * 5**c <= 2000
    )
    for n in range(1, 1500):
        assert _next_fast_len(n) == next(m for m in smooth if m >= n)
    assert _next_fast_len(math.prod((7, 11))) == 80


@pytest.mark.parametrize(
    ("x_shape", "kernel_shape", "kwargs", "match"),
    [
        ((1, 8, 3), (3, 2, 2), {}, "channel mismatch"),
        ((1, 8, 8, 3), (3, 3, 2), {}, "x must have shape"),  # 1D kernel, 2D input
        ((1, 8, 3), (3, 3), {}, "kernel must have shape"),
        ((1, 4, 4, 4, 4, 2), (2, 2, 2, 2, 2, 1), {}, "1, 2 or 3 spatial"),
        ((1, 4, 2), (6, 2, 1), {}, "larger than the padded input"),
        ((1, 8, 2), (3, 2, 1), {"padding": "HALF"}, "padding"),
        ((1, 8, 2), (3, 2, 1), {"padding": -1}, "non-negative"),
        ((1, 8, 8, 2), (3, 3, 2, 1), {"padding": [(1, 1)]}, "padding needs 2"),
    ],
)
def test_fft_conv_bad_input(x_shape, kernel_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fft_conv(np.zeros(x_shape), np.zeros(kernel_shape), **kwargs)


@pytest.mark.parametrize(
    ("x_shape", "kernel_shape", "match"),
    [
        ((1, 4, 5, 2), (3, 6, 2, 1), "must not exceed"),
        ((1, 8, 3), (3, 2, 1), "channel mismatch"),
        ((1, 8), (3, 1, 1), "x must have shape"),
    ],
)
def test_fft_conv_circular_bad_input(x_shape, kernel_shape, match):
    with pytest.raises(ValueError, match=match):
        fft_conv_circular(np.zeros(x_shape), np.zeros(kernel_shape))
