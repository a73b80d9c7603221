"""Locally connected and tiled convolution against brute-force numpy loops of the textbook sums.

References (Goodfellow et al. 9.5), float64 loops over output positions p and kernel taps k:
  unshared: out[n, p, o] = sum_{k, c} x_pad[n, p * s + k * d, c] * W[p, k, c, o]
  tiled:    out[n, p, o] = sum_{k, c} x_pad[n, p * s + k * d, c] * W[p mod t, k, c, o]
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from cnn.ops import local
from cnn.ops.conv import correlate
from cnn.ops.local import locally_connected, tiled_conv
from tests.reference import correlate_loop, explicit_pads, out_shape, tiled_loop

SHAPES = {1: (2, 11, 3), 2: (2, 7, 6, 3), 3: (1, 5, 6, 4, 2)}
KERNELS = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}


def jitted(op, x, kernel, **kwargs):
    """``op(x, kernel, **kwargs)`` under jit: one compilation instead of many eager ones."""
    return jax.jit(functools.partial(op, **kwargs))(x, kernel)


def per_axis(value, ndim):
    return (value,) * ndim if isinstance(value, int) else tuple(value)


def random(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(params=["phase_conv", "phase_einsum"])
def strategy(request, monkeypatch):
    """Force one of tiled_conv's two evaluation strategies (sub-pixel conv or patches + einsum)."""
    monkeypatch.setattr(local, "_MAX_PHASE_CONV_OVERHEAD", math.inf if request.param == "phase_conv" else 0.0)
    return request.param


CASES = [
    # ndim, stride, padding, dilation
    (1, 1, "VALID", 1),
    (1, 2, "SAME", 2),
    (2, 1, "SAME", 1),
    (2, (2, 1), [(1, 2), (0, 1)], (1, 2)),
    (2, 3, "FULL", 2),
    (3, (1, 2, 1), 1, (2, 1, 1)),
]


