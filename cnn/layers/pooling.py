"""Pooling layers over ``cnn.ops`` (Goodfellow et al., Deep Learning, sec. 9.3); formulas in ``cnn.ops.pooling``.

For window ``w``, stride ``s`` (default ``w``) and padded input ``xp``, output unit ``i`` summarizes the block
``B(i) = {i·s + k : 0 <= k < w}``:

    MaxPool       y[i] = max_{m in B(i)} xp[m]
    AvgPool       y[i] = sum_{m in B(i)} xp[m] / |B(i)|   (or / #real entries, count_include_pad=False)
    LpPool        y[i] = (sum_{m in B(i)} |xp[m]|^p)^(1/p)
    WeightedPool  y[i] = sum_k v[k] xp[i·s + k]             (v a Gaussian window, fixed or learned from it)
    AdaptivePool  a fixed output size, bins floor(i n / m) .. ceil((i + 1) n / m)
    ChannelPool   y[..., j] = max | mean_{t < g} x[..., j·g + t]   (maxout)
    GlobalPool    y[n, c] = mean | max_i x[n, i, c]

``window``, ``strides``: an int (every spatial axis) or one per axis; ``padding`` any form of ``cnn.ops.args``.
Only ``WeightedPool(learned=True)`` has parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.ops.args import IntOrSeq, Padding, as_tuple


class MaxPool(nn.Module):
    window: IntOrSeq
    strides: IntOrSeq | None = None
    padding: Padding = "VALID"

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.max_pool(x, self.window, stride=self.strides, padding=self.padding)


class AvgPool(nn.Module):
    """Average pooling; ``count_include_pad``: divide by the window size (True) or by its real entries (False)."""

    window: IntOrSeq
    strides: IntOrSeq | None = None
    padding: Padding = "VALID"
    count_include_pad: bool = True

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.avg_pool(
            x, self.window, stride=self.strides, padding=self.padding, count_include_pad=self.count_include_pad
        )


class LpPool(nn.Module):
    window: IntOrSeq
    p: float = 2.0
    strides: IntOrSeq | None = None
    padding: Padding = "VALID"

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.lp_pool(x, self.window, p=self.p, stride=self.strides, padding=self.padding)


class WeightedPool(nn.Module):
    """Pooling with a Gaussian window of standard deviation ``sigma`` (``ops.gaussian_window``, sums to 1).

    ``learned=False``: the window is fixed. ``learned=True``: a parameter ``weights`` of the window's shape,
    initialized to the Gaussian and shared by all channels.
    """

    window: IntOrSeq
    strides: IntOrSeq | None = None
    padding: Padding = "VALID"
    learned: bool = False
    sigma: float = 1.0
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        window = as_tuple(self.window, x.ndim - 2, "window")
        weights = ops.gaussian_window(window, self.sigma)
        if self.learned:
            weights = self.param("weights", lambda _key, shape, dtype: weights.astype(dtype), window, self.param_dtype)
        return ops.weighted_pool(x, weights.astype(x.dtype), stride=self.strides, padding=self.padding)


class AdaptivePool(nn.Module):
    """Pools to a fixed spatial ``output_size`` (an int or one per axis); ``reduce``: ``"max"`` or ``"avg"``."""

    output_size: IntOrSeq
    reduce: str = "max"

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.adaptive_pool(x, self.output_size, self.reduce)


class ChannelPool(nn.Module):
    """Cross-channel pooling over consecutive groups of ``group_size`` channels (maxout with ``reduce="max"``)."""

    group_size: int
    reduce: str = "max"

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.channel_pool(x, self.group_size, self.reduce)


class GlobalPool(nn.Module):
    """One summary per channel over all spatial positions, ``(batch, *spatial, C) -> (batch, C)``."""

    reduce: str = "avg"

    def __call__(self, x: jax.Array) -> jax.Array:
        return ops.global_pool(x, self.reduce)
