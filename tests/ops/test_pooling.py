"""Pooling ops against brute-force numpy loops of the textbook formulas (Goodfellow 9.3) and scipy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from jax.test_util import check_grads

from cnn.ops.pooling import (
    adaptive_pool,
    avg_pool,
    channel_pool,
    gaussian_window,
    global_pool,
    lp_pool,
    max_pool,
    weighted_pool,
)

# (spatial shape, window, stride, padding): 1D/2D/3D, odd sizes, overlapping and non-overlapping windows.
CASES = [
    ((9,), 3, None, "VALID"),
    ((10,), 4, 3, "SAME"),
    ((7,), 3, 2, 1),
    ((7,), 3, 1, "FULL"),
    ((7, 6), (3, 2), (2, 1), "SAME"),
    ((5, 5), 2, None, "VALID"),
    ((6, 7), 3, 2, [(1, 0), (2, 1)]),
    ((5, 4, 3), 2, 1, "VALID"),
    ((5, 5, 4), (3, 2, 2), 2, "SAME"),
]


def _rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _explicit_pads(padding, spatial, window, stride):
    """(low, high) per axis, written out from the definitions (SAME: out = ceil(n / s), extra pixel high)."""
    if padding == "VALID":
        return [(0, 0)] * len(spatial)
    if padding == "FULL":
        return [(w - 1, w - 1) for w in window]
    if padding == "SAME":
        pads = []
        for n, w, s in zip(spatial, window, stride, strict=True):
            total = max((-(-n // s) - 1) * s + w - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * len(spatial)
    return [tuple(p) for p in padding]


def _geometry(spatial, window, stride, padding):
    ndim = len(spatial)
    window = (window,) * ndim if isinstance(window, int) else tuple(window)
    stride = window if stride is None else (stride,) * ndim if isinstance(stride, int) else tuple(stride)
    return window, stride, _explicit_pads(padding, spatial, window, stride)


def _ref_pool(x, window, stride, pads, reduce, fill=0.0, weights=None):
    """Loop over output positions; ``reduce`` maps a (batch, window size, C) block to (batch, C)."""
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
    out_spatial = [(xp.shape[1 + a] - w) // s + 1 for a, (w, s) in enumerate(zip(window, stride, strict=True))]
    out = np.empty((x.shape[0], *out_spatial, x.shape[-1]), np.float64)
    for idx in np.ndindex(*out_spatial):
        block = xp[(slice(None), *(slice(i * s, i * s + w) for i, w, s in zip(idx, window, stride, strict=True)))]
        if weights is not None:
            block = block * weights[None, ..., None]
        out[(slice(None), *idx, slice(None))] = reduce(block.reshape(x.shape[0], -1, x.shape[-1]))
    return out


@pytest.mark.parametrize(("spatial", "window", "stride", "padding"), CASES)
def test_max_pool_matches_loop(spatial, window, stride, padding):
    x = _rand((2, *spatial, 3))
    geo = _geometry(spatial, window, stride, padding)
    expected = _ref_pool(x, *geo, lambda b: b.max(axis=1), fill=-np.inf)
    np.testing.assert_array_equal(max_pool(jnp.asarray(x), window, stride=stride, padding=padding), expected)


@pytest.mark.parametrize(
    ("spatial", "window", "stride", "padding"),
    [((11,), 4, None, "VALID"), ((9, 7), (2, 3), None, "VALID"), *CASES],
)
def test_max_pool_gradient_goes_to_the_first_maximum(spatial, window, stride, padding):
    """The gradient of sum(g · y) adds g(i) at the first maximum of window i in row-major order (where windows
    overlap, an input collects from every window it wins); small integers make ties frequent."""
    x = np.random.default_rng(2).integers(0, 3, size=(2, *spatial, 3)).astype(np.float32)
    window, stride, pads = _geometry(spatial, window, stride, padding)
    g = _rand(_ref_pool(x, window, stride, pads, lambda b: b.max(axis=1), fill=-np.inf).shape, seed=3)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=-np.inf)
    expected_padded = np.zeros_like(xp)
    for idx in np.ndindex(*g.shape[1:-1]):
        corner = [i * s for i, s in zip(idx, stride, strict=True)]
        for b, c in np.ndindex(x.shape[0], x.shape[-1]):
            block = xp[(b, *(slice(k, k + w) for k, w in zip(corner, window, strict=True)), c)]
            first = np.unravel_index(np.argmax(block), block.shape)  # numpy's argmax: the first maximum
            expected_padded[(b, *(k + f for k, f in zip(corner, first, strict=True)), c)] += g[(b, *idx, c)]
    expected = expected_padded[(slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial, strict=True)))]
    got = jax.grad(lambda v: jnp.sum(jnp.asarray(g) * max_pool(v, window, stride=stride, padding=pads)))(
        jnp.asarray(x))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_max_pool_propagates_nan():
    """A NaN in a window makes its maximum NaN, differentiated or not (NaN checks of training rely on it)."""
    x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 2, 0].set(jnp.nan)
    for pooled in (max_pool(x, 2), jax.jvp(lambda v: max_pool(v, 2), (x,), (jnp.ones_like(x),))[0]):
        assert np.isnan(pooled[0, 0, 1, 0]) and np.isfinite(np.delete(np.ravel(pooled), 1)).all()


@pytest.mark.parametrize(("spatial", "window", "stride", "padding"), CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_matches_loop(spatial, window, stride, padding, count_include_pad):
    x = _rand((2, *spatial, 3), seed=1)
    geo = _geometry(spatial, window, stride, padding)
    total = _ref_pool(x, *geo, lambda b: b.sum(axis=1))
    if count_include_pad:
        expected = total / math.prod(geo[0])
    else:  # the number of real elements: the same loop over an indicator of the input
        expected = total / _ref_pool(np.ones((1, *spatial, 1)), *geo, lambda b: b.sum(axis=1))
    got = avg_pool(jnp.asarray(x), window, stride=stride, padding=padding, count_include_pad=count_include_pad)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_avg_pool_count_include_pad_differs_only_at_the_border():
    x = jnp.ones((1, 5, 5, 1))
    np.testing.assert_allclose(avg_pool(x, 3, stride=1, padding="SAME", count_include_pad=False), 1.0)
    included = np.asarray(avg_pool(x, 3, stride=1, padding="SAME"))[0, :, :, 0]
    np.testing.assert_allclose(included[1:-1, 1:-1], 1.0)
    np.testing.assert_allclose([included[0, 0], included[0, 2]], [4 / 9, 6 / 9], rtol=1e-6)


@pytest.mark.parametrize(("spatial", "window", "stride", "padding"), CASES)
@pytest.mark.parametrize("p", [2.0, 3.0])
def test_lp_pool_matches_loop(spatial, window, stride, padding, p):
    x = _rand((2, *spatial, 2), seed=2)
    geo = _geometry(spatial, window, stride, padding)
    expected = _ref_pool(x.astype(np.float64), *geo, lambda b: (np.abs(b) ** p).sum(axis=1) ** (1 / p))
    got = lp_pool(jnp.asarray(x), window, p=p, stride=stride, padding=padding)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def test_l2_pool_is_the_euclidean_norm_of_the_window():
    x = _rand((3, 8, 4), seed=3)
    expected = np.linalg.norm(x.reshape(3, 4, 2, 4), axis=2)
    np.testing.assert_allclose(lp_pool(jnp.asarray(x), 2), expected, rtol=1e-5)


def test_lp_pool_gradient_at_an_all_zero_window_is_zero_not_nan():
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 2, 2, 0], x[0, 3, 2, 0] = 3.0, -4.0  # window (1, 1) of the 2x2 pooling: norm 5; the others all zero
    for p in (2.0, 3.0, 0.5):
        grad = np.asarray(jax.grad(lambda v, p=p: lp_pool(v, 2, p=p).sum())(jnp.asarray(x)))
        assert np.isfinite(grad).all()
        np.testing.assert_array_equal(grad[0, :2, :, 0], 0.0)
        np.testing.assert_array_equal(grad[0, :, :2, 0], 0.0)
    grad = np.asarray(jax.grad(lambda v: lp_pool(v, 2).sum())(jnp.asarray(x)))  # d||v|| / dv = v / ||v||
    np.testing.assert_allclose(grad[0, 2:, 2:, 0], [[3 / 5, 0], [-4 / 5, 0]], rtol=1e-6)


@pytest.mark.parametrize(("spatial", "window", "stride", "padding"), CASES)
def test_weighted_pool_matches_loop(spatial, window, stride, padding):
    x = _rand((2, *spatial, 3), seed=4)
    win, _, _ = _geometry(spatial, window, stride, padding)
    weights = _rand(win, seed=5)
    expected = _ref_pool(x, *_geometry(spatial, win, stride, padding), lambda b: b.sum(axis=1), weights=weights)
    got = weighted_pool(jnp.asarray(x), jnp.asarray(weights), stride=stride, padding=padding)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("size", "sigma"), [(5, 1.0), ((3, 4), (0.8, 1.5)), ((5, 3, 2), 1.2)])
def test_gaussian_window_is_normalized_outer_product_of_scipy_gaussians(size, sigma):
    sizes = (size,) if isinstance(size, int) else size
    sigmas = (sigma,) * len(sizes) if isinstance(sigma, float) else sigma
    expected = np.ones(())
    for n, sd in zip(sizes, sigmas, strict=True):
        g = scipy.signal.windows.gaussian(n, sd)
        expected = np.multiply.outer(expected, g / g.sum())
    window = gaussian_window(size, sigma)
    assert window.shape == sizes
    np.testing.assert_allclose(window, expected, rtol=1e-6)
    np.testing.assert_allclose(float(window.sum()), 1.0, rtol=1e-6)


def _ref_adaptive(x, out_spatial, reduce):
    """Loop over output bins [floor(i n / m), ceil((i + 1) n / m)) per axis."""
    out = np.empty((x.shape[0], *out_spatial, x.shape[-1]))
    for idx in np.ndindex(*out_spatial):
        box = tuple(
            slice(math.floor(i * n / m), math.ceil((i + 1) * n / m))
            for i, n, m in zip(idx, x.shape[1:-1], out_spatial, strict=True)
        )
        block = x[(slice(None), *box, slice(None))].reshape(x.shape[0], -1, x.shape[-1])
        out[(slice(None), *idx, slice(None))] = block.max(axis=1) if reduce == "max" else block.mean(axis=1)
    return out


@pytest.mark.parametrize(
    ("spatial", "out"),
    [((7,), 3), ((10,), 4), ((5,), 5), ((3,), 5), ((7, 10), (3, 4)), ((6, 6), 4), ((5, 3, 4), (2, 5, 4))],
)
@pytest.mark.parametrize("reduce", ["max", "avg"])
def test_adaptive_pool_matches_floor_ceil_bins(spatial, out, reduce):
    x = _rand((2, *spatial, 3), seed=6)
    out_spatial = (out,) * len(spatial) if isinstance(out, int) else out
    got = adaptive_pool(jnp.asarray(x), out, reduce)
    assert got.shape == (2, *out_spatial, 3)
    np.testing.assert_allclose(got, _ref_adaptive(x, out_spatial, reduce), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduce", ["max", "avg"])
def test_channel_pool_matches_loop(reduce):
    x = _rand((2, 3, 4, 12), seed=7)
    for g in (1, 3, 4, 12):
        expected = np.empty((2, 3, 4, 12 // g))
        for j in range(12 // g):
            group = x[..., j * g : (j + 1) * g]
            expected[..., j] = group.max(axis=-1) if reduce == "max" else group.mean(axis=-1)
        np.testing.assert_allclose(channel_pool(jnp.asarray(x), g, reduce), expected, rtol=1e-6, atol=1e-7)
    dense = _rand((5, 6), seed=8)  # maxout on a dense layer
    np.testing.assert_allclose(channel_pool(jnp.asarray(dense), 2, "max"), dense.reshape(5, 3, 2).max(-1))


@pytest.mark.parametrize("spatial", [(7,), (4, 5), (3, 2, 4)])
def test_global_pool(spatial):
    x = _rand((2, *spatial, 3), seed=9)
    axes = tuple(range(1, x.ndim - 1))
    np.testing.assert_allclose(global_pool(jnp.asarray(x)), x.mean(axis=axes), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(global_pool(jnp.asarray(x), "max"), x.max(axis=axes))


GRAD_CASES = {
    "max": lambda v, w: max_pool(v, 2, stride=1, padding="SAME"),
    "avg": lambda v, w: avg_pool(v, 3, stride=2, padding=1, count_include_pad=False),
    "lp": lambda v, w: lp_pool(v, (2, 3), p=3.0, padding="SAME"),
    "weighted": lambda v, w: weighted_pool(v, w, stride=1, padding="SAME"),
    "adaptive_avg": lambda v, w: adaptive_pool(v, (3, 4), "avg"),
    "adaptive_max": lambda v, w: adaptive_pool(v, (3, 4), "max"),
    "channel": lambda v, w: channel_pool(v, 2),
    "global": lambda v, w: global_pool(v),
}


@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradients_under_jit(name):
    # under jit too: reduce_window is only differentiable with a concrete (not traced) init value
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(10).normal(size=(1, 5, 6, 2)))
        w = jnp.asarray(np.random.default_rng(11).normal(size=(3, 2)))
        check_grads(jax.jit(GRAD_CASES[name]), (x, w), order=1, modes=("fwd", "rev"), eps=1e-4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: max_pool(x, 6), "larger than the padded input"),
        (lambda x: avg_pool(x, (4, 7), padding=[(0, 0), (0, 1)]), "larger than the padded input"),
        (lambda x: max_pool(x, (2, 2, 2)), "rank 5"),
        (lambda x: max_pool(x[0, 0], 2), "only 1, 2 or 3 spatial"),
        (lambda x: max_pool(x, 2.5), "window must be an int"),
        (lambda x: max_pool(x, 0), "window must be >= 1"),
        (lambda x: avg_pool(x, 2, stride=0), "stride must be >= 1"),
        (lambda x: max_pool(x, 2, padding="HALF"), "padding must be one of"),
        (lambda x: avg_pool(x, 2, padding=2, count_include_pad=False), "too wide"),
        (lambda x: lp_pool(x, 2, p=0.0), "p must be > 0"),
        (lambda x: lp_pool(x, 2, p=-1.0), "p must be > 0"),
        (lambda x: weighted_pool(x, jnp.ones(())), "weights must have the window's shape"),
        (lambda x: weighted_pool(x, jnp.ones((2, 2, 2))), "rank 5"),
        (lambda x: adaptive_pool(x, 0), "output_size must be >= 1"),
        (lambda x: adaptive_pool(x, (2, 2, 2)), "output_size must have 2 entries"),
        (lambda x: adaptive_pool(x, 2, "min"), "reduce must be one of"),
        (lambda x: channel_pool(x, 4), "must divide the number of channels 6"),
        (lambda x: channel_pool(x, 0), "group_size must be a positive int"),
        (lambda x: channel_pool(x, 2, "lp"), "reduce must be one of"),
        (lambda x: channel_pool(x[0, 0, 0], 2), "rank >= 2"),
        (lambda x: global_pool(x, "sum"), "reduce must be one of"),
        (lambda x: global_pool(x[0, 0]), "only 1, 2 or 3 spatial"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call(jnp.zeros((2, 5, 5, 6)))


def test_gaussian_window_bad_input_raises():
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_window((3, 3), 0.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_window((3, 3), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="size must be >= 1"):
        gaussian_window((3, 0), 1.0)
