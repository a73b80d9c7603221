"""Brute-force numpy references for the op and layer tests: float64 loops over output positions of the textbook sums.

They use nothing of ``cnn``: padding, output sizes and sums are written out here, one position and tap at a time.
"""

from __future__ import annotations

import math

import jax
import numpy as np


def explicit_pads(padding, in_spatial, kernel_size, stride, dilation) -> list[tuple[int, int]]:
    """(low, high) per axis: SAME gives ceil(n / s) outputs with the odd pixel high, FULL k_eff - 1 per side."""
    if not isinstance(padding, str | int):
        return [tuple(p) for p in padding]
    pads = []
    for n, k, s, d in zip(in_spatial, kernel_size, stride, dilation, strict=True):
        k_eff = d * (k - 1) + 1
        if padding == "VALID":
            pads.append((0, 0))
        elif padding == "FULL":
            pads.append((k_eff - 1, k_eff - 1))
        elif padding == "SAME":
            total = max((math.ceil(n / s) - 1) * s + k_eff - n, 0)
            pads.append((total // 2, total - total // 2))
        else:
            pads.append((padding, padding))
    return pads


def out_shape(in_spatial, kernel_size, stride, pads, dilation) -> tuple[int, ...]:
    """``floor((n + low + high - k_eff) / s) + 1`` per axis."""
    return tuple(
        (n + lo + hi - d * (k - 1) - 1) // s + 1
        for n, k, s, (lo, hi), d in zip(in_spatial, kernel_size, stride, pads, dilation, strict=True)
    )


def tiled_loop(x, kernel, stride, pads, dilation, mode="constant"):
    """``y[n, p, o] = sum_{k, c} x_pad[n, p·s + k·d, c] · W[p mod t, k, c, o]`` with W ``(*t, *K, C, O)``.

    A tile of ones is the correlation, a tile equal to the output shape the unshared (locally connected) sum.
    ``mode``: np.pad's mode for the values outside the input.
    """
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    ndim = x.ndim - 2
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=mode)
    tile, ksize = kernel.shape[:ndim], kernel.shape[ndim : 2 * ndim]
    out = out_shape(xp.shape[1:-1], ksize, stride, [(0, 0)] * ndim, dilation)
    y = np.zeros((x.shape[0], *out, kernel.shape[-1]))
    for p in np.ndindex(*out):
        w = kernel[tuple(pi % t for pi, t in zip(p, tile, strict=True))]
        for k in np.ndindex(*ksize):
            at = tuple(pi * s + ki * d for pi, ki, s, d in zip(p, k, stride, dilation, strict=True))
            y[(slice(None), *p)] += xp[(slice(None), *at)] @ w[k]
    return y


def correlate_loop(x, kernel, stride, pads, dilation, groups=1, mode="constant"):
    """Grouped cross-correlation, a loop of its own (not ``tiled_loop``) with the ``(*K, C/G, O)`` kernel:

        y[n, p, o] = sum_k sum_{c < C/G} x_pad[n, p·s + k·d, g(o)·C/G + c] · w[k, c, o],  g(o) = o // (O/G)

    ``mode``: np.pad's mode for the values outside the input.
    """
    x = np.pad(np.asarray(x, np.float64), [(0, 0), *pads, (0, 0)], mode=mode)
    kernel = np.asarray(kernel, np.float64)
    kernel_size = kernel.shape[:-2]
    in_per_group, out_per_group = kernel.shape[-2], kernel.shape[-1] // groups
    out = out_shape(x.shape[1:-1], kernel_size, stride, [(0, 0)] * len(kernel_size), dilation)
    y = np.zeros((x.shape[0], *out, kernel.shape[-1]))
    for p in np.ndindex(*out):
        for k in np.ndindex(*kernel_size):
            at = tuple(pi * s + ki * d for pi, ki, s, d in zip(p, k, stride, dilation, strict=True))
            for g in range(groups):
                cin = slice(g * in_per_group, (g + 1) * in_per_group)
                cout = slice(g * out_per_group, (g + 1) * out_per_group)
                y[(slice(None), *p, cout)] += x[(slice(None), *at, cin)] @ kernel[(*k, slice(None), cout)]
    return y


def with_random_params(module, x, seed: int = 0):
    """``module`` applied to ``x`` with every variable drawn from a standard normal by numpy, and the variables.

    The shapes come from ``jax.eval_shape`` of the init (traced, not run): jax.random's initializers compile once
    per shape, seconds on a loaded 2-core machine, and a value test needs arbitrary parameters, not the init's.
    The apply is one compiled program: run eagerly, a layer made of many small ops compiles each of them.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)
    return np.asarray(jax.jit(module.apply)(variables, x)), variables.get("params", {})


def per_axis(value, ndim: int) -> tuple:
    """An int repeated over ``ndim`` axes, or the per-axis sequence as a tuple."""
    return (value,) * ndim if isinstance(value, int) else tuple(value)


def normal(rng: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def assert_close(actual, expected, rtol: float = 1e-5) -> None:
    """float32 against a float64 reference: relative, with an absolute floor scaled to the magnitude."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=rtol * scale)


def require_onednn() -> None:
    """Skip a test of oneDNN's convolutions where they are not built, except in CI (``CI=true``), where they must be."""
    import os

    import pytest

    from cnn.ops import _onednn

    if not _onednn.available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("oneDNN's convolutions are not built (see the log); CI installs them (requirements.txt)")
        pytest.skip("oneDNN's convolutions are not built here")
