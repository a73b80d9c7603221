"""Every layer under jit and grad: finite gradients, nonzero for every parameter and for the input; and the
gradients themselves, forward and reverse mode, against finite differences (``jax.test_util.check_grads``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cnn.layers import (
    AdaptivePool,
    AvgPool,
    ChannelPool,
    Conv,
    ConvTranspose,
    DeformableConv,
    GlobalPool,
    LocallyConnected,
    LpPool,
    MaxPool,
    SeparableConv,
    TiledConv,
    WeightedPool,
)
from tests.reference import with_random_params

LAYERS = {
    "conv": Conv(4, 3, strides=2, feature_group_count=2),
    "conv_fft": Conv(4, 5, method="fft"),
    "conv_transpose": ConvTranspose(4, 3, strides=2),
    "locally_connected": LocallyConnected(4, 3),
    "tiled": TiledConv(4, 3, tile=2),
    "deformable": DeformableConv(4, 3, offset_groups=2),
    "separable": SeparableConv(4, 3, depth_multiplier=2),
    "max_pool": MaxPool(2),
    "avg_pool": AvgPool(3, strides=2, padding="SAME", count_include_pad=False),
    "lp_pool": LpPool(2, p=3.0),
    "weighted_pool": WeightedPool(3, learned=True, padding="SAME"),
    "adaptive_pool": AdaptivePool(3, "avg"),
    "channel_pool": ChannelPool(2),
    "global_pool": GlobalPool("max"),
}


@pytest.mark.parametrize("name", LAYERS)
def test_jit_grad_finite_and_nonzero(name):
    layer = LAYERS[name]
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 7, 4)), jnp.float32)
    _, params = with_random_params(layer, x)
    params = jax.tree.map(lambda p: 0.3 * p, params)  # offsets of a few pixels for the deformable layer

    def loss(params, x):
        return jnp.sum(layer.apply({"params": params}, x) ** 2)

    grad_params, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    for path, g in [*jax.tree_util.tree_leaves_with_path(grad_params), ("x", grad_x)]:
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), path


@pytest.mark.parametrize("name", LAYERS)
def test_gradients_match_finite_differences(name):
    """Order 1, forward and reverse mode, in float64 so that central differences are accurate to ~1e-8.

    Random inputs and parameters keep every max pool and bilinear sample away from ties and integer positions,
    where the layers are not differentiable.
    """
    layer = LAYERS[name]
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 6, 4)))
        _, params = with_random_params(layer, x.astype(jnp.float32))
        params = jax.tree.map(lambda p: jnp.asarray(0.3 * p, jnp.float64), params)
        apply = jax.jit(lambda params, x: layer.apply({"params": params}, x))
        assert apply(params, x).dtype == jnp.float64
        check_grads(apply, (params, x), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-6)
