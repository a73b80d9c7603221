"""Deformable convolution layer, DCNv1 / DCNv2 (Dai et al. 2017; Zhu et al. 2019) over ``ops.deformable_conv``.

    y[n, i, j, o] = sum_{a, b, c} W[a, b, c, o] · m[n, i, j, g(c), a, b]
                    · bilinear(x[n, :, :, c], i·s_h - pad_top + a·d_h + dy, j·s_w - pad_left + b·d_w + dx) + b[o]

The offsets ``(dy, dx)`` and, when ``modulated`` (v2), the mask ``m = sigmoid(logits)`` are predicted from the
input by a standard ``Conv`` (submodule ``offset_conv``) with the same kernel size, strides, padding and dilation,
initialized to zero (as DCNv2): at init every offset is 0, so the layer is the plain correlation with ``W``
when ``modulated=False`` and, since ``sigmoid(0) = 1/2``, exactly half of it when ``modulated=True`` (torchvision's
and DCNv2's convention; the mask logits learn away from 0).

``offset_conv`` outputs ``offset_groups · kh · kw · 3`` channels (``· 2`` unmodulated) read as
``(offset_groups, kh, kw, (dy, dx[, mask logit]))`` in row-major order.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.layers._common import Initializer, check_positive_int, promoted_params
from cnn.layers.conv import DEFAULT_KERNEL_INIT, Conv
from cnn.ops.args import IntOrSeq, Padding, as_tuple


class DeformableConv(nn.Module):
    """2D deformable convolution with offsets (and a mask) predicted from the input; ``x``: ``(N, H, W, C)``.

    ``kernel`` is ``(kh, kw, in_channels, features)``; ``offset_groups`` contiguous channel groups share offsets.
    """

    features: int
    kernel_size: IntOrSeq
    strides: IntOrSeq = 1
    padding: Padding = "SAME"
    kernel_dilation: IntOrSeq = 1
    offset_groups: int = 1
    modulated: bool = True
    use_bias: bool = True
    kernel_init: Initializer = DEFAULT_KERNEL_INIT
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_positive_int(self.features, "features")
        if x.ndim != 4:
            raise ValueError(f"DeformableConv needs x of shape (batch, height, width, channels), got {x.shape}")
        check_positive_int(self.offset_groups, "offset_groups")
        if x.shape[-1] % self.offset_groups:
            raise ValueError(f"offset_groups={self.offset_groups} must divide the {x.shape[-1]} input channels")
        kernel_size = as_tuple(self.kernel_size, 2, "kernel_size")
        fields = 3 if self.modulated else 2
        predicted = Conv(
            self.offset_groups * kernel_size[0] * kernel_size[1] * fields, kernel_size, self.strides, self.padding,
            self.kernel_dilation, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
            dtype=self.dtype, param_dtype=self.param_dtype, name="offset_conv",
        )(x)
        predicted = predicted.reshape(*predicted.shape[:3], self.offset_groups, *kernel_size, fields)
        offsets = predicted[..., :2]
        mask = jax.nn.sigmoid(predicted[..., 2]) if self.modulated else None
        x, kernel, bias = promoted_params(
            self, x, (self.features,), kernel=(self.kernel_init, (*kernel_size, x.shape[-1], self.features))
        )
        y = ops.deformable_conv(
            x, kernel, offsets, mask, stride=self.strides, padding=self.padding, dilation=self.kernel_dilation,
            offset_groups=self.offset_groups,
        )
        return y if bias is None else y + bias
