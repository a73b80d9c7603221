"""DeformableConv: at init (zero offset conv) the plain correlation of its kernel, halved when modulated
(sigmoid(0) = 1/2); with set offsets and mask, the correlation of the shifted input with the masked kernel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.layers import DeformableConv
from tests.reference import correlate_loop, explicit_pads, with_random_params


def numpy_normal(key, shape, dtype=np.float32):
    """Arbitrary kernel values without compiling a jax.random initializer."""
    return np.random.default_rng(len(shape)).normal(size=shape).astype(dtype)


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize(("strides", "padding"), [(1, "SAME"), (2, "VALID")])
def test_at_init_a_plain_correlation(modulated, strides, padding):
    x = np.random.default_rng(0).normal(size=(2, 7, 8, 4)).astype(np.float32)
    layer = DeformableConv(5, (3, 3), strides, padding, offset_groups=2, modulated=modulated,
                           kernel_init=numpy_normal, bias_init=numpy_normal)
    y, variables = jax.jit(layer.init_with_output)(jax.random.key(0), x)
    params = variables["params"]
    offset_conv = params["offset_conv"]
    assert offset_conv["kernel"].shape == (3, 3, 4, 2 * 9 * (3 if modulated else 2))
    assert not np.any(offset_conv["kernel"]) and not np.any(offset_conv["bias"])
    pads = explicit_pads(padding, (7, 8), (3, 3), (strides,) * 2, (1, 1))
    plain = correlate_loop(x, params["kernel"], (strides,) * 2, pads, (1, 1))
    np.testing.assert_allclose(y, (0.5 if modulated else 1.0) * plain + params["bias"], rtol=1e-4, atol=1e-4)


def shifted_correlation(x, kernel, dy: int, dx: int):
    """``y[n, i, j] = sum_{a, b} x[n, i - 1 + a + dy, j - 1 + b + dx] · W[a, b]`` (3×3, SAME), x zero outside."""
    border = 1 + max(abs(dy), abs(dx))
    big = np.pad(x, [(0, 0), (border, border), (border, border), (0, 0)])
    full = correlate_loop(big, kernel, (1, 1), [(0, 0), (0, 0)], (1, 1))
    top, left = border - 1 + dy, border - 1 + dx
    return full[:, top : top + x.shape[1], left : left + x.shape[2]]


def test_offsets_and_mask_layout():
    """offset_conv's channels are (offset_groups, kh, kw, (dy, dx, mask logit)): integer offsets shift a group's
    taps exactly (bilinear weights 0 and 1) and a mask logit of -30 removes a tap."""
    x = np.random.default_rng(1).normal(size=(1, 6, 7, 4)).astype(np.float32)
    layer = DeformableConv(3, (3, 3), offset_groups=2)
    _, params = with_random_params(layer, x)
    fields = np.zeros((2, 3, 3, 3), np.float32)
    fields[..., 2] = 30.0  # mask ~ 1
    fields[0, ..., 0] = 1.0  # group 0 reads one row down
    fields[1, ..., 1] = -2.0  # group 1 reads two columns left
    fields[1, 0, 2, 2] = -30.0  # and drops tap (0, 2)
    params["offset_conv"] = {"kernel": np.zeros_like(params["offset_conv"]["kernel"]), "bias": fields.ravel()}
    y = jax.jit(layer.apply)({"params": params}, x)
    kernel = np.array(params["kernel"])
    masked = kernel[:, :, 2:].copy()
    masked[0, 2] = 0.0
    expected = (shifted_correlation(x[..., :2], kernel[:, :, :2], 1, 0)
                + shifted_correlation(x[..., 2:], masked, 0, -2) + params["bias"])
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "offset_groups", "match"),
    [((1, 6, 4), 1, "height, width"), ((1, 6, 6, 4), 3, "offset_groups=3 must divide")],
)
def test_bad_arguments(shape, offset_groups, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(DeformableConv(2, 3, offset_groups=offset_groups).init, jax.random.key(0), jnp.ones(shape))
