"""The CPU lowerings of convolutions (``cnn.ops._lowering``: the XLA rewrites of grouped convolutions, dense ones as
one matrix product, 3D ones as 2D; oneDNN's convolutions) against ``lax``'s convolution. The tests of what the XLA
rewrites compile to run under the ``xla`` lowering, which is the default where oneDNN is not built."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnn.ops import _lowering, _slice_convs
from cnn.ops._lowering import _conv, set_conv_lowering
from cnn.ops.conv import conv_transpose, correlate
from tests.reference import assert_close, normal, per_axis, require_onednn

LOWERING_CASES = [
    # (in_spatial, kernel_size, in_channels, out_channels, groups, stride, dilation, pads, lhs_dilation)
    ((11,), (3,), 4, 4, 4, 1, 1, [(1, 1)], 1),  # depthwise
    ((11,), (4,), 3, 6, 3, 2, 2, [(0, 2)], 1),  # channel multiplier 2, stride, dilation
    ((7,), (3,), 2, 10, 2, 1, 1, [(1, 1)], 1),  # channel multiplier 5
    ((6, 7), (3, 3), 4, 8, 4, (2, 1), 1, [(1, 1), (0, 2)], 1),
    ((7, 6), (3, 2), 6, 9, 3, 1, (2, 1), [(0, 0), (1, 0)], 1),  # 2 in x 3 out per group
    ((6, 6), (3, 3), 4, 8, 4, 1, 1, [(2, -1), (1, 1)], (2, 1)),  # transposed: zeros inserted, negative pad
    ((4, 5, 4), (2, 3, 2), 3, 3, 3, (1, 2, 1), (2, 1, 1), [(1, 0), (1, 1), (0, 1)], 1),
    ((9,), (3,), 10, 4, 2, 1, 1, [(1, 1)], 1),  # 5 in per group: block-diagonal dense kernel
    ((6, 5), (2, 3), 12, 18, 2, 2, 1, [(0, 1), (1, 1)], 1),  # 6 in x 9 out per group: block-diagonal
    # dense, one matrix product (im2col): strided 1x1 kernels and kernels covering the whole padded input
    ((7, 9), (1, 1), 5, 6, 1, (2, 1), 1, [(0, 0), (0, 0)], 1),
    ((7, 9), (1, 1), 5, 6, 1, 2, 1, [(0, 0), (0, 0)], 1),  # projection shortcut: odd sizes, stride 2
    ((8, 7), (1, 1), 3, 4, 1, (2, 3), 1, [(1, 2), (-1, 0)], 1),  # padded and cropped
    ((9,), (1,), 4, 3, 1, 3, 1, [(0, 0)], 1),
    ((3, 5, 4), (1, 1, 1), 2, 5, 1, 2, 1, [(0, 0)] * 3, 1),
    ((5, 5), (5, 5), 6, 7, 1, 1, 1, [(0, 0), (0, 0)], 1),  # LeNet-5's C5
    ((3, 4), (3, 3), 2, 4, 1, 2, (2, 1), [(1, 1), (0, 1)], 1),  # padded, dilated, one output position
    # transposed with stride = kernel (U-Net's up-convolution): one matrix product, depth to space
    ((3, 4), (2, 2), 5, 3, 1, 1, 1, [(1, 1), (1, 1)], (2, 2)),
    ((3, 2, 3), (2, 3, 1), 2, 4, 1, 1, 1, [(1, 1), (2, 2), (0, 0)], (2, 3, 1)),
    ((5,), (3,), 4, 2, 1, 1, 1, [(2, 2)], 3),
    ((3, 4), (2, 2), 12, 18, 2, 1, 1, [(1, 1), (1, 1)], (2, 2)),  # grouped: block-diagonal first
    # one input channel, few outputs (LeNet-5's C1): shifted slices forward, lax's gradients (a custom JVP)
    ((9, 8), (5, 5), 1, 6, 1, 1, 1, [(0, 0), (0, 0)], 1),  # LeNet-5's C1
    ((9, 8), (3, 2), 1, 3, 1, (2, 1), (1, 2), [(1, 1), (0, 2)], 1),
    ((12,), (4,), 1, 16, 1, 3, 1, [(2, 1)], 1),
    # few input channels, stride 1: the input gradient as one matrix product per tap
    ((14, 13), (5, 5), 6, 16, 1, 1, 1, [(0, 0), (0, 0)], 1),  # LeNet-5's C3
    ((9, 8), (3, 2), 3, 4, 1, 1, (2, 1), [(1, 2), (0, 1)], 1),  # padded, dilated
    ((11,), (3,), 8, 5, 1, 1, 2, [(2, 2)], 1),
    ((7, 6), (3, 3), 5, 4, 1, 2, 1, [(1, 1), (1, 1)], 1),  # strided: stays lax's
    # dense 3D, depth folded into a 2D convolution
    ((5, 6, 5), (3, 3, 3), 3, 4, 1, 1, 1, [(1, 1)] * 3, 1),
    ((7, 6, 7), (3, 2, 3), 2, 5, 1, (2, 1, 2), (2, 1, 1), [(1, 2), (0, 1), (1, 0)], 1),  # strides, dilation
    ((4, 5, 5), (3, 7, 7), 3, 4, 1, (1, 2, 2), 1, [(1, 1), (3, 3), (3, 3)], 1),  # r3d_18's stem, small
    ((6, 5, 4), (1, 3, 3), 4, 3, 1, 1, 1, [(0, 0), (1, 1), (1, 1)], 1),  # (2+1)D: spatial
    ((6, 5, 4), (3, 1, 1), 4, 3, 1, (2, 1, 1), 1, [(1, 1), (0, 0), (0, 0)], 1),  # (2+1)D temporal: depth only
    ((5, 3, 4), (2, 1, 1), 3, 2, 1, 1, (2, 1, 1), [(2, -1), (0, 0), (0, 0)], (2, 1, 1)),  # depth only, transposed
    ((6, 5, 4), (3, 1, 1), 4, 3, 1, (1, 2, 1), 1, [(1, 1), (0, 0), (0, 0)], 1),  # 3x1x1 strided in height: folded
    ((4, 3, 4), (2, 2, 3), 3, 2, 1, 1, 1, [(1, -1), (1, 0), (2, 2)], (2, 1, 2)),  # transposed, cropped
    ((5, 4, 4), (3, 3, 3), 12, 6, 2, 1, 1, [(1, 1)] * 3, 1),  # grouped: block-diagonal, then folded
]


@pytest.fixture(autouse=True)
def xla_lowering():
    """The XLA rewrites, unless a test sets another lowering; the default restored after each test."""
    set_conv_lowering("xla")
    yield
    set_conv_lowering("auto")


def lax_grouped(x, w, stride, pads, dilation, groups, lhs_dilation):
    ndim = w.ndim - 2
    spatial = "DHW"[3 - ndim :]
    return lax.conv_general_dilated(
        x,
        w,
        per_axis(stride, ndim),
        pads,
        per_axis(lhs_dilation, ndim),
        per_axis(dilation, ndim),
        (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
        feature_group_count=groups,
    )


@pytest.mark.parametrize("lowering", ["xla", "onednn"])
@pytest.mark.parametrize(
    ("in_spatial", "kernel_size", "cin", "cout", "groups", "stride", "dilation", "pads", "lhs_dilation"), LOWERING_CASES
)
def test_lowering_equals_lax(
    lowering, in_spatial, kernel_size, cin, cout, groups, stride, dilation, pads, lhs_dilation
):
    if lowering == "onednn":
        require_onednn()
    set_conv_lowering(lowering)
    rng = np.random.default_rng(5)
    ndim = len(in_spatial)
    x, w = normal(rng, 1 + len(kernel_size) % 2, *in_spatial, cin), normal(rng, *kernel_size, cin // groups, cout)
    args = (per_axis(stride, ndim), tuple(pads), per_axis(dilation, ndim), groups)

    def ours(x, w):
        return _conv(x, w, *args, per_axis(lhs_dilation, ndim))

    def reference(x, w):
        return lax_grouped(x, w, stride, pads, dilation, groups, lhs_dilation)

    expected = reference(x, w)
    assert_close(ours(x, w), expected)
    cotangent = normal(rng, *expected.shape)
    grads = jax.jit(jax.grad(lambda x, w: jnp.vdot(ours(x, w), cotangent), argnums=(0, 1)))(x, w)
    expected_grads = jax.jit(jax.grad(lambda x, w: jnp.vdot(reference(x, w), cotangent), argnums=(0, 1)))(x, w)
    for got, want in zip(grads, expected_grads, strict=True):
        assert_close(got, want, rtol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rewrite of grouped convolutions is CPU only")
@pytest.mark.parametrize(
    ("cin", "cout", "groups", "feature_groups"), [(8, 8, 8, None), (8, 16, 8, None), (16, 8, 2, 1), (6, 6, 1, 1)]
)
def test_cpu_avoids_grouped_lax_convolution(cin, cout, groups, feature_groups):
    """Depthwise: no lax convolution at all; many channels per group: one dense (block-diagonal) convolution."""
    x, w = jnp.zeros((1, 6, 6, cin)), jnp.zeros((3, 3, cin // groups, cout))
    jaxpr = str(jax.make_jaxpr(lambda x, w: correlate(x, w, groups=groups))(x, w))  # nested jaxprs included
    found = [int(g) for g in re.findall(r"conv_general_dilated\[[^\]]*?feature_group_count=(\d+)", jaxpr)]
    assert found == ([] if feature_groups is None else [feature_groups])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the im2col rewrite is CPU only")
@pytest.mark.parametrize(
    ("in_spatial", "kernel_size", "stride", "padding", "rewritten"),
    [((8, 8), (1, 1), 2, 0, True), ((5, 5), (5, 5), 1, "VALID", True), ((7, 7), (3, 3), 1, "SAME", False),
     ((8, 8), (3, 3), 2, 1, False), ((8, 8), (1, 1), 1, 0, False)],
)
def test_cpu_one_matmul_convolutions(in_spatial, kernel_size, stride, padding, rewritten):
    """Strided 1×1 kernels and single-position outputs are a dot_general and no convolution; others stay lax's; with the
    rewrites off everything is lax's."""
    x, w = jnp.zeros((2, *in_spatial, 4)), jnp.zeros((*kernel_size, 4, 6))

    def primitives() -> list[str]:
        jaxpr = str(jax.make_jaxpr(lambda x, w: correlate(x, w, stride=stride, padding=padding))(x, w))
        return re.findall(r"\b(conv_general_dilated|dot_general)\[", jaxpr)

    assert primitives() == (["dot_general"] if rewritten else ["conv_general_dilated"])
    try:
        set_conv_lowering("lax")
        assert primitives() == ["conv_general_dilated"]
    finally:
        set_conv_lowering("xla")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the depth folding is CPU only")
