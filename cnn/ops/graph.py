"""Convolution on a graph: message passing over an edge list (Kipf & Welling 2017; Defferrard, Bresson & Vandergheynst
2016), and the pixel grid as a graph.

A graph of ``N`` nodes holds a feature row per node, ``X`` of shape ``(N, F)``, and ``E`` directed edges
``senders[e] -> receivers[e]`` with optional weights ``w[e]`` (1 when absent). It is the (weighted) adjacency matrix

    A[r, s] = sum over edges e with (senders[e], receivers[e]) = (s, r) of w[e]

so an edge listed twice counts twice, a self loop ``s = r`` sits on the diagonal, and an undirected link is two edges,
one each way. One round of message passing is the product ``A X``: every node sums the weighted feature rows of the
nodes that send to it,

    (A X)[r] = sum_{e: receivers[e] = r} w[e] · X[senders[e]]

computed as a gather ``X[senders]`` and ``jax.ops.segment_sum`` over ``receivers`` (``method="segment"``), or as a
``jax.experimental.sparse`` BCOO matrix times ``X`` (``method="sparse"``). A graph convolution is a polynomial in such
a matrix, applied to ``X``, followed by a weight matrix shared by all nodes; on the pixel grid (``grid_graph``) with
one weight per edge direction it is the 3×3 ``correlate`` (see ``docs/operators.md``, "Graph convolution").

Every function takes one graph and its ``(N, F)`` features; ``jax.vmap`` over ``Graph(nodes=0, ...)`` (the edges
unbatched) runs a batch of feature matrices on one graph.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from cnn.ops.args import float_array

PROPAGATE_METHODS = ("segment", "sparse")


class Graph(NamedTuple):
    """``nodes (N, F)`` features, ``senders (E,)`` and ``receivers (E,)`` int node ids, optional ``weights (E,)``."""

    nodes: jax.Array
    senders: jax.Array
    receivers: jax.Array
    weights: jax.Array | None = None


def _concrete(array) -> np.ndarray | None:
    """``array`` as numpy, or ``None`` under a transformation (``jit``, ``vmap``, ``grad``) where it has no value."""
    return None if isinstance(array, jax.core.Tracer) else np.asarray(array)


def check_graph(graph: Graph, *, labels: jax.Array | None = None, where: str = "graph") -> int:
    """The number of nodes ``N`` of ``graph``, after checking its shapes (and, outside ``jit``, its node ids).

    Raises ``ValueError`` naming ``where``: features that are not ``(N, F)`` (an image batch given to a graph op) or
    weights not of a floating-point dtype (``cnn.ops.args``: node ids are the only integer arrays),
    senders and receivers that are not two int vectors of one length ``E``, weights not ``(E,)``, an edge naming a
    node outside ``0 .. N-1`` (checked only where the ids are concrete: under ``jit`` a gather would clamp the id and
    ``segment_sum`` drop the message silently), or ``labels`` whose first axis is not ``N``.
    """
    if not isinstance(graph, Graph):
        raise ValueError(f"{where} must be a cnn.ops.Graph(nodes, senders, receivers, weights), got {type(graph)}")
    shape = np.shape(graph.nodes)
    if len(shape) != 2:
        hint = ": an image batch? cnn.ops.grid_graph turns one image into a graph" if len(shape) == 4 else ""
        raise ValueError(f"{where}.nodes must be (num_nodes, features), got shape {shape}{hint}")
    float_array(graph.nodes, f"{where}.nodes")
    if graph.weights is not None:
        float_array(graph.weights, f"{where}.weights")
    num_nodes, ids = shape[0], {"senders": graph.senders, "receivers": graph.receivers}
    shapes = {np.shape(v) for v in ids.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1 or not all(
        jnp.issubdtype(jnp.result_type(v), jnp.integer) for v in ids.values()
    ):
        raise ValueError(f"{where}.senders and {where}.receivers must be int vectors of one length, got "
                         + " and ".join(f"{jnp.result_type(v)}{np.shape(v)}" for v in ids.values()))
    num_edges = np.shape(graph.senders)[0]
    for name, array in ids.items():
        values = _concrete(array)
        outside = np.array([], int) if values is None else np.flatnonzero((values < 0) | (values >= num_nodes))
        if outside.size:
            e = int(outside[0])
            raise ValueError(f"{where}.{name}[{e}] = {int(values[e])} names a node outside the graph of "
                             f"{num_nodes} nodes (ids 0..{num_nodes - 1}); {outside.size} such edges")
    if graph.weights is not None and np.shape(graph.weights) != (num_edges,):
        raise ValueError(f"{where}.weights must be ({num_edges},), one per edge, got {np.shape(graph.weights)}")
    if labels is not None and np.shape(labels)[:1] != (num_nodes,):
        raise ValueError(f"labels have shape {np.shape(labels)} but {where}.nodes has {num_nodes} nodes: "
                         "one label per node expected")
    return num_nodes


def _edge_weights(graph: Graph) -> jax.Array:
    return jnp.ones(graph.senders.shape, graph.nodes.dtype) if graph.weights is None else graph.weights


def _aggregate(x: jax.Array, graph: Graph, method: str) -> jax.Array:
    """``(A x)[r] = sum_{e: receivers[e] = r} w[e] · x[senders[e]]`` for ``x`` of shape ``(N, ...)``."""
    if method not in PROPAGATE_METHODS:
        raise ValueError(f"method must be one of {list(PROPAGATE_METHODS)}, got {method!r}")
    num_nodes, weights = x.shape[0], _edge_weights(graph).astype(x.dtype)
    if method == "sparse":
        indices = jnp.stack([graph.receivers, graph.senders], axis=1)
        adjacency = sparse.BCOO((weights, indices), shape=(num_nodes, num_nodes))
        return (adjacency @ x.reshape(num_nodes, -1)).reshape(x.shape)
    messages = x[graph.senders] * weights.reshape(-1, *(1,) * (x.ndim - 1))
    return jax.ops.segment_sum(messages, graph.receivers, num_segments=num_nodes)


def propagate(graph: Graph, *, method: str = "segment") -> jax.Array:
    """One round of message passing, ``A X``:

        (A X)[r] = sum_{e: receivers[e] = r} w[e] · X[senders[e]]

    Args:
      graph: features ``nodes (N, F)``, edges ``senders``/``receivers (E,)``, optional ``weights (E,)``.
      method: ``"segment"`` (gather + ``jax.ops.segment_sum``) or ``"sparse"`` (BCOO matrix product): on Cora
        neither is consistently faster on XLA:CPU (``benchmarks/graph.py``, BENCHMARKS.md), so the default is the
        one without a sparse-matrix build.

    Returns:
      ``(N, F)``; a node nobody sends to gets zeros.
    """
    check_graph(graph)
    return _aggregate(graph.nodes, graph, method)


def _inverse_sqrt_degree(graph: Graph, self_loop: float) -> jax.Array:
    """``d^-1/2`` per node, ``d[r] = self_loop + sum_{e: receivers[e] = r} w[e]`` (row sums of ``A + self_loop·I``);
    ``0^-1/2`` is taken as 0, as Kipf's ``normalize_adj`` does."""
    weights = _edge_weights(graph)
    degree = jax.ops.segment_sum(weights, graph.receivers, num_segments=graph.nodes.shape[0]) + self_loop
    positive = degree > 0
    return jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, degree, 1)), 0)


