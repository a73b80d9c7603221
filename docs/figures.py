"""Figures of docs/operators.md, drawn from the operators themselves: ``.venv/bin/python docs/figures.py``.

Writes into docs/figures/:
  sampling_grids.png   where a standard, a dilated (d=2) and a deformable 3x3 kernel read the input
  receptive_field.png  analytic receptive field of a conv/pool chain over the measured gradient support
  toeplitz.png         conv_matrix of a 1D and a 2D correlation
  fft_vs_direct.png    fft_conv vs correlate time against kernel size, from benchmarks/ops.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from cnn import ops

HERE = Path(__file__).resolve().parent
DPI = 100


def sampled_points(offsets: np.ndarray, size: int, dilation: int, padding: int) -> np.ndarray:
    """Input coordinates (y, x) read by the 9 taps of every output unit, measured through ``deformable_conv``.

    The input holds its own coordinates (channel 0: row, channel 1: column). Bilinear interpolation reproduces
    a linear function exactly, so a kernel that copies tap t's sample of both channels to outputs 2t, 2t + 1
    returns the point the operator sampled, with its own offset convention (taps inside the input only).
    """
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    x = jnp.asarray(np.stack([rows, cols], -1)[None], jnp.float32)
    kernel = np.zeros((3, 3, 2, 18), np.float32)
    for t in range(9):
        kernel[t // 3, t % 3, 0, 2 * t] = kernel[t // 3, t % 3, 1, 2 * t + 1] = 1
    out = ops.deformable_conv(x, jnp.asarray(kernel), jnp.asarray(offsets), dilation=dilation, padding=padding)
    return np.asarray(out[0]).reshape(*out.shape[1:3], 9, 2)  # (out_h, out_w, tap, (y, x))


def figure_sampling_grids(path: Path) -> None:
    """Standard, dilated and deformable 3x3 taps of one output unit on a 9x9 input."""
    size, center = 9, 4
    rng = np.random.default_rng(3)
    # The output unit centred on pixel (4, 4): SAME padding, stride 1, so output (4, 4) sits over input (4, 4).
    cases = [
        ("standard 3x3", 1, np.zeros((3, 3, 2))),
        ("dilated 3x3, d = 2", 2, np.zeros((3, 3, 2))),
        ("deformable 3x3 (random offsets)", 1, rng.uniform(-1.6, 1.6, (3, 3, 2))),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8))
    for ax, (title, dilation, tap_offsets) in zip(axes, cases, strict=True):
        offsets = np.zeros((1, size, size, 1, 3, 3, 2), np.float32)
        offsets[0, center, center, 0] = tap_offsets
        points = sampled_points(offsets, size, dilation, padding=dilation)[center, center]
        grid = center + dilation * (np.stack(np.meshgrid(np.arange(3), np.arange(3), indexing="ij"), -1) - 1)
        grid = grid.reshape(9, 2)
        ax.set_xlim(-0.5, size - 0.5)
        ax.set_ylim(size - 0.5, -0.5)
        ax.set_xticks(range(size))
        ax.set_yticks(range(size))
        ax.grid(True, color="0.85", lw=0.8)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        if np.any(tap_offsets):
            for t, ((gy, gx), (py, px)) in enumerate(zip(grid, points, strict=True)):
                ax.annotate("", (px, py), (gx, gy), arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 0.9})
                # The square of the four input pixels blended bilinearly for this sample.
                ax.add_patch(Rectangle((np.floor(px), np.floor(py)), 1, 1, fc="tab:orange", alpha=0.2, ec="none",
                                       label="square of the 4 bilinear corners" if t == 0 else None))
            ax.scatter(grid[:, 1], grid[:, 0], s=28, facecolors="none", edgecolors="0.45", lw=0.9, zorder=3,
                       label="regular tap")
        ax.scatter(points[:, 1], points[:, 0], s=40, c="tab:blue", zorder=4, label="sampled point")
        ax.scatter([center], [center], marker="+", s=120, c="tab:red", zorder=5, label="output position")
        ax.set_title(title, fontsize=10)
    axes[2].legend(loc="lower left", fontsize=7, framealpha=0.9)
    fig.suptitle("Where one output unit reads its input (points measured through deformable_conv)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# The chain drawn: (layer, per-axis geometry for ops.receptive_field).
RF_CHAIN = [
    ("conv 3x3", lambda x: ops.correlate(x, jnp.ones((3, 3, 1, 1)), padding=1), ops.Layer(3, 1, 1, 1)),
    ("conv 3x3 / 2", lambda x: ops.correlate(x, jnp.ones((3, 3, 1, 1)), stride=2, padding=1), ops.Layer(3, 2, 1, 1)),
    ("avg pool 2 / 2", lambda x: ops.avg_pool(x, 2), ops.Layer(2, 2)),
    ("conv 3x3, d = 2", lambda x: ops.correlate(x, jnp.ones((3, 3, 1, 1)), padding=2, dilation=2),
     ops.Layer(3, 1, 2, 2)),
]


def figure_receptive_field(path: Path) -> None:
    """Analytic field (``receptive_field``) against the gradient support (``empirical_receptive_field``)."""
    size = 32
    layers = [layer for _, _, layer in RF_CHAIN]

    @jax.jit
    def net(x):
        for _, fn, _ in RF_CHAIN:
            x = fn(x)
        return x

    shape = (1, size, size, 1)
    fields = ops.receptive_field(layers)
    field = fields[-1]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.6))
    for ax, unit in zip(axes, [(4, 4), (0, 0)], strict=True):
        index = (0, *unit, 0)
        grad = jax.grad(lambda x, index=index: net(x)[index])(jnp.ones(shape))
        extents = ops.empirical_receptive_field(net, shape, index)
        image = np.asarray(grad[0, :, :, 0])
        shown = np.where(image > 0, image, np.nan)
        ax.imshow(shown, cmap="viridis", norm=matplotlib.colors.LogNorm(), interpolation="nearest")
        (y0, y1), (x0, x1) = field.bounds(unit[0], size), field.bounds(unit[1], size)
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="tab:red", lw=2,
                               label=f"analytic: r = {field.size}, jump {field.jump}, clipped to the input"))
        ey, ex = extents
        ax.add_patch(Rectangle((ex.first - 0.5, ey.first - 0.5), ex.size, ey.size, fill=False, ec="black", lw=1.2,
                               ls="--", label=f"gradient support (empirical_receptive_field): {ey.size} x {ex.size}"))
        ax.set_xlim(-0.5, size - 0.5)
        ax.set_ylim(size - 0.5, -0.5)
        ax.set_title(f"output unit {unit} of an 8x8 map", fontsize=10)
        ax.tick_params(labelsize=7)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=7.5, frameon=False)
    chain = " -> ".join(name for name, _, _ in RF_CHAIN)
    sizes = ", ".join(str(f.size) for f in fields)
    fig.suptitle(f"Receptive field of {chain} on a 32x32 input\n(size per layer: {sizes}; colour: |d out / d x|, "
                 "log scale, positive weights)", fontsize=9.5)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _draw_matrix(ax, matrix: np.ndarray, block: int | None, title: str) -> None:
    """A small integer matrix as an image, each nonzero entry written in its cell."""
    shown = np.where(matrix != 0, matrix, np.nan)
    ax.imshow(shown, cmap="Pastel1", vmin=1, vmax=9, interpolation="nearest")
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7)
    rows, cols = matrix.shape
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(True, which="minor", color="0.9", lw=0.5)
    if block:
        for b in range(0, max(rows, cols) + 1, block):
            ax.axhline(b - 0.5, color="0.3", lw=0.9)
            ax.axvline(b - 0.5, color="0.3", lw=0.9)
    ax.set_xlabel("input entry p (raveled)", fontsize=8)
    ax.set_ylabel("output entry i (raveled)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9.5)


def figure_toeplitz(path: Path) -> None:
    """``conv_matrix`` of a 1D kernel (1, 2, 3) on 8 inputs and of a 3x3 kernel (1..9) on 4x4, both SAME."""
    matrix_1d = np.asarray(ops.conv_matrix(jnp.arange(1.0, 4.0).reshape(3, 1, 1), (8, 1), padding="SAME"))
    matrix_2d = np.asarray(ops.conv_matrix(jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1), (4, 4, 1), padding="SAME"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), gridspec_kw={"width_ratios": [1, 1.6]})
    _draw_matrix(axes[0], matrix_1d, None, "1D: kernel (1, 2, 3), n = 8, SAME\nToeplitz: constant diagonals")
    _draw_matrix(axes[1], matrix_2d, 4,
                 "2D: kernel [[1,2,3],[4,5,6],[7,8,9]], 4x4, SAME\ndoubly block Toeplitz: 4x4 Toeplitz blocks")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def figure_fft_vs_direct(path: Path, bench: dict) -> None:
    """Time of ``fft_conv`` and ``correlate`` against kernel size, 1D and 2D, with the crossover marked."""
    fft = bench["results"]["fft"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, ("1D", "2D"), strict=True):
        r = fft[name]
        for key, label, style in [
            ("direct_fwd", "correlate fwd", "-o"), ("fft_fwd", "fft_conv fwd", "-s"),
            ("direct_fwd_bwd", "correlate fwd+bwd", "--o"), ("fft_fwd_bwd", "fft_conv fwd+bwd", "--s"),
        ]:
            color = "tab:blue" if key.startswith("direct") else "tab:orange"
            ax.plot(r["kernels"], r[key], style, color=color, ms=3.5, lw=1.2, label=label)
        for part, label, ls in (("fwd", "fwd", ":"), ("fwd_bwd", "fwd+bwd", "-.")):
            if r[f"crossover_{part}"] is not None:
                ax.axvline(r[f"crossover_{part}"], color="0.4", ls=ls, lw=1, label=f"crossover {label}")
        ax.set_yscale("log")
        if name == "1D":  # kernels up to 255: a log axis, labelled with the measured sizes
            ax.set_xscale("log", base=2)
            ticks = [k for k in r["kernels"] if k in (3, 7, 15, 31, 63, 127, 255)]
            ax.set_xticks(ticks, [str(k) for k in ticks])
            ax.minorticks_off()
        ax.set_xlabel("kernel size k" + (" (per axis)" if name == "2D" else ""), fontsize=9)
        ax.set_ylabel("ms (median)", fontsize=9)
        ax.set_title(f"{name}: {r['shape']}, SAME; FFT wins from k = {r['crossover_fwd']} (fwd), "
                     f"{r['crossover_fwd_bwd']} (fwd+bwd)", fontsize=8.5)
        ax.tick_params(labelsize=8)
        ax.grid(True, which="both", color="0.92")
        ax.legend(fontsize=7.5)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=HERE / "figures")
    parser.add_argument("--bench-json", type=Path, default=HERE / "figures" / "ops_benchmark.json",
                        help="results of `benchmarks/ops.py --json`; without it fft_vs_direct.png is skipped")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    figure_sampling_grids(args.out_dir / "sampling_grids.png")
    figure_receptive_field(args.out_dir / "receptive_field.png")
    figure_toeplitz(args.out_dir / "toeplitz.png")
    if args.bench_json.exists():
        figure_fft_vs_direct(args.out_dir / "fft_vs_direct.png", json.loads(args.bench_json.read_text()))
    else:
        print(f"{args.bench_json} not found: skipping fft_vs_direct.png", file=sys.stderr)
    for png in sorted(args.out_dir.glob("*.png")):
        print(f"{png}: {png.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