@pytest.mark.parametrize(("ndim", "stride", "padding", "dilation"), CASES)
def test_locally_connected_matches_brute_force(ndim, stride, padding, dilation):
    rng = np.random.default_rng(ndim)
    x = random(rng, SHAPES[ndim])
    strides, dilations = per_axis(stride, ndim), per_axis(dilation, ndim)
    pads = explicit_pads(padding, x.shape[1:-1], KERNELS[ndim], strides, dilations)
    out = out_shape(x.shape[1:-1], KERNELS[ndim], strides, pads, dilations)
    kernel = random(rng, (*out, *KERNELS[ndim], x.shape[-1], 4))
    y = jitted(locally_connected, x, kernel, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(y, tiled_loop(x, kernel, strides, pads, dilations), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_locally_connected_with_one_shared_kernel_is_a_correlation(ndim):
    rng = np.random.default_rng(10 + ndim)
    x = random(rng, SHAPES[ndim])
    shared = random(rng, (*KERNELS[ndim], x.shape[-1], 3))
    pads = explicit_pads("SAME", x.shape[1:-1], KERNELS[ndim], (1,) * ndim, (1,) * ndim)
    out = out_shape(x.shape[1:-1], KERNELS[ndim], (1,) * ndim, pads, (1,) * ndim)
    kernel = np.broadcast_to(shared, (*out, *shared.shape))
    y = jitted(locally_connected, x, kernel, padding="SAME")
    expected = correlate_loop(x, shared, (1,) * ndim, pads, (1,) * ndim)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("ndim", "tile", "stride", "padding", "dilation"),
    [
        (1, (3,), 2, "SAME", 1),
        (2, (2, 3), (1, 2), [(1, 2), (0, 1)], (2, 1)),
        (2, (4, 1), 1, "FULL", 1),
        (3, (2, 1, 2), (1, 1, 2), 1, (1, 2, 1)),
    ],
)
def test_tiled_conv_matches_brute_force(strategy, ndim, tile, stride, padding, dilation):
    rng = np.random.default_rng(20 + ndim)
    x = random(rng, SHAPES[ndim])
    kernel = random(rng, (*tile, *KERNELS[ndim], x.shape[-1], 4))
    strides, dilations = per_axis(stride, ndim), per_axis(dilation, ndim)
    pads = explicit_pads(padding, x.shape[1:-1], KERNELS[ndim], strides, dilations)
    y = jitted(tiled_conv, x, kernel, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(y, tiled_loop(x, kernel, strides, pads, dilations), rtol=1e-5, atol=1e-5)


def test_tile_larger_than_output_uses_only_the_first_kernels(strategy):
    rng = np.random.default_rng(30)
    x = random(rng, (2, 5, 7, 3))
    kernel = random(rng, (6, 2, 3, 3, 3, 2))  # output is (3, 5): tile 6 > 3 on the first axis
    pads = [(0, 0), (0, 0)]
    expected = tiled_loop(x, kernel, (1, 1), pads, (1, 1))
    np.testing.assert_allclose(jitted(tiled_conv, x, kernel), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_tile_of_ones_is_a_correlation(strategy, ndim):
    rng = np.random.default_rng(40 + ndim)
    x = random(rng, SHAPES[ndim])
    shared = random(rng, (*KERNELS[ndim], x.shape[-1], 3))
    strides, dilations = (1,) * ndim, (2,) + (1,) * (ndim - 1)
    y = jitted(tiled_conv, x, shared[(None,) * ndim], stride=strides, padding="SAME", dilation=dilations)
    pads = explicit_pads("SAME", x.shape[1:-1], KERNELS[ndim], strides, dilations)
    np.testing.assert_allclose(y, correlate_loop(x, shared, strides, pads, dilations), rtol=1e-5, atol=1e-5)
    reference = correlate(x, shared, stride=strides, padding="SAME", dilation=dilations)
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_tile_equal_to_output_is_locally_connected(strategy, ndim):
    # The kernel layouts coincide: (*tile, *k, in, out) with tile = out_spatial is (*out_spatial, *k, in, out).
    rng = np.random.default_rng(50 + ndim)
    x = random(rng, SHAPES[ndim])
    pads = explicit_pads(1, x.shape[1:-1], KERNELS[ndim], (2,) * ndim, (1,) * ndim)
    out = out_shape(x.shape[1:-1], KERNELS[ndim], (2,) * ndim, pads, (1,) * ndim)
    kernel = random(rng, (*out, *KERNELS[ndim], x.shape[-1], 3))
    y = jitted(tiled_conv, x, kernel, stride=2, padding=1)
    np.testing.assert_allclose(y, jitted(locally_connected, x, kernel, stride=2, padding=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, tiled_loop(x, kernel, (2,) * ndim, pads, (1,) * ndim), rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(
    size=st.tuples(st.integers(3, 8), st.integers(3, 8)),
    kernel_size=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    tile=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.sampled_from(["SAME", "FULL", 1]),
    seed=st.integers(0, 2**16),
)
def test_tiled_conv_property_2d(size, kernel_size, tile, stride, dilation, padding, seed):
    rng = np.random.default_rng(seed)
    x = random(rng, (1, *size, 2))
    kernel = random(rng, (*tile, *kernel_size, 2, 3))
    pads = explicit_pads(padding, size, kernel_size, stride, dilation)
    y = jitted(tiled_conv, x, kernel, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(y, tiled_loop(x, kernel, stride, pads, dilation), rtol=1e-5, atol=1e-5)


def test_locally_connected_grads():
    rng = np.random.default_rng(60)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((1, 5, 4, 2)))
        kernel = jnp.asarray(rng.standard_normal((3, 2, 2, 2, 2, 3)))
        check_grads(
            jax.jit(lambda x, w: locally_connected(x, w, stride=(2, 1), padding=[(1, 1), (0, 0)], dilation=(1, 2))),
            (x, kernel), order=1, modes=("fwd", "rev"), eps=1e-3,
        )


def test_tiled_conv_grads(strategy):
    rng = np.random.default_rng(70)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((1, 6, 5, 2)))
        kernel = jnp.asarray(rng.standard_normal((2, 3, 2, 2, 2, 3)))
        check_grads(
            jax.jit(lambda x, w: tiled_conv(x, w, stride=(1, 2), padding="SAME", dilation=(2, 1))),
            (x, kernel), order=1, modes=("fwd", "rev"), eps=1e-3,
        )


@pytest.mark.parametrize(
    ("x_shape", "kernel_shape", "kwargs", "match"),
    [
        ((2, 6, 6, 3), (3, 3, 3, 3, 4), {}, r"kernel must have shape \(\*out_spatial.*rank 4, 6 or 8"),
        ((2, 6, 3), (4, 4, 3, 3, 3, 2), {}, r"x must have shape .* 2 spatial axes"),
        ((2, 6, 6, 3), (4, 4, 3, 3, 2, 2), {}, r"channel mismatch: x \(2, 6, 6, 3\) has 3 channels.*in_channels=2"),
        ((2, 6, 6, 3), (4, 3, 3, 3, 3, 2), {}, r"out_spatial \(4, 3\).*output spatial shape \(4, 4\)"),
        ((2, 6, 6, 3), (4, 4, 3, 3, 3, 2), {"padding": "SAME"}, r"out_spatial \(4, 4\).*\(6, 6\)"),
        ((2, 6, 6, 3), (4, 4, 3, 3, 3, 2), {"stride": 0}, r"stride must be >= 1"),
        ((2, 6, 6, 3), (4, 4, 3, 3, 3, 2), {"padding": "HALF"}, r"padding must be one of"),
        ((2, 2, 2, 3), (1, 1, 3, 3, 3, 2), {}, r"larger than the padded input"),
        ((2, 6, 6, 3), (4, 4, 0, 3, 3, 2), {}, r"kernel_spatial sizes must be >= 1"),
    ],
)
def test_locally_connected_bad_input(x_shape, kernel_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        locally_connected(jnp.zeros(x_shape), jnp.zeros(kernel_shape), **kwargs)


@pytest.mark.parametrize(
    ("x_shape", "kernel_shape", "kwargs", "match"),
    [
        ((2, 6, 3), (2, 3, 3, 4, 1), {}, r"kernel must have shape \(\*tile.*rank 4, 6 or 8"),
        ((2, 6, 6, 3), (2, 3, 3, 4), {}, r"x must have shape .* 1 spatial axes"),
        ((2, 6, 6, 3), (2, 2, 3, 3, 4, 2), {}, r"channel mismatch.*in_channels=4"),
        ((2, 6, 6, 3), (0, 2, 3, 3, 3, 2), {}, r"kernel tile and kernel_spatial sizes must be >= 1"),
        ((2, 6, 6, 3), (2, 2, 3, 3, 3, 2), {"dilation": (1, 2, 1)}, r"dilation must have 2 entries"),
        ((2, 6, 6, 3), (2, 2, 3, 3, 3, 2), {"padding": [(1, 1)]}, r"padding needs 2 \(low, high\) pairs"),
    ],
)
def test_tiled_conv_bad_input(x_shape, kernel_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiled_conv(jnp.zeros(x_shape), jnp.zeros(kernel_shape), **kwargs)