def _with_self_loops(graph: Graph, edge_weights: jax.Array, loop_weights: jax.Array) -> Graph:
    """``graph`` with one more edge ``i -> i`` per node; its edges weighted ``edge_weights``, the loops
    ``loop_weights``."""
    nodes = jnp.arange(graph.nodes.shape[0], dtype=graph.senders.dtype)
    return Graph(
        graph.nodes,
        jnp.concatenate([graph.senders, nodes]),
        jnp.concatenate([graph.receivers, nodes]),
        jnp.concatenate([edge_weights, jnp.broadcast_to(loop_weights, nodes.shape).astype(edge_weights.dtype)]),
    )


def gcn_normalize(graph: Graph) -> Graph:
    """The edges of the renormalized adjacency of Kipf & Welling (2017, eq. 8), ``Â = D^-1/2 (A + I) D^-1/2``:

        Â[r, s] = (A + I)[r, s] / sqrt(d[r] · d[s]),   d[r] = 1 + sum_{e: receivers[e] = r} w[e]

    returned as ``graph`` with ``N`` self loops ``i -> i`` (weight 1) appended to its ``E`` edges and every weight
    divided by ``sqrt(d[r] · d[s])``. Taken literally from the formula, on ``A`` as defined in the module docstring:

    - an isolated node (no edge) has ``d = 1`` and keeps its own features, ``Â[i, i] = 1``;
    - a self loop already present adds to the ``I``: ``(A + I)[i, i] = w + 1`` (Kipf's ``adj + sp.eye``);
    - a duplicate edge counts twice (deduplicate the edge list first if it should not);
    - a directed edge is taken as given, not symmetrized: ``d`` is the row sum of ``A + I``, i.e. 1 + the in-degree
      of the receiver (PyG's ``gcn_norm``), and ``Â`` is symmetric only when ``A`` is. Planetoid's edge lists hold
      every link both ways.
    """
    check_graph(graph)
    inv_sqrt = _inverse_sqrt_degree(graph, 1.0)
    scaled = _edge_weights(graph) * inv_sqrt[graph.senders] * inv_sqrt[graph.receivers]
    return _with_self_loops(graph, scaled, inv_sqrt**2)


