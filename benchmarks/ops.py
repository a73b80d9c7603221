"""Operator benchmarks on CPU: convolution throughput, FFT crossover, separable, unshared/tiled, deformable,
the depthwise fast path and pooling. Prints markdown tables (the "Operators" section of BENCHMARKS.md).

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
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/ops.py` from the repo root

from cnn.platform import CPU_CONV_FLAG, configure_xla_cpu

FLAG_SET = configure_xla_cpu()  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from cnn import ops  # noqa: E402

SECTIONS = ("conv", "fft", "separable", "local", "deformable", "depthwise", "pool")
# Sections whose numbers depend on the convolution flag: rerun in a subprocess without it.
FLAG_SECTIONS = ("conv", "depthwise")


class Timer:
    """Median wall time of compiled functions, within a per-measurement time budget."""

    def __init__(self, repeats: int, budget_s: float):
        self.repeats, self.budget_s = repeats, budget_s

    def __call__(self, fn: Callable, *args) -> float:
        """Seconds per call of ``jax.jit(fn)(*args)``: compiled and warmed up first, then the median of runs."""
        compiled = jax.jit(fn).lower(*args).compile()
        return self.host(lambda *a: jax.block_until_ready(compiled(*a)), *args)

    def host(self, fn: Callable, *args) -> float:
        """Seconds per call of a function that finishes its work before returning, after one warm-up call."""
        fn(*args)
        times: list[float] = []
        while len(times) < self.repeats and sum(times) < self.budget_s:
            start = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def forward_backward(op: Callable) -> Callable:
    """``(cotangent, *args) -> (op(*args), grads w.r.t. every arg)``: one training-style pass.

    The output is returned too: for a linear op the gradients do not need it and XLA would drop the forward.
    """

    def run(cotangent, *args):
        y, vjp = jax.vjp(op, *args)
        return y, vjp(cotangent)

    return run


def peak_bytes(fn: Callable, *args) -> int:
    """Temp + argument + output bytes of the compiled ``fn`` (XLA's buffer assignment; CPU reports no peak)."""
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


def normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * scale)


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table; floats printed with 3 significant digits (at least one decimal below 100)."""

    def fmt(value) -> str:
        if isinstance(value, float):
            if not math.isfinite(value):
                return "-"
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


class OtherLoad:
    """Share of the machine's cores used by *other* processes between ``start()`` and ``stop()``.

    All-core busy time from ``/proc/stat`` minus this process's CPU time (threads and finished children
    included): a section measured while something else ran shows it here (the load average lags by minutes).
    """

    def __init__(self):
        self.start()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system + own.children_user + own.children_system

    def start(self) -> None:
        self.begin = self._sample()

    def stop(self) -> float:
        (t0, busy0, own0), (t1, busy1, own1) = self.begin, self._sample()
        return max(busy1 - busy0 - (own1 - own0), 0.0) / ((t1 - t0) * (os.cpu_count() or 1))


def matmul_gflops(timer: Timer, n: int = 2048) -> dict[str, float]:
    """float32 ``n x n @ n x n`` GFLOP/s in XLA and in numpy (its BLAS): the practical dense peak here."""
    rng = np.random.default_rng(0)
    a, b = normal(rng, n, n), normal(rng, n, n)
    host_a, host_b = np.asarray(a), np.asarray(b)
    return {
        "xla": 2 * n**3 / timer(jnp.matmul, a, b) / 1e9,
        "numpy": 2 * n**3 / timer.host(np.matmul, host_a, host_b) / 1e9,
    }


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


def conv_tables(runs: dict[str, dict]) -> str:
    """Throughput per convolution path, then the speedup of Eigen (the flag) over YNNPACK."""
    rows = []
    # The fraction is of the best float32 matmul measured in any of the runs (XLA's or numpy's BLAS).
    peak = max(max(run["matmul_gflops"].values()) for run in runs.values())
    for path, run in runs.items():
        for r in run["layers"]:
            rows.append([
                r["layer"], r["shape"], path, r["gflop"], r["fwd_ms"], r["fwd_gflops"],
                f"{100 * r['fwd_gflops'] / peak:.0f}%", r["fwd_bwd_ms"], r["fwd_bwd_gflops"],
                f"{100 * r['fwd_bwd_gflops'] / peak:.0f}%",
            ])
    text = table(
        ["layer", "x -> out ch.", "conv path", "GFLOP fwd", "fwd ms", "fwd GFLOP/s", "of matmul",
         "fwd+bwd ms", "fwd+bwd GFLOP/s", "of matmul"],
        rows,
    )
    peaks = "; ".join(
        f"{path} process: XLA {run['matmul_gflops']['xla']:.0f}, numpy {run['matmul_gflops']['numpy']:.0f} GFLOP/s"
        for path, run in runs.items()
    )
    text += (f"\n\nfloat32 2048x2048 @ 2048x2048 matmul in the same run ({peaks}); \"of matmul\" is the fraction "
             f"of the best of these, {peak:.0f} GFLOP/s. fwd+bwd counts 3x the forward FLOPs.")
    if len(runs) == 2:
        eigen, ynn = runs["Eigen (flag)"]["layers"], runs["YNNPACK"]["layers"]
        speed = [
            [e["layer"], e["fwd_ms"], y["fwd_ms"], y["fwd_ms"] / e["fwd_ms"], e["fwd_bwd_ms"], y["fwd_bwd_ms"],
             y["fwd_bwd_ms"] / e["fwd_bwd_ms"]]
            for e, y in zip(eigen, ynn, strict=True)
        ]
        total = [sum(r[i] for r in speed) for i in (1, 2, 4, 5)]
        speed.append(["**all layers**", total[0], total[1], total[1] / total[0], total[2], total[3],
                      total[3] / total[2]])
        text += "\n\n" + table(
            ["layer", "Eigen fwd ms", "YNNPACK fwd ms", "flag speedup fwd", "Eigen fwd+bwd ms",
             "YNNPACK fwd+bwd ms", "flag speedup fwd+bwd"],
            speed,
        )
    return text


def crossover(kernels: Sequence[int], fft_ms: Sequence[float], direct_ms: Sequence[float]) -> int | None:
    """Smallest k from which the FFT is faster at every larger measured k (None if it never is at the end)."""
    best = None
    for k, f, d in reversed(list(zip(kernels, fft_ms, direct_ms, strict=True))):
        if f >= d:
            break
        best = k
    return best


def bench_fft(timer: Timer, quick: bool) -> dict:
    """``fft_conv`` against ``correlate`` ("SAME", stride 1) as the kernel grows, 1D and 2D."""
    rng = np.random.default_rng(0)
    kernels_2d = (3, 7, 11, 15, 23, 31) if quick else tuple(range(3, 32, 2))
    # In 1D the direct sum costs only k per output and channel pair: the crossover lies beyond 31.
    kernels_1d = (3, 15, 31, 63, 127, 255) if quick else (*range(3, 32, 4), 47, 63, 95, 127, 191, 255)
    channels, batch = 16, 8
    cases = {"1D": ((4096,), kernels_1d), "2D": ((64, 64), kernels_2d)}
    result = {"batch": batch, "channels": channels}
    for name, (spatial, kernels) in cases.items():
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


def fft_tables(result: dict) -> str:
    parts = []
    for name in ("1D", "2D"):
        r = result[name]
        rows = [
            [k, r["direct_fwd"][i], r["fft_fwd"][i], r["direct_fwd"][i] / r["fft_fwd"][i],
             r["direct_fwd_bwd"][i], r["fft_fwd_bwd"][i], r["direct_fwd_bwd"][i] / r["fft_fwd_bwd"][i]]
            for i, k in enumerate(r["kernels"])
        ]
        parts.append(
            f"{name}, {r['shape']}, padding SAME:\n\n"
            + table(["k", "correlate fwd ms", "fft_conv fwd ms", "FFT speedup", "correlate fwd+bwd ms",
                     "fft_conv fwd+bwd ms", "FFT speedup"], rows)
        )
    lines = [
        f"- **{name}: FFT wins from k = {result[name]['crossover_fwd']} (forward), "
        f"k = {result[name]['crossover_fwd_bwd']} (forward+backward)**"
        for name in ("1D", "2D")
    ]
    return "\n\n".join(parts) + "\n\nCrossover (smallest k from which `fft_conv` is faster at every larger k):\n\n" + (
        "\n".join(lines)
    )


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


def separable_tables(result: dict) -> str:
    first = [
        [r["k"], r["depthwise_fwd_ms"], r["separable_fwd_ms"], r["depthwise_fwd_ms"] / r["separable_fwd_ms"],
         r["depthwise_fwd_bwd_ms"], r["separable_fwd_bwd_ms"], r["depthwise_fwd_bwd_ms"] / r["separable_fwd_bwd_ms"],
         r["flop_ratio_separable"]]
        for r in result["rows"]
    ]
    second = [
        [r["k"], r["dense_fwd_ms"], r["dw_separable_fwd_ms"], r["dense_fwd_ms"] / r["dw_separable_fwd_ms"],
         r["dense_fwd_bwd_ms"], r["dw_separable_fwd_bwd_ms"], r["dense_fwd_bwd_ms"] / r["dw_separable_fwd_bwd_ms"],
         r["flop_ratio_dw_separable"]]
        for r in result["rows"]
    ]
    c = result["channels"]
    return (
        f"`separable_conv` (two 1D passes) vs `correlate(groups={c})` with the outer-product kxk kernel, "
        f"{result['shape']}, SAME:\n\n"
        + table(["k", "depthwise kxk fwd ms", "separable fwd ms", "speedup", "depthwise fwd+bwd ms",
                 "separable fwd+bwd ms", "speedup", "FLOP ratio"], first)
        + f"\n\n`depthwise_separable` (kxk depthwise + {c}x{c} pointwise) vs dense `correlate` kxk "
        f"{c}->{c}, {result['shape']}, SAME:\n\n"
        + table(["k", "dense fwd ms", "dw-separable fwd ms", "speedup", "dense fwd+bwd ms",
                 "dw-separable fwd+bwd ms", "speedup", "FLOP ratio"], second)
    )


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


def local_tables(result: dict) -> str:
    base = result["rows"][0]
    rows = [
        [r["op"], f"{r['params']:,}", r["fwd_ms"], r["fwd_bwd_ms"], r["fwd_mb"], r["fwd_bwd_mb"],
         r["fwd_bwd_mb"] / base["fwd_bwd_mb"]]
        for r in result["rows"]
    ]
    return f"{result['shape']}; memory = temp + argument + output bytes of the compiled program:\n\n" + table(
        ["op", "parameters", "fwd ms", "fwd+bwd ms", "fwd MiB", "fwd+bwd MiB", "fwd+bwd memory vs shared"], rows
    )


def _torch_deform(x, w, offsets, mask, threads: int, timer: Timer) -> dict | None:
    """torchvision ``deform_conv2d`` on the same data (NCHW, offsets (dy, dx) per tap), or None without torch."""
    try:
        import torch
        import torchvision
        from torchvision.ops import deform_conv2d
    except ImportError:
        return None
    torch.set_num_threads(threads)
    batch, out_h, out_w = offsets.shape[:3]
    tx = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous().requires_grad_()
    tw = torch.tensor(np.asarray(w)).permute(3, 2, 0, 1).contiguous().requires_grad_()
    # (batch, out_h, out_w, groups, kh, kw, 2) -> (batch, groups * kh * kw * 2, out_h, out_w).
    to = torch.tensor(np.asarray(offsets)).reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2).contiguous()
    tm = torch.tensor(np.asarray(mask)).reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2).contiguous()
    to, tm = to.requires_grad_(), tm.requires_grad_()

    def forward():
        with torch.no_grad():
            return deform_conv2d(tx, to, tw, padding=1, mask=tm)

    def forward_backward():
        for tensor in (tx, tw, to, tm):
            tensor.grad = None  # as a training step does; accumulating into old gradients would add work
        y = deform_conv2d(tx, to, tw, padding=1, mask=tm)
        y.backward(torch.ones_like(y))
        return y

    y = forward().permute(0, 2, 3, 1).numpy()
    return {
        "version": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        "threads": torch.get_num_threads(),
        "fwd_ms": 1e3 * timer.host(forward), "fwd_bwd_ms": 1e3 * timer.host(forward_backward), "output": y,
    }


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
    torch_result = _torch_deform(x, w, offsets, mask, threads=os.cpu_count() or 1, timer=timer)
    if torch_result is not None:
        reference = torch_result.pop("output")
        torch_result["max_abs_diff"] = float(np.abs(np.asarray(deform(x, w, offsets, mask)) - reference).max())
        result["torch"] = torch_result
    return result


def deformable_tables(result: dict) -> str:
    rows = [
        ["`correlate` (same shape, no offsets)", result["correlate_fwd_ms"], result["correlate_fwd_bwd_ms"], "", ""],
        ["`deformable_conv`", result["jax_fwd_ms"], result["jax_fwd_bwd_ms"], "", ""],
    ]
    torch_result = result.get("torch")
    if torch_result:
        rows.append([
            f"torchvision `deform_conv2d` ({torch_result['threads']} threads)", torch_result["fwd_ms"],
            torch_result["fwd_bwd_ms"], f"{torch_result['fwd_ms'] / result['jax_fwd_ms']:.2f}x",
            f"{torch_result['fwd_bwd_ms'] / result['jax_fwd_bwd_ms']:.2f}x",
        ])
        note = (f"{torch_result['version']}; max |deformable_conv - deform_conv2d| = "
                f"{torch_result['max_abs_diff']:.1e} on these inputs.")
    else:
        note = "torch is not importable here: no torchvision comparison (see the reproduce line above)."
    return f"{result['shape']}:\n\n" + table(
        ["op", "fwd ms", "fwd+bwd ms", "torchvision / ours fwd", "torchvision / ours fwd+bwd"], rows
    ) + f"\n\n{note}"


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


def depthwise_tables(runs: dict[str, dict]) -> str:
    rows = []
    for path, r in runs.items():
        rows.append([path, r["lax_fwd_ms"], r["correlate_fwd_ms"], r["lax_fwd_ms"] / r["correlate_fwd_ms"],
                     r["lax_fwd_bwd_ms"], r["correlate_fwd_bwd_ms"], r["lax_fwd_bwd_ms"] / r["correlate_fwd_bwd_ms"]])
    shape = next(iter(runs.values()))["shape"]
    return f"{shape}:\n\n" + table(
        ["conv path", "lax fwd ms", "correlate fwd ms", "speedup", "lax fwd+bwd ms", "correlate fwd+bwd ms",
         "speedup"], rows
    )


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


def pool_tables(result: dict) -> str:
    rows = [[r["pool"], r["fwd_ms"], r["ref_fwd_ms"], r["fwd_bwd_ms"], r["ref_fwd_bwd_ms"]] for r in result["rows"]]
    return f"{result['shape']}:\n\n" + table(
        ["pool", "cnn.ops fwd ms", "reduce_window fwd ms", "cnn.ops fwd+bwd ms", "reduce_window fwd+bwd ms"], rows
    )


BENCHES: dict[str, Callable[[Timer, bool], dict]] = {
    "conv": bench_conv, "fft": bench_fft, "separable": bench_separable, "local": bench_local,
    "deformable": bench_deformable, "depthwise": bench_depthwise, "pool": bench_pool,
}
TITLES = {
    "conv": "`correlate` throughput on ResNet layers",
    "fft": "`fft_conv` vs `correlate`: the crossover kernel size",
    "separable": "Separable vs full kernels",
    "local": "Unshared and tiled convolution: time and memory",
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
    command = "python benchmarks/ops.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    results, loads, parts = {}, {}, [header(args, command.strip())]
    unflagged: dict[str, dict] = {}
    other_load: dict[str, float] = {}
    for name in sections:
        loads[name] = load_average()
        other = OtherLoad()
        results[name] = BENCHES[name](timer, args.quick)
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
        "fft": fft_tables, "separable": separable_tables, "local": local_tables, "deformable": deformable_tables,
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
