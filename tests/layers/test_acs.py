"""ACS convolution against its definition built independently: three brute-force 3D correlations whose k×k×k
kernels are zero except on the view's centre plane (``tests.reference.correlate_loop``), channels concatenated."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cnn.layers import ACSConv, Conv, conv_module
from cnn.ops import acs_conv, acs_split
from tests.reference import correlate_loop, explicit_pads, with_random_params


def embedded(kernel: np.ndarray, axis: int) -> np.ndarray:
    """The 2D kernel ``(k, k, C, O)`` as a ``(k, k, k, C, O)`` kernel, zero off the centre plane of ``axis``."""
    k = kernel.shape[0]
    cube = np.zeros((k, k, k, *kernel.shape[2:]))
    index = [slice(None)] * 3
    index[axis] = (k - 1) // 2
    cube[tuple(index)] = kernel
    return cube


def acs_reference(x, kernel, stride, padding, dilation):
    k = kernel.shape[0]
    pads = explicit_pads(padding, x.shape[1:-1], (k,) * 3, stride, dilation)
    # the paper's split, written out: thirds, the remainder to the first views
    out = kernel.shape[-1]
    sizes = [out // 3 + (out % 3 > 0), out // 3 + (out % 3 > 1), out // 3]
    bounds = np.cumsum([0, *sizes])
    return np.concatenate([
        correlate_loop(x, embedded(kernel[..., bounds[v]:bounds[v + 1]], v), stride, pads, dilation)
        for v in range(3)
    ], axis=-1)


@pytest.mark.parametrize(
    ("k", "out", "stride", "padding", "dilation"),
    [(3, 6, 1, 1, 1), (3, 7, 2, "SAME", 1), (3, 5, (1, 2, 1), "VALID", 1), (2, 4, 1, "SAME", 1), (3, 8, 1, 2, 2)],
)
def test_acs_conv_is_three_plane_correlations(k, out, stride, padding, dilation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 5, 3)).astype(np.float32)
    kernel = rng.standard_normal((k, k, 3, out)).astype(np.float32)
    stride3 = stride if isinstance(stride, tuple) else (stride,) * 3
    expected = acs_reference(x, kernel, stride3, padding, (dilation,) * 3)
    got = acs_conv(x, kernel, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_split_is_the_papers():
    assert [acs_split(n) for n in (6, 7, 8, 64)] == [(2, 2, 2), (3, 2, 2), (3, 3, 2), (22, 21, 21)]


def test_layer_has_the_2d_parameters_and_the_3d_shape():
    x = np.random.default_rng(1).standard_normal((1, 6, 6, 6, 4)).astype(np.float32)
    y, params = with_random_params(ACSConv(9, 3, strides=2, padding=1), x)
    assert params["kernel"].shape == (3, 3, 4, 9)
    reference = Conv(9, (3, 3, 3), strides=2, padding=1)
    assert y.shape == jax.eval_shape(reference.init_with_output, jax.random.key(0), x)[0].shape == (1, 3, 3, 3, 9)
    expected = acs_reference(x, np.asarray(params["kernel"]), (2,) * 3, 1, (1,) * 3)
    np.testing.assert_allclose(y, expected + np.asarray(params["bias"]), rtol=1e-4, atol=1e-4)


def test_conv_kind_acs_on_volumes_only():
    acs = conv_module("acs")
    assert type(acs(8, (3, 3, 3))) is ACSConv
    assert type(acs(8, (3, 3))) is Conv  # 2D: standard
    assert type(acs(8, (1, 3, 3))) is Conv  # already factorized
    assert type(acs(8, (3, 3, 3), feature_group_count=2)) is Conv


def test_bad_kernel_is_a_value_error():
    with pytest.raises(ValueError, match=r"kernel must be \(k, k, 2, out_channels\)"):
        acs_conv(np.zeros((1, 4, 4, 4, 2)), np.zeros((3, 2, 2, 4)))
