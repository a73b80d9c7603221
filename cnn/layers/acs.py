"""ACS convolution layer (Yang et al. 2021) over ``ops.acs_conv``: one 2D kernel ``(k, k, in_channels, features)``
on a volume, its output channels split over the axial, coronal and sagittal views (see ``cnn.ops.acs``),

    y = concat_views(correlate(x, W_view)) + b.

The parameters are those of the 2D convolution (``k² · C · O`` weights), so 2D weights transfer to the 3D model as
they are; the output has the shape of the ``k × k × k`` convolution with the same arguments.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.layers._common import Initializer, check_positive_int, geometry, promoted_params
from cnn.layers.conv import DEFAULT_KERNEL_INIT
from cnn.ops.args import IntOrSeq, Padding


class ACSConv(nn.Module):
    """ACS convolution of ``x`` ``(batch, d, h, w, channels)``; ``kernel_size`` an int or three equal ints."""

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
        if x.ndim != 5:
            raise ValueError(f"ACSConv needs x of shape (batch, depth, height, width, channels), got {x.shape}")
        kernel_size, strides, dilation = geometry(self, 3)
        if len(set(kernel_size)) != 1:
            raise ValueError(f"ACSConv needs a cubic kernel_size, got {self.kernel_size!r}")
        k = kernel_size[0]
        x, kernel, bias = promoted_params(
            self, x, (self.features,), kernel=(self.kernel_init, (k, k, x.shape[-1], self.features))
        )
        y = ops.acs_conv(x, kernel, stride=strides, padding=self.padding, dilation=dilation)
        return y if bias is None else y + bias
