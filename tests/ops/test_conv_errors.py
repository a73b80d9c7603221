"""Bad input to correlate, convolve, conv_transpose and conv_matrix: a ValueError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from cnn.ops.conv import conv_matrix, conv_transpose, convolve, correlate

X2 = np.zeros((1, 5, 5, 4))
W2 = np.zeros((3, 3, 4, 2))


@pytest.mark.parametrize(
    ("x", "w", "kwargs", "match"),
    [
        (
            np.zeros((5, 5, 4)),
            W2,
            {},
            r"x must have shape \(batch, \*spatial, channels\) with 2 spatial axes "
            r"\(rank 4\), got shape \(5, 5, 4\)",
        ),
        (X2, np.zeros((3, 4)), {}, r"kernel must have shape .*got \(3, 4\)"),
        (X2, np.zeros((3, 3, 3, 2)), {}, r"channel mismatch: x has 4 channels, kernel \(3, 3, 3, 2\)"),
        (X2, np.zeros((3, 3, 1, 6)), {"groups": 4}, r"groups=4 must divide both in_channels=4 and out_channels=6"),
        (X2, np.zeros((3, 3, 2, 3)), {"groups": 2}, r"groups=2 must divide both in_channels=4 and out_channels=3"),
        (X2, W2, {"groups": 0}, r"groups must be a positive int, got 0"),
        (X2, W2, {"padding": -1}, r"padding must be non-negative, got -1"),
        (X2, W2, {"padding": [(0, 1), (-1, 0)]}, r"padding must be non-negative"),
        (
            X2,
            np.zeros((8, 3, 4, 2)),
            {"padding": 1},
            r"kernel of extent \(8, 3\) .* larger than the padded input "
            r"\(7, 7\)",
        ),
        (X2, W2, {"dilation": 3}, r"kernel of extent \(7, 7\) .* larger than the padded input \(5, 5\)"),
        (X2, W2, {"padding": "HALF"}, r"padding must be one of \('VALID', 'SAME', 'FULL'\)"),
        (X2, W2, {"padding": [(1, 1)]}, r"padding needs 2 \(low, high\) pairs"),
        (X2, W2, {"boundary": "mirror"}, r"boundary must be one of \['zeros', 'reflect', 'replicate', 'circular'\]"),
        (X2, W2, {"boundary": "reflect", "padding": 5}, r"reflect boundary needs padding < input size"),
        (X2, W2, {"stride": 0}, r"stride must be >= 1 on every axis, got 0"),
        (X2, W2, {"stride": (1, 1, 1)}, r"stride must have 2 entries"),
        (X2, W2, {"dilation": (1, 0)}, r"dilation must be >= 1"),
    ],
)
def test_correlate_rejects_bad_input(x, w, kwargs, match):
    for f in (correlate, convolve):
        with pytest.raises(ValueError, match=match):
            f(x, w, **kwargs)


Y2 = np.zeros((1, 3, 3, 2))


@pytest.mark.parametrize(
    ("y", "w", "kwargs", "match"),
    [
        (np.zeros((3, 3, 2)), W2, {}, r"y must have shape \(batch, \*spatial, channels\) with 2 spatial axes"),
        (Y2, np.zeros((3, 2)), {}, r"kernel must have shape .*got \(3, 2\)"),
        (Y2, np.zeros((3, 3, 4, 3)), {}, r"channel mismatch: y has 2 channels, kernel \(3, 3, 4, 3\) has 3 output"),
        (Y2, W2, {"groups": 3}, r"groups=3 must divide out_channels=2"),
        (Y2, W2, {"groups": 0}, r"groups must be a positive int, got 0"),
        (Y2, W2, {"stride": 0}, r"stride must be >= 1"),
        (Y2, W2, {"padding": "HALF"}, r"padding must be one of"),
        (Y2, W2, {"padding": -2}, r"padding must be non-negative"),
        (
            Y2,
            W2,
            {"input_shape": (1, 5, 5)},
            r"input_shape must be \(batch=1, 2 spatial sizes, in_channels=4\) "
            r"for y \(1, 3, 3, 2\) and kernel \(3, 3, 4, 2\) with groups=1, got",
        ),
        (Y2, W2, {"input_shape": (2, 5, 5, 4)}, r"input_shape must be \(batch=1"),
        (Y2, W2, {"input_shape": (1, 5, 5, 3)}, r"in_channels=4\) .* got \(1, 5, 5, 3\)"),
        (
            Y2,
            W2,
            {"input_shape": (1, 6, 5, 4)},
            r"y has spatial shape \(3, 3\), but correlate of an input of "
            r"spatial shape \(6, 5\) gives \(4, 3\)",
        ),
        (
            Y2,
            W2,
            {"padding": 3},
            r"y has spatial shape \(3, 3\), but correlate of an input of spatial shape "
            r"\(1, 1\) gives \(5, 5\)",
        ),
    ],
)
def test_conv_transpose_rejects_bad_input(y, w, kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv_transpose(y, w, **kwargs)


@pytest.mark.parametrize(
    ("w", "input_shape", "kwargs", "match"),
    [
        (np.zeros((3, 2)), (5, 3), {}, r"kernel must have shape .* with 1, 2 or 3 spatial axes, got \(3, 2\)"),
        (
            W2,
            (5, 4),
            {},
            r"input_shape must be \(2 spatial sizes, in_channels=4\) for kernel \(3, 3, 4, 2\), got "
            r"\(5, 4\)",
        ),
        (W2, (5, 5, 3), {}, r"input_shape must be \(2 spatial sizes, in_channels=4\)"),
        (W2, (2, 5, 4), {}, r"kernel of extent \(3, 3\) .* larger than the padded input \(2, 5\)"),
        (W2, (5, 5, 4), {"stride": 0}, r"stride must be >= 1"),
        (W2, (5, 5, 4), {"padding": "HALF"}, r"padding must be one of"),
    ],
)
def test_conv_matrix_rejects_bad_input(w, input_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv_matrix(w, input_shape, **kwargs)
