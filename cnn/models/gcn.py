"""Graph convolutional networks for node classification: GCN (Kipf & Welling 2017, "Semi-Supervised Classification
with Graph Convolutional Networks", sec. 3.1 and appendix B) and its Chebyshev baseline (Defferrard et al. 2016, as
Kipf & Welling's table 2 runs it: the same network with ``ChebConv`` layers).

| layer | operation                                                  | output (Cora)   | parameters (Cora)        |
|-------|------------------------------------------------------------|-----------------|--------------------------|
| input | features row-normalized, dropout 0.5                       | 2,708 × 1,433   | 0                        |
| conv1 | graph convolution, 16 units, ReLU, dropout 0.5             | 2,708 × 16      | 1,433 · 16 = 22,928      |
| conv2 | graph convolution, ``num_classes`` units: the logits       | 2,708 × 7       | 16 · 7 = 112             |

23,040 parameters for GCN on Cora (1,433 features, 7 classes); a Chebyshev layer of order ``K`` has ``K + 1``
weight matrices: 69,120 for ``chebnet_k2``, 92,160 for ``chebnet_k3``. As in Kipf's reference code
(``gcn/models.py``, ``gcn/layers.py``): no bias (``GraphConvolution(bias=False)``), Glorot-uniform weights, dropout
on the input of both layers (on the sparse features too), row normalization of the features
(``preprocess_features``); the softmax is left to the loss. Their weight decay of 5e-4 applies to ``conv1`` only: the
optimizer's business, hence the layer names.

``conv`` builds both layers (injected, ``GCNConv`` by default; ``chebnet_k*`` pass ``ChebConv`` of order ``K``):
called as ``conv(features, name=...)(graph)`` on a ``cnn.ops.Graph``. The model is applied as
``model.apply(variables, graph, train=...)`` and returns ``(N, num_classes)`` logits, one row per node.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from cnn import ops
from cnn.errors import UserError
from cnn.layers import GCNConv, ModuleDef


class GCN(nn.Module):
    takes_graph: ClassVar[bool] = True  # applied to a cnn.ops.Graph, not an image batch (cnn.train.experiment checks)
    num_classes: int
    hidden: int = 16
    dropout_rate: float = 0.5
    normalize_features: bool = True
    conv: ModuleDef = GCNConv

    @nn.compact
    def __call__(self, graph: ops.Graph, train: bool = False) -> jax.Array:
        if not isinstance(graph, ops.Graph):
            shape = getattr(graph, "shape", None)
            raise UserError(f"{type(self).__name__} takes a cnn.ops.Graph (node features and edges), got "
                            f"{type(graph).__name__}" + (f" of shape {tuple(shape)}: an image batch?" if shape else ""))
        try:
            ops.check_graph(graph)
        except ValueError as error:
            raise UserError(str(error)) from None
        x = ops.row_normalize(graph.nodes) if self.normalize_features else graph.nodes
        for index, features in enumerate((self.hidden, self.num_classes), start=1):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = self.conv(features, name=f"conv{index}")(graph._replace(nodes=x))
            if index == 1:
                x = nn.relu(x)
        return x
