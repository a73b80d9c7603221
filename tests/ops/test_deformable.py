"""Deformable convolution against brute-force numpy loops.

The reference is torchvision.ops.deform_conv2d's sampling rule written out per tap (its
``bilinear_interpolate``): a point with y <= -1, y >= H, x <= -1 or x >= W reads 0; otherwise the four
corners around it are blended bilinearly, corners outside the image reading 0.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cnn.ops.deformable import deformable_conv
from tests.reference import correlate_loop, explicit_pads, out_shape


def bilinear(image, y, x):
    """torchvision's bilinear_interpolate on an (H, W, channels) image."""
    height, width = image.shape[:2]
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return np.zeros(image.shape[2:])
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    total = np.zeros(image.shape[2:])
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < height and 0 <= xx < width:
                total += wy * wx * image[yy, xx]
    return total


def brute_deformable(x, kernel, offsets, mask, stride, pads, dilation):
    """out[n, i, j] = sum_{a, b, c} W[a, b, c] m bilinear(x[n, :, :, c], i s - pt + a d + dy, j s - pl + b d + dx)."""
    x, kernel, offsets = (np.asarray(a, np.float64) for a in (x, kernel, offsets))
    batch, out_h, out_w, groups, kh, kw = offsets.shape[:6]
    per_group = x.shape[-1] // groups
    y = np.zeros((batch, out_h, out_w, kernel.shape[-1]))
    for n, i, j, a, b, g in np.ndindex(batch, out_h, out_w, kh, kw, groups):
        channels = slice(g * per_group, (g + 1) * per_group)
        dy, dx = offsets[n, i, j, g, a, b]
        sample = bilinear(
            x[n, :, :, channels],
            i * stride[0] - pads[0][0] + a * dilation[0] + dy,
            j * stride[1] - pads[1][0] + b * dilation[1] + dx,
        )
        scale = 1.0 if mask is None else float(mask[n, i, j, g, a, b])
        y[n, i, j] += scale * sample @ kernel[a, b, channels]
    return y


def deform(x, kernel, offsets, mask=None, **kwargs):
    """deformable_conv under jit (one compilation instead of many eager ones)."""
    return jax.jit(functools.partial(deformable_conv, **kwargs))(x, kernel, offsets, mask)


def random(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def geometry(x_shape, kernel_shape, stride, padding, dilation):
    pads = explicit_pads(padding, x_shape[1:3], kernel_shape[:2], stride, dilation)
    return pads, out_shape(x_shape[1:3], kernel_shape[:2], stride, pads, dilation)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "modulated"),
    [((1, 1), "SAME", (1, 1), True), ((2, 1), [(2, 0), (1, 2)], (1, 2), False), ((1, 2), "FULL", (2, 1), True)],
)
def test_zero_offsets_are_a_correlation(stride, padding, dilation, modulated):
    rng = np.random.default_rng(0)
    x, kernel = random(rng, (2, 7, 6, 4)), random(rng, (3, 2, 4, 5))
    pads, out = geometry(x.shape, kernel.shape, stride, padding, dilation)
    offsets = np.zeros((2, *out, 2, 3, 2, 2), np.float32)
    mask = np.ones(offsets.shape[:-1], np.float32) if modulated else None
    y = deform(x, kernel, offsets, mask, stride=stride, padding=padding, dilation=dilation, offset_groups=2)
    np.testing.assert_allclose(y, correlate_loop(x, kernel, stride, pads, dilation), rtol=1e-5, atol=1e-5)


def test_integer_offsets_shift_the_taps():
    # An integer offset reads exactly x[i s - pt + a d + dy, j s - pl + b d + dx], zero outside.
    rng = np.random.default_rng(1)
    x, kernel = random(rng, (2, 6, 7, 4)), random(rng, (3, 3, 4, 3))
    stride, dilation, padding = (1, 2), (2, 1), 1
    pads, out = geometry(x.shape, kernel.shape, stride, padding, dilation)
    offsets = rng.integers(-3, 4, (2, *out, 2, 3, 3, 2))
    expected = np.zeros((2, *out, 3))
    for n, i, j, a, b, c in np.ndindex(2, *out, 3, 3, 4):
        dy, dx = offsets[n, i, j, c // 2, a, b]
        row = i * stride[0] - pads[0][0] + a * dilation[0] + dy
        col = j * stride[1] - pads[1][0] + b * dilation[1] + dx
        if 0 <= row < 6 and 0 <= col < 7:
            expected[n, i, j] += x[n, row, col, c] * kernel[a, b, c]
    y = deform(
        x, kernel, offsets.astype(np.float32), stride=stride, padding=padding, dilation=dilation, offset_groups=2
    )
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "modulated"),
    [
        ((2, 1), [(1, 2), (2, 1)], (1, 2), 2, True),
        ((1, 1), "SAME", (1, 1), 1, False),
        ((1, 2), "VALID", (2, 1), 4, True),
        ((3, 2), 2, (1, 1), 2, False),
    ],
)
def test_fractional_offsets_match_brute_force(stride, padding, dilation, groups, modulated):
    rng = np.random.default_rng(2)
    x, kernel = random(rng, (2, 7, 6, 4)), random(rng, (3, 2, 4, 5))
    pads, out = geometry(x.shape, kernel.shape, stride, padding, dilation)
    # Offsets up to 3 pixels: many taps fall partly or wholly outside the 7 x 6 image.
    offsets = rng.uniform(-3, 3, (2, *out, groups, 3, 2, 2)).astype(np.float32)
    mask = rng.uniform(0, 1, offsets.shape[:-1]).astype(np.float32) if modulated else None
    y = deform(x, kernel, offsets, mask, stride=stride, padding=padding, dilation=dilation, offset_groups=groups)
    expected = brute_deformable(x, kernel, offsets, mask, stride, pads, dilation)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_far_offsets_read_zero():
    rng = np.random.default_rng(3)
    x, kernel = random(rng, (1, 5, 5, 2)), random(rng, (3, 3, 2, 2))
    offsets = rng.uniform(-1e6, 1e6, (1, 3, 3, 1, 3, 3, 2)).astype(np.float32)
    offsets[0, 1, 1] = rng.uniform(-0.9, 0.9, (1, 3, 3, 2))  # one position stays inside
    expected = brute_deformable(x, kernel, offsets, None, (1, 1), [(0, 0), (0, 0)], (1, 1))
    assert np.count_nonzero(expected.any(axis=-1)) == 1
    np.testing.assert_allclose(deform(x, kernel, offsets), expected, rtol=1e-5, atol=1e-5)


