"""Graph convolutions against dense numpy formulas: the adjacency matrix built entry by entry from the edge list
(``A[r, s] += w`` per edge), ``D^-1/2 (A + I) D^-1/2 X W`` for GCN, the Chebyshev recursion ``T_k = 2 L̃ T_{k-1} -
T_{k-2}`` on dense matrices (with ``λmax`` from numpy's eigenvalues as Kipf's code, or 2), hop distances from
scipy's ``shortest_path`` for locality; gradients by ``check_grads``. On the pixel grid: one weight per edge direction
is the 3×3 ``correlate``, plain GCN a degree-normalized isotropic kernel.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.csgraph
from jax.test_util import check_grads

from cnn import ops
from cnn.ops import Graph
from tests.reference import assert_close

N = 9


def edge_case_graph(rng: np.random.Generator, features: int = 3, weighted: bool = False) -> Graph:
    """9 nodes: undirected links among 0..5, one directed edge 6 -> 0, a self loop on 1, the link 2 - 3 listed twice,
    node 7 that only sends (7 -> 4), node 8 isolated."""
    links = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (2, 3)]
    edges = [*links, *[(t, s) for s, t in links], (6, 0), (1, 1), (7, 4)]
    senders, receivers = np.array(edges).T
    weights = jnp.asarray(rng.uniform(0.5, 2.0, len(edges)), jnp.float32) if weighted else None
    x = jnp.asarray(rng.standard_normal((N, features)), jnp.float32)
    return Graph(x, jnp.asarray(senders, jnp.int32), jnp.asarray(receivers, jnp.int32), weights)


def dense_adjacency(graph: Graph) -> np.ndarray:
    """``A[r, s] = sum of the weights of the edges s -> r``, one edge at a time."""
    a = np.zeros((N, N))
    weights = np.ones(len(graph.senders)) if graph.weights is None else np.asarray(graph.weights, np.float64)
    for s, r, w in zip(np.asarray(graph.senders), np.asarray(graph.receivers), weights, strict=True):
        a[r, s] += w
    return a


def inv_sqrt(d: np.ndarray) -> np.ndarray:
    out = np.zeros_like(d)
    out[d > 0] = d[d > 0] ** -0.5
    return out


def gcn_matrix(graph: Graph) -> np.ndarray:
    """``D^-1/2 (A + I) D^-1/2``, ``D`` the row sums of ``A + I``."""
    a = dense_adjacency(graph) + np.eye(N)
    d = np.diag(inv_sqrt(a.sum(axis=1)))
    return d @ a @ d


def scaled_laplacian(graph: Graph, lambda_max: float | None) -> tuple[np.ndarray, float]:
    """``2 L / λmax - I`` with ``L = I - D^-1/2 A D^-1/2``; ``λmax=None``: the largest eigenvalue of ``L`` (as Kipf's
    ``chebyshev_polynomials``; ``L`` is symmetric only for an undirected graph, so take the real part)."""
    a = dense_adjacency(graph)
    d = np.diag(inv_sqrt(a.sum(axis=1)))
    laplacian = np.eye(N) - d @ a @ d
    if lambda_max is None:
        lambda_max = float(np.linalg.eigvals(laplacian).real.max())
    return 2 * laplacian / lambda_max - np.eye(N), lambda_max


def f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


@pytest.mark.parametrize("method", ops.graph.PROPAGATE_METHODS)
@pytest.mark.parametrize("weighted", [False, True])
def test_propagate_is_the_dense_adjacency_product(method, weighted):
    graph = edge_case_graph(np.random.default_rng(0), weighted=weighted)
    got = ops.propagate(graph, method=method)
    assert_close(got, dense_adjacency(graph) @ f64(graph.nodes))
    assert np.all(np.asarray(got)[[6, 7, 8]] == 0)  # nobody sends to 6, 7 or 8


@pytest.mark.parametrize("method", ops.graph.PROPAGATE_METHODS)
@pytest.mark.parametrize("weighted", [False, True])
def test_gcn_conv_is_the_dense_formula(method, weighted):
    rng = np.random.default_rng(1)
    graph = edge_case_graph(rng, weighted=weighted)
    for f_out in (2, 5):  # narrowing (X W first) and widening (A X first)
        kernel, bias = rng.standard_normal((3, f_out)), rng.standard_normal(f_out)
        got = ops.gcn_conv(graph, jnp.asarray(kernel, jnp.float32), jnp.asarray(bias, jnp.float32), method=method)
        assert_close(got, gcn_matrix(graph) @ f64(graph.nodes) @ kernel + bias)


def test_gcn_normalize_edge_cases_as_documented():
    graph = edge_case_graph(np.random.default_rng(2))
    normalized = ops.gcn_normalize(graph)
    a_hat = dense_adjacency(normalized)
    assert_close(a_hat, gcn_matrix(graph))
    assert a_hat[8, 8] == pytest.approx(1.0) and a_hat[8].sum() == pytest.approx(1.0)  # isolated: keeps itself
    degree_1 = 1 + 3  # neighbours 0 and 2, its own self loop, plus I
    assert a_hat[1, 1] == pytest.approx(2 / degree_1)  # the self loop present adds to I
    degree_2, degree_3 = 1 + 3, 1 + 3  # 2 - 3 listed twice: counts twice
    assert a_hat[2, 3] == pytest.approx(2 / np.sqrt(degree_2 * degree_3))
    # directed 6 -> 0: row 0 gets 6, row 6 does not get 0; node 6 receives nothing, so d_6 = 1
    assert a_hat[0, 6] == pytest.approx(1 / np.sqrt(4 * 1)) and a_hat[6, 0] == 0
    assert a_hat[4, 7] == pytest.approx(1 / np.sqrt(4 * 1)) and a_hat[7, 4] == 0
    assert len(normalized.senders) == len(graph.senders) + N


@pytest.mark.parametrize("lambda_max", [2.0, None])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_cheb_conv_is_the_chebyshev_recursion(order, lambda_max):
    rng = np.random.default_rng(3)
    graph = edge_case_graph(rng, weighted=True)
    lt, lam = scaled_laplacian(graph, lambda_max)
    kernels = rng.standard_normal((order + 1, 3, 4))
    t = [np.eye(N), lt]
    for _ in range(2, order + 1):
        t.append(2 * lt @ t[-1] - t[-2])
    expected = sum(t[k] @ f64(graph.nodes) @ kernels[k] for k in range(order + 1))
    for method in ops.graph.PROPAGATE_METHODS:
        got = ops.cheb_conv(graph, jnp.asarray(kernels, jnp.float32), lambda_max=lam, method=method)
        assert_close(got, expected, rtol=1e-4)


def test_cheb_conv_is_k_localized():
    """Output r depends on input s only within K hops (s -> r paths of at most K edges), and on every node at exactly
    K hops (the shortest paths' weight products, all of one sign, cannot cancel). Hops count the edges of ``L``: not
    those sent by nodes 6 and 7, which receive nothing (``d = 0``, taken as ``d^-1/2 = 0``)."""
    rng = np.random.default_rng(4)
    graph = edge_case_graph(rng)
    a = dense_adjacency(graph)
    a[:, a.sum(axis=1) == 0] = 0
    hops = scipy.sparse.csgraph.shortest_path(a.T != 0, unweighted=True)  # [s, r]
    for order in (1, 2, 3):
        kernels = jnp.asarray(rng.standard_normal((order + 1, 3, 1)), jnp.float32)
        jac = jax.jacobian(lambda x, k=kernels: ops.cheb_conv(graph._replace(nodes=x), k)[:, 0])(graph.nodes)
        influence = np.abs(np.asarray(jac)).sum(axis=2)  # [r, s]
        assert np.all(influence[hops.T - order > 0] == 0)
        assert np.all(influence[hops.T - order == 0] > 0)


def test_row_normalize_divides_by_row_sums_and_keeps_zero_rows():
    x = np.abs(np.random.default_rng(5).standard_normal((4, 6)))
    x[2] = 0
    got = np.asarray(ops.row_normalize(jnp.asarray(x, jnp.float32)))
    expected = x / np.where(x.sum(1, keepdims=True) == 0, 1, x.sum(1, keepdims=True))
    assert_close(got, expected)
    assert np.all(got[2] == 0)


def test_vmap_over_feature_batches_is_one_graph_at_a_time():
    rng = np.random.default_rng(6)
    graph = edge_case_graph(rng, weighted=True)
    batch = jnp.asarray(rng.standard_normal((5, N, 3)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 2)), jnp.float32)
    batched = graph._replace(nodes=batch)
    in_axes = (Graph(0, None, None, None),)
    got = jax.vmap(lambda g: ops.gcn_conv(g, kernel), in_axes=in_axes)(batched)
    for b in range(5):
        assert_close(got[b], gcn_matrix(graph) @ f64(batch[b]) @ f64(kernel))
    got = jax.vmap(ops.propagate, in_axes=in_axes)(batched)
    assert_close(got, np.einsum("rs,bsf->brf", dense_adjacency(graph), f64(batch)))


def test_graph_op_gradients():
    """With respect to features, edge weights, kernels and bias; both methods of message passing."""
    rng = np.random.default_rng(7)
    graph = edge_case_graph(rng, weighted=True)
    kernel, bias = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((3, 2), (2,)))
    kernels = jnp.asarray(rng.standard_normal((3, 3, 2)), jnp.float32)

    def prop(x, w, method):
        return ops.propagate(graph._replace(nodes=x, weights=w), method=method)

    def gcn(x, w, kernel, bias):
        return ops.gcn_conv(graph._replace(nodes=x, weights=w), kernel, bias)

    def cheb(x, w, kernels):
        return ops.cheb_conv(graph._replace(nodes=x, weights=w), kernels)

    cases = [(partial(prop, method=m), (graph.nodes, graph.weights)) for m in ops.graph.PROPAGATE_METHODS]
    cases += [(gcn, (graph.nodes, graph.weights, kernel, bias)), (cheb, (graph.nodes, graph.weights, kernels))]
    for f, args in cases:
        check_grads(jax.jit(f), args, order=1, modes=("fwd", "rev"), eps=1e-2, atol=2e-2, rtol=2e-2)


def test_bad_graphs_fail_naming_what_and_where():
    graph = edge_case_graph(np.random.default_rng(8))
    with pytest.raises(ValueError, match=r"graph\.senders\[3\] = 9 names a node outside the graph of 9 nodes"):
        ops.propagate(graph._replace(senders=graph.senders.at[3].set(9)))
    with pytest.raises(ValueError, match=r"graph\.receivers\[0\] = -1 names a node outside"):
        ops.gcn_conv(graph._replace(receivers=graph.receivers.at[0].set(-1)), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"labels have shape \(8,\) but graph\.nodes has 9 nodes"):
        ops.check_graph(graph, labels=jnp.zeros(8, jnp.int32))
    with pytest.raises(ValueError, match=r"graph\.nodes must be \(num_nodes, features\), got shape \(2, 3, 3, 1\): "
                                         "an image batch"):
        ops.propagate(graph._replace(nodes=jnp.zeros((2, 3, 3, 1))))
    with pytest.raises(ValueError, match=r"graph\.weights must be \(17,\)"):
        ops.propagate(graph._replace(weights=jnp.ones(3)))
    with pytest.raises(ValueError, match="int vectors of one length"):
        ops.propagate(graph._replace(receivers=graph.receivers[:-1]))
    with pytest.raises(ValueError, match=r"kernels must be \(K \+ 1, in_features, out_features\)"):
        ops.cheb_conv(graph, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="method must be one of"):
        ops.propagate(graph, method="dense")
    with pytest.raises(ValueError, match=r"must be one \(height, width, channels\) image"):
        ops.grid_graph(jnp.zeros((2, 4, 4, 1)))


# ---- the grid as a graph ----


@pytest.mark.parametrize("connectivity", [4, 8])
def test_grid_graph_counts_and_directions(connectivity):
    h, w = 4, 5
    graph, directions = ops.grid_graph(jnp.zeros((h, w, 1)), connectivity)
    links = h * (w - 1) + w * (h - 1) + (2 * (h - 1) * (w - 1) if connectivity == 8 else 0)
    assert len(graph.senders) == 2 * links
    s, r, d = (np.asarray(a) for a in (graph.senders, graph.receivers, directions))
    dy, dx = s // w - r // w, s % w - r % w
    assert np.all((dy + 1) * 3 + dx + 1 == d) and np.all(np.maximum(abs(dy), abs(dx)) == 1)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_one_weight_per_direction_is_the_3x3_correlation(connectivity):
    rng = np.random.default_rng(9)
    image = rng.standard_normal((5, 6, 2)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    if connectivity == 4:
        kernel[[0, 0, 2, 2], [0, 2, 0, 2]] = 0  # the 4-neighbour graph has no diagonal edges
    graph, directions = ops.grid_graph(jnp.asarray(image), connectivity, self_loops=True)
    got = ops.edge_type_conv(graph, directions, jnp.asarray(kernel.reshape(9, 2, 3)))
    expected = ops.correlate(image[None], kernel, padding="SAME")[0]
    assert_close(got.reshape(5, 6, 3), expected)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_gcn_on_the_grid_is_a_degree_normalized_isotropic_kernel(connectivity):
    rng = np.random.default_rng(10)
    h, w = 6, 7
    image = rng.standard_normal((h, w, 2)).astype(np.float32)
    weight = rng.standard_normal((2, 3)).astype(np.float32)
    taps = np.ones((3, 3)) if connectivity == 8 else np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    graph, _ = ops.grid_graph(jnp.asarray(image), connectivity)
    got = np.asarray(ops.gcn_conv(graph, jnp.asarray(weight))).reshape(h, w, 3)

    # degree = 1 + neighbours inside the image, counted pixel by pixel
    degree = np.zeros((h, w))
    for i, j, (a, b) in ((i, j, ab) for i in range(h) for j in range(w) for ab in np.argwhere(taps)):
        degree[i, j] += 0 <= i + a - 1 < h and 0 <= j + b - 1 < w
    scale = degree[..., None] ** -0.5
    isotropic = (taps[:, :, None, None] * weight).astype(np.float32)  # the same W on every tap
    expected = scale * np.asarray(ops.correlate((scale * image)[None], isotropic, padding="SAME"))[0]
    assert_close(got, expected)
    # inside (two pixels from the border, where every neighbour has full degree) it is one fixed kernel
    inner = np.asarray(ops.correlate(image[None], isotropic / taps.sum(), padding="SAME"))[0]
    assert_close(got[2:-2, 2:-2], inner[2:-2, 2:-2])
    assert not np.allclose(got[0, 0], inner[0, 0], atol=1e-3)  # at a corner the degrees differ


def test_plain_graph_convolution_cannot_tell_directions():
    """A GCN on the grid commutes with rotating the image, whatever its weights: no oriented filter."""
    rng = np.random.default_rng(11)
    image = rng.standard_normal((5, 5, 1)).astype(np.float32)
    weight = jnp.asarray(rng.standard_normal((1, 1)), jnp.float32)

    def gcn_image(img):
        return np.asarray(ops.gcn_conv(ops.grid_graph(jnp.asarray(img), 8)[0], weight)).reshape(5, 5, 1)

    assert_close(gcn_image(np.rot90(image)), np.rot90(gcn_image(image)))
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)[:, :, None, None]  # oriented: does not
    def sobel_image(img):
        return np.asarray(ops.correlate(np.ascontiguousarray(img)[None], sobel, padding="SAME"))[0]

    assert not np.allclose(sobel_image(np.rot90(image)), np.rot90(sobel_image(image)), atol=1e-3)
