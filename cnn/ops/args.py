"""Argument normalization and validation shared by every operator.

Layout contract (channels last): inputs ``(batch, *spatial, channels)``; kernels
``(*kernel_spatial, in_channels // groups, out_channels)``.

Padding forms accepted everywhere:
  * ``"VALID"``: no padding.
  * ``"SAME"``: output size ``ceil(in / stride)``; the total padding
    ``max((out - 1) * stride + k_eff - in, 0)`` is split with the extra pixel on the high side (as XLA does).
  * ``"FULL"``: ``k_eff - 1`` on both sides (every partial overlap; the size of a full convolution).
  * an ``int`` p: ``(p, p)`` on every spatial axis.
  * a sequence of ``(low, high)`` pairs, one per spatial axis.

Here ``k_eff = dilation * (k - 1) + 1`` is the extent of a dilated kernel.

Dtypes, one rule for every public operator of ``cnn.ops``: each array argument (input, kernel, offsets, mask,
pooling weights, factors) must be real floating point (float16, bfloat16, float32, float64); an integer,
boolean or complex array is refused with a ValueError naming the argument and its dtype (``float_array``).
Computing in float and casting back truncates (``fft_conv`` of int32 was off by one) or wraps (``correlate`` of
uint8 turned 5400 into 24); returning float instead would change the dtype behind the caller's back. Convert
first: ``x.astype(jnp.float32)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

Padding = str | int | Sequence[tuple[int, int]]
IntOrSeq = int | Sequence[int]

BOUNDARY_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
PADDING_NAMES = ("VALID", "SAME", "FULL")


def as_tuple(value: IntOrSeq, ndim: int, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """An int or a per-axis sequence as a tuple of ``ndim`` ints, each at least ``minimum``."""
    if isinstance(value, int | jnp.integer) and not isinstance(value, bool):
        values = (int(value),) * ndim
    else:
        try:
            values = tuple(int(v) for v in value)
        except TypeError:
            raise ValueError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}") from None
        if len(values) != ndim:
            raise ValueError(f"{name} must have {ndim} entries (one per spatial axis), got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {value!r}")
    return values


def effective_kernel_size(kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Extent of a dilated kernel: ``dilation * (k - 1) + 1`` per axis."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation, strict=True))


def resolve_padding(
    padding: Padding,
    in_spatial: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> list[tuple[int, int]]:
    """Explicit ``(low, high)`` padding per spatial axis for any accepted padding form."""
    ndim = len(in_spatial)
    k_eff = effective_kernel_size(kernel_size, dilation)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return [(0, 0)] * ndim
        if mode == "FULL":
            return [(k - 1, k - 1) for k in k_eff]
        if mode == "SAME":
            pads = []
            for n, k, s in zip(in_spatial, k_eff, stride, strict=True):
                total = max((math.ceil(n / s) - 1) * s + k - n, 0)
                pads.append((total // 2, total - total // 2))
            return pads
        raise ValueError(f"padding must be one of {PADDING_NAMES}, an int or (low, high) pairs, got {padding!r}")
    if isinstance(padding, int) and not isinstance(padding, bool):
        pads = [(padding, padding)] * ndim
    else:
        try:
            pads = [(int(lo), int(hi)) for lo, hi in padding]
        except (TypeError, ValueError):
            raise ValueError(
                f"padding must be one of {PADDING_NAMES}, an int or (low, high) pairs, got {padding!r}"
            ) from None
        if len(pads) != ndim:
            raise ValueError(f"padding needs {ndim} (low, high) pairs (one per spatial axis), got {padding!r}")
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pads


def output_size(
    in_spatial: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    pads: Sequence[tuple[int, int]],
) -> tuple[int, ...]:
    """``floor((n + low + high - k_eff) / stride) + 1`` per axis; a ValueError if the kernel does not fit."""
    k_eff = effective_kernel_size(kernel_size, dilation)
    sizes = []
    for n, k, s, (lo, hi) in zip(in_spatial, k_eff, stride, pads, strict=True):
        if n + lo + hi < k:
            raise ValueError(
                f"kernel of extent {tuple(k_eff)} (after dilation) is larger than the padded input "
                f"{tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads, strict=True))}"
            )
        sizes.append((n + lo + hi - k) // s + 1)
    return tuple(sizes)


def float_array(value, name: str) -> jax.Array:
    """``value`` as a jax array, which must be real floating point (the dtype rule of the module docstring)."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(
            f"{name} must be a real floating-point array, got dtype {array.dtype}; convert it first, e.g. "
            f"{name}.astype(jnp.float32)"
        )
    return array


def check_input(x, ndim_spatial: int, name: str = "x") -> None:
    """``x`` must be ``(batch, *spatial, channels)`` with ``ndim_spatial`` spatial axes (1, 2 or 3)."""
    if ndim_spatial not in (1, 2, 3):
        raise ValueError(f"only 1, 2 or 3 spatial dimensions are supported, got {ndim_spatial}")
    if x.ndim != ndim_spatial + 2:
        raise ValueError(
            f"{name} must have shape (batch, *spatial, channels) with {ndim_spatial} spatial axes "
            f"(rank {ndim_spatial + 2}), got shape {tuple(x.shape)}"
        )


def check_kernel(x, kernel, groups: int = 1) -> int:
    """Validate a ``(*kernel_spatial, in // groups, out)`` kernel against ``x``; return the spatial rank."""
    if kernel.ndim < 3:
        raise ValueError(
            f"kernel must have shape (*kernel_spatial, in_channels // groups, out_channels), got {tuple(kernel.shape)}"
        )
    ndim = kernel.ndim - 2
    check_input(x, ndim)
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    in_channels, out_channels = x.shape[-1], kernel.shape[-1]
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide both in_channels={in_channels} and out_channels={out_channels}"
        )
    if kernel.shape[-2] * groups != in_channels:
        raise ValueError(
            f"channel mismatch: x has {in_channels} channels, kernel {tuple(kernel.shape)} expects "
            f"{kernel.shape[-2]} x groups={groups} = {kernel.shape[-2] * groups}"
        )
    return ndim


def pad_boundary(x, pads: Sequence[tuple[int, int]], boundary: str = "zeros"):
    """Pad the spatial axes of ``(batch, *spatial, channels)`` with the values assumed outside the domain."""
    if boundary not in BOUNDARY_MODES:
        raise ValueError(f"boundary must be one of {list(BOUNDARY_MODES)}, got {boundary!r}")
    widths = [(0, 0), *[tuple(p) for p in pads], (0, 0)]
    if boundary == "reflect":
        for n, (lo, hi) in zip(x.shape[1:-1], pads, strict=True):
            if lo >= n or hi >= n:
                raise ValueError(f"reflect boundary needs padding < input size, got padding {(lo, hi)} for size {n}")
    return jnp.pad(x, widths, mode=BOUNDARY_MODES[boundary])
