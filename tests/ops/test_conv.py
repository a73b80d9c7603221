"""``cnn.ops.conv`` against independent references.

References: a brute-force loop of the textbook formula (float64), ``scipy.signal`` for single channels,
``numpy.pad`` for the boundary modes, and identities: the adjoint ``<correlate(x, w), y> = <x, conv_transpose(y,
w)>``, the gradient, linearity, translation equivariance. CPU lowerings: test_lowering.py; errors: test_conv_errors.py.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from cnn.ops.conv import conv_matrix, conv_transpose, convolve, correlate
from tests.reference import assert_close, normal, per_axis

# ----------------------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------------------


def expected_pads(padding, in_spatial, kernel_size, stride, dilation):
    """The padding forms as defined: SAME gives ceil(n / s) outputs, the odd pixel of padding on the high side."""
    ndim = len(in_spatial)
    k_eff = [d * (k - 1) + 1 for k, d in zip(kernel_size, per_axis(dilation, ndim), strict=True)]
    if padding == "VALID":
        return [(0, 0)] * ndim
    if padding == "FULL":
        return [(k - 1, k - 1) for k in k_eff]
    if padding == "SAME":
        pads = []
        for n, k, s in zip(in_spatial, k_eff, per_axis(stride, ndim), strict=True):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * ndim
    return [tuple(p) for p in padding]


def brute_correlate(x, w, stride=1, pads=None, dilation=1, groups=1, flip=False):
    """out[n, i, o] = sum_k sum_c x_pad[n, i*s + k*d, g(o)*C_g + c] * w[k, c, o], entry by entry, float64.

    ``flip=True`` is the true convolution: ``x_pad[n, i*s + (K - 1 - k)*d, ...]``.
    """
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    ndim = w.ndim - 2
    stride, dilation = per_axis(stride, ndim), per_axis(dilation, ndim)
    x_pad = np.pad(x, [(0, 0), *(pads or [(0, 0)] * ndim), (0, 0)])
    kernel_size, (in_per_group, out_channels) = w.shape[:ndim], w.shape[ndim:]
    out_per_group = out_channels // groups
    out_spatial = [
        (n - d * (k - 1) - 1) // s + 1
        for n, k, s, d in zip(x_pad.shape[1:-1], kernel_size, stride, dilation, strict=True)
    ]
    out = np.zeros((x.shape[0], *out_spatial, out_channels))
    for i in itertools.product(*map(range, out_spatial)):
        for o in range(out_channels):
            g = o // out_per_group
            for k in itertools.product(*map(range, kernel_size)):
                tap = [K - 1 - kk for kk, K in zip(k, kernel_size, strict=True)] if flip else k
                pos = tuple(ii * s + t * d for ii, t, s, d in zip(i, tap, stride, dilation, strict=True))
                for c in range(in_per_group):
                    out[(slice(None), *i, o)] += x_pad[(slice(None), *pos, g * in_per_group + c)] * w[(*k, c, o)]
    return out


def brute_transpose(y, w, in_spatial, stride=1, pads=None, dilation=1, groups=1):
    """Scatter each output back through the kernel: x[n, i*s + k*d - low, g(o)*C_g + c] += y[n, i, o] w[k, c, o]."""
    y, w = np.asarray(y, np.float64), np.asarray(w, np.float64)
    ndim = w.ndim - 2
    stride, dilation = per_axis(stride, ndim), per_axis(dilation, ndim)
    low = [lo for lo, _ in pads or [(0, 0)] * ndim]
    kernel_size, (in_per_group, out_channels) = w.shape[:ndim], w.shape[ndim:]
    out_per_group = out_channels // groups
    x = np.zeros((y.shape[0], *in_spatial, in_per_group * groups))
    for i in itertools.product(*map(range, y.shape[1:-1])):
        for k in itertools.product(*map(range, kernel_size)):
            p = tuple(ii * s + kk * d - lo for ii, kk, s, d, lo in zip(i, k, stride, dilation, low, strict=True))
            if not all(0 <= pp < n for pp, n in zip(p, in_spatial, strict=True)):
                continue
            for o in range(out_channels):
                g = o // out_per_group
                for c in range(in_per_group):
                    x[(slice(None), *p, g * in_per_group + c)] += y[(slice(None), *i, o)] * w[(*k, c, o)]
    return x


# ----------------------------------------------------------------------------------------------------------
# correlate / convolve: values
# ----------------------------------------------------------------------------------------------------------

SCIPY_CASES = [
    # (input spatial, kernel spatial): SAME only with odd kernels (where scipy's centring agrees).
    ((11,), (4,), ("valid", "full")),
    ((11,), (5,), ("valid", "full", "same")),
    ((7, 6), (3, 4), ("valid", "full")),
    ((7, 6), (3, 5), ("valid", "full", "same")),
    ((5, 4, 6), (2, 3, 3), ("valid", "full")),
    ((5, 4, 6), (3, 1, 3), ("valid", "full", "same")),
]


@pytest.mark.parametrize(
    ("in_spatial", "kernel_size", "mode"),
    [(s, k, m) for s, k, modes in SCIPY_CASES for m in modes],
)
def test_single_channel_matches_scipy(in_spatial, kernel_size, mode):
    rng = np.random.default_rng(0)
    x, w = normal(rng, *in_spatial), normal(rng, *kernel_size)
    padding = mode.upper()
    got_corr = correlate(x[None, ..., None], w[..., None, None], padding=padding)[0, ..., 0]
    got_conv = convolve(x[None, ..., None], w[..., None, None], padding=padding)[0, ..., 0]
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert_close(got_corr, scipy.signal.correlate(x64, w64, mode=mode, method="direct"))
    assert_close(got_conv, scipy.signal.convolve(x64, w64, mode=mode, method="direct"))


BRUTE_CASES = [
    # (batch, in_spatial, kernel_size, in_channels, out_channels, groups, stride, dilation, padding)
    (2, (9,), (3,), 3, 4, 1, 1, 1, "VALID"),
    (2, (9,), (4,), 2, 3, 1, 2, 1, "SAME"),
    (1, (10,), (3,), 4, 6, 2, 3, 2, "FULL"),
    (2, (8,), (2,), 3, 6, 3, 1, 3, 2),
    (1, (9,), (3,), 2, 2, 1, 2, 1, [(0, 3)]),
    (2, (6, 7), (3, 2), 3, 2, 1, 1, 1, "VALID"),
    (1, (7, 8), (3, 3), 4, 4, 4, (2, 1), 1, "SAME"),
    (1, (6, 6), (2, 4), 2, 4, 1, 2, 1, "SAME"),
    (1, (5, 6), (3, 2), 4, 6, 2, (1, 2), (2, 1), "FULL"),
    (1, (6, 5), (3, 3), 2, 6, 2, 2, 1, [(1, 0), (2, 1)]),
    (2, (5, 5), (3, 3), 3, 6, 3, 1, 2, 1),
    (1, (4, 5, 4), (2, 3, 2), 2, 3, 1, 1, 1, "VALID"),
    (1, (5, 4, 5), (3, 2, 3), 2, 4, 2, (2, 1, 2), 1, "SAME"),
    (1, (4, 4, 4), (2, 2, 2), 2, 2, 2, 1, (1, 2, 1), [(1, 0), (0, 1), (1, 1)]),
]


@pytest.mark.parametrize(
    ("batch", "in_spatial", "kernel_size", "cin", "cout", "groups", "stride", "dilation", "padding"), BRUTE_CASES
)
def test_matches_brute_force(batch, in_spatial, kernel_size, cin, cout, groups, stride, dilation, padding):
    rng = np.random.default_rng(1)
    x, w = normal(rng, batch, *in_spatial, cin), normal(rng, *kernel_size, cin // groups, cout)
    pads = expected_pads(padding, in_spatial, kernel_size, stride, dilation)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert_close(correlate(x, w, **args), brute_correlate(x, w, stride, pads, dilation, groups))
    assert_close(convolve(x, w, **args), brute_correlate(x, w, stride, pads, dilation, groups, flip=True))


@pytest.mark.parametrize(
    ("n", "k", "s", "pads"),
    [(8, 4, 1, (1, 2)), (7, 4, 2, (1, 2)), (8, 3, 2, (0, 1)), (8, 4, 3, (1, 1)), (5, 3, 3, (0, 1))],
)
def test_same_padding_output_size_and_extra_pixel_high(n, k, s, pads):
    rng = np.random.default_rng(2)
    x, w = normal(rng, 1, n, 1), normal(rng, k, 1, 1)
    out = correlate(x, w, stride=s, padding="SAME")
    assert out.shape == (1, math.ceil(n / s), 1)
    assert_close(out, brute_correlate(x, w, s, [pads]))


@pytest.mark.parametrize(
    ("boundary", "numpy_mode"),
    [("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap"), ("zeros", "constant")],
)
@pytest.mark.parametrize(
    ("in_spatial", "kernel_size", "stride", "padding"),
    [
        ((9,), (3,), 1, "SAME"),
        ((8,), (4,), 2, "SAME"),
        ((6, 7), (3, 3), 1, 2),
        ((6, 5), (2, 3), (2, 1), [(1, 0), (2, 1)]),
    ],
)
def test_boundary_matches_numpy_pad(boundary, numpy_mode, in_spatial, kernel_size, stride, padding):
    rng = np.random.default_rng(3)
    x, w = normal(rng, 2, *in_spatial, 2), normal(rng, *kernel_size, 2, 3)
    pads = expected_pads(padding, in_spatial, kernel_size, stride, 1)
    x_pad = np.pad(x, [(0, 0), *pads, (0, 0)], mode=numpy_mode)
    args = dict(stride=stride, padding=padding, boundary=boundary)
    assert_close(correlate(x, w, **args), brute_correlate(x_pad, w, stride))
    assert_close(convolve(x, w, **args), brute_correlate(x_pad, w, stride, flip=True))


def test_mixed_dtypes_and_jit():
    rng = np.random.default_rng(4)
    x, w = normal(rng, 1, 6, 6, 2), normal(rng, 3, 3, 2, 2, dtype=np.float16)
    jitted = jax.jit(correlate, static_argnames=("stride", "padding", "dilation", "groups", "boundary"))
    out = jitted(x, w, stride=2, padding="SAME")
    assert out.dtype == jnp.float32
    assert_close(out, brute_correlate(x, w, 2, expected_pads("SAME", (6, 6), (3, 3), 2, 1)), rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# conv_transpose: adjoint, brute-force scatter, gradient
# ----------------------------------------------------------------------------------------------------------

ADJOINT_CASES = [
    # (in_spatial, kernel_size, in_channels, out_channels, groups, stride, dilation, padding)
    ((9,), (3,), 2, 3, 1, 1, 1, "VALID"),
    ((10,), (3,), 2, 3, 1, 2, 1, "VALID"),  # stride leaves the last input entry unread
    ((9,), (4,), 3, 3, 3, 2, 1, "SAME"),
    ((10,), (3,), 4, 2, 2, 3, 2, "FULL"),
    ((8,), (2,), 2, 4, 2, 2, 1, 3),
    ((9,), (3,), 1, 2, 1, 2, 2, [(6, 0)]),  # low padding beyond the kernel extent: the adjoint crops
    ((6, 7), (3, 3), 2, 3, 1, (2, 1), 1, "SAME"),
    ((7, 6), (2, 3), 4, 4, 4, 2, (1, 2), "VALID"),
    ((6, 6), (3, 2), 3, 6, 3, (3, 2), 1, [(1, 2), (0, 1)]),
    ((5, 6), (3, 3), 4, 6, 2, 1, 2, "FULL"),
    ((5, 4, 5), (2, 2, 3), 2, 2, 2, (2, 1, 2), 1, "SAME"),
    ((4, 5, 4), (3, 2, 2), 2, 3, 1, 1, (1, 2, 1), [(0, 1), (1, 0), (2, 2)]),
]


@pytest.mark.parametrize(
    ("in_spatial", "kernel_size", "cin", "cout", "groups", "stride", "dilation", "padding"), ADJOINT_CASES
)
def test_conv_transpose_is_adjoint_and_scatters(in_spatial, kernel_size, cin, cout, groups, stride, dilation, padding):
    rng = np.random.default_rng(6)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    with jax.enable_x64(True):
        x = normal(rng, 2, *in_spatial, cin, dtype=np.float64)
        w = normal(rng, *kernel_size, cin // groups, cout, dtype=np.float64)
        y_shape = correlate(x, w, **args).shape
        y = normal(rng, *y_shape, dtype=np.float64)
        x_adj = conv_transpose(y, w, **args, input_shape=x.shape)
        assert x_adj.shape == x.shape
        np.testing.assert_allclose(float(jnp.vdot(correlate(x, w, **args), y)), float(jnp.vdot(x, x_adj)), rtol=1e-10)
        pads = expected_pads(padding, in_spatial, kernel_size, stride, dilation)
        np.testing.assert_allclose(
            x_adj, brute_transpose(y, w, in_spatial, stride, pads, dilation, groups), rtol=1e-10, atol=1e-10
        )


@pytest.mark.parametrize(
    ("n_small", "n_large", "k", "s", "padding"),
    [(7, 8, 3, 2, "VALID"), (5, 6, 3, 2, "SAME"), (4, 6, 2, 3, "SAME"), (2, 4, 3, 3, "FULL"), (5, 6, 3, 2, 1)],
)
def test_conv_transpose_input_shape_disambiguates(n_small, n_large, k, s, padding):
    """Both input sizes give the same output size; the default is the smaller one; input_shape picks either."""
    rng = np.random.default_rng(7)
    w = normal(rng, k, 2, 3, dtype=np.float64)
    with jax.enable_x64(True):
        out_sizes = {correlate(np.zeros((1, n, 2)), w, stride=s, padding=padding).shape[1] for n in (n_small, n_large)}
        assert len(out_sizes) == 1
        assert correlate(np.zeros((1, n_small - 1, 2)), w, stride=s, padding=padding).shape[1] not in out_sizes
        y = normal(rng, 2, out_sizes.pop(), 3, dtype=np.float64)
        assert conv_transpose(y, w, stride=s, padding=padding).shape == (2, n_small, 2)
        for n in (n_small, n_large):
            x = normal(rng, 2, n, 2, dtype=np.float64)
            x_adj = conv_transpose(y, w, stride=s, padding=padding, input_shape=x.shape)
            np.testing.assert_allclose(
                float(jnp.vdot(correlate(x, w, stride=s, padding=padding), y)), float(jnp.vdot(x, x_adj)), rtol=1e-10
            )


@pytest.mark.parametrize(
    ("in_spatial", "kernel_size", "cin", "cout", "groups", "stride", "dilation", "padding"), ADJOINT_CASES[1::3]
)
def test_gradient_of_correlate_is_conv_transpose(in_spatial, kernel_size, cin, cout, groups, stride, dilation, padding):
    rng = np.random.default_rng(8)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x, w = normal(rng, 2, *in_spatial, cin), normal(rng, *kernel_size, cin // groups, cout)
    y = normal(rng, *correlate(x, w, **args).shape)
    grad = jax.grad(lambda x: jnp.sum(correlate(x, w, **args) * y))(x)
    assert_close(grad, conv_transpose(y, w, **args, input_shape=x.shape), rtol=1e-4)


@pytest.mark.parametrize(
    ("in_spatial", "kernel_size", "cin", "cout", "groups", "stride", "dilation", "padding", "boundary"),
    [
        ((7,), (3,), 2, 3, 1, 2, 1, "SAME", "zeros"),
        ((5, 6), (3, 2), 2, 4, 2, 1, (2, 1), 1, "reflect"),
        ((5, 4), (3, 3), 3, 3, 3, 2, 1, "SAME", "circular"),
        ((4, 3, 4), (2, 2, 2), 2, 2, 1, 1, 1, "FULL", "replicate"),
    ],
)
def test_check_grads(in_spatial, kernel_size, cin, cout, groups, stride, dilation, padding, boundary):
    rng = np.random.default_rng(9)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    with jax.enable_x64(True):
        x = jnp.asarray(normal(rng, 1, *in_spatial, cin, dtype=np.float64))
        w = jnp.asarray(normal(rng, *kernel_size, cin // groups, cout, dtype=np.float64))
        y = jnp.asarray(normal(rng, *correlate(x, w, **args).shape, dtype=np.float64))
        for f in (correlate, convolve):
            check_grads(
                lambda x, w, f=f: f(x, w, **args, boundary=boundary), (x, w), order=1, modes=("fwd", "rev"), eps=1e-4
            )
        # Reverse mode only: it differentiates through the transposed lowering (forward mode adds little, slowly).
        check_grads(
            lambda y, w: conv_transpose(y, w, **args, input_shape=x.shape), (y, w), order=1, modes=("rev",), eps=1e-4
        )


# ----------------------------------------------------------------------------------------------------------
# conv_matrix
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_shape", "kernel_size", "cout", "stride", "dilation", "padding"),
    [
        ((9, 1), (3,), 1, 1, 1, "VALID"),
        ((8, 2), (4,), 3, 2, 1, "SAME"),
        ((7, 2), (3,), 2, 1, 2, "FULL"),
        ((5, 6, 2), (3, 2), 2, (2, 1), 1, [(1, 0), (2, 1)]),
        ((5, 5, 1), (3, 3), 3, 1, (1, 2), 1),
        ((4, 3, 4, 2), (2, 2, 3), 2, (1, 1, 2), 1, "SAME"),
    ],
)
def test_conv_matrix_matches_brute_force(input_shape, kernel_size, cout, stride, dilation, padding):
    rng = np.random.default_rng(10)
    w, x = normal(rng, *kernel_size, input_shape[-1], cout), normal(rng, *input_shape)
    matrix = conv_matrix(w, input_shape, stride=stride, padding=padding, dilation=dilation)
    pads = expected_pads(padding, input_shape[:-1], kernel_size, stride, dilation)
    expected = brute_correlate(x[None], w, stride, pads, dilation)
    assert matrix.shape == (expected.size, x.size)
    assert_close(matrix @ x.ravel(), expected.ravel())


def test_conv_matrix_1d_is_toeplitz():
    rng = np.random.default_rng(11)
    w = normal(rng, 4, 1, 1)
    low = 2
    matrix = np.asarray(conv_matrix(w, (9, 1), padding=[(low, 1)]))
    # M[i, p] = w[p - i + low] inside the band, 0 outside: constant along every diagonal.
    for i, p in itertools.product(*map(range, matrix.shape)):
        expected = w[p - i + low, 0, 0] if 0 <= p - i + low < 4 else 0.0
        assert matrix[i, p] == expected
    np.testing.assert_array_equal(matrix[1:, 1:], matrix[:-1, :-1])


def test_conv_matrix_2d_is_doubly_block_toeplitz():
    rng = np.random.default_rng(12)
    w = normal(rng, 2, 3, 1, 1)
    blocks = np.asarray(conv_matrix(w, (5, 6, 1), padding=1)).reshape(6, 6, 5, 6)  # [i1, i2, p1, p2]
    # Block (i1, p1) depends only on p1 - i1 (block Toeplitz) and each block is Toeplitz in (i2, p2).
    np.testing.assert_array_equal(blocks[1:, :, 1:], blocks[:-1, :, :-1])
    np.testing.assert_array_equal(blocks[:, 1:, :, 1:], blocks[:, :-1, :, :-1])


# ----------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------


@st.composite
def conv_problems(draw):
    ndim = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel_size = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = draw(st.integers(1, 2))
    stride = draw(st.integers(1, 2))
    in_spatial = tuple(dilation * (k - 1) + 1 + draw(st.integers(0, 3)) for k in kernel_size)
    padding = draw(st.sampled_from(["VALID", "SAME", "FULL", 1]))
    seed = draw(st.integers(0, 2**16))
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return in_spatial, kernel_size, cin, cout, args, np.random.default_rng(seed)


@settings(max_examples=15, deadline=None)
@given(conv_problems(), st.floats(-2, 2), st.floats(-2, 2))
def test_linear_in_input_and_kernel(problem, a, b):
    in_spatial, kernel_size, cin, cout, args, rng = problem
    x1, x2 = normal(rng, 1, *in_spatial, cin), normal(rng, 1, *in_spatial, cin)
    w1, w2 = (
        normal(rng, *kernel_size, cin // args["groups"], cout),
        normal(rng, *kernel_size, cin // args["groups"], cout),
    )
    assert_close(
        correlate(a * x1 + b * x2, w1, **args),
        a * np.asarray(correlate(x1, w1, **args)) + b * np.asarray(correlate(x2, w1, **args)),
        rtol=1e-4,
    )
    assert_close(
        correlate(x1, a * w1 + b * w2, **args),
        a * np.asarray(correlate(x1, w1, **args)) + b * np.asarray(correlate(x1, w2, **args)),
        rtol=1e-4,
    )


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 2), st.integers(0, 2**16), st.data())
def test_circular_correlation_is_translation_equivariant(ndim, seed, data):
    rng = np.random.default_rng(seed)
    in_spatial = tuple(data.draw(st.integers(3, 7)) for _ in range(ndim))
    kernel_size = tuple(data.draw(st.integers(1, n)) for n in in_spatial)
    shift = tuple(data.draw(st.integers(-n, n)) for n in in_spatial)
    axes = tuple(range(1, ndim + 1))
    x, w = normal(rng, 1, *in_spatial, 2), normal(rng, *kernel_size, 2, 3)
    out = correlate(x, w, padding="SAME", boundary="circular")
    shifted = correlate(np.roll(x, shift, axis=axes), w, padding="SAME", boundary="circular")
    assert_close(shifted, np.roll(out, shift, axis=axes))
