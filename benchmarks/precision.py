"""Mixed precision and gradient accumulation: examples/s and compiled memory of the real training step.

    python benchmarks/precision.py                       # every case below, on whatever backend JAX finds
    python benchmarks/precision.py --models small_cnn --steps 5

For each model, the ``Experiment`` train step (the one ``train.py`` compiles, over the device mesh) on a synthetic
batch: once per ``config.dtype`` (float32, bfloat16, float16), then float32 and bfloat16 with
``optimizer.grad_accum_steps`` 1 and 4 (k = 4 both unrolled and as a ``scan`` loop, see ``cnn.train.steps``).
Reported: the median step time over ``--steps`` runs after a warm-up, examples/s and the ratios to float32 (or to
k = 1) measured in the same run, and XLA's compiled buffer sizes (``compile().memory_analysis()``): ``temp`` is what
the step allocates beyond its inputs and outputs (activations kept for the backward pass, workspace), the part
that precision and accumulation change. The same script runs unchanged on a GPU (the batch is sharded over every
device, as in training).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnn.platform import configure_xla_cpu

configure_xla_cpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.timing import OtherLoad, load_average, table  # noqa: E402
from cnn.data import DatasetSpec  # noqa: E402
from cnn.train.config import base_config  # noqa: E402
from cnn.train.experiment import Experiment  # noqa: E402

# (model, overrides, image side, batch): the zoo at the sizes it is used at.
CASES = {
    "small_cnn": ({"width": 32}, 32, 128),
    "cifar_resnet20": ({}, 32, 128),
    "resnet18": ({}, 64, 64),
}
DTYPES = ("float32", "bfloat16", "float16")
MiB = 2**20


def measure(model: str, overrides: dict, image: int, batch: int, dtype: str, accum: int = 1, loop: bool | None = None,
            steps: int = 5) -> dict:
    """Compile, then time ``steps`` training steps (none if ``steps`` is 0) of one configuration on a synthetic
    batch. ``loop``: accumulate in a ``scan`` loop (True) or unrolled (False); None: as the Experiment chooses."""
    config = base_config(dataset="digits", model=model)
    config.model.update(overrides)
    config.update({"dtype": dtype, "batch_size": batch, "num_steps": 1000, "num_epochs": 0.0})
    config.optimizer.grad_accum_steps = accum
    exp = Experiment(config, DatasetSpec(num_classes=10, image_shape=(image, image, 3)), steps_per_epoch=100)
    if loop is not None:
        exp.unroll_microbatches = not loop
    rng = np.random.default_rng(0)
    data = exp.to_device({"image": rng.normal(size=(batch, image, image, 3)).astype(np.float32),
                          "label": rng.integers(0, 10, size=batch).astype(np.int32)})
    state, key = exp.init_state(), jax.device_put(jax.random.PRNGKey(0), exp.replicated)
    compiled = exp.train_step.lower(state, data, key).compile()
    memory = compiled.memory_analysis()
    result = {"loop": not exp.unroll_microbatches, "step_s": float("nan"), "examples_per_s": float("nan"),
              "other_load": float("nan"), "temp_mib": float("nan"), "total_mib": float("nan")}
    if memory is not None:  # some backends report none
        result["temp_mib"] = memory.temp_size_in_bytes / MiB
        result["total_mib"] = (memory.temp_size_in_bytes + memory.argument_size_in_bytes
                               + memory.output_size_in_bytes) / MiB
    if steps:
        state, metrics = compiled(state, data, key)  # warm-up
        jax.block_until_ready(metrics)
        times, other = [], OtherLoad()
        for _ in range(steps):
            started = time.perf_counter()
            state, metrics = compiled(state, data, key)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - started)
        result.update(step_s=statistics.median(times), other_load=other.stop())
        result["examples_per_s"] = batch / result["step_s"]
    return result


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if np.isfinite(a / b) else "-"


def percent(share: float) -> str:
    return f"{100 * share:.0f}%" if np.isfinite(share) else "-"


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

    rows = []
    for model in args.models:
        overrides, image, batch = CASES[model]
        name = f"{model} {image}x{image}, batch {batch}"
        results = {dtype: measure(model, overrides, image, batch, dtype, steps=args.steps) for dtype in DTYPES}
        for dtype, r in results.items():
            f32 = results["float32"]
            rows.append([name, dtype, 1e3 * r["step_s"], r["examples_per_s"],
                         ratio(r["examples_per_s"], f32["examples_per_s"]), r["temp_mib"],
                         ratio(r["temp_mib"], f32["temp_mib"]), percent(r["other_load"])])
            print(f"  {name} {dtype}: {1e3 * r['step_s']:.1f} ms", file=sys.stderr, flush=True)
    print(table(["model", "dtype", "step (ms)", "examples/s", "speed vs float32", "temp (MiB)",
                 "temp vs float32", "other load"], rows))

    # k = 4 both ways: unrolled (what the Experiment compiles on CPU) and as a loop (elsewhere). On CPU the loop is
    # compiled for its memory only: its weight-gradient convolutions run ~60x slower there (cnn.train.steps).
    on_cpu = jax.default_backend() == "cpu"
    rows = []
    for model in args.models:
        overrides, image, batch = CASES[model]
        name = f"{model} {image}x{image}, batch {batch}"
        for dtype in DTYPES[:2]:
            base = measure(model, overrides, image, batch, dtype, steps=args.steps)
            for k, loop, r in ((1, None, base),
                               (4, False, measure(model, overrides, image, batch, dtype, 4, False, args.steps)),
                               (4, True, measure(model, overrides, image, batch, dtype, 4, True,
                                                 0 if on_cpu else args.steps))):
                form = "-" if k == 1 else ("scan loop" if loop else "unrolled")
                rows.append([name, dtype, k, form, 1e3 * r["step_s"], ratio(base["step_s"], r["step_s"]),
                             r["temp_mib"], ratio(r["temp_mib"], base["temp_mib"]), percent(r["other_load"])])
                print(f"  {name} {dtype} k={k} {form}: {1e3 * r['step_s']:.1f} ms", file=sys.stderr, flush=True)
    print()
    print(table(["model", "dtype", "grad_accum_steps", "form", "step (ms)", "speed vs k=1", "temp (MiB)",
                 "temp vs k=1", "other load"], rows))
    print(f"\nwall time {time.perf_counter() - started:.0f} s. temp: XLA's compiled temporary buffers (activations "
          "kept for the backward pass, workspace); other load: share of the cores other processes used while timing"
          + ("; '-': the scan loop is not timed on CPU" if on_cpu else ""))


if __name__ == "__main__":
    main()
