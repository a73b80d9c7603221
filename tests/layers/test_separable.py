"""SeparableConv against a brute-force depthwise loop followed by a pointwise product, on its own parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.layers import SeparableConv
from tests.reference import correlate_loop, explicit_pads, with_random_params


@pytest.mark.parametrize(
    ("shape", "multiplier", "strides", "padding", "dilation"),
    [((2, 8, 7, 3), 1, 1, "SAME", 1), ((2, 8, 7, 3), 2, 2, "VALID", 1), ((2, 11, 2), 3, 1, "SAME", 2)],
)
def test_separable_equals_depthwise_then_pointwise(shape, multiplier, strides, padding, dilation):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ndim, channels = len(shape) - 2, shape[-1]
    layer = SeparableConv(5, 3, multiplier, strides, padding, dilation)
    y, params = with_random_params(layer, x)
    assert params["depthwise"].shape == (*(3,) * ndim, 1, channels * multiplier)
    assert params["pointwise"].shape == (channels * multiplier, 5)
    stride, dil = (np.broadcast_to(v, ndim).tolist() for v in (strides, dilation))
    pads = explicit_pads(padding, shape[1:-1], (3,) * ndim, stride, dil)
    # Depthwise: one group per input channel, filter q of channel c is depthwise output c·m + q.
    h = correlate_loop(x, params["depthwise"], stride, pads, dil, groups=channels)
    expected = h @ params["pointwise"] + params["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("layer", "match"),
    [(SeparableConv(2, 3, depth_multiplier=0), "depth_multiplier must be a positive int"),
     (SeparableConv(2, 3, strides=(1, 0)), "stride must be >= 1")],
)
def test_bad_arguments(layer, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(layer.init, jax.random.key(0), jnp.ones((1, 5, 5, 2)))
