"""Depthwise separable convolution layer (MobileNet / Xception; Deep Learning, sec. 9.8) over
``ops.depthwise_separable``:

    h[n, i, c·m + q] = sum_k x_pad[n, i·s + k·d, c] · D[k, 0, c·m + q]     (depthwise, multiplier m)
    y[n, i, o]       = sum_r h[n, i, r] · P[r, o] + b[o]                    (pointwise)

``depthwise`` is ``(*kernel_size, 1, C·m)``, ``pointwise`` ``(C·m, features)``; one bias, after the pointwise step
(as Keras' ``SeparableConv2D``). ``kernel_init`` initializes both kernels, each over its own fan-in
(``prod(kernel_size)`` and ``C·m``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.layers._common import Initializer, check_positive_int, promoted_params
from cnn.layers.conv import DEFAULT_KERNEL_INIT
from cnn.ops.args import IntOrSeq, Padding, as_tuple


class SeparableConv(nn.Module):
    """Depthwise (``depth_multiplier`` filters per input channel) then pointwise convolution."""

    features: int
    kernel_size: IntOrSeq
    depth_multiplier: int = 1
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
        check_positive_int(self.depth_multiplier, "depth_multiplier")
        ndim = x.ndim - 2
        kernel_size = as_tuple(self.kernel_size, ndim, "kernel_size")
        depth = x.shape[-1] * self.depth_multiplier
        x, depthwise, pointwise, bias = promoted_params(
            self, x, (self.features,),
            depthwise=(self.kernel_init, (*kernel_size, 1, depth)),
            pointwise=(self.kernel_init, (depth, self.features)),
        )
        y = ops.depthwise_separable(
            x, depthwise, pointwise, stride=self.strides, padding=self.padding, dilation=self.kernel_dilation
        )
        return y if bias is None else y + bias
