"""Measurement helpers shared by the benchmark scripts: a median timer with a time budget, forward+backward
wrappers, compiled memory, markdown tables, and how loaded the machine was while measuring.

Import it after ``cnn.platform.configure_xla_cpu()`` has run: it imports JAX.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


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
