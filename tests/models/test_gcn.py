"""Graph models: parameter counts on Cora by hand (Kipf & Welling's networks, no bias), the forward pass of ``gcn``
against the dense numpy formula ``Â relu(Â X̄ W1) W2`` (``X̄`` row-normalized), ``chebnet_k2`` against the dense
Chebyshev recursion, dropout only in training, and one-line errors for inputs that are not a graph."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn import ops
from cnn.errors import UserError
from cnn.layers import ChebConv
from cnn.models import create
from tests.reference import assert_close

CORA_NODES, CORA_FEATURES, CORA_CLASSES, CORA_EDGES = 2708, 1433, 7, 10556


def cora_shapes() -> ops.Graph:
    ids = jax.ShapeDtypeStruct((CORA_EDGES,), jnp.int32)
    return ops.Graph(jax.ShapeDtypeStruct((CORA_NODES, CORA_FEATURES), jnp.float32), ids, ids)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gcn", 1433 * 16 + 16 * 7),  # 23,040: two weight matrices, no bias
        ("chebnet_k2", 3 * (1433 * 16 + 16 * 7)),  # K + 1 = 3 matrices per layer
        ("chebnet_k3", 4 * (1433 * 16 + 16 * 7)),
    ],
)
def test_parameter_counts_on_cora(name, expected):
    model = create(name, num_classes=CORA_CLASSES)
    shapes = jax.eval_shape(lambda g: model.init(jax.random.PRNGKey(0), g), cora_shapes())
    assert sum(math.prod(p.shape) for p in jax.tree.leaves(shapes["params"])) == expected
    assert jax.eval_shape(model.apply, shapes, cora_shapes()).shape == (CORA_NODES, CORA_CLASSES)


def small_graph(rng: np.random.Generator) -> tuple[ops.Graph, np.ndarray]:
    """6 nodes, a ring 0..4 (both ways) and isolated node 5; non-negative bag-of-words features, one row all zero."""
    ring = [(i, (i + 1) % 5) for i in range(5)]
    senders, receivers = np.array(ring + [(t, s) for s, t in ring]).T
    x = rng.integers(0, 3, (6, 8)).astype(np.float32)
    x[4] = 0
    a = np.zeros((6, 6))
    a[receivers, senders] = 1
    return ops.Graph(jnp.asarray(x), jnp.asarray(senders, jnp.int32), jnp.asarray(receivers, jnp.int32)), a


def row_normalized(x: np.ndarray) -> np.ndarray:
    sums = x.sum(axis=1, keepdims=True)
    return x / np.where(sums == 0, 1, sums)


def test_gcn_forward_is_the_dense_two_layer_formula():
    graph, a = small_graph(np.random.default_rng(0))
    model = create("gcn", num_classes=3)
    variables = model.init(jax.random.PRNGKey(0), graph)
    w1, w2 = (np.asarray(variables["params"][f"conv{i}"]["kernel"], np.float64) for i in (1, 2))
    a_tilde = a + np.eye(6)
    d = np.diag(a_tilde.sum(axis=1) ** -0.5)
    a_hat = d @ a_tilde @ d
    expected = a_hat @ np.maximum(a_hat @ row_normalized(np.asarray(graph.nodes, np.float64)) @ w1, 0) @ w2
    assert_close(model.apply(variables, graph, train=False), expected)


def test_chebnet_k2_forward_is_the_dense_chebyshev_recursion():
    graph, a = small_graph(np.random.default_rng(1))
    model = create("chebnet_k2", num_classes=3)
    variables = model.init(jax.random.PRNGKey(0), graph)
    d = a.sum(axis=1)
    inv = np.diag(np.where(d > 0, d, np.inf) ** -0.5)
    lt = (np.eye(6) - inv @ a @ inv) - np.eye(6)  # 2 L / 2 - I
    t = [np.eye(6), lt, 2 * lt @ lt - np.eye(6)]

    def cheb(x, w):
        return sum(t[k] @ x @ np.asarray(w[k], np.float64) for k in range(3))

    params = variables["params"]
    hidden = np.maximum(cheb(row_normalized(np.asarray(graph.nodes, np.float64)), params["conv1"]["kernel"]), 0)
    assert_close(model.apply(variables, graph), cheb(hidden, params["conv2"]["kernel"]))


def test_dropout_only_in_training():
    graph, _ = small_graph(np.random.default_rng(2))
    model = create("gcn", num_classes=3)
    variables = model.init(jax.random.PRNGKey(0), graph)
    rngs = {"dropout": jax.random.PRNGKey(1)}
    train = [np.asarray(model.apply(variables, graph, train=True, rngs={"dropout": jax.random.PRNGKey(s)}))
             for s in (1, 2)]
    assert not np.allclose(train[0], train[1])
    assert np.array_equal(model.apply(variables, graph, train=False, rngs=rngs), model.apply(variables, graph))
    assert np.allclose(create("gcn", num_classes=3, dropout_rate=0.0).apply(variables, graph, train=True, rngs=rngs),
                       model.apply(variables, graph))


def test_cheb_layer_draws_each_polynomial_weight_as_one_glorot_matrix():
    graph, _ = small_graph(np.random.default_rng(3))
    kernel = ChebConv(400, order=3).init(jax.random.PRNGKey(0), graph)["params"]["kernel"]
    bound = math.sqrt(6 / (8 + 400))  # Glorot-uniform on (F_in, F_out) = (8, 400), as Kipf's glorot per support
    assert kernel.shape == (4, 8, 400)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    assert not np.allclose(kernel[0], kernel[1])


def test_graph_models_given_an_image_batch_fail_in_one_line():
    graph, _ = small_graph(np.random.default_rng(4))
    model = create("gcn", num_classes=3)
    variables = model.init(jax.random.PRNGKey(0), graph)
    images = jnp.zeros((2, 28, 28, 1))
    with pytest.raises(UserError, match=r"^GCN takes a cnn\.ops\.Graph .*got ArrayImpl of shape \(2, 28, 28, 1\): "
                                        r"an image batch\?"):
        model.apply(variables, images)
    with pytest.raises(UserError, match=r"^graph\.nodes must be \(num_nodes, features\), got shape \(2, 28, 28, 1\)"):
        model.apply(variables, graph._replace(nodes=images))
    with pytest.raises(UserError, match=r"graph\.senders\[0\] = 6 names a node outside the graph of 6 nodes"):
        model.apply(variables, graph._replace(senders=graph.senders.at[0].set(6)))
