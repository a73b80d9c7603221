"""Receptive field arithmetic against published values and against the gradient support of real models.

Published values: the receptive-field table of the library accompanying Araujo, Norris & Sim, "Computing
Receptive Fields of Convolutional Neural Networks", Distill 2019 (google-research/receptive_field,
RECEPTIVE_FIELD_TABLE.md, computed on the TF-Slim models): per end-point the size r, the effective stride
(our jump j) and the effective padding P, the distance from input pixel 0 back to the first pixel of output
unit 0's field: P = (r - 1) / 2 - start. Each chain is also recomputed by hand in the comments and checked
by ``empirical_receptive_field`` on a 1D model with the same geometry.
"""

import jax
import jax.numpy as jnp
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnn.ops.conv import correlate
from cnn.ops.pooling import avg_pool
from cnn.ops.receptive_field import AxisExtent, Layer, empirical_receptive_field, receptive_field

# alexnet_v2: conv1 11/4 VALID, pool1 3/2, conv2 5 SAME, pool2 3/2, conv3-5 3 SAME, pool5 3/2 (pools VALID).
# r += (k - 1) j: 11, 19, 51, 67, 99, 131, 163, 195; j: 4, 8, 8, 16, 16, 16, 16, 32.
ALEXNET = [(11, 4), (3, 2), (5, 1, 1, 2), (3, 2), (3, 1, 1, 1), (3, 1, 1, 1), (3, 1, 1, 1), (3, 2)]
ALEXNET_TABLE = {  # layer index: (r, effective stride, effective padding)
    0: (11, 4, 0),  # conv1
    1: (19, 8, 0),  # pool1
    2: (51, 8, 16),  # conv2
    4: (99, 16, 32),  # conv3
    5: (131, 16, 48),  # conv4
    6: (163, 16, 64),  # conv5
    7: (195, 32, 64),  # pool5
}
# vgg_16: blocks of 2, 2, 3, 3, 3 convs 3x3 SAME, each block followed by a 2x2/2 max pool.
# r: 3, 5, 6 | 10, 14, 16 | 24, 32, 40, 44 | 60, 76, 92, 100 | 132, 164, 196, 212.
VGG16 = [layer for n in (2, 2, 3, 3, 3) for layer in [Layer(3, padding=1)] * n + [Layer(2, 2)]]
VGG16_TABLE = {
    0: (3, 1, 1),  # conv1_1
    2: (6, 2, 2),  # pool1
    3: (10, 2, 4),  # conv2_1
    5: (16, 4, 6),  # pool2
    6: (24, 4, 10),  # conv3_1
    7: (32, 4, 14),  # conv3_2
    9: (44, 8, 18),  # pool3
    10: (60, 8, 26),  # conv4_1
    11: (76, 8, 34),  # conv4_2
    13: (100, 16, 42),  # pool4
    14: (132, 16, 58),  # conv5_1
    15: (164, 16, 74),  # conv5_2
    16: (196, 16, 90),  # conv5_3 (not in the table: by hand, 164 + 2 * 16)
    17: (212, 32, 90),  # pool5
}
# resnet_v1_50 (TF-Slim) main path: conv1 7/2 with explicit padding 3, max pool 3/2 SAME, then bottleneck
# units 1x1 -> 3x3 -> 1x1 with the stride on the 3x3 of the *last* unit of blocks 1-3 (Slim's convention).
# r: 7, 11, then + 2 j per unit: block1 (j 4, 4, 4 -> 8) 35, block2 (8 x 3, then -> 16) 99,
# block3 (16 x 5, then -> 32) 291, block4 (32 x 3) 483. The pool's SAME padding depends on the input size:
# (0, 1) on the 112 map of a 224 input, (1, 1) on the 161 map of a 321 input; so does P.
RESNET50_BLOCK_ENDS = (10, 22, 40, 49)  # layer index of the last layer of blocks 1-4
RESNET50_TABLE = {
    224: [(35, 8, 15), (99, 16, 47), (291, 32, 143), (483, 32, 239)],
    321: [(35, 8, 17), (99, 16, 49), (291, 32, 145), (483, 32, 241)],
}


