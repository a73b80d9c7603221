"""Equivariance (Goodfellow 9.2): convolution commutes with translation, not with rotation or scaling.

The transforms are checked against index formulas written out in numpy; the errors against the identities
f(T x) = T f(x) (circular correlation and stride-1 pooling with a circular boundary under shifts; a
rotation-symmetric kernel under quarter turns), and against the formula of ``equivariance_error`` computed by hand.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from cnn.ops.args import pad_boundary
from cnn.ops.conv import correlate
from cnn.ops.equivariance import equivariance_error, rescale, rotate90, shift
from cnn.ops.pooling import avg_pool, max_pool
from tests.reference import tiled_loop


def _rand(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _circular_correlation(kernel):
    return lambda x: correlate(x, kernel, padding="SAME", boundary="circular")


def test_shift_is_a_circular_translation():
    x = np.asarray(_rand((2, 5, 7, 3), 0))
    got = np.asarray(shift((2, -3))(jnp.asarray(x)))
    for i, j in np.ndindex(5, 7):
        np.testing.assert_array_equal(got[:, i, j], x[:, (i - 2) % 5, (j + 3) % 7])
    np.testing.assert_array_equal(shift(1)(jnp.asarray(x)), np.roll(x, (1, 1), axis=(1, 2)))


def test_rotate90_is_a_quarter_turn():
    x = np.asarray(_rand((2, 4, 4, 3), 1))
    got = np.asarray(rotate90(1)(jnp.asarray(x)))
    for i, j in np.ndindex(4, 4):  # counter-clockwise: out[i, j] = x[j, n - 1 - i]
        np.testing.assert_array_equal(got[:, i, j], x[:, j, 3 - i])
    np.testing.assert_array_equal(rotate90(4)(jnp.asarray(x)), x)


def test_rescale_zooms_about_the_center():
    # a ramp x[i] = i (value at continuous coordinate u is u - 1/2) zoomed by f about the center c = n / 2
    # samples u = c + (i + 1/2 - c) / f, exactly by linear interpolation while u stays inside the image
    n, factor = 8, 2.0
    ramp = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[None, :, None, None], (1, n, 3, 1))
    got = np.asarray(rescale(factor)(ramp))[0, :, 1, 0]
    expected = n / 2 + (np.arange(n) + 0.5 - n / 2) / factor - 0.5
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    x = _rand((1, 6, 6, 2), 2)
    np.testing.assert_allclose(rescale(1.0)(x), x, atol=1e-6)


@pytest.mark.parametrize(("spatial", "kernel_shape", "offsets"), [((16,), (5,), 3), ((12, 10), (3, 4), (3, -5))])
def test_circular_correlation_is_shift_equivariant(spatial, kernel_shape, offsets):
    x = _rand((2, *spatial, 3), 3)
    kernel = _rand((*kernel_shape, 3, 4), 4)
    assert float(equivariance_error(_circular_correlation(kernel), x, shift(offsets))) < 1e-6


def test_circular_correlation_3d_is_shift_equivariant():
    x = _rand((1, 6, 5, 4, 2), 5)
    kernel = _rand((3, 3, 2, 2, 3), 6)
    assert float(equivariance_error(_circular_correlation(kernel), x, shift((1, -2, 3)))) < 1e-6


@pytest.mark.parametrize("pool", [max_pool, avg_pool])
def test_stride_1_pooling_with_circular_boundary_is_shift_equivariant(pool):
    def f(x):
        return pool(pad_boundary(x, [(1, 1), (1, 1)], "circular"), 3, stride=1)

    x = _rand((2, 9, 8, 3), 7)
    assert float(equivariance_error(f, x, shift((4, -3)))) < 1e-6


def test_zero_boundary_breaks_shift_equivariance():
    kernel = _rand((3, 3, 2, 2), 8)
    x = _rand((1, 10, 10, 2), 9)
    assert float(equivariance_error(lambda v: correlate(v, kernel, padding="SAME"), x, shift(3))) > 0.1


def test_convolution_is_not_rotation_equivariant():
    kernel = _rand((3, 3, 2, 3), 10)  # a random kernel is not symmetric under quarter turns
    x = _rand((2, 12, 12, 2), 11)
    f = _circular_correlation(kernel)
    for k in (1, 2, 3):
        assert float(equivariance_error(f, x, rotate90(k))) > 0.1
    # ... unless the kernel is: average it over the four quarter turns
    symmetric = sum(jnp.rot90(kernel, k, axes=(0, 1)) for k in range(4)) / 4
    assert float(equivariance_error(_circular_correlation(symmetric), x, rotate90(1))) < 1e-5


@pytest.mark.parametrize("factor", [1.5, 0.6])
def test_convolution_is_not_scale_equivariant(factor):
    kernel = _rand((3, 3, 2, 3), 12)
    x = _rand((2, 16, 16, 2), 13)
    assert float(equivariance_error(_circular_correlation(kernel), x, rescale(factor))) > 0.1


def test_bad_input_raises():
    x = _rand((1, 6, 6, 2), 14)
    with pytest.raises(ValueError, match="one entry per spatial axis"):
        shift((1, 2, 3))(x)
    with pytest.raises(ValueError, match="only 1, 2 or 3 spatial"):
        shift(1)(x[:, 0, 0])
    with pytest.raises(ValueError, match="at least 2 spatial axes"):
        rotate90(1)(x[:, 0])
    with pytest.raises(ValueError, match="k must be an int"):
        rotate90(1.5)
    with pytest.raises(ValueError, match="factor must be > 0"):
        rescale(0.0)
    with pytest.raises(ValueError, match="f\\(x\\) is zero"):
        equivariance_error(lambda v: 0 * v, x, shift(1))


def _relative_error(f, x, transform):
    """``||f(T x) - T f(x)||_F / ||f(x)||_F`` over the whole batch, in numpy float64."""
    fx = f(x)
    return np.sqrt(np.sum((f(transform(x)) - transform(fx)) ** 2)) / np.sqrt(np.sum(fx**2))


def test_equivariance_error_is_the_relative_frobenius_norm_over_the_batch():
    """Against the formula by hand: a zero-padded correlation (a brute-force loop) does not commute with a circular
    shift (``np.roll``). The second example, a blob away from the border, commutes (error 0) and has 5x the norm:
    the batch-wide norms then differ from a mean of per-example ratios."""
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2, 7, 6, 2))
    x[1] = 0
    x[1, 2:4, 2:4] = 5 * rng.normal(size=(2, 2, 2))
    kernel = rng.normal(size=(3, 3, 2, 3))

    def correlation(v):
        return tiled_loop(v, kernel[None, None], (1, 1), [(1, 1), (1, 1)], (1, 1))

    def roll(v):
        return np.roll(v, (2, -1), axis=(1, 2))

    expected = _relative_error(correlation, x, roll)
    got = equivariance_error(
        lambda v: correlate(v, jnp.asarray(kernel, jnp.float32), padding="SAME"), _as_f32(x), shift((2, -1))
    )
    assert float(got) == pytest.approx(expected, rel=1e-5)
    mean_of_ratios = np.mean([_relative_error(correlation, x[i : i + 1], roll) for i in range(2)])
    assert abs(mean_of_ratios - expected) > 0.01 * expected


def test_equivariance_error_of_a_nonlinear_map_under_rotation():
    """``f(x) = cumsum(x², axis 1)`` against a quarter turn (``np.rot90``), the formula by hand."""
    x = np.random.default_rng(11).normal(size=(2, 5, 5, 3))
    expected = _relative_error(lambda v: np.cumsum(v**2, axis=1), x, lambda v: np.rot90(v, 1, axes=(1, 2)))
    got = equivariance_error(lambda v: jnp.cumsum(v**2, axis=1), _as_f32(x), rotate90(1))
    assert expected > 0.1
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_equivariance_error_of_zero_output_is_refused():
    with pytest.raises(ValueError, match="f\\(x\\) is zero"):
        equivariance_error(lambda v: 0 * v, _rand((1, 4, 4, 1), 12), shift(1))


def _as_f32(x):
    return jnp.asarray(x, jnp.float32)
