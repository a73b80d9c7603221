"""Sections of ``benchmarks/ops.py`` for the structured convolutions: unshared and tiled convolution, the two
strategies of ``tiled_conv``, the two CPU rewrites of a grouped convolution, and the deformable convolution (beside
torchvision when it is importable). Imported by ``benchmarks/ops.py`` after it has set the XLA:CPU flag; the
timing conventions are its docstring's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from timing import Timer, forward_backward, normal, peak_bytes
from torch_reference import torchvision_deform

from cnn import ops
from cnn.ops._lowering import _SHIFTED_SLICE_MAX_CHANNELS, _block_diagonal
from cnn.ops._slice_convs import _shifted_slice_conv
from cnn.ops.local import _MAX_PHASE_CONV_OVERHEAD, _phase_conv, _phase_einsum, _phase_extent


def bench_local(timer: Timer, quick: bool) -> dict:
    """``locally_connected`` and ``tiled_conv`` against ``correlate``: time and compiled memory."""
    rng = np.random.default_rng(0)
    batch, size, cin, cout, k = (4, 32, 32, 32, 3) if quick else (8, 32, 64, 64, 3)
    x, g = normal(rng, batch, size, size, cin), normal(rng, batch, size, size, cout)
    variants: list[tuple[str, Callable, tuple[int, ...]]] = [
        ("correlate (shared)", lambda x, w: ops.correlate(x, w, padding="SAME"), (k, k, cin, cout))
    ]
    for t in (2, 4, 8):
        variants.append((f"tiled_conv {t}x{t}", lambda x, w: ops.tiled_conv(x, w, padding="SAME"),
                         (t, t, k, k, cin, cout)))
    variants.append((f"locally_connected ({size}x{size})", lambda x, w: ops.locally_connected(x, w, padding="SAME"),
                     (size, size, k, k, cin, cout)))
    rows = []
    for name, op, kernel_shape in variants:
        w = normal(rng, *kernel_shape, scale=0.1)
        rows.append({
            "op": name, "params": math.prod(kernel_shape),
            "fwd_ms": 1e3 * timer(op, x, w), "fwd_bwd_ms": 1e3 * timer(forward_backward(op), g, x, w),
            "fwd_mb": peak_bytes(op, x, w) / 2**20, "fwd_bwd_mb": peak_bytes(forward_backward(op), g, x, w) / 2**20,
        })
    return {"shape": f"{batch}x{size}x{size}x{cin}->{cout}, {k}x{k}, SAME", "rows": rows}


def bench_tiled(timer: Timer, quick: bool) -> dict:
    """The two strategies of ``tiled_conv`` as the tile grows (``_MAX_PHASE_CONV_OVERHEAD`` in ``cnn/ops/local.py``).

    The sub-pixel convolution (``_phase_conv``) computes ``overhead = prod(extent) / prod(kernel_size)`` times the
    unshared sum's flops (zeros between the phases); patches + einsum (``_phase_einsum``) compute it exactly. Each is
    called with the geometry ``tiled_conv(x, w, padding="SAME")`` gives it.
    """
    rng = np.random.default_rng(0)
    batch, size, channels, k = (2, 32, 32, 3) if quick else (4, 32, 32, 3)
    tiles = (2, 3, 4, 5) if quick else (2, 3, 4, 5, 6, 8)
    x, g = normal(rng, batch, size, size, channels), normal(rng, batch, size, size, channels)
    geometry = ((k, k), (1, 1), (1, 1), ops.args.resolve_padding("SAME", (size, size), (k, k), (1, 1), (1, 1)),
                (size, size))
    rows = []
    for t in tiles:
        w = normal(rng, t, t, k, k, channels, channels, scale=0.1)
        row = {"tile": t, "overhead": math.prod(_phase_extent((t, t), (k, k), (1, 1), (1, 1))) / (k * k)}
        for name, strategy in (("phase_conv", _phase_conv), ("einsum", _phase_einsum)):

            def op(x, w, strategy=strategy, t=t):
                return strategy(x, w, (t, t), *geometry)

            row[f"{name}_fwd_ms"] = 1e3 * timer(op, x, w)
            row[f"{name}_fwd_bwd_ms"] = 1e3 * timer(forward_backward(op), g, x, w)
        rows.append(row)
    return {"shape": f"{batch}x{size}x{size}x{channels}->{channels}, {k}x{k}, SAME", "rows": rows,
            "max_overhead": _MAX_PHASE_CONV_OVERHEAD}


def bench_grouped(timer: Timer, quick: bool) -> dict:
    """The two CPU rewrites of a grouped convolution as the channels per group grow, at a fixed channel count
    (``_SHIFTED_SLICE_MAX_CHANNELS`` in ``cnn/ops/_lowering.py``): shifted slices against one dense convolution with
    the block-diagonal kernel (``groups`` times the flops)."""
    rng = np.random.default_rng(0)
    batch, size, channels = (2, 16, 64) if quick else (4, 16, 128)
    per_group = (1, 2, 4, 8)
    x, g = normal(rng, batch, size, size, channels), normal(rng, batch, size, size, channels)
    ones, pads = (1, 1), ((1, 1), (1, 1))
    rows = []
    for c in per_group:
        groups = channels // c
        w = normal(rng, 3, 3, c, channels, scale=0.1)

        def shifted(x, w, groups=groups):
            return _shifted_slice_conv(x, w, ones, pads, ones, groups, ones)

        def block_diagonal(x, w, groups=groups):
            return lax.conv_general_dilated(x, _block_diagonal(w, groups), ones, pads,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

        row = {"per_group": c, "groups": groups}
        for name, op in (("shifted", shifted), ("block_diagonal", block_diagonal)):
            row[f"{name}_fwd_ms"] = 1e3 * timer(op, x, w)
            row[f"{name}_fwd_bwd_ms"] = 1e3 * timer(forward_backward(op), g, x, w)
        rows.append(row)
    return {"shape": f"{batch}x{size}x{size}x{channels}->{channels}, 3x3, padding 1", "rows": rows,
            "max_channels": _SHIFTED_SLICE_MAX_CHANNELS}


def bench_deformable(timer: Timer, quick: bool) -> dict:
    """``deformable_conv`` (v2, with mask) forward and forward+backward, beside torchvision when available."""
    rng = np.random.default_rng(0)
    batch, size, channels = (4, 32, 64) if quick else (8, 32, 64)
    x, w = normal(rng, batch, size, size, channels), normal(rng, 3, 3, channels, channels, scale=0.1)
    offsets = normal(rng, batch, size, size, 1, 3, 3, 2, scale=2.0)
    mask = jax.nn.sigmoid(normal(rng, batch, size, size, 1, 3, 3))
    g = jnp.ones((batch, size, size, channels))  # torch's backward is given the same cotangent

    def deform(x, w, offsets, mask):
        return ops.deformable_conv(x, w, offsets, mask, padding=1)

    def conv(x, w):
        return ops.correlate(x, w, padding=1)

    result = {
        "shape": f"{batch}x{size}x{size}x{channels}->{channels}, 3x3, padding 1, offsets ~ N(0, 2^2), mask in (0, 1)",
        "jax_fwd_ms": 1e3 * timer(deform, x, w, offsets, mask),
        "jax_fwd_bwd_ms": 1e3 * timer(forward_backward(deform), g, x, w, offsets, mask),
        "correlate_fwd_ms": 1e3 * timer(conv, x, w),
        "correlate_fwd_bwd_ms": 1e3 * timer(forward_backward(conv), g, x, w),
    }
    torch_result = torchvision_deform(x, w, offsets, mask, threads=os.cpu_count() or 1, timer=timer)
    if torch_result is not None:
        reference = torch_result.pop("output")
        torch_result["max_abs_diff"] = float(np.abs(np.asarray(deform(x, w, offsets, mask)) - reference).max())
        result["torch"] = torch_result
    return result