def _matmul_order(x: jax.Array, kernel: jax.Array, aggregate) -> jax.Array:
    """``aggregate(x) @ kernel``, or ``aggregate(x @ kernel)`` (equal: ``aggregate`` is linear over nodes) when the
    kernel narrows the features, so that messages are the narrower rows."""
    if kernel.shape[-1] < kernel.shape[-2]:
        return aggregate(x @ kernel)
    return aggregate(x) @ kernel


def gcn_conv(graph: Graph, kernel: jax.Array, bias: jax.Array | None = None, *, method: str = "segment") -> jax.Array:
    """The graph convolution of Kipf & Welling (2017, eq. 2), before the nonlinearity:

        Y = D^-1/2 (A + I) D^-1/2 X W + b

    with ``Â = D^-1/2 (A + I) D^-1/2`` as in ``gcn_normalize`` (computed here from the raw edges).

    Args:
      graph: features ``nodes (N, F_in)`` and edges; see ``propagate``.
      kernel: ``W``, ``(F_in, F_out)``.
      bias: ``b``, ``(F_out,)`` or ``None``.
      method: as in ``propagate``.

    Returns:
      ``(N, F_out)``.
    """
    kernel = float_array(kernel, "kernel")
    bias = None if bias is None else float_array(bias, "bias")
    normalized = gcn_normalize(graph)
    y = _matmul_order(graph.nodes, kernel, lambda x: _aggregate(x, normalized, method))
    return y if bias is None else y + bias


