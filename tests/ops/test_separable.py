"""Separable convolutions against brute-force numpy loops of the textbook formulas and numpy's SVD."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from cnn.ops.separable import (
    depthwise_separable,
    separable_approximation,
    separable_conv,
    separable_reconstruct,
)
from tests.reference import correlate_loop, explicit_pads

SHAPES = {1: (2, 11, 3), 2: (2, 7, 6, 3), 3: (1, 5, 6, 4, 2)}


def outer_product(kernels_1d):
    """K[i_1, ..., i_d, c] = prod_a k_a[i_a, c], built by numpy broadcasting."""
    ndim = len(kernels_1d)
    kernel = np.ones((1,) * ndim + (kernels_1d[0].shape[-1],))
    for a, k in enumerate(kernels_1d):
        axis_shape = (1,) * a + (k.shape[0],) + (1,) * (ndim - a - 1) + (-1,)
        kernel = kernel * np.asarray(k, np.float64).reshape(axis_shape)
    return kernel


def as_tuples(ndim, *values):
    """Each int as an ndim-tuple, tuples unchanged."""
    return [(v,) * ndim if isinstance(v, int) else v for v in values]


# ---------------------------------------------------------------- depthwise separable


@pytest.mark.parametrize(
    ("ndim", "multiplier", "stride", "padding", "dilation"),
    [
        (1, 1, 1, "VALID", 1),
        (1, 2, 2, "SAME", 2),
        (2, 1, (2, 1), "SAME", 1),
        (2, 2, 1, "FULL", (1, 2)),
        (2, 3, 2, [(1, 0), (2, 1)], 1),
        (3, 2, (1, 2, 1), 1, 1),
    ],
)
def test_depthwise_separable_matches_brute_force(ndim, multiplier, stride, padding, dilation):
    rng = np.random.default_rng(ndim * 10 + multiplier)
    x = rng.standard_normal(SHAPES[ndim]).astype(np.float32)
    channels = x.shape[-1]
    kernel_size = (3, 2, 2)[:ndim]
    depthwise = rng.standard_normal((*kernel_size, 1, channels * multiplier)).astype(np.float32)
    pointwise = rng.standard_normal((channels * multiplier, 4)).astype(np.float32)
    strides, dilations = as_tuples(ndim, stride, dilation)
    pads = explicit_pads(padding, x.shape[1:-1], kernel_size, strides, dilations)

    hidden = correlate_loop(x, depthwise, strides, pads, dilations, groups=channels)
    expected = correlate_loop(
        hidden,
        pointwise.reshape((1,) * ndim + pointwise.shape),
        (1,) * ndim,
        [(0, 0)] * ndim,
        (1,) * ndim,
        groups=1,
    )
    y = depthwise_separable(x, depthwise, pointwise, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

    # The 1x1-kernel layout of the pointwise kernel means the same.
    y_1x1 = depthwise_separable(
        x,
        depthwise,
        pointwise.reshape((1,) * ndim + pointwise.shape),
        stride=stride,
        padding=padding,
        dilation=dilation,
    )
    np.testing.assert_allclose(y_1x1, expected, rtol=1e-5, atol=1e-5)


def test_depthwise_separable_is_a_dense_correlation_with_the_product_kernel():
    # Identity: W[i, c, o] = sum_q D[i, 0, c*m + q] * P[c*m + q, o] is the equivalent dense kernel.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 5, 3))
    depthwise = rng.standard_normal((3, 3, 1, 6))
    pointwise = rng.standard_normal((6, 4))
    dense = np.einsum("hwcq,cqo->hwco", depthwise.reshape(3, 3, 3, 2), pointwise.reshape(3, 2, 4))
    expected = correlate_loop(x, dense, (1, 1), [(1, 1), (1, 1)], (1, 1), groups=1)
    with jax.enable_x64(True):
        y = depthwise_separable(x, depthwise, pointwise, padding="SAME")
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_depthwise_separable_grads():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 5, 4, 2))
    depthwise = rng.standard_normal((2, 3, 1, 4))
    pointwise = rng.standard_normal((4, 3))
    with jax.enable_x64(True):
        check_grads(
            jax.jit(lambda x, d, p: depthwise_separable(x, d, p, stride=(2, 1), padding="SAME")),
            (x, depthwise, pointwise),
            order=1,
            modes=("fwd", "rev"),
            eps=1e-4,
        )


@pytest.mark.parametrize(
    ("x_shape", "depthwise_shape", "pointwise_shape", "match"),
    [
        ((2, 6, 3), (3, 3), (3, 2), "depthwise_kernel"),  # kernel without channel axes
        ((2, 6, 3), (3, 2, 6), (6, 2), "depthwise_kernel"),  # in-per-group must be 1
        ((2, 6, 3), (3, 1, 4), (4, 2), "depthwise_kernel"),  # 4 outputs is no multiple of C=3
        ((2, 6, 6, 3), (3, 1, 6), (6, 2), "x must have shape"),  # 1D kernel, 2D input
        ((2, 6, 3), (3, 1, 6), (5, 2), "pointwise_kernel"),  # channel mismatch
        ((2, 6, 3), (3, 1, 6), (2, 6, 2), "pointwise_kernel"),  # not a 1x1 kernel
        ((2, 6, 3), (3, 1, 6), (1, 1, 6, 2), "pointwise_kernel"),  # too many leading ones
        ((2, 6, 3), (3, 1, 6), (6,), "pointwise_kernel"),  # a vector
    ],
)
def test_depthwise_separable_bad_shapes(x_shape, depthwise_shape, pointwise_shape, match):
    with pytest.raises(ValueError, match=match):
        depthwise_separable(np.zeros(x_shape), np.zeros(depthwise_shape), np.zeros(pointwise_shape))


# ---------------------------------------------------------------- separable_conv


@pytest.mark.parametrize(
    ("ndim", "stride", "padding", "dilation"),
    [
        (1, 1, "VALID", 1),
        (1, 3, "SAME", 2),
        (1, 2, "FULL", 1),
        (2, 1, "SAME", 1),
        (2, (2, 3), "VALID", (1, 2)),
        (2, 2, "FULL", 2),
        (2, (1, 2), [(2, 0), (1, 3)], 1),
        (2, 1, 2, (2, 1)),
        (3, 1, "SAME", 1),
        (3, (2, 1, 2), "FULL", (1, 2, 1)),
        (3, 2, [(0, 1), (1, 1), (2, 0)], 1),
    ],
)
def test_separable_conv_matches_depthwise_outer_product(ndim, stride, padding, dilation):
    rng = np.random.default_rng(100 + ndim)
    x = rng.standard_normal(SHAPES[ndim]).astype(np.float32)
    channels = x.shape[-1]
    kernel_size = (3, 2, 3)[:ndim]
    kernels = [rng.standard_normal((k, channels)).astype(np.float32) for k in kernel_size]
    strides, dilations = as_tuples(ndim, stride, dilation)
    pads = explicit_pads(padding, x.shape[1:-1], kernel_size, strides, dilations)

    kernel = outer_product(kernels)[..., None, :]  # (*k, 1, C): depthwise
    expected = correlate_loop(x, kernel, strides, pads, dilations, groups=channels)
    y = separable_conv(x, kernels, stride=stride, padding=padding, dilation=dilation)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(
    size=st.tuples(st.integers(4, 8), st.integers(4, 8)),
    kernel_size=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.sampled_from(["VALID", "SAME", "FULL", 1]),
    seed=st.integers(0, 2**16),
)
def test_separable_conv_property_2d(size, kernel_size, stride, dilation, padding, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, *size, 2))
    kernels = [rng.standard_normal((k, 2)) for k in kernel_size]
    pads = explicit_pads(padding, size, kernel_size, stride, dilation)
    padded = [n + lo + hi for n, (lo, hi) in zip(size, pads, strict=True)]
    if any(n < d * (k - 1) + 1 for n, k, d in zip(padded, kernel_size, dilation, strict=True)):
        return  # kernel larger than the padded input: covered by the error tests
    expected = correlate_loop(x, outer_product(kernels)[..., None, :], stride, pads, dilation, groups=2)
    with jax.enable_x64(True):
        y = separable_conv(x, kernels, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_separable_conv_grads():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 6, 5, 2))
    kernels = [rng.standard_normal((3, 2)), rng.standard_normal((2, 2))]
    with jax.enable_x64(True):
        check_grads(
            jax.jit(
                lambda x, k1, k2: separable_conv(x, [k1, k2], stride=(2, 1), padding="SAME", dilation=(1, 2))
            ),
            (x, *kernels),
            order=1,
            modes=("fwd", "rev"),
            eps=1e-4,
        )


@pytest.mark.parametrize(
    ("x_shape", "kernel_shapes", "kwargs", "match"),
    [
        ((1, 6, 6, 2), [(3, 2)], {}, "one kernel per spatial axis"),  # 1 kernel, 2 spatial axes
        ((1, 6, 6, 2), [(3, 2)] * 3, {}, "one kernel per spatial axis"),
        ((1, 6, 6, 2), [(3, 2), (3, 3)], {}, r"kernels_1d\[1\]"),  # channel mismatch
        ((1, 6, 6, 2), [(3, 2), (3,)], {}, r"kernels_1d\[1\]"),  # not (k, C)
        ((1, 6, 6, 2), [(0, 2), (3, 2)], {}, r"kernels_1d\[0\]"),  # empty kernel
        ((1, 6, 2), [(7, 2)], {}, "larger than the padded input"),
        ((1, 6, 2), [(3, 2)], {"stride": 0}, "stride"),
        ((1, 6, 6, 2), [(3, 2)] * 2, {"dilation": (1, 2, 1)}, "dilation"),
        ((1, 6, 2), [(3, 2)], {"padding": "HALF"}, "padding"),
        ((1, 6, 1, 1, 1, 2), [(3, 2)] * 4, {}, "1, 2 or 3 spatial"),
    ],
)
def test_separable_conv_bad_input(x_shape, kernel_shapes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        separable_conv(np.zeros(x_shape), [np.zeros(s) for s in kernel_shapes], **kwargs)


# ---------------------------------------------------------------- separable approximation


def test_rank_one_is_exact_for_outer_products():
    rng = np.random.default_rng(4)
    col, row = rng.standard_normal(5), rng.standard_normal(4)
    kernel = np.outer(col, row).astype(np.float32)
    cols, rows = separable_approximation(kernel)
    assert cols.shape == (1, 5) and rows.shape == (1, 4)
    np.testing.assert_allclose(np.outer(cols[0], rows[0]), kernel, rtol=1e-5, atol=1e-5)
    # The factors are the 1D kernels up to a scale: parallel to the generating vectors.
    cosine = np.dot(cols[0], col) / (np.linalg.norm(cols[0]) * np.linalg.norm(col))
    np.testing.assert_allclose(abs(cosine), 1.0, rtol=1e-5)


def test_rank_one_per_channel_factors_run_as_separable_conv():
    rng = np.random.default_rng(5)
    kernels = [rng.standard_normal((3, 2)), rng.standard_normal((4, 2))]
    kernel = outer_product(kernels)  # (3, 4, C)
    with jax.enable_x64(True):
        cols, rows = separable_approximation(kernel)
        assert cols.shape == (1, 3, 2) and rows.shape == (1, 4, 2)
        np.testing.assert_allclose(separable_reconstruct(cols, rows), kernel, rtol=1e-10, atol=1e-10)
        x = rng.standard_normal((2, 7, 6, 2))
        y = separable_conv(x, [cols[0], rows[0]], padding="SAME")
    expected = correlate_loop(x, kernel[..., None, :], (1, 1), [(1, 1), (1, 2)], (1, 1), groups=2)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_rank_two_sum_is_exact_and_runs_as_two_separable_passes():
    rng = np.random.default_rng(6)
    kernel = sum(outer_product([rng.standard_normal((5, 3)), rng.standard_normal((5, 3))]) for _ in range(2))
    x = rng.standard_normal((1, 8, 8, 3))
    with jax.enable_x64(True):
        cols, rows = separable_approximation(kernel, rank=2)
        np.testing.assert_allclose(separable_reconstruct(cols, rows), kernel, rtol=1e-10, atol=1e-10)
        y = sum(separable_conv(x, [cols[t], rows[t]]) for t in range(2))
        # A rank-2 kernel is not rank 1: the best rank-1 approximation misses the second singular value.
        cols1, rows1 = separable_approximation(kernel, rank=1)
        assert np.linalg.norm(separable_reconstruct(cols1, rows1) - kernel) > 1e-3
    expected = correlate_loop(x, kernel[..., None, :], (1, 1), [(0, 0), (0, 0)], (1, 1), groups=3)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (6, 3, 2)])
def test_truncation_error_is_eckart_young(shape):
    rng = np.random.default_rng(sum(shape))
    kernel = rng.standard_normal(shape)
    matrices = kernel[..., None] if kernel.ndim == 2 else kernel
    with jax.enable_x64(True):
        for rank in range(1, min(shape[:2]) + 1):
            cols, rows = separable_approximation(kernel, rank=rank)
            assert cols.shape == (rank, *shape[:1], *shape[2:]) and rows.shape == (rank, *shape[1:])
            approx = np.einsum(
                "ti...,tj...->ij...", np.asarray(cols), np.asarray(rows)
            )  # sum of outer products
            residual = approx.reshape(matrices.shape) - matrices
            for c in range(matrices.shape[-1]):
                s = np.linalg.svd(matrices[..., c], compute_uv=False)
                np.testing.assert_allclose(
                    np.linalg.norm(residual[..., c]), np.sqrt(np.sum(s[rank:] ** 2)), rtol=1e-9, atol=1e-9
                )
                assert np.linalg.matrix_rank(residual[..., c] + matrices[..., c], tol=1e-8) == rank


@pytest.mark.parametrize(
    ("shape", "rank", "match"),
    [
        ((5,), 1, "kernel must have shape"),
        ((3, 3, 3, 2), 1, "kernel must have shape"),
        ((3, 4), 0, "rank"),
        ((3, 4), 4, "rank"),
        ((3, 4, 2), 4, "rank"),
        ((3, 4), 1.0, "rank"),
        ((3, 4), True, "rank"),
    ],
)
def test_separable_approximation_bad_input(shape, rank, match):
    with pytest.raises(ValueError, match=match):
        separable_approximation(np.zeros(shape), rank=rank)


@pytest.mark.parametrize(
    ("col_shape", "row_shape"),
    [
        ((2, 3), (1, 4)),  # ranks differ
        ((2, 3, 2), (2, 4, 3)),  # channels differ
        ((2, 3), (2, 4, 1)),  # one per channel, one not
        ((3,), (3,)),
        ((1, 2, 3, 4), (1, 2, 3, 4)),
    ],
)
def test_separable_reconstruct_bad_input(col_shape, row_shape):
    with pytest.raises(ValueError, match="col_factors and row_factors"):
        separable_reconstruct(np.zeros(col_shape), np.zeros(row_shape))
