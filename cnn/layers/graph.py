"""Graph convolution layers over ``cnn.ops`` (Kipf & Welling 2017; Defferrard et al. 2016): called on a
``cnn.ops.Graph`` whose ``nodes`` are ``(N, F_in)``, they return the ``(N, features)`` node features.

    GCNConv:   Y = D^-1/2 (A + I) D^-1/2 X W + b
    ChebConv:  Y = sum_{k=0}^{K} T_k(L̃) X W_k + b,   L̃ = 2 L / λmax - I

Without bias by default, as Kipf's reference ``GraphConvolution`` (``bias=False``); kernels Glorot-uniform as its
``glorot``, each ``W_k`` drawn on its own ``(F_in, F_out)`` shape as Kipf draws one per Chebyshev support.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.layers._common import Initializer, check_positive_int, promoted_params
from cnn.layers.local import stacked_init


class GCNConv(nn.Module):
    """``ops.gcn_conv``: ``kernel (F_in, features)``, ``bias (features,)`` if ``use_bias``."""

    features: int
    use_bias: bool = False
    method: str = "segment"
    kernel_init: Initializer = nn.initializers.glorot_uniform()
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph: ops.Graph) -> jax.Array:
        check_positive_int(self.features, "features")
        ops.check_graph(graph)
        x, kernel, bias = promoted_params(
            self, graph.nodes, (self.features,), kernel=(self.kernel_init, (graph.nodes.shape[-1], self.features))
        )
        return ops.gcn_conv(graph._replace(nodes=x), kernel, bias, method=self.method)


class ChebConv(nn.Module):
    """``ops.cheb_conv`` of order ``K``: ``kernel (K + 1, F_in, features)``, ``bias (features,)`` if ``use_bias``."""

    features: int
    order: int = 2
    lambda_max: float = 2.0
    use_bias: bool = False
    method: str = "segment"
    kernel_init: Initializer = nn.initializers.glorot_uniform()
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, graph: ops.Graph) -> jax.Array:
        check_positive_int(self.features, "features")
        if not isinstance(self.order, int) or self.order < 0:
            raise ValueError(f"order must be an int >= 0 (the degree K of the polynomial), got {self.order!r}")
        ops.check_graph(graph)
        terms = self.order + 1
        x, kernel, bias = promoted_params(
            self, graph.nodes, (self.features,),
            kernel=(stacked_init(self.kernel_init, (terms,)), (terms, graph.nodes.shape[-1], self.features)),
        )
        return ops.cheb_conv(graph._replace(nodes=x), kernel, bias, lambda_max=self.lambda_max, method=self.method)
