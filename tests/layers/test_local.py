"""LocallyConnected and TiledConv: parameter shapes, and outputs against the brute-force tiled loop on their
own kernel and bias (a tile equal to the output shape is the unshared layer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.layers import LocallyConnected, TiledConv
from tests.reference import explicit_pads, tiled_loop, with_random_params


@pytest.mark.parametrize(
    ("shape", "kernel_size", "strides", "padding", "dilation", "out"),
    [
        ((2, 7, 6, 3), (3, 2), 1, "VALID", 1, (5, 5)),
        ((2, 7, 6, 3), 3, 2, "SAME", 1, (4, 3)),
        ((2, 9, 2), (2,), 1, 1, 2, (9,)),
    ],
)
def test_locally_connected_equals_loop(shape, kernel_size, strides, padding, dilation, out):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    y, params = with_random_params(LocallyConnected(4, kernel_size, strides, padding, dilation), x)
    ndim = len(shape) - 2
    ksize = np.broadcast_to(kernel_size, ndim).tolist()
    assert params["kernel"].shape == (*out, *ksize, shape[-1], 4)  # one kernel per output position
    assert params["bias"].shape == (*out, 4)
    stride, dil = np.broadcast_to(strides, ndim).tolist(), np.broadcast_to(dilation, ndim).tolist()
    pads = explicit_pads(padding, shape[1:-1], ksize, stride, dil)
    expected = tiled_loop(x, params["kernel"], stride, pads, dil) + params["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "tile", "strides", "padding"),
    [((2, 7, 6, 3), 2, 1, "SAME"), ((2, 8, 7, 2), (3, 1), 2, "VALID"), ((1, 10, 3), (4,), 1, "SAME")],
)
def test_tiled_conv_equals_loop(shape, tile, strides, padding):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    ndim = len(shape) - 2
    layer = TiledConv(4, (3,) * ndim, tile, strides, padding)
    y, params = with_random_params(layer, x)
    tiles = np.broadcast_to(tile, ndim).tolist()
    assert params["kernel"].shape == (*tiles, *(3,) * ndim, shape[-1], 4)
    assert params["bias"].shape == (*tiles, 4)
    stride = np.broadcast_to(strides, ndim).tolist()
    pads = explicit_pads(padding, shape[1:-1], (3,) * ndim, stride, (1,) * ndim)
    expected = tiled_loop(x, params["kernel"], stride, pads, (1,) * ndim)
    bias = params["bias"]
    for p in np.ndindex(*expected.shape[1:-1]):  # output position p adds bias p mod tile
        expected[(slice(None), *p)] += bias[tuple(q % t for q, t in zip(p, tiles, strict=True))]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_each_position_initialized_as_one_conv_kernel():
    """He normal per position (fan_in = kh·kw·C, not including the positions), independent between positions."""
    layer = LocallyConnected(64, (3, 3), padding="VALID")
    kernel = jax.jit(layer.init)(jax.random.key(0), jnp.ones((1, 4, 4, 32)))
    kernel = np.asarray(kernel["params"]["kernel"]).reshape(4, -1)  # 2x2 positions
    assert abs(float(kernel.std()) / np.sqrt(2 / (9 * 32)) - 1) < 0.03
    assert abs(np.corrcoef(kernel)[0, 1]) < 0.05


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (TiledConv(2, 3, tile=0), "tile must be >= 1"),
        (TiledConv(2, 3, tile=(2, 2, 2)), "tile must have 2 entries"),
        (LocallyConnected(2, 7, padding="VALID"), "larger than the padded input"),
        (LocallyConnected(0, 3), "features must be a positive int"),
    ],
)
def test_bad_arguments(layer, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(layer.init, jax.random.key(0), jnp.ones((1, 5, 5, 2)))
