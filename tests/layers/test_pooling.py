"""Pooling modules against brute-force numpy loops over the windows (and scipy's Gaussian window)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal.windows import gaussian

from cnn.layers import AdaptivePool, AvgPool, ChannelPool, GlobalPool, LpPool, MaxPool, WeightedPool
from tests.reference import explicit_pads

X = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype(np.float32)


def window_loop(x, window, stride, pads, reduce, pad_value=0.0):
    """``y[n, i, c] = reduce(x_pad[n, i·s : i·s + w, c])`` over every window position ``i``."""
    xp = np.pad(np.asarray(x, np.float64), [(0, 0), *pads, (0, 0)], constant_values=pad_value)
    out = [(n - w) // s + 1 for n, w, s in zip(xp.shape[1:-1], window, stride, strict=True)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    for i in np.ndindex(*out):
        block = xp[(slice(None), *(slice(a * s, a * s + w) for a, s, w in zip(i, stride, window, strict=True)))]
        y[(slice(None), *i)] = reduce(block.reshape(x.shape[0], -1, x.shape[-1]))
    return y


def apply(module, x=X):
    return np.asarray(module.apply({}, x))


@pytest.mark.parametrize(("window", "strides", "padding"), [(2, None, "VALID"), ((3, 2), (2, 1), "SAME")])
def test_max_avg_lp_pool_equal_loops(window, strides, padding):
    w = np.broadcast_to(window, 2).tolist()
    s = w if strides is None else list(strides)
    pads = explicit_pads(padding, X.shape[1:3], w, s, (1, 1))
    np.testing.assert_allclose(apply(MaxPool(window, strides, padding)),
                               window_loop(X, w, s, pads, lambda b: b.max(1), -np.inf), rtol=1e-6)
    np.testing.assert_allclose(apply(AvgPool(window, strides, padding)),
                               window_loop(X, w, s, pads, lambda b: b.mean(1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(apply(AvgPool(window, strides, padding, count_include_pad=False)),
                               window_loop(X, w, s, pads, lambda b: np.nanmean(b, 1), np.nan), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(apply(LpPool(window, 3.0, strides, padding)),
                               window_loop(X, w, s, pads, lambda b: (np.abs(b) ** 3).sum(1) ** (1 / 3)), rtol=1e-5)


def gaussian_2d(window, sigma):
    g = np.outer(gaussian(window[0], sigma), gaussian(window[1], sigma))
    return g / g.sum()


def test_weighted_pool_fixed_gaussian():
    layer = WeightedPool((3, 2), strides=1, padding="SAME", sigma=0.8)
    assert jax.eval_shape(layer.init, jax.random.key(0), X) == {}  # fixed: no parameters
    pads = explicit_pads("SAME", X.shape[1:3], (3, 2), (1, 1), (1, 1))
    weights = gaussian_2d((3, 2), 0.8).ravel()
    expected = window_loop(X, (3, 2), (1, 1), pads, lambda b: np.einsum("nkc,k->nc", b, weights))
    np.testing.assert_allclose(apply(layer), expected, rtol=1e-5, atol=1e-6)


def test_weighted_pool_learned_starts_gaussian_and_gets_gradients():
    layer = WeightedPool(3, strides=2, learned=True, sigma=1.5)
    variables = layer.init(jax.random.key(0), X)
    np.testing.assert_allclose(variables["params"]["weights"], gaussian_2d((3, 3), 1.5), rtol=1e-6)
    grads = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, X) ** 2)))(variables)["params"]["weights"]
    # d/dw_k of sum_i y_i^2 with y_i = sum_k w_k x[i·s + k]: 2 sum_i y_i x[i·s + k].
    y = np.asarray(layer.apply(variables, X))
    expected = np.zeros((3, 3))
    for a, b in np.ndindex(3, 3):
        taps = X[:, a : a + 2 * y.shape[1] - 1 : 2, b : b + 2 * y.shape[2] - 1 : 2]
        expected[a, b] = 2 * np.sum(y * taps)
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("output_size", "reduce"), [((3, 4), "max"), (2, "avg"), ((9, 4), "avg")])
def test_adaptive_pool_equals_bins(output_size, reduce):
    m = np.broadcast_to(output_size, 2).tolist()
    expected = np.zeros((2, *m, 3))
    for i, j in np.ndindex(*m):
        rows = slice(i * 7 // m[0], -(-(i + 1) * 7 // m[0]))
        cols = slice(j * 6 // m[1], -(-(j + 1) * 6 // m[1]))
        block = X[:, rows, cols]
        expected[:, i, j] = block.max(axis=(1, 2)) if reduce == "max" else block.mean(axis=(1, 2))
    np.testing.assert_allclose(apply(AdaptivePool(output_size, reduce)), expected, rtol=1e-5, atol=1e-6)


def test_channel_and_global_pool():
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 6)).astype(np.float32)
    maxout = np.stack([x[..., 2 * j : 2 * j + 2].max(-1) for j in range(3)], -1)
    np.testing.assert_allclose(apply(ChannelPool(2), x), maxout)
    np.testing.assert_allclose(apply(ChannelPool(3, "avg"), x),
                               np.stack([x[..., :3].mean(-1), x[..., 3:].mean(-1)], -1), rtol=1e-6)
    np.testing.assert_allclose(apply(GlobalPool(), x), x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(apply(GlobalPool("max"), x), x.max(axis=(1, 2)))


@pytest.mark.parametrize(
    ("layer", "match"),
    [(GlobalPool("min"), "reduce must be one of"), (ChannelPool(4), "group_size=4 must divide"),
     (WeightedPool(3, sigma=0.0), "sigma must be > 0"), (AdaptivePool(0), "output_size must be >= 1")],
)
def test_bad_arguments(layer, match):
    with pytest.raises(ValueError, match=match):
        layer.init(jax.random.key(0), X)
