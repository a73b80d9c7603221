"""Pooling (Goodfellow et al., Deep Learning, sec. 9.3).

A pooling function replaces the output of the net at a location with a summary statistic of the nearby
outputs. For a window ``w`` (per spatial axis), stride ``s`` and input ``x`` of shape
``(batch, *spatial, channels)`` padded to ``xp``, output unit ``i`` (a multi-index) summarizes the block

    B(i) = { i * s + k : 0 <= k < w }          (elementwise per spatial axis)

of ``xp`` for every batch element and channel separately:

    max pool       y[i] = max_{m in B(i)} xp[m]                       (padding value -inf)
    average pool   y[i] = sum_{m in B(i)} xp[m] / |B(i)|              (or / #real elements in B(i))
    Lp pool        y[i] = (sum_{m in B(i)} |xp[m]|^p)^(1/p)           (p = 2: L2 pooling)
    weighted pool  y[i] = sum_{k} w[k] xp[i * s + k]                  (e.g. a Gaussian window)

Pooling over a window makes the representation approximately invariant to small translations; with
``stride > 1`` it also downsamples. Besides these window pools there are adaptive pooling (a fixed output
size, bins of varying width), cross-channel pooling (maxout: pooling over groups of channels, which can
learn invariance to transformations other than translation) and global pooling (one summary per channel).

Every window op takes ``(x, window, *, stride=None, padding="VALID")``: ``window`` is an int (the same on
every axis; the spatial rank is then ``x.ndim - 2``) or one int per spatial axis, ``stride`` defaults to
``window`` (non-overlapping pooling) and ``padding`` takes every form of ``cnn.ops.args.resolve_padding``.
Every window must overlap the real input in at least one element (as torch requires): padding so wide
that a window lies entirely in the padding is a ValueError.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn.ops.args import IntOrSeq, Padding, as_tuple, check_input, float_array, output_size, resolve_padding

__all__ = [
    "adaptive_pool",
    "avg_pool",
    "channel_pool",
    "gaussian_window",
    "global_pool",
    "lp_pool",
    "max_pool",
    "weighted_pool",
]


def _check_reduce(reduce: str, allowed: Sequence[str]) -> None:
    if reduce not in allowed:
        raise ValueError(f"reduce must be one of {list(allowed)}, got {reduce!r}")


def _spatial_rank(x, window) -> int:
    """Spatial rank implied by ``window`` (its length) or, for an int window, by ``x`` (``x.ndim - 2``)."""
    if isinstance(window, int | np.integer) and not isinstance(window, bool):
        ndim = x.ndim - 2
    else:
        try:
            ndim = len(window)
        except TypeError:
            raise ValueError(f"window must be an int or a sequence of ints, got {window!r}") from None
    check_input(x, ndim)
    return ndim


def _real_counts(in_spatial, window, stride, pads, out_spatial) -> np.ndarray:
    """Number of real (non-padding) input elements in every window, shape ``out_spatial``.

    The count is a product over axes of the per-axis overlap of ``[i*s - low, i*s - low + w)`` with
    ``[0, n)``; computed statically so that windows lying entirely in the padding are caught here.
    """
    per_axis = []
    for n, w, s, (lo, _), m in zip(in_spatial, window, stride, pads, out_spatial, strict=True):
        first = np.arange(m) * s - lo
        per_axis.append(np.minimum(first + w, n) - np.maximum(first, 0))
    counts = per_axis[0]
    for c in per_axis[1:]:
        counts = np.multiply.outer(counts, c)
    return counts


def _window_geometry(x, window: IntOrSeq, stride: IntOrSeq | None, padding: Padding):
    """Validated ``(window, stride, pads, out_spatial, real_counts)`` of a window pool over ``x``."""
    ndim = _spatial_rank(x, window)
    window = as_tuple(window, ndim, "window")
    stride = window if stride is None else as_tuple(stride, ndim, "stride")
    in_spatial = tuple(x.shape[1:-1])
    pads = resolve_padding(padding, in_spatial, window, stride, (1,) * ndim)
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads, strict=True))
    if any(w > n for w, n in zip(window, padded, strict=True)):
        raise ValueError(f"window {window} is larger than the padded input {padded} (x spatial {in_spatial})")
    out_spatial = output_size(in_spatial, window, stride, (1,) * ndim, pads)
    counts = _real_counts(in_spatial, window, stride, pads, out_spatial)
    if counts.min() <= 0:
        raise ValueError(
            f"padding {pads} is too wide for window {window} and stride {stride} on input {in_spatial}: "
            "some windows lie entirely in the padding"
        )
    return window, stride, pads, out_spatial, counts


def _reduce_window(x, init, op, window, stride, pads):
    """``lax.reduce_window`` over the spatial axes of a channels-last array (batch and channels untouched).

    ``init`` is made a concrete numpy scalar: lax recognizes (max, -inf) and (add, 0) as the differentiable
    reduce_window_max / reduce_window_sum only for a concrete init; under ``jit`` a ``jnp`` array is a tracer.
    """
    init = np.array(init, x.dtype)
    return lax.reduce_window(x, init, op, (1, *window, 1), (1, *stride, 1), [(0, 0), *pads, (0, 0)])


def max_pool(x, window: IntOrSeq, *, stride: IntOrSeq | None = None, padding: Padding = "VALID"):
    """Max pooling: ``y[b, i, c] = max_{k < w} xp[b, i*s + k, c]``, padding with ``-inf``.

    ``x``: ``(batch, *spatial, channels)``; returns ``(batch, *out_spatial, channels)`` with
    ``out = floor((n + low + high - w) / s) + 1`` per axis. The gradient of ``y[i]`` goes to the first maximum of
    its window (row-major order), as ``lax.reduce_window``'s does.
    """
    x = float_array(x, "x")
    window, stride, pads, _, _ = _window_geometry(x, window, stride, padding)
    if jax.default_backend() == "cpu":
        return _max_pool_selecting(x, window, stride, pads)
    return _reduce_window(x, -np.inf, lax.max, window, stride, pads)


def _window_taps(x, window: tuple[int, ...], stride: tuple[int, ...], pads) -> list[jax.Array]:
    """``xp[b, i*s + k, c]`` over all output positions ``i``, one strided slice per window offset ``k`` (row-major),
    ``xp`` being ``x`` padded with ``-inf``."""
    xp = lax.pad(x, np.array(-np.inf, x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    out = [(n - w) // s + 1 for n, w, s in zip(xp.shape[1:-1], window, stride, strict=True)]
    taps = []
    for k in itertools.product(*map(range, window)):
        limit = [k_i + (o - 1) * s + 1 for k_i, o, s in zip(k, out, stride, strict=True)]
        taps.append(lax.slice(xp, (0, *k, 0), (xp.shape[0], *limit, xp.shape[-1]), (1, *stride, 1)))
    return taps


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _max_pool_selecting(x, window: tuple[int, ...], stride: tuple[int, ...], pads):
    """``reduce_window``'s max, differentiated by selecting the tangent of each window's first maximum.

    XLA:CPU differentiates ``reduce_window`` with ``select_and_scatter``, 5-10x slower than this forward and
    backward (32x64x64x64, 2x2: 240-310 ms against 27-30; 32x112x112x64, 3x3 /2: 1.1 s against 0.19;
    16x8192x128, 4: 290-330 ms against 49-57; BENCHMARKS.md "Spoken digits"). The tangent runs through the window's
    offsets in row-major order keeping the first strictly larger value, so ties go to the first maximum, as
    ``select_and_scatter`` sends them: a linear map of the tangents (selects of slices) whose transpose, the
    gradient, is selects and pads.
    """
    return _reduce_window(x, -np.inf, lax.max, window, stride, pads)


@_max_pool_selecting.defjvp
def _max_pool_selecting_jvp(window, stride, pads, primals, tangents):
    values, slopes = _window_taps(primals[0], window, stride, pads), _window_taps(tangents[0], window, stride, pads)
    best, slope = values[0], slopes[0]
    for value, value_slope in zip(values[1:], slopes[1:], strict=True):
        larger = value > best
        best, slope = jnp.where(larger, value, best), jnp.where(larger, value_slope, slope)
    # The primal stays reduce_window's, which (unlike the comparisons) propagates a NaN.
    return _reduce_window(primals[0], -np.inf, lax.max, window, stride, pads), slope


def avg_pool(
    x,
    window: IntOrSeq,
    *,
    stride: IntOrSeq | None = None,
    padding: Padding = "VALID",
    count_include_pad: bool = True,
):
    """Average pooling: ``y[b, i, c] = sum_{k < w} xp[b, i*s + k, c] / N(i)``, padding with zeros.

    ``N(i) = prod(w)`` (the window size) if ``count_include_pad``, else the number of real (non-padding)
    input elements in window ``i``, so that border outputs are the mean of the real values only.
    """
    x = float_array(x, "x")
    window, stride, pads, _, counts = _window_geometry(x, window, stride, padding)
    total = _reduce_window(x, 0, lax.add, window, stride, pads)
    if count_include_pad:
        return total / math.prod(window)
    return total / jnp.asarray(counts, total.dtype)[None, ..., None]


def _abs_pow(a, p: float):
    """``a ** p`` for ``a >= 0`` with a zero (not NaN/inf) gradient at ``a = 0`` for every ``p > 0``.

    The double ``where`` keeps the untaken branch's gradient finite: ``d/da a^p`` is infinite at 0 for
    ``p < 1`` and ``d/ds s^(1/p)`` is infinite at ``s = 0`` for ``p > 1``.
    """
    positive = a > 0
    return jnp.where(positive, jnp.where(positive, a, 1) ** p, 0)


def lp_pool(x, window: IntOrSeq, *, p: float = 2.0, stride: IntOrSeq | None = None, padding: Padding = "VALID"):
    """Lp pooling: ``y[b, i, c] = (sum_{k < w} |xp[b, i*s + k, c]|^p)^(1/p)``, padding with zeros.

    ``p = 2`` is L2 pooling (Goodfellow 9.3): the Euclidean norm of the window. We take ``|x|^p`` so that
    for ``p >= 1`` the output is the p-norm of the window for any sign of ``x`` and any real ``p``
    (torch's LPPool uses the sign-less ``x^p``, which differs for negative inputs and odd or
    non-integer ``p``). ``p -> inf`` approaches max pooling of ``|x|``.
    The gradient at an all-zero window is defined as 0 (a subgradient of the norm there), never NaN.
    """
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p!r}")
    x = float_array(x, "x")
    window, stride, pads, _, _ = _window_geometry(x, window, stride, padding)
    total = _reduce_window(_abs_pow(jnp.abs(x), p), 0, lax.add, window, stride, pads)
    return _abs_pow(total, 1.0 / p)


def gaussian_window(size: IntOrSeq, sigma: float | Sequence[float]):
    """Normalized separable Gaussian window of shape ``size``:

        g[k] = prod_a exp(-(k_a - (size_a - 1)/2)^2 / (2 sigma_a^2))  /  sum_k (same),

    the outer product of 1D Gaussians centered on the window (``scipy.signal.windows.gaussian``
    normalized to sum 1). ``size``: an int (a 1D window) or one int per axis; ``sigma``: a float or one
    per axis, > 0. Returns float32.
    """
    size = as_tuple(size, 1 if np.ndim(size) == 0 else len(size), "size")
    if isinstance(sigma, int | float):
        sigma = (float(sigma),) * len(size)
    sigma = tuple(float(v) for v in sigma)
    if len(sigma) != len(size) or any(not v > 0 for v in sigma):
        raise ValueError(f"sigma must be > 0, a float or one per axis of size {size}, got {sigma!r}")
    window = np.ones(())
    for n, sd in zip(size, sigma, strict=True):
        g = np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / sd) ** 2)
        window = np.multiply.outer(window, g / g.sum())
    return jnp.asarray(window, jnp.float32)


def weighted_pool(x, weights, *, stride: IntOrSeq | None = None, padding: Padding = "VALID"):
    """Weighted pooling: ``y[b, i, c] = sum_k weights[k] xp[b, i*s + k, c]``, padding with zeros.

    ``weights`` has the window's shape (spatial rank ``x.ndim - 2``), fixed (e.g. ``gaussian_window``)
    or learned (differentiable); the same weights pool every channel (a depthwise correlation).
    Computed as a sum of ``prod(window)`` strided slices, which on XLA:CPU is much faster than a
    grouped convolution with ``feature_group_count = channels``.
    """
    x, weights = float_array(x, "x"), float_array(weights, "weights")
    if weights.ndim == 0:
        raise ValueError("weights must have the window's shape (one axis per spatial axis), got a scalar")
    _, stride, pads, _, _ = _window_geometry(x, tuple(weights.shape), stride, padding)
    return _weighted_pool(x, weights, stride, tuple(map(tuple, pads)))


@partial(jax.jit, static_argnums=(2, 3))
def _weighted_pool(x, weights, stride, pads):
    """Validated core of ``weighted_pool``, compiled once per geometry (not one dispatch per slice)."""
    xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    out_spatial = [(n - w) // s + 1 for n, w, s in zip(xp.shape[1:-1], weights.shape, stride, strict=True)]
    out = None
    for k in np.ndindex(*weights.shape):
        limit = [kk + (m - 1) * s + 1 for kk, m, s in zip(k, out_spatial, stride, strict=True)]
        term = weights[k] * lax.slice(xp, (0, *k, 0), (xp.shape[0], *limit, xp.shape[-1]), (1, *stride, 1))
        out = term if out is None else out + term
    return out


def _adaptive_bins(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices ``(m, L)`` and validity mask of the bins ``floor(i n / m) .. ceil((i+1) n / m)``.

    Bins vary in width; each is padded to the widest ``L`` by repeating its last index (masked out).
    """
    i = np.arange(m)
    start = (i * n) // m
    end = -((-(i + 1) * n) // m)
    offsets = np.arange((end - start).max())
    idx = start[:, None] + offsets
    valid = idx < end[:, None]
    return np.minimum(idx, end[:, None] - 1), valid


def adaptive_pool(x, output_size: IntOrSeq, reduce: str = "max"):
    """Adaptive pooling to a fixed output size: per spatial axis of size ``n`` and output size ``m``,
    output bin ``i`` covers input indices ``floor(i n / m) <= j < ceil((i + 1) n / m)``:

        y[b, i, c] = max | mean over the box  prod_a [floor(i_a n_a / m_a), ceil((i_a + 1) n_a / m_a))

    (torch's AdaptiveMax/AvgPool bins; exact for any ``n``, ``m``). ``m > n`` is allowed, as in torch:
    bins then have width 1 or 2 and overlap (an upsampling). A box max / mean equals the max / mean taken
    one axis at a time, so the axes are pooled in turn. ``reduce``: ``"max"`` or ``"avg"``.
    """
    _check_reduce(reduce, ("max", "avg"))
    x = float_array(x, "x")
    ndim = x.ndim - 2
    check_input(x, ndim)
    return _adaptive_pool(x, as_tuple(output_size, ndim, "output_size"), reduce)


@partial(jax.jit, static_argnums=(1, 2))
def _adaptive_pool(x, out_spatial, reduce):
    """Validated core of ``adaptive_pool``, compiled once per geometry."""
    for axis, (n, m) in enumerate(zip(x.shape[1:-1], out_spatial, strict=True), start=1):
        idx, valid = _adaptive_bins(n, m)
        gathered = jnp.take(x, idx, axis=axis)  # (..., m, L, ...): the bin members along a new axis
        if reduce == "max":
            x = gathered.max(axis=axis + 1)  # repeated indices do not change the max
        else:
            mask = jnp.asarray(valid, x.dtype).reshape(valid.shape + (1,) * (x.ndim - axis - 1))
            x = (gathered * mask).sum(axis=axis + 1) / mask.sum(axis=1)
    return x


def channel_pool(x, group_size: int, reduce: str = "max"):
    """Cross-channel pooling (maxout, Goodfellow et al. 2013; Deep Learning sec. 9.3): the ``C`` channels
    split into ``C / g`` consecutive groups of ``g = group_size``, each reduced to one channel:

        y[..., j] = max | mean_{0 <= t < g} x[..., j g + t]

    ``x``: any array with channels last, ``(batch, *spatial, channels)`` or dense ``(batch, features)``.
    ``reduce``: ``"max"`` (maxout) or ``"avg"``.
    """
    _check_reduce(reduce, ("max", "avg"))
    x = float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and a channel axis (rank >= 2), got shape {tuple(x.shape)}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    channels = x.shape[-1]
    if channels % group_size:
        raise ValueError(f"group_size={group_size} must divide the number of channels {channels}")
    groups = x.reshape(*x.shape[:-1], channels // group_size, group_size)
    return groups.max(axis=-1) if reduce == "max" else groups.mean(axis=-1)


def global_pool(x, reduce: str = "avg"):
    """Global pooling: one summary per channel over all spatial positions,

        y[b, c] = mean | max_{i} x[b, i, c],

    ``x``: ``(batch, *spatial, channels)`` with 1, 2 or 3 spatial axes; returns ``(batch, channels)``.
    """
    _check_reduce(reduce, ("avg", "max"))
    x = float_array(x, "x")
    check_input(x, x.ndim - 2)
    axes = tuple(range(1, x.ndim - 1))
    return x.mean(axis=axes) if reduce == "avg" else x.max(axis=axes)