def _resnet50_slim(pool_padding):
    layers = [Layer(7, 2, 1, 3), Layer(3, 2, 1, pool_padding)]
    for block, units in enumerate((3, 4, 6, 3)):
        for u in range(units):
            stride = 2 if u == units - 1 and block < 3 else 1
            layers += [Layer(1), Layer(3, stride, 1, 1), Layer(1)]
    return layers


def _padding(layer: Layer):
    return layer.padding if isinstance(layer.padding, tuple) else (layer.padding, layer.padding)


def _model(layers):
    """A 1D model with the chain's geometry: ones kernels (no gradient cancels), every layer a correlation."""

    @jax.jit
    def f(x):
        for layer in map(lambda t: t if isinstance(t, Layer) else Layer(*t), layers):
            kernel = jnp.ones((layer.kernel, 1, 1), x.dtype)
            x = correlate(x, kernel, stride=layer.stride, dilation=layer.dilation, padding=[_padding(layer)])
        return x

    return f


def _check_table(layers, table):
    fields = receptive_field(layers)
    for index, expected in table.items():
        field = fields[index]
        assert (field.size, field.jump, (field.size - 1) / 2 - field.start) == expected, index


def _check_empirical(layers, n):
    """Analytic bounds of output units (clipped to the input) equal the gradient support.

    ``n`` must be tiled exactly (no input pixels dropped by a floor), else the last unit's field ends earlier.
    """
    field = receptive_field(layers)[-1]
    f = _model(layers)
    out = f(jnp.ones((1, n, 1))).shape[1]
    assert out >= 1
    for u in sorted({0, out // 2, out - 1}):
        first, last = field.bounds(u, n)
        assert empirical_receptive_field(f, (1, n, 1), (0, u, 0)) == (AxisExtent(first, last, last - first + 1),)


def test_alexnet_v2():
    _check_table(ALEXNET, ALEXNET_TABLE)
    _check_empirical(ALEXNET, 227)  # 227 = 4 * 54 + 11: conv1 covers the input exactly


def test_vgg16():
    _check_table(VGG16, VGG16_TABLE)
    assert receptive_field(VGG16)[-1].start == 15.5  # pool5 unit 0 is centered between pixels 15 and 16
    _check_empirical(VGG16, 224)


@pytest.mark.parametrize(("size", "pool_padding"), [(224, (0, 1)), (321, (1, 1))])
def test_resnet_v1_50(size, pool_padding):
    layers = _resnet50_slim(pool_padding)
    _check_table(layers, dict(zip(RESNET50_BLOCK_ENDS, RESNET50_TABLE[size], strict=True)))
    if size == 224:
        _check_empirical(layers, size)


def test_goodfellow_fig_9_4_and_tuple_forms():
    # three layers of width-3 kernels: a unit of layer l sees 2 l + 1 inputs (Deep Learning fig. 9.4)
    assert [f.size for f in receptive_field([(3,)] * 3)] == [3, 5, 7]
    # dilation: k_eff = d (k - 1) + 1; WaveNet-style doubling dilations give r = 2^L
    fields = receptive_field([(2, 1, 2**i) for i in range(5)])
    assert [f.size for f in fields] == [2, 4, 8, 16, 32]
    assert fields[0].start == 0.5  # an even field is centered between two pixels


@settings(max_examples=15, deadline=None)
@given(
    layers=st.lists(
        st.tuples(
            st.sampled_from(["conv", "pool"]),
            st.integers(1, 4),  # kernel / window
            st.integers(1, 3),  # stride
            st.integers(1, 3),  # dilation (conv only)
            st.integers(0, 3),  # low padding
            st.integers(0, 3),  # high padding
        ),
        min_size=1,
        max_size=4,
    ),
    extra=st.integers(0, 6),
)
def test_analytic_equals_empirical_for_random_chains(layers, extra):
    chain, fns = [], []
    for kind, k, s, d, lo, hi in layers:
        d = d if kind == "conv" else 1
        k_eff = d * (k - 1) + 1
        lo, hi = min(lo, k_eff - 1), min(hi, k_eff - 1)  # every window must touch the input
        chain.append(Layer(k, s, d, (lo, hi)))
        if kind == "conv":
            fns.append(lambda x, c=chain[-1]: _model([c])(x))
        else:  # avg pool: a max pool's geometry, with a gradient on every element of the window
            fns.append(lambda x, k=k, s=s, p=(lo, hi): avg_pool(x, k, stride=s, padding=[p]))
    field = receptive_field(chain)[-1]
    n = 2 * (field.size + field.jump) + extra  # room for units whose field lies inside the input

    @jax.jit  # one compiled program per chain instead of op-by-op dispatch
    def f(x):
        for fn in fns:
            x = fn(x)
        return x

    try:
        out = f(jnp.ones((1, n, 1))).shape[1]
    except ValueError:  # a padding too wide for an intermediate size: no such net
        assume(False)
    inside = [u for u in range(out) if field.bounds(u) == field.bounds(u, n)]
    assert inside
    for u in sorted({inside[0], inside[-1]}):
        first, last = field.bounds(u)
        assert empirical_receptive_field(f, (1, n, 1), (0, u, 0)) == (AxisExtent(first, last, last - first + 1),)
    # a field reaching into the padding: the support lies within the clipped bounds (the clipped end may
    # fall into a hole of a dilated or strided field, so it is not always attained)
    for u in sorted({0, out - 1} - set(inside)):
        first, last = field.bounds(u, n)
        (extent,) = empirical_receptive_field(f, (1, n, 1), (0, u, 0))
        assert first <= extent.first <= extent.last <= last


def test_per_axis_in_2d():
    # axis 0: kernel 3 stride 2 then kernel 3 dilation 2; axis 1: kernel 5 then kernel 2 stride 2
    axis0, axis1 = [(3, 2, 1, 1), (3, 1, 2, 0)], [(5, 1, 1, 2), (2, 2, 1, 0)]

    def f(x):
        x = correlate(x, jnp.ones((3, 5, 1, 1)), stride=(2, 1), padding=[(1, 1), (2, 2)])
        return correlate(x, jnp.ones((3, 2, 1, 1)), stride=(1, 2), dilation=(2, 1))

    shape = (1, 15, 12, 1)
    extents = empirical_receptive_field(f, shape, (0, 2, 3, 0))
    for extent, layers, u, n in zip(extents, (axis0, axis1), (2, 3), shape[1:3], strict=True):
        first, last = receptive_field(layers)[-1].bounds(u, n)
        assert extent == AxisExtent(first, last, last - first + 1)
    assert [e.size for e in extents] == [11, 6]  # 3 + (5 - 1) 2 and 5 + (2 - 1) 1


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        ((0,), "kernel must be an int >= 1"),
        ((3, 0), "stride must be an int >= 1"),
        ((3, 1, 0), "dilation must be an int >= 1"),
        ((3, 1, 1, -1), "padding must be an int >= 0"),
        ((3, 1, 1, (1, 2, 3)), "padding must be an int >= 0 or a"),
        ((2.5,), "kernel must be an int"),
        ((3, 1, 1, 0, 9), "each layer must be a Layer or a tuple"),
        (3, "each layer must be a Layer or a tuple"),
    ],
)
def test_bad_layers_raise(layer, match):
    with pytest.raises(ValueError, match=match):
        receptive_field([layer])


def test_empirical_bad_input_raises():
    f = _model([(3,)])
    with pytest.raises(ValueError, match="not an index into f's output of shape"):
        empirical_receptive_field(f, (1, 8, 1), (0, 6, 0))
    with pytest.raises(ValueError, match="not an index into f's output of shape"):
        empirical_receptive_field(f, (1, 8, 1), (0, 2))
    with pytest.raises(ValueError, match="input_shape must be"):
        empirical_receptive_field(f, (8, 1), (0, 2))
    with pytest.raises(ValueError, match="zero gradient"):
        empirical_receptive_field(lambda x: 0 * f(x), (1, 8, 1), (0, 2, 0))