def test_grads_wrt_x_kernel_offsets_and_mask():
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        x, kernel = rng.standard_normal((1, 4, 5, 4)), rng.standard_normal((2, 2, 4, 3))
        out = (3, 3)  # stride (1, 2), padding [(0, 0), (1, 1)]
        # Sample points off the integer grid, where bilinear sampling is differentiable; some lie outside.
        whole = rng.integers(-2, 3, (1, *out, 2, 2, 2, 2))
        offsets = whole + rng.uniform(0.2, 0.8, whole.shape) * rng.choice([-1, 1], whole.shape)
        mask = rng.uniform(0.5, 1.5, offsets.shape[:-1])
        args = tuple(jnp.asarray(a) for a in (x, kernel, offsets, mask))

        @jax.jit
        def f(x, kernel, offsets, mask):
            return deformable_conv(
                x, kernel, offsets, mask, stride=(1, 2), padding=[(0, 0), (1, 1)], offset_groups=2
            )

        check_grads(f, args, order=1, modes=("fwd", "rev"), eps=1e-4)
        check_grads(lambda x, o: f(x, args[1], o, None), (args[0], args[2]), order=1, modes=("rev",), eps=1e-4)


@pytest.mark.parametrize(
    ("x_shape", "kernel_shape", "offsets_shape", "mask_shape", "kwargs", "match"),
    [
        ((2, 6, 6), (3, 3, 6, 4), (2, 4, 4, 1, 3, 3, 2), None, {}, r"x must have shape .*\(rank 4\)"),
        ((2, 6, 6, 6), (3, 6, 4), (2, 4, 4, 1, 3, 3, 2), None, {}, r"kernel must have shape \(kh, kw"),
        ((2, 6, 6, 6), (3, 3, 4, 4), (2, 4, 4, 1, 3, 3, 2), None, {}, r"channel mismatch"),
        ((2, 6, 6, 6), (3, 3, 6, 4), (2, 4, 4, 3, 3, 2), None, {},
         r"offsets must have shape .*\(2, 4, 4, 1, 3, 3, 2\)"),
        ((2, 6, 6, 6), (3, 3, 6, 4), (2, 6, 6, 1, 3, 3, 2), None, {}, r"offsets .*\(2, 4, 4, 1, 3, 3, 2\), got"),
        (
            (2, 6, 6, 6), (3, 3, 6, 4), (2, 3, 3, 2, 3, 3, 2), None, {"stride": 2, "offset_groups": 2},
            r"offsets .*\(2, 2, 2, 2, 3, 3, 2\), got \(2, 3, 3, 2, 3, 3, 2\)",
        ),
        ((2, 6, 6, 6), (3, 3, 6, 4), (2, 4, 4, 1, 3, 3, 2), (2, 4, 4, 1, 3, 3, 1), {}, r"mask must have shape .*"
         r"\(2, 4, 4, 1, 3, 3\), got \(2, 4, 4, 1, 3, 3, 1\)"),
        ((2, 6, 6, 6), (3, 3, 6, 4), (2, 4, 4, 4, 3, 3, 2), None, {"offset_groups": 4}, r"offset_groups=4 must divide"),
        ((2, 6, 6, 6), (3, 3, 6, 4), (2, 4, 4, 1, 3, 3, 2), None, {"offset_groups": 0}, r"offset_groups must be a"),
        ((2, 6, 6, 6), (3, 3, 6, 4), (2, 4, 4, 1, 3, 3, 2), None, {"dilation": (1, 1, 1)}, r"dilation must have 2"),
        ((2, 2, 6, 6), (3, 3, 6, 4), (2, 1, 4, 1, 3, 3, 2), None, {}, r"larger than the padded input"),
    ],
)
def test_bad_input(x_shape, kernel_shape, offsets_shape, mask_shape, kwargs, match):
    mask = None if mask_shape is None else jnp.ones(mask_shape)
    with pytest.raises(ValueError, match=match):
        deformable_conv(jnp.zeros(x_shape), jnp.zeros(kernel_shape), jnp.zeros(offsets_shape), mask, **kwargs)
