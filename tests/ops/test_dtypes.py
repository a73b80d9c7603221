"""The dtype rule of ``cnn.ops`` (``cnn/ops/args.py``): every array argument of every public operator must be real
floating point; an integer, boolean or complex one is refused with one line naming the argument and its dtype.

Before the rule, ``fft_conv`` of int32 truncated its float result back to int (off by one in 184 of 392 outputs) and
``correlate`` of uint8 wrapped 5400 to 24, silently.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest

from cnn import ops
from cnn.ops.args import float_array


def _shapes(**shapes: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return shapes


X = (1, 5, 5, 2)


def _graph(a: dict) -> ops.Graph:
    """A graph of 4 nodes and 3 edges with the test's node features and edge weights."""
    return ops.Graph(a["graph.nodes"], jnp.array([0, 1, 2]), jnp.array([1, 2, 3]), a["graph.weights"])
CONV = _shapes(x=X, kernel=(3, 3, 2, 2))
# Every public operator that takes arrays: (call on a dict of arrays, the shape of each array argument by name).
OPERATORS = {
    "correlate": (lambda a: ops.correlate(a["x"], a["kernel"]), CONV),
    "convolve": (lambda a: ops.convolve(a["x"], a["kernel"]), CONV),
    "conv_transpose": (lambda a: ops.conv_transpose(a["y"], a["kernel"]), _shapes(y=(1, 3, 3, 2), kernel=(3, 3, 2, 2))),
    "conv_matrix": (lambda a: ops.conv_matrix(a["kernel"], (5, 5, 2)), _shapes(kernel=(3, 3, 2, 2))),
    "fft_conv": (lambda a: ops.fft_conv(a["x"], a["kernel"]), CONV),
    "fft_conv_circular": (lambda a: ops.fft_conv_circular(a["x"], a["kernel"]), CONV),
    "deformable_conv": (
        lambda a: ops.deformable_conv(a["x"], a["kernel"], a["offsets"], a["mask"]),
        _shapes(x=X, kernel=(3, 3, 2, 2), offsets=(1, 3, 3, 1, 3, 3, 2), mask=(1, 3, 3, 1, 3, 3)),
    ),
    "locally_connected": (
        lambda a: ops.locally_connected(a["x"], a["kernel"]), _shapes(x=X, kernel=(3, 3, 3, 3, 2, 2))
    ),
    "tiled_conv": (lambda a: ops.tiled_conv(a["x"], a["kernel"]), _shapes(x=X, kernel=(2, 2, 3, 3, 2, 2))),
    "depthwise_separable": (
        lambda a: ops.depthwise_separable(a["x"], a["depthwise_kernel"], a["pointwise_kernel"]),
        _shapes(x=X, depthwise_kernel=(3, 3, 1, 2), pointwise_kernel=(2, 3)),
    ),
    "separable_conv": (
        lambda a: ops.separable_conv(a["x"], [a["kernels_1d[0]"], a["kernels_1d[1]"]]),
        {"x": X, "kernels_1d[0]": (3, 2), "kernels_1d[1]": (3, 2)},
    ),
    "separable_approximation": (lambda a: ops.separable_approximation(a["kernel"]), _shapes(kernel=(3, 3))),
    "separable_reconstruct": (
        lambda a: ops.separable_reconstruct(a["col_factors"], a["row_factors"]),
        _shapes(col_factors=(1, 3), row_factors=(1, 3)),
    ),
    "max_pool": (lambda a: ops.max_pool(a["x"], 2), _shapes(x=X)),
    "avg_pool": (lambda a: ops.avg_pool(a["x"], 2), _shapes(x=X)),
    "lp_pool": (lambda a: ops.lp_pool(a["x"], 2), _shapes(x=X)),
    "weighted_pool": (lambda a: ops.weighted_pool(a["x"], a["weights"]), _shapes(x=X, weights=(3, 3))),
    "adaptive_pool": (lambda a: ops.adaptive_pool(a["x"], 2), _shapes(x=X)),
    "channel_pool": (lambda a: ops.channel_pool(a["x"], 2), _shapes(x=X)),
    "global_pool": (lambda a: ops.global_pool(a["x"]), _shapes(x=X)),
    "equivariance_error": (lambda a: ops.equivariance_error(lambda v: 2 * v, a["x"], ops.shift(1)), _shapes(x=X)),
    "shift": (lambda a: ops.shift(1)(a["x"]), _shapes(x=X)),
    "rotate90": (lambda a: ops.rotate90(1)(a["x"]), _shapes(x=X)),
    "rescale": (lambda a: ops.rescale(2.0)(a["x"]), _shapes(x=X)),
    "acs_conv": (lambda a: ops.acs_conv(a["x"], a["kernel"]), _shapes(x=(1, 4, 4, 4, 2), kernel=(3, 3, 2, 3))),
    # Graphs: node features, edge weights and kernels are float; the node ids (senders, receivers) and edge types
    # are the only integer arrays.
    **{name: (call, {"graph.nodes": (4, 2), "graph.weights": (3,), **kernels}) for name, call, kernels in (
        ("check_graph", lambda a: ops.check_graph(_graph(a)), {}),
        ("propagate", lambda a: ops.propagate(_graph(a)), {}),
        ("gcn_normalize", lambda a: ops.gcn_normalize(_graph(a)), {}),
        ("scaled_laplacian", lambda a: ops.scaled_laplacian(_graph(a)), {}),
        ("gcn_conv", lambda a: ops.gcn_conv(_graph(a), a["kernel"], a["bias"]), {"kernel": (2, 3), "bias": (3,)}),
        ("cheb_conv", lambda a: ops.cheb_conv(_graph(a), a["kernels"]), {"kernels": (2, 2, 3)}),
        ("edge_type_conv", lambda a: ops.edge_type_conv(_graph(a), jnp.array([0, 1, 0]), a["kernels"]),
         {"kernels": (2, 2, 3)}),
    )},
    "row_normalize": (lambda a: ops.row_normalize(a["x"]), _shapes(x=(4, 2))),
    "grid_graph": (lambda a: ops.grid_graph(a["image"]), _shapes(image=(3, 3, 1))),
}
# Public names that take no array: sizes, layer geometry, or a function and a shape (they build float32 inputs).
NO_ARRAY_ARGUMENT = {"gaussian_window", "Layer", "ReceptiveField", "receptive_field", "empirical_receptive_field",
                     "Graph", "acs_split"}

CASES = [(op, arg) for op, (_, shapes) in OPERATORS.items() for arg in shapes]


def test_every_public_operator_is_covered():
    assert set(OPERATORS) | NO_ARRAY_ARGUMENT == set(ops.__all__)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_, jnp.complex64])
@pytest.mark.parametrize(("op", "arg"), CASES, ids=[f"{op}-{arg}" for op, arg in CASES])
def test_non_float_argument_is_refused_by_name(op, arg, dtype):
    call, shapes = OPERATORS[op]
    rng = np.random.default_rng(0)
    arrays = {name: jnp.asarray(rng.integers(0, 3, size=shape), jnp.float32) for name, shape in shapes.items()}
    arrays[arg] = arrays[arg].astype(dtype)
    message = f"{arg} must be a real floating-point array, got dtype {jnp.dtype(dtype).name}"
    with pytest.raises(ValueError, match=re.escape(message)):
        call(arrays)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_floating_point_is_accepted_as_is(dtype):
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(float_array(x.astype(dtype), "x").astype(np.float32), x)
    assert float_array(x.astype(dtype), "x").dtype == dtype
