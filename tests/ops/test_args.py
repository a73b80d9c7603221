"""``cnn.ops.args``: argument normalization, padding arithmetic and validation, checked directly.

References: the padding sizes are checked against their definitions (number of windows counted by brute
force, ``ceil(n / s)`` for SAME) and the boundary padding against ``numpy.pad``.
"""

import itertools
import math

import numpy as np
import pytest

from cnn.ops import args


def count_windows(n: int, low: int, high: int, k_eff: int, stride: int) -> int:
    """How many windows of extent ``k_eff`` starting at multiples of ``stride`` fit in the padded input."""
    return sum(1 for start in range(0, n + low + high, stride) if start + k_eff <= n + low + high)


def test_as_tuple_broadcasts_ints_and_keeps_sequences():
    assert args.as_tuple(2, 3, "stride") == (2, 2, 2)
    assert args.as_tuple((1, 2), 2, "stride") == (1, 2)
    assert args.as_tuple([3], 1, "dilation") == (3,)
    assert args.as_tuple(np.int64(2), 2, "stride") == (2, 2)
    assert args.as_tuple(0, 2, "padding", minimum=0) == (0, 0)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (0, r"stride must be >= 1 on every axis, got 0"),
        ((1, 0), r"stride must be >= 1"),
        ((1, 2, 3), r"stride must have 2 entries"),
        (1.5, r"stride must be an int or a sequence of 2 ints"),
        (None, r"stride must be an int or a sequence of 2 ints"),
    ],
)
def test_as_tuple_rejects(value, match):
    with pytest.raises(ValueError, match=match):
        args.as_tuple(value, 2, "stride")


def test_effective_kernel_size():
    assert args.effective_kernel_size((3, 1, 4), (2, 5, 1)) == (5, 1, 4)


@pytest.mark.parametrize(("n", "k", "s", "d"), itertools.product([1, 5, 6, 7, 8], [1, 2, 3, 4], [1, 2, 3], [1, 2]))
def test_same_padding_gives_ceil_output_with_extra_pixel_high(n, k, s, d):
    ((low, high),) = args.resolve_padding("SAME", (n,), (k,), (s,), (d,))
    k_eff = d * (k - 1) + 1
    assert count_windows(n, low, high, k_eff, s) == math.ceil(n / s)
    # The least padding that achieves it, split evenly with the odd pixel on the high side (as XLA does).
    assert low + high == max((math.ceil(n / s) - 1) * s + k_eff - n, 0)
    assert high - low in (0, 1)


def test_same_padding_examples():
    assert args.resolve_padding("SAME", (6,), (4,), (1,), (1,)) == [(1, 2)]  # even kernel
    assert args.resolve_padding("SAME", (8, 7), (3, 3), (2, 2), (1, 1)) == [(0, 1), (1, 1)]
    assert args.resolve_padding("same", (5,), (3,), (1,), (2,)) == [(2, 2)]  # case-insensitive, dilated


def test_valid_full_int_and_pairs():
    shape, kernel, stride, dilation = (5, 6), (3, 2), (1, 2), (2, 1)
    assert args.resolve_padding("VALID", shape, kernel, stride, dilation) == [(0, 0), (0, 0)]
    assert args.resolve_padding("FULL", shape, kernel, stride, dilation) == [(4, 4), (1, 1)]
    assert args.resolve_padding(2, shape, kernel, stride, dilation) == [(2, 2), (2, 2)]
    assert args.resolve_padding([(1, 0), (0, 3)], shape, kernel, stride, dilation) == [(1, 0), (0, 3)]


@pytest.mark.parametrize(
    ("padding", "match"),
    [
        ("HALF", r"padding must be one of \('VALID', 'SAME', 'FULL'\)"),
        (-1, r"padding must be non-negative, got -1"),
        ([(0, -2), (1, 1)], r"padding must be non-negative"),
        ([(1, 1)], r"padding needs 2 \(low, high\) pairs"),
        ([1, 2], r"padding must be one of"),
        (1.5, r"padding must be one of"),
    ],
)
def test_resolve_padding_rejects(padding, match):
    with pytest.raises(ValueError, match=match):
        args.resolve_padding(padding, (5, 5), (3, 3), (1, 1), (1, 1))


