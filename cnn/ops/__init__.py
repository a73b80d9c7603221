"""Operators of a convolutional network as pure JAX functions (Goodfellow et al., Deep Learning, ch. 9).

Channels last: inputs ``(batch, *spatial, channels)``, kernels ``(*kernel_spatial, in // groups, out)``; one, two or
three spatial dimensions. See ``docs/operators.md`` for each formula and the identities that test it.
"""

from cnn.ops.acs import acs_conv, acs_split
from cnn.ops.conv import conv_matrix, conv_transpose, convolve, correlate
from cnn.ops.deformable import deformable_conv
from cnn.ops.equivariance import equivariance_error, rescale, rotate90, shift
from cnn.ops.fft import fft_conv, fft_conv_circular
from cnn.ops.graph import (
    Graph,
    cheb_conv,
    check_graph,
    edge_type_conv,
    gcn_conv,
    gcn_normalize,
    grid_graph,
    propagate,
    row_normalize,
    scaled_laplacian,
)
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
    "Graph",
    "Layer",
    "ReceptiveField",
    "acs_conv",
    "acs_split",
    "adaptive_pool",
    "avg_pool",
    "channel_pool",
    "cheb_conv",
    "check_graph",
    "conv_matrix",
    "conv_transpose",
    "convolve",
    "correlate",
    "deformable_conv",
    "depthwise_separable",
    "edge_type_conv",
    "empirical_receptive_field",
    "equivariance_error",
    "fft_conv",
    "fft_conv_circular",
    "gaussian_window",
    "gcn_conv",
    "gcn_normalize",
    "global_pool",
    "grid_graph",
    "locally_connected",
    "lp_pool",
    "max_pool",
    "propagate",
    "receptive_field",
    "rescale",
    "rotate90",
    "row_normalize",
    "scaled_laplacian",
    "separable_approximation",
    "separable_conv",
    "separable_reconstruct",
    "shift",
    "tiled_conv",
    "weighted_pool",
]
