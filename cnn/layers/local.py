"""Unshared (locally connected) and tiled convolution layers over ``cnn.ops`` (Deep Learning, sec. 9.5).

    LocallyConnected:  y[n, p, o] = sum_{k, c} x_pad[n, p·s + k·d, c] · W[p, k, c, o] + b[p, o]
    TiledConv:         y[n, p, o] = sum_{k, c} x_pad[n, p·s + k·d, c] · W[p mod t, k, c, o] + b[p mod t, o]

Every kernel brings its own bias: one per output position for the unshared layer (as Keras'
``LocallyConnected2D``), one per tile phase for the tiled one (a tile of ones is ``Conv``).
Each position's (or phase's) kernel is initialized by ``kernel_init`` on the shape of one convolution kernel,
``(*kernel_size, in_channels, features)``, so fan-in based initializers see the fan-in of one output unit.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.layers._common import Initializer, check_positive_int, geometry, promoted_params
from cnn.layers.conv import DEFAULT_KERNEL_INIT
from cnn.ops.args import IntOrSeq, Padding, as_tuple, output_size, resolve_padding


def stacked_init(init: Initializer, lead: tuple[int, ...]) -> Initializer:
    """Initializer of ``(*lead, *shape)``: ``init(key_j, shape)`` for every lead index ``j``, independent keys."""

    def init_stack(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        keys = jax.random.split(key, math.prod(lead))
        kernels = jax.vmap(lambda k: init(k, shape[len(lead) :], dtype))(keys)
        return kernels.reshape(shape)

    return init_stack


class LocallyConnected(nn.Module):
    """Unshared convolution: one kernel and bias per output position (``ops.locally_connected``).

    The parameters depend on the input's spatial size: ``kernel`` is ``(*out_spatial, *kernel_size, in_channels,
    features)`` and ``bias`` ``(*out_spatial, features)``, created at the first call from ``x.shape``.
    ``kernel_size``, ``strides``, ``kernel_dilation``: an int (every spatial axis) or one per axis.
    """

    features: int
    kernel_size: IntOrSeq
    strides: IntOrSeq = 1
    padding: Padding = "SAME"
    kernel_dilation: IntOrSeq = 1
    use_bias: bool = True
    kernel_init: Initializer = DEFAULT_KERNEL_INIT
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_positive_int(self.features, "features")
        kernel_size, strides, dilation = geometry(self, x.ndim - 2)
        pads = resolve_padding(self.padding, x.shape[1:-1], kernel_size, strides, dilation)
        out = output_size(x.shape[1:-1], kernel_size, strides, dilation, pads)
        x, kernel, bias = promoted_params(
            self, x, (*out, self.features),
            kernel=(stacked_init(self.kernel_init, out), (*out, *kernel_size, x.shape[-1], self.features)),
        )
        y = ops.locally_connected(x, kernel, stride=strides, padding=pads, dilation=dilation)
        return y if bias is None else y + bias


class TiledConv(nn.Module):
    """Tiled convolution: ``tile`` kernels per axis cycled over the output positions (``ops.tiled_conv``).

    ``kernel`` is ``(*tile, *kernel_size, in_channels, features)``, ``bias`` ``(*tile, features)``; output position
    ``p`` uses kernel and bias ``p mod tile``. ``tile``: an int (every spatial axis, default 2) or one per axis.
    """

    features: int
    kernel_size: IntOrSeq
    tile: IntOrSeq = 2
    strides: IntOrSeq = 1
    padding: Padding = "SAME"
    kernel_dilation: IntOrSeq = 1
    use_bias: bool = True
    kernel_init: Initializer = DEFAULT_KERNEL_INIT
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_positive_int(self.features, "features")
        ndim = x.ndim - 2
        kernel_size, strides, dilation = geometry(self, ndim)
        tile = as_tuple(self.tile, ndim, "tile")
        x, kernel, bias = promoted_params(
            self, x, (*tile, self.features),
            kernel=(stacked_init(self.kernel_init, tile), (*tile, *kernel_size, x.shape[-1], self.features)),
        )
        y = ops.tiled_conv(x, kernel, stride=strides, padding=self.padding, dilation=dilation)
        if bias is None:
            return y
        out = y.shape[1:-1]
        repeats = [-(-o // t) for o, t in zip(out, tile, strict=True)]  # whole tiles covering the output
        tiled_bias = jnp.tile(bias, (*repeats, 1))[tuple(slice(0, o) for o in out)]
        return y + tiled_bias
