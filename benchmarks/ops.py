"""Operator benchmarks on CPU: convolution throughput, FFT crossover (1D to 3D), separable, unshared/tiled, the
constants of tiled_conv's strategy and of the grouped-convolution rewrite, deformable, the depthwise fast path and
pooling. Prints markdown tables (the "Operators" section of BENCHMARKS.md).

    python benchmarks/ops.py                        # full run (~10 min on 2 cores)
    python benchmarks/ops.py --quick                # smaller shapes, fewer sizes (~2 min)
    python benchmarks/ops.py --sections fft,pool --out ops.md --json ops.json

Every timing is of a jit-compiled function, compiled and run once before timing, then the median of up to
``--repeats`` runs (fewer once a measurement has used its time budget), each ended by ``block_until_ready``.
FLOPs are 2 x multiply-adds. A forward+backward ("fwd+bwd") run computes the output and the gradients with
respect to every input (``jax.vjp`` with a random cotangent), so for a convolution it does 3x the forward FLOPs.

The process sets the XLA:CPU convolution flag (``cnn.platform.configure_xla_cpu``, convolutions on Eigen); the
conv and depthwise sections are run again in a subprocess with ``CNN_YNN_CONV=1`` (convolutions on YNNPACK,
jaxlib's default) to compare. The deformable section also times ``torchvision.ops.deform_conv2d`` when torch is
importable (an optional dependency, not in requirements.txt), with torch limited to as many threads as XLA uses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cnn.platform import CPU_CONV_FLAG, configure_xla_cpu

FLAG_SET = configure_xla_cpu()  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from ops_structured import bench_deformable, bench_grouped, bench_local, bench_tiled  # noqa: E402
from ops_tables import (  # noqa: E402
    conv_tables,
    crossover,
    deformable_tables,
    depthwise_tables,
    fft_tables,
    grouped_tables,
    local_tables,
    pool_tables,
    separable_tables,
    tiled_tables,
)
from timing import OtherLoad, Timer, forward_backward, load_average, matmul_gflops, normal  # noqa: E402

from cnn import ops  # noqa: E402

SECTIONS = ("conv", "fft", "separable", "local", "tiled", "grouped", "deformable", "depthwise", "pool")
# Sections whose numbers depend on the convolution flag: rerun in a subprocess without it.
FLAG_SECTIONS = ("conv", "depthwise")


# ResNet-shaped layers: (name, spatial, in, out, kernel, stride); padding (k - 1) // 2 as in ResNet.
CONV_LAYERS = (
    ("conv2_x 3x3", 56, 64, 64, 3, 1),
    ("conv3_x 3x3", 28, 128, 128, 3, 1),
    ("conv4_x 3x3", 14, 256, 256, 3, 1),
    ("conv5_x 3x3", 7, 512, 512, 3, 1),
    ("1x1 expand", 56, 64, 256, 1, 1),
    ("3x3 stride 2", 56, 64, 128, 3, 2),
)


def bench_conv(timer: Timer, quick: bool) -> dict:
    """GFLOP/s of ``correlate`` forward and forward+backward on ResNet layers, beside matmul GFLOP/s."""
    batch = 8 if quick else 32
    rng = np.random.default_rng(0)
    rows = []
    for name, size, cin, cout, k, stride in CONV_LAYERS:
        x, w = normal(rng, batch, size, size, cin), normal(rng, k, k, cin, cout, scale=0.1)
        out = (size + 2 * ((k - 1) // 2) - k) // stride + 1
        flops = 2 * batch * out * out * cout * cin * k * k

        def op(x, w, stride=stride, k=k):
            return ops.correlate(x, w, stride=stride, padding=(k - 1) // 2)

        fwd = timer(op, x, w)
        fwd_bwd = timer(forward_backward(op), normal(rng, batch, out, out, cout), x, w)
        rows.append({
            "layer": name, "shape": f"{batch}x{size}x{size}x{cin}->{cout}", "gflop": flops / 1e9,
            "fwd_ms": 1e3 * fwd, "fwd_gflops": flops / fwd / 1e9,
            "fwd_bwd_ms": 1e3 * fwd_bwd, "fwd_bwd_gflops": 3 * flops / fwd_bwd / 1e9,
        })
    return {"batch": batch, "matmul_gflops": matmul_gflops(timer), "layers": rows}


def bench_fft(timer: Timer, quick: bool, ranks: Sequence[str] = ("1D", "2D", "3D")) -> dict:
    """``fft_conv`` against ``correlate`` ("SAME", stride 1) as the kernel grows, 1D, 2D and 3D.

    The forward+backward crossover of each rank is what ``Conv(method="auto")`` uses (``FFT_CROSSOVER_KERNEL_SIZE`` in
    ``cnn/layers/conv.py``; ``tests/layers/test_conv.py`` checks it against ``docs/figures/fft_crossover.json``).
    """
    rng = np.random.default_rng(0)
    kernels_2d = (3, 7, 11, 15, 23, 31) if quick else tuple(range(3, 32, 2))
    # In 1D the direct sum costs only k per output and channel pair: the crossover lies beyond 31.
    kernels_1d = (3, 15, 31, 63, 127, 255) if quick else (*range(3, 32, 4), 47, 63, 95, 127, 191, 255)
    # In 3D the direct sum costs k^3: the crossover comes early, and large kernels take seconds. 32 channels, the
    # width of a 3D net's first stage: at 16 the FFT already wins at k = 3 (2x16^3, fwd+bwd 122 vs 27 ms), at 32 not
    # (244 vs 362 ms), so the crossover moves with the channel count.
    kernels_3d = (3, 5, 7) if quick else (2, 3, 4, 5, 6, 7)
    cases = {"1D": ((4096,), kernels_1d, 8, 16), "2D": ((64, 64), kernels_2d, 8, 16),
             "3D": ((16, 16, 16), kernels_3d, 2, 32)}
    result = {}
    for name in ranks:
        spatial, kernels, batch, channels = cases[name]
        x = normal(rng, batch, *spatial, channels)
        series: dict[str, list[float]] = {key: [] for key in ("fft_fwd", "direct_fwd", "fft_fwd_bwd", "direct_fwd_bwd")}
        for k in kernels:
            w = normal(rng, *(k,) * len(spatial), channels, channels, scale=0.1)
            g = normal(rng, batch, *spatial, channels)

            def fft(x, w):
                return ops.fft_conv(x, w, padding="SAME")

            def direct(x, w):
                return ops.correlate(x, w, padding="SAME")

            series["fft_fwd"].append(1e3 * timer(fft, x, w))
            series["direct_fwd"].append(1e3 * timer(direct, x, w))
            series["fft_fwd_bwd"].append(1e3 * timer(forward_backward(fft), g, x, w))
            series["direct_fwd_bwd"].append(1e3 * timer(forward_backward(direct), g, x, w))
        result[name] = {
            "shape": f"{batch}x{'x'.join(map(str, spatial))}x{channels}->{channels}",
            "kernels": list(kernels),
            **series,
            "crossover_fwd": crossover(kernels, series["fft_fwd"], series["direct_fwd"]),
            "crossover_fwd_bwd": crossover(kernels, series["fft_fwd_bwd"], series["direct_fwd_bwd"]),
        }
    return result


def bench_separable(timer: Timer, quick: bool) -> dict:
    """Separable against full kernels: 1D passes vs the outer-product depthwise kernel, and
    depthwise separable vs a dense correlation, at kernel 7 to 15."""
    rng = np.random.default_rng(0)
    batch, size, channels = (4, 64, 32) if quick else (8, 64, 64)
    kernels = (7, 11) if quick else (7, 9, 11, 13, 15)
    x = normal(rng, batch, size, size, channels)
    g = normal(rng, batch, size, size, channels)
    rows = []
    for k in kernels:
        col, row = normal(rng, k, channels), normal(rng, k, channels)
        outer = (col[:, None] * row[None, :])[:, :, None, :]  # (k, k, 1, C)
        pointwise = normal(rng, channels, channels, scale=0.1)
        dense = normal(rng, k, k, channels, channels, scale=0.1)

        def separable(x, col, row):
            return ops.separable_conv(x, [col, row], padding="SAME")

        def depthwise(x, outer):
            return ops.correlate(x, outer, padding="SAME", groups=channels)

        def dw_separable(x, outer, pointwise):
            return ops.depthwise_separable(x, outer, pointwise, padding="SAME")

        def full(x, dense):
            return ops.correlate(x, dense, padding="SAME")

        times = {
            "separable": (timer(separable, x, col, row), timer(forward_backward(separable), g, x, col, row)),
            "depthwise": (timer(depthwise, x, outer), timer(forward_backward(depthwise), g, x, outer)),
            "dw_separable": (timer(dw_separable, x, outer, pointwise),
                             timer(forward_backward(dw_separable), g, x, outer, pointwise)),
            "dense": (timer(full, x, dense), timer(forward_backward(full), g, x, dense)),
        }
        rows.append({
            "k": k,
            **{f"{name}_fwd_ms": 1e3 * fwd for name, (fwd, _) in times.items()},
            **{f"{name}_fwd_bwd_ms": 1e3 * fwd_bwd for name, (_, fwd_bwd) in times.items()},
            # Multiply-adds per output position: k^2 C (full depthwise) vs 2 k C (two 1D passes, the first on
            # the unstrided input), and k^2 C O (dense) vs k^2 C + C O (depthwise then pointwise).
            "flop_ratio_separable": k * k / (2 * k),
            "flop_ratio_dw_separable": k * k * channels * channels / (k * k * channels + channels * channels),
        })
    return {"shape": f"{batch}x{size}x{size}x{channels}", "channels": channels, "rows": rows}


def bench_depthwise(timer: Timer, quick: bool) -> dict:
    """``correlate(groups=C)`` (the CPU fast path) against raw ``lax.conv_general_dilated(feature_group_count=C)``."""
    rng = np.random.default_rng(0)
    batch, size, channels = 16 if quick else 64, 32, 256
    x, w = normal(rng, batch, size, size, channels), normal(rng, 3, 3, 1, channels)
    g = normal(rng, batch, size, size, channels)

    def fast(x, w):
        return ops.correlate(x, w, padding="SAME", groups=channels)

    def raw(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=channels)

    return {
        "shape": f"{batch}x{size}x{size}x{channels}, 3x3, groups={channels}, SAME",
        "correlate_fwd_ms": 1e3 * timer(fast, x, w),
        "correlate_fwd_bwd_ms": 1e3 * timer(forward_backward(fast), g, x, w),
        "lax_fwd_ms": 1e3 * timer(raw, x, w),
        "lax_fwd_bwd_ms": 1e3 * timer(forward_backward(raw), g, x, w),
    }


def bench_pool(timer: Timer, quick: bool) -> dict:
    """max / avg / L2 pooling (3x3, stride 2, padding 1: the ResNet stem) beside a bare ``reduce_window``."""
    rng = np.random.default_rng(0)
    batch = 8 if quick else 32
    x = normal(rng, batch, 112, 112, 64)
    g = normal(rng, batch, 56, 56, 64)
    dims, strides, pads = (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))

    def window_sum(v):
        return lax.reduce_window(v, 0.0, lax.add, dims, strides, pads)

    cases = {
        "max": (lambda x: ops.max_pool(x, 3, stride=2, padding=1),
                lambda x: lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)),
        "avg": (lambda x: ops.avg_pool(x, 3, stride=2, padding=1), lambda x: window_sum(x) / 9),
        "L2": (lambda x: ops.lp_pool(x, 3, p=2.0, stride=2, padding=1), lambda x: jnp.sqrt(window_sum(x * x))),
    }
    rows = []
    for name, (op, reference) in cases.items():
        rows.append({
            "pool": name, "fwd_ms": 1e3 * timer(op, x), "ref_fwd_ms": 1e3 * timer(reference, x),
            "fwd_bwd_ms": 1e3 * timer(forward_backward(op), g, x),
            "ref_fwd_bwd_ms": 1e3 * timer(forward_backward(reference), g, x),
        })
    return {"shape": f"{batch}x112x112x64, window 3, stride 2, padding 1", "rows": rows}


BENCHES: dict[str, Callable[[Timer, bool], dict]] = {
    "conv": bench_conv, "fft": bench_fft, "separable": bench_separable, "local": bench_local,
    "tiled": bench_tiled, "grouped": bench_grouped, "deformable": bench_deformable, "depthwise": bench_depthwise,
    "pool": bench_pool,
}
TITLES = {
    "conv": "`correlate` throughput on ResNet layers",
    "fft": "`fft_conv` vs `correlate`: the crossover kernel size",
    "separable": "Separable vs full kernels",
    "local": "Unshared and tiled convolution: time and memory",
    "tiled": "`tiled_conv`: sub-pixel convolution vs patches + einsum",
    "grouped": "Grouped convolutions on CPU: shifted slices vs a block-diagonal kernel",
    "deformable": "`deformable_conv` vs torchvision",
    "depthwise": "Depthwise: `correlate(groups=C)` vs raw `lax.conv_general_dilated`",
    "pool": "Pooling",
}


def run_without_flag(sections: Sequence[str], args: argparse.Namespace) -> dict:
    """Run ``sections`` in a subprocess with convolutions left on YNNPACK; return its json results."""
    env = dict(os.environ, CNN_YNN_CONV="1")
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(CPU_CONV_FLAG, "").strip()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ynn.json"
        command = [sys.executable, __file__, "--sections", ",".join(sections), "--json", str(out),
                   "--repeats", str(args.repeats), "--budget", str(args.budget)]
        subprocess.run(command + (["--quick"] if args.quick else []), env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["results"]


def header(args: argparse.Namespace, command: str) -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    flag = "set (convolutions on Eigen)" if FLAG_SET else "not set (convolutions on YNNPACK)"
    return (
        f"`{command}`: {os.cpu_count()} cores ({cpu}), jax {jax.__version__}, jaxlib "
        f"{jax.lib.__version__}, XLA:CPU conv flag {flag}; median of up to {args.repeats} runs "
        f"(fewer past {args.budget:g} s per measurement)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes and fewer sizes (~2 min)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 7, quick 3)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed runs after which a measurement stops repeating (default 2, quick 0.5)")
    parser.add_argument("--fft-ranks", default="1D,2D,3D", help="the ranks the fft section measures, e.g. 3D")
    parser.add_argument("--no-compare", action="store_true", help="skip the subprocess without the conv flag")
    parser.add_argument("--out", type=Path, help="also write the markdown tables to this file")
    parser.add_argument("--json", type=Path, help="write the raw results as json (docs/figures.py reads it)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.budget = args.budget if args.budget is not None else (0.5 if args.quick else 2.0)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    timer = Timer(args.repeats, args.budget)
    fft_ranks = [r.strip() for r in args.fft_ranks.split(",") if r.strip()]
    if not fft_ranks or set(fft_ranks) - {"1D", "2D", "3D"}:
        parser.error(f"--fft-ranks must be a comma-separated subset of 1D,2D,3D, got {args.fft_ranks!r}")
    benches = {**BENCHES, "fft": lambda timer, quick: bench_fft(timer, quick, fft_ranks)}
    command = "python benchmarks/ops.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    results, loads, parts = {}, {}, [header(args, command.strip())]
    unflagged: dict[str, dict] = {}
    other_load: dict[str, float] = {}
    for name in sections:
        loads[name] = load_average()
        other = OtherLoad()
        results[name] = benches[name](timer, args.quick)
        if name in FLAG_SECTIONS and FLAG_SET and not args.no_compare:
            # Right after the flagged run, so that both see the same load on the machine.
            unflagged[name] = run_without_flag([name], args)[name]
        other_load[name] = other.stop()
        print(f"[{name} done, {time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)

    path = "Eigen (flag)" if FLAG_SET else "YNNPACK"

    def with_unflagged(name: str, result: dict) -> dict[str, dict]:
        return {path: result, **({"YNNPACK": unflagged[name]} if name in unflagged else {})}

    formatters: dict[str, Callable[[dict], str]] = {
        "conv": lambda r: conv_tables(with_unflagged("conv", r)),
        "depthwise": lambda r: depthwise_tables(with_unflagged("depthwise", r)),
        "fft": fft_tables, "separable": separable_tables, "local": local_tables, "tiled": tiled_tables,
        "grouped": grouped_tables, "deformable": deformable_tables,
        "pool": pool_tables,
    }
    for name in sections:
        conditions = (f"Load average (1, 5, 15 min) at the start {loads[name]}; other processes used "
                      f"{100 * other_load[name]:.0f}% of the cores during the section.")
        parts.append(f"### {TITLES[name]}\n\n{conditions}\n\n{formatters[name](results[name])}")
    parts.append(f"Total wall time {time.perf_counter() - started:.0f} s; load average at the end: {load_average()}.")
    text = "\n\n".join(parts) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        payload = {"command": command.strip(), "flag_set": FLAG_SET, "loads": loads, "other_load": other_load,
                   "results": results, "without_flag": unflagged}
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