def scaled_laplacian(graph: Graph, lambda_max: float | jax.Array = 2.0) -> Graph:
    """The edges of the rescaled Laplacian of Defferrard et al. (2016, sec. 2.2), ``L̃ = 2 L / λmax - I``, with
    ``L = I - D^-1/2 A D^-1/2`` the normalized Laplacian (no added self loops; ``d`` the row sums of ``A``):

        L̃[r, s] = (2 / λmax - 1) [r = s] - (2 / λmax) A[r, s] / sqrt(d[r] · d[s])

    returned as ``graph`` with every edge weighted ``-(2 / λmax) w / sqrt(d[r] d[s])`` and ``N`` self loops of weight
    ``2 / λmax - 1`` appended. An isolated node has ``d = 0``, taken as ``d^-1/2 = 0`` (Kipf's ``normalize_adj``),
    so its row is ``(2 / λmax - 1) [r = s]``; on a directed graph so is a node that only sends (its in-degree ``d``
    is 0), whose messages are then dropped as well.

    ``λmax``: ``L``'s eigenvalues lie in ``[0, 2]``, so the default ``λmax = 2`` keeps those of ``L̃`` in
    ``[-1, 1]``; it is what Defferrard's own models use (cnn_graph ``lib/models.py``: ``rescale_L(L, lmax=2)``) and
    Kipf & Welling's approximation in their sec. 2.2. Kipf's reference ``chebyshev_polynomials`` instead computes the
    largest eigenvalue of ``L`` (``eigsh``), mapping it to 1: pass that value to rescale as it does.
    """
    check_graph(graph)
    inv_sqrt = _inverse_sqrt_degree(graph, 0.0)
    scale = 2.0 / jnp.asarray(lambda_max, graph.nodes.dtype)
    edges = -scale * _edge_weights(graph) * inv_sqrt[graph.senders] * inv_sqrt[graph.receivers]
    return _with_self_loops(graph, edges, scale - 1)


def cheb_conv(
    graph: Graph,
    kernels: jax.Array,
    bias: jax.Array | None = None,
    *,
    lambda_max: float | jax.Array = 2.0,
    method: str = "segment",
) -> jax.Array:
    """Chebyshev spectral filter of order ``K`` (Defferrard et al. 2016, eq. 4; Kipf & Welling 2017, eq. 5):

        Y = sum_{k=0}^{K} T_k(L̃) X W_k + b,   T_0 = I,  T_1 = L̃,  T_k = 2 L̃ T_{k-1} - T_{k-2}

    with ``L̃ = 2 L / λmax - I`` (``scaled_laplacian``). ``T_k(L̃)`` is a polynomial of degree ``k`` in the adjacency:
    output ``r`` depends on the nodes within ``K`` hops of it. ``K`` counts as Kipf & Welling's "Chebyshev K": ``K + 1``
    weight matrices (Defferrard's ``K`` is that number of coefficients, one more).

    Args:
      graph: features ``nodes (N, F_in)`` and edges; see ``propagate``.
      kernels: ``W_0 .. W_K``, ``(K + 1, F_in, F_out)``.
      bias: ``(F_out,)`` or ``None``.
      lambda_max: ``λmax``; 2 by default (see ``scaled_laplacian``).
      method: as in ``propagate``.

    Returns:
      ``(N, F_out)``.
    """
    if np.ndim(kernels) != 3:
        raise ValueError(f"kernels must be (K + 1, in_features, out_features), got shape {np.shape(kernels)}")
    kernels = float_array(kernels, "kernels")
    bias = None if bias is None else float_array(bias, "bias")
    laplacian = scaled_laplacian(graph, lambda_max)
    previous, current = graph.nodes, _aggregate(graph.nodes, laplacian, method)  # T_0 X, T_1 X
    terms = [previous, current][: kernels.shape[0]]
    for _ in range(2, kernels.shape[0]):
        previous, current = current, 2 * _aggregate(current, laplacian, method) - previous
        terms.append(current)
    y = sum(t @ w for t, w in zip(terms, kernels, strict=True))
    return y if bias is None else y + bias


def row_normalize(x: jax.Array) -> jax.Array:
    """Each row divided by its sum, ``x[i, j] / sum_j' x[i, j']``; an all-zero row stays zero (Kipf's
    ``preprocess_features``: bag-of-words rows become term frequencies)."""
    if np.ndim(x) != 2:
        raise ValueError(f"x must be (num_nodes, features), got shape {np.shape(x)}")
    x = float_array(x, "x")
    total = jnp.sum(x, axis=1, keepdims=True)
    return jnp.where(total != 0, x / jnp.where(total != 0, total, 1), 0)