def test_cpu_folds_3d_convolutions_into_2d():
    """A dense 3D convolution becomes one 2D convolution (depth in the batch, depth taps in the channels); with the
    rewrites off it stays lax's 3D convolution."""
    x, w = jnp.zeros((2, 6, 7, 7, 4)), jnp.zeros((3, 3, 3, 4, 8))

    def layouts() -> list[str]:
        jaxpr = str(jax.make_jaxpr(lambda x, w: correlate(x, w, padding=1))(x, w))
        return re.findall(r"conv_general_dilated\[.*?lhs_spec=\((\d+(?:, \d+)*)\)", jaxpr, re.S)

    assert [len(spec.split(",")) for spec in layouts()] == [4]
    try:
        set_conv_lowering("lax")
        assert [len(spec.split(",")) for spec in layouts()] == [5]
    finally:
        set_conv_lowering("xla")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the block transpose is CPU only")
@pytest.mark.parametrize(("kernel_size", "stride", "rewritten"), [((2, 2), 2, True), ((3, 3), 2, False)])
def test_cpu_up_convolution_is_one_matmul(kernel_size, stride, rewritten):
    """A transposed convolution whose stride equals its kernel is a dot_general; an overlapping one stays lax's."""
    y, w = jnp.zeros((2, 4, 4, 6)), jnp.zeros((*kernel_size, 3, 6))
    jaxpr = str(jax.make_jaxpr(lambda y, w: conv_transpose(y, w, stride=stride))(y, w))
    assert re.findall(r"\b(conv_general_dilated|dot_general)\[", jaxpr) == (
        ["dot_general"] if rewritten else ["conv_general_dilated"])


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the tap-wise input gradient is CPU only")
@pytest.mark.parametrize(("in_channels", "stride", "rewritten"), [(6, 1, True), (16, 1, False), (6, 2, False)])
def test_cpu_input_gradient_of_few_channels_is_matrix_products(in_channels, stride, rewritten):
    """With few input channels at stride 1 the compiled gradient holds two convolutions (forward, kernel gradient)
    and the input gradient is a matrix product; otherwise XLA's three convolutions."""
    x, w = jnp.zeros((2, 9, 9, in_channels)), jnp.zeros((3, 3, in_channels, 4))
    grads = jax.jit(jax.grad(lambda x, w: jnp.sum(correlate(x, w, stride=stride) ** 2), argnums=(0, 1)))
    hlo = grads.lower(x, w).compile().as_text()
    assert hlo.count(" convolution(") == (2 if rewritten else 3)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the shifted-slice forward is CPU only")
