"""Operators of a convolutional network as pure JAX functions (Goodfellow et al., Deep Learning, ch. 9).

Channels last: inputs ``(batch, *spatial, channels)``, kernels ``(*kernel_spatial, in // groups, out)``; one, two or
three spatial dimensions. See ``docs/operators.md`` for each formula and the identities that test it.
"""

from cnn.ops.acs import acs_conv, acs_split
from cnn.ops.conv import conv_matrix, conv_transpose, convolve, correlate
from cnn.ops.deformable import deformable_conv
from cnn.ops.equivariance import equivariance_error, rescale, rotate90, shift
from cnn.ops.fft import fft_conv, fft_conv_circular
from cnn.ops.local import locally_connected, tiled_conv
from cnn.ops.pooling import (
    adaptive_pool,
    avg_pool,
    channel_pool,
    gaussian_window,
    global_pool,
    lp_pool,
    max_pool,
    weighted_pool,
)
from cnn.ops.receptive_field import Layer, ReceptiveField, empirical_receptive_field, receptive_field
from cnn.ops.separable import (
    depthwise_separable,
    separable_approximation,
    separable_conv,
    separable_reconstruct,
)

__all__ = [
    "Layer",
    "ReceptiveField",
    "acs_conv",
    "acs_split",
    "adaptive_pool",
    "avg_pool",
    "channel_pool",
    "conv_matrix",
    "conv_transpose",
    "convolve",
    "correlate",
    "deformable_conv",
    "depthwise_separable",
    "empirical_receptive_field",
    "equivariance_error",
    "fft_conv",
    "fft_conv_circular",
    "gaussian_window",
    "global_pool",
    "locally_connected",
    "lp_pool",
    "max_pool",
    "receptive_field",
    "rescale",
    "rotate90",
    "separable_approximation",
    "separable_conv",
    "separable_reconstruct",
    "shift",
    "tiled_conv",
    "weighted_pool",
]