GRID_OFFSETS = {
    4: ((-1, 0), (0, -1), (0, 1), (1, 0)),
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
}


def grid_graph(image: jax.Array, connectivity: int = 8, *, self_loops: bool = False) -> tuple[Graph, jax.Array]:
    """The ``H×W`` pixel grid as a graph: node ``i·W + j`` is pixel ``(i, j)`` with its ``C`` channels as features, and
    pixel ``(i + dy, j + dx)`` sends to ``(i, j)`` for every neighbour offset inside the image,

        4-neighbour: (dy, dx) in {(±1, 0), (0, ±1)};   8-neighbour: also (±1, ±1);   self loops: (0, 0)

    Returns the graph (edges both ways, unweighted) and each edge's direction, ``(dy + 1)·3 + (dx + 1)`` in
    ``0 .. 8``: the tap of a 3×3 kernel that ``correlate`` multiplies with that neighbour, ``w[dy + 1, dx + 1]``. Pixels
    on the border have fewer neighbours: the edges that would leave the image are absent, as zero padding makes
    those taps contribute nothing.
    """
    if np.ndim(image) != 3:
        raise ValueError(f"image must be one (height, width, channels) image, got shape {np.shape(image)}")
    if connectivity not in GRID_OFFSETS:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    height, width, channels = np.shape(image)
    offsets = GRID_OFFSETS[connectivity] + (((0, 0),) if self_loops else ())
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    senders, receivers, directions = [], [], []
    for dy, dx in offsets:
        inside = (rows + dy >= 0) & (rows + dy < height) & (cols + dx >= 0) & (cols + dx < width)
        senders.append(((rows + dy) * width + cols + dx)[inside])
        receivers.append((rows * width + cols)[inside])
        directions.append(np.full(inside.sum(), (dy + 1) * 3 + dx + 1))
    graph = Graph(
        jnp.reshape(float_array(image, "image"), (height * width, channels)),
        jnp.asarray(np.concatenate(senders), jnp.int32),
        jnp.asarray(np.concatenate(receivers), jnp.int32),
    )
    return graph, jnp.asarray(np.concatenate(directions), jnp.int32)


def edge_type_conv(graph: Graph, edge_types: jax.Array, kernels: jax.Array) -> jax.Array:
    """A graph convolution with one weight matrix per edge type (relational message passing, unnormalized):

        Y[r] = sum_{e: receivers[e] = r} w[e] · X[senders[e]] W_{t[e]}

    On ``grid_graph(..., self_loops=True)`` with the edge direction as type and ``W_t = w[t // 3, t % 3]`` this is the
    3×3 ``correlate`` of the image with ``w``, zero padding ("SAME"); plain message passing (one type) cannot tell
    the directions apart.

    Args:
      graph: features ``nodes (N, F_in)`` and edges; see ``propagate``.
      edge_types: ``t``, ``(E,)`` ints in ``0 .. T-1``.
      kernels: ``W_0 .. W_{T-1}``, ``(T, F_in, F_out)``.

    Returns:
      ``(N, F_out)``.
    """
    num_nodes = check_graph(graph)
    if np.shape(edge_types) != np.shape(graph.senders):
        raise ValueError(f"edge_types must be ({np.shape(graph.senders)[0]},), one per edge, "
                         f"got {np.shape(edge_types)}")
    kernels = float_array(kernels, "kernels")
    transformed = jnp.einsum("nf,tfo->nto", graph.nodes, kernels)  # X W_t for every type: (N, T, F_out)
    messages = transformed[graph.senders, edge_types] * _edge_weights(graph)[:, None]
    return jax.ops.segment_sum(messages, graph.receivers, num_segments=num_nodes)