@pytest.mark.parametrize(
    ("n", "k", "s", "d", "pads"),
    [(7, 3, 1, 1, (0, 0)), (7, 3, 2, 1, (1, 1)), (8, 2, 3, 2, (0, 2)), (4, 5, 1, 1, (2, 2)), (1, 1, 4, 3, (0, 0))],
)
def test_output_size_counts_windows(n, k, s, d, pads):
    assert args.output_size((n,), (k,), (s,), (d,), [pads]) == (count_windows(n, *pads, d * (k - 1) + 1, s),)


def test_output_size_rejects_kernel_larger_than_padded_input():
    with pytest.raises(
        ValueError,
        match=r"kernel of extent \(3, 5\) \(after dilation\) is larger than the padded "
        r"input \(5, 4\)",
    ):
        args.output_size((5, 2), (3, 3), (1, 1), (1, 2), [(0, 0), (1, 1)])


def test_check_input():
    args.check_input(np.zeros((2, 4, 4, 3)), 2)
    with pytest.raises(
        ValueError,
        match=r"x must have shape \(batch, \*spatial, channels\) with 2 spatial axes "
        r"\(rank 4\), got shape \(4, 4, 3\)",
    ):
        args.check_input(np.zeros((4, 4, 3)), 2)
    with pytest.raises(ValueError, match=r"only 1, 2 or 3 spatial dimensions are supported, got 4"):
        args.check_input(np.zeros((1, 2, 2, 2, 2, 1)), 4)


def test_check_kernel():
    x = np.zeros((1, 5, 5, 6))
    assert args.check_kernel(x, np.zeros((3, 3, 6, 4))) == 2
    assert args.check_kernel(x, np.zeros((3, 3, 2, 9)), groups=3) == 2
    with pytest.raises(ValueError, match=r"kernel must have shape"):
        args.check_kernel(x, np.zeros((3, 6)))
    with pytest.raises(ValueError, match=r"x must have shape .* with 1 spatial axes"):
        args.check_kernel(x, np.zeros((3, 6, 4)))
    with pytest.raises(ValueError, match=r"channel mismatch: x has 6 channels, kernel \(3, 3, 5, 4\) expects 5"):
        args.check_kernel(x, np.zeros((3, 3, 5, 4)))
    with pytest.raises(ValueError, match=r"groups=4 must divide both in_channels=6 and out_channels=8"):
        args.check_kernel(x, np.zeros((3, 3, 1, 8)), groups=4)
    with pytest.raises(ValueError, match=r"groups must be a positive int, got 0"):
        args.check_kernel(x, np.zeros((3, 3, 6, 4)), groups=0)


@pytest.mark.parametrize(
    ("boundary", "numpy_mode"),
    [("zeros", "constant"), ("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")],
)
def test_pad_boundary_matches_numpy_pad(boundary, numpy_mode):
    x = np.random.default_rng(0).normal(size=(2, 5, 4, 3)).astype(np.float32)
    pads = [(2, 1), (0, 3)]
    expected = np.pad(x, [(0, 0), *pads, (0, 0)], mode=numpy_mode)
    np.testing.assert_array_equal(args.pad_boundary(x, pads, boundary), expected)


def test_pad_boundary_rejects():
    x = np.zeros((1, 4, 1))
    with pytest.raises(ValueError, match=r"boundary must be one of \['zeros', 'reflect', 'replicate', 'circular'\]"):
        args.pad_boundary(x, [(1, 1)], "mirror")
    with pytest.raises(ValueError, match=r"reflect boundary needs padding < input size, got padding \(4, 0\)"):
        args.pad_boundary(x, [(4, 0)], "reflect")