@pytest.mark.parametrize(("out_channels", "argnums", "convolutions"), [(6, 1, 1), (6, (0, 1), 2), (32, 1, 2)])
def test_cpu_one_channel_input_forward_is_slices(out_channels, argnums, convolutions):
    """A one-channel input into few channels (LeNet-5's C1): no convolution forward, and in a first layer's gradient
    (the input not differentiated) only the kernel gradient's; into many channels, lax's forward and kernel gradient."""
    x, w = jnp.zeros((2, 12, 12, 1)), jnp.zeros((5, 5, 1, out_channels))
    grads = jax.jit(jax.grad(lambda x, w: jnp.sum(correlate(x, w) ** 2), argnums=argnums))
    assert grads.lower(x, w).compile().as_text().count(" convolution(") == convolutions


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the shifted-slice lowering is CPU only")
@pytest.mark.parametrize(("batch", "cin", "cout", "groups", "stride", "chunk"), [
    (6, 6, 6, 6, 1, 2),  # depthwise, three chunks of two examples
    (5, 4, 8, 4, 2, 2),  # channel multiplier 2, strided; a batch of 5 comes in chunks of one
    (4, 8, 8, 4, 1, 8),  # 2 in x 2 out per group; the whole batch fits: no chunks
])
def test_shifted_slice_kernel_gradient_over_batch_chunks(monkeypatch, batch, cin, cout, groups, stride, chunk):
    """The kernel gradient summed over chunks of the batch equals lax's grouped convolution's gradients (reverse and
    forward mode), and is a loop over the chunks when the batch does not fit ``_KERNEL_GRADIENT_CHUNK_BYTES``."""
    rng = np.random.default_rng(11)
    x, w = normal(rng, batch, 7, 9, cin), normal(rng, 3, 3, cin // groups, cout)
    out_shape = jax.eval_shape(lambda x, w: lax_grouped(x, w, stride, [(1, 1), (1, 1)], 1, groups, 1), x, w).shape
    per_example = 4 * (x[0].size + np.prod(out_shape[1:]))
    monkeypatch.setattr(_slice_convs, "_KERNEL_GRADIENT_CHUNK_BYTES", int(chunk * per_example))
    args = ((stride, stride), ((1, 1), (1, 1)), (1, 1), groups, (1, 1))

    def ours(x, w):
        return _lowering._lowered_conv(x, w, *args, lowering="xla")

    def reference(x, w):
        return lax_grouped(x, w, stride, [(1, 1), (1, 1)], 1, groups, 1)

    cotangent = normal(rng, *out_shape)
    loss = [lambda x, w, f=f: jnp.vdot(f(x, w), cotangent) for f in (ours, reference)]
    grads, expected = (jax.grad(f, argnums=(0, 1))(x, w) for f in loss)
    for got, want in zip(grads, expected, strict=True):
        assert_close(got, want, rtol=1e-4)
    tangents = normal(rng, *x.shape), normal(rng, *w.shape)
    assert_close(jax.jvp(ours, (x, w), tangents)[1], jax.jvp(reference, (x, w), tangents)[1], rtol=1e-4)
    looped = "scan[" in str(jax.make_jaxpr(jax.grad(loss[0], argnums=1))(x, w))
    assert looped == (chunk < batch)
