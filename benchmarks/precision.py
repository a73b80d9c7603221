"""Mixed precision and gradient accumulation: examples/s and compiled memory of the real training step.

    python benchmarks/precision.py                       # every case below, on whatever backend JAX finds
    python benchmarks/precision.py --models small_cnn --steps 5

For each model, the ``Experiment`` train step (the one ``train.py`` compiles, over the device mesh) on a synthetic
batch: once per ``config.dtype`` (float32, bfloat16, float16), then float32 and bfloat16 with
``optimizer.grad_accum_steps`` 1 and 4 (k = 4 both unrolled and as a ``scan`` loop, see ``cnn.train.steps``).
Reported: the median step time over ``--steps`` steps after a warm-up, timed round-robin (one step of each
variant of a model in turn, so the machine's load changes hit all alike), examples/s and the ratios to float32
(or to k = 1) measured in the same run, and XLA's compiled buffer sizes (``compile().memory_analysis()``):
``temp`` is what the step allocates beyond its inputs and outputs (activations kept for the backward pass,
workspace), the part that precision and accumulation change. The same script runs unchanged on a GPU (the batch
is sharded over every device, as in training).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from cnn.platform import configure_xla_cpu

configure_xla_cpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from timing import OtherLoad, load_average, table  # noqa: E402

from cnn.config_defaults import base_config  # noqa: E402
from cnn.data import DatasetSpec  # noqa: E402
from cnn.train.experiment import Durations, Experiment  # noqa: E402

# (model, overrides, image side, batch): the zoo at the sizes it is used at.
CASES = {
    "small_cnn": ({"width": 32}, 32, 128),
    "cifar_resnet20": ({}, 32, 128),
    "resnet18": ({}, 64, 64),
}
DTYPES = ("float32", "bfloat16", "float16")
MiB = 2**20


class Variant:
    """One configuration's compiled train step on a fixed synthetic batch, ready to time."""

    def __init__(self, model: str, overrides: dict, image: int, batch: int, dtype: str, accum: int = 1,
                 loop: bool | None = None):
        """``loop``: accumulate in a ``scan`` loop (True) or unrolled (False); None: as the Experiment chooses."""
        config = base_config(dataset="digits", model=model)
        config.model.update(overrides)
        config.update({"dtype": dtype, "batch_size": batch, "num_steps": 1000})
        config.optimizer.grad_accum_steps = accum
        exp = Experiment(config, DatasetSpec(num_classes=10, image_shape=(image, image, 3)),
                         Durations.of(config, steps_per_epoch=100))
        if loop is not None:
            exp.unroll_microbatches = not loop
        self.loop, self.batch, self.times = accum > 1 and not exp.unroll_microbatches, batch, []
        rng = np.random.default_rng(0)
        self.data = exp.to_device({"image": rng.normal(size=(batch, image, image, 3)).astype(np.float32),
                                   "label": rng.integers(0, 10, size=batch).astype(np.int32)})
        self.state, self.key = exp.init_state(), jax.device_put(jax.random.PRNGKey(0), exp.replicated)
        self.compiled = exp.train_step.lower(self.state, self.data, self.key).compile()
        memory = self.compiled.memory_analysis()  # None on backends that do not report it
        self.temp_mib = memory.temp_size_in_bytes / MiB if memory is not None else float("nan")

    def step(self) -> float:
        started = time.perf_counter()
        self.state, metrics = self.compiled(self.state, self.data, self.key)
        jax.block_until_ready(metrics)
        return time.perf_counter() - started

    @property
    def step_s(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def time_round_robin(variants: list[Variant], steps: int) -> float:
    """One warm-up step each, then ``steps`` rounds of one step of every variant in turn: a change in the machine's
    load hits every variant alike. Returns the share of the cores other processes used meanwhile."""
    for variant in variants:
        variant.step()
    other = OtherLoad()
    for _ in range(steps):
        for variant in variants:
            variant.times.append(variant.step())
    return other.stop()


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if np.isfinite(a / b) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (median reported)")
    args = parser.parse_args()

    device = jax.devices()[0]
    print(f"command: `{' '.join(['python benchmarks/precision.py', *sys.argv[1:]])}`")
    print(f"jax {jax.__version__}, {jax.device_count()} x {device.device_kind} ({jax.default_backend()}), "
          f"{os.cpu_count()} cores, load average {load_average()}\n")
    started = time.perf_counter()
    # k = 4 both ways: unrolled (what the Experiment compiles on CPU) and as a loop (elsewhere). On CPU the loop is
    # compiled for its memory only: its weight-gradient convolutions run ~60x slower there (cnn.train.steps).
    time_loop = jax.default_backend() != "cpu"

    dtype_rows, accum_rows = [], []
    for model in args.models:
        overrides, image, batch = CASES[model]
        name = f"{model} {image}x{image}, batch {batch}"
        by_dtype = {dtype: Variant(model, overrides, image, batch, dtype) for dtype in DTYPES}
        accumulated = {(dtype, loop): Variant(model, overrides, image, batch, dtype, 4, loop)
                       for dtype in DTYPES[:2] for loop in (False, True)}
        timed = [*by_dtype.values(), *(v for v in accumulated.values() if time_loop or not v.loop)]
        other = f"{100 * time_round_robin(timed, args.steps):.0f}%"
        print(f"  {name}: " + ", ".join(f"{1e3 * v.step_s:.0f} ms" for v in timed), file=sys.stderr, flush=True)
        f32 = by_dtype["float32"]
        for dtype, v in by_dtype.items():
            dtype_rows.append([name, dtype, 1e3 * v.step_s, batch / v.step_s, ratio(f32.step_s, v.step_s),
                               v.temp_mib, ratio(v.temp_mib, f32.temp_mib), other])
        for dtype in DTYPES[:2]:
            base = by_dtype[dtype]
            for k, form, v in ((1, "-", base), (4, "unrolled", accumulated[dtype, False]),
                               (4, "scan loop", accumulated[dtype, True])):
                accum_rows.append([name, dtype, k, form, 1e3 * v.step_s, ratio(base.step_s, v.step_s), v.temp_mib,
                                   ratio(v.temp_mib, base.temp_mib), other])
    print(table(["model", "dtype", "step (ms)", "examples/s", "speed vs float32", "temp (MiB)", "temp vs float32",
                 "other load"], dtype_rows))
    print()
    print(table(["model", "dtype", "grad_accum_steps", "form", "step (ms)", "speed vs k=1", "temp (MiB)",
                 "temp vs k=1", "other load"], accum_rows))
    print(f"\nwall time {time.perf_counter() - started:.0f} s. Timed round-robin, median of {args.steps} steps. temp: "
          "XLA's compiled temporary buffers (activations kept for the backward pass, workspace). other load: share "
          "of the cores other processes used while timing" + ("" if time_loop else "; the scan loop is not timed on "
                                                                "CPU (-)"))


if __name__ == "__main__":
    main()
