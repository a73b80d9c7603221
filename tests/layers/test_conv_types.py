"""conv_module(kind): every kind has nn.Conv's output shape for the same arguments (what makes the zoo swap safe),
the documented fallbacks, and the dilated kind's values against a brute-force loop."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.errors import ConfigError
from cnn.layers import (
    CONV_TYPES,
    Conv,
    DeformableConv,
    LocallyConnected,
    SeparableConv,
    TiledConv,
    conv_module,
)
from tests.reference import correlate_loop, with_random_params

KINDS = ["acs", "deformable", "dilated", "fft", "locally_connected", "separable", "standard", "tiled"]
KEY = jax.random.key(0)


def output_shape(module: nn.Module, x) -> tuple[int, ...]:
    return jax.eval_shape(module.init_with_output, KEY, x)[0].shape


def test_registry_names_the_kinds():
    assert CONV_TYPES.names() == KINDS


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown conv type 'wavelet'; choose from \['acs', 'deformable', 'dilated'"):
        conv_module("wavelet")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [1, 2])
def test_output_shape_as_nn_conv(kind, padding, strides):
    x = jnp.ones((2, 9, 8, 4))
    for kernel_size in [(3, 3), (2, 4)]:
        ours = conv_module(kind)(6, kernel_size, strides=strides, padding=padding)
        assert output_shape(ours, x) == output_shape(nn.Conv(6, kernel_size, strides, padding), x)


@pytest.mark.parametrize(
    ("kind", "layer"),
    [("standard", Conv), ("dilated", Conv), ("fft", Conv), ("deformable", DeformableConv),
     ("separable", SeparableConv), ("locally_connected", LocallyConnected), ("tiled", TiledConv)],
)
def test_each_kind_builds_its_layer(kind, layer):
    module = conv_module(kind)(6, (3, 3), use_bias=False, name="body")
    assert type(module) is layer
    assert module.name == "body" and module.use_bias is False


@pytest.mark.parametrize("kind", KINDS)
def test_fallbacks_to_standard(kind):
    """1×1 kernels in every kind, and groups in the kinds without them, are a plain Conv with nn.Conv's shape."""
    conv = conv_module(kind)
    x = jnp.ones((2, 9, 8, 4))
    for module, reference in [
        (conv(6, (1, 1), strides=2), nn.Conv(6, (1, 1), 2)),
        (conv(6, (3, 3), feature_group_count=2, padding="VALID"), nn.Conv(6, (3, 3), feature_group_count=2,
                                                                           padding="VALID")),
        (conv(4, (3, 3), feature_group_count=4), nn.Conv(4, (3, 3), feature_group_count=4)),  # depthwise stays so
    ]:
        if kind != "dilated":
            assert type(module) is Conv and module.kernel_dilation == (1, 1) and module.method == "xla"
        assert output_shape(module, x) == output_shape(reference, x)


def test_deformable_outside_2d_and_fft_strided_fall_back():
    x1 = jnp.ones((2, 9, 4))
    module = conv_module("deformable")(5, 3)  # an int kernel_size is 1D, as in nn.Conv
    assert type(module) is Conv and output_shape(module, x1) == output_shape(nn.Conv(5, 3), x1)
    assert conv_module("fft")(5, (3, 3)).method == "fft"
    assert conv_module("fft")(5, (3, 3), strides=2).method == "xla"
    assert conv_module("fft")(5, (3, 3), kernel_dilation=2).method == "xla"


def test_dilated_doubles_dilation_where_the_kernel_is_wider_than_one():
    assert conv_module("dilated")(2, (3, 1, 5), kernel_dilation=(1, 1, 2)).kernel_dilation == (2, 1, 4)


@pytest.mark.parametrize("padding", ["SAME", "VALID", [(0, 1), (2, 0)]])
def test_dilated_values_equal_loop(padding):
    """Dilation 2, the padding grown by d·(k - 1) (low half, the odd one high): same size as the undilated conv."""
    x = np.random.default_rng(0).normal(size=(2, 9, 8, 3)).astype(np.float32)
    y, params = with_random_params(conv_module("dilated")(4, (3, 2), padding=padding), x)
    grown = {"SAME": [(2, 2), (1, 1)], "VALID": [(1, 1), (0, 1)]}  # SAME at dilation 2: k_eff = 5 and 3
    pads = grown[padding] if isinstance(padding, str) else [(0 + 1, 1 + 1), (2 + 0, 0 + 1)]
    expected = correlate_loop(x, params["kernel"], (1, 1), pads, (2, 2)) + params["bias"]
    assert y.shape == output_shape(nn.Conv(4, (3, 2), padding=padding), x)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_swapped_inside_a_model():
    """The zoo pattern: a model takes the constructor and calls it in its compact body."""

    class Block(nn.Module):
        conv: object

        @nn.compact
        def __call__(self, x):
            return self.conv(8, (3, 3), strides=2, use_bias=False, name="conv1")(x)

    x = jnp.ones((1, 8, 8, 3))
    for kind in KINDS:
        variables = jax.eval_shape(Block(conv_module(kind)).init, KEY, x)
        assert "conv1" in variables["params"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"strides": (1, 2, 1)}, "strides must have 2 entries"), ({"kernel_dilation": 0}, "kernel_dilation must be >= 1")],
)
def test_bad_geometry_raises_when_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv_module("dilated")(4, (3, 3), **kwargs)
