"""Convolution ablation: one model trained with each kind of ``cnn.layers.CONV_TYPES`` swapped in, through the real
harness, then a markdown table of test accuracy, parameters, MACs and step time per kind.

    python benchmarks/ablation_conv.py --seeds 0,1,2                     # every kind, configs/ablation_conv.py
    python benchmarks/ablation_conv.py --kinds standard,fft --workdir runs/ablation_conv --num-steps 100

Each (kind, seed) trains with ``cnn.train.loop.train_and_evaluate`` in its own workdir (``<workdir>/<kind>/seed<s>``);
rerunning resumes, so a finished run is only evaluated again. The table gives the mean and standard deviation of the
test accuracy over the seeds (a difference between kinds smaller than the spread across seeds is noise).
Parameters and MACs (``cnn.tools.macs``: the multiply-accumulates of convolutions and dense layers in the jaxpr,
for one image) come from the model the config builds. The step time is measured apart from training, when the
table is made: the median of ``TIMED_STEPS`` compiled train steps on one batch (data loading excluded), so that a
rerun on an idle machine re-times the kinds without retraining them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from cnn.platform import configure_xla_cpu  # noqa: E402

configure_xla_cpu()  # before JAX starts

import jax  # noqa: E402
import numpy as np  # noqa: E402

from cnn.data import make_source  # noqa: E402
from cnn.layers import CONV_TYPES  # noqa: E402
from cnn.models import create  # noqa: E402
from cnn.tools.macs import count_macs, count_params  # noqa: E402
from cnn.train.config import load_config_file, model_overrides  # noqa: E402
from cnn.train.experiment import Durations, Experiment  # noqa: E402
from cnn.train.loop import train_and_evaluate  # noqa: E402

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "ablation_conv.py")
KINDS = ["standard", *(kind for kind in CONV_TYPES.names() if kind != "standard")]  # the baseline first
TIMED_STEPS = 10


def kind_config(config_path: str, kind: str, seed: int, num_steps: int | None):
    config = load_config_file(config_path)
    config.model.conv, config.seed = kind, seed
    if num_steps:
        config.num_steps = config.eval_every_steps = config.checkpoint_every_steps = num_steps
    return config


def step_ms(config, spec) -> float:
    """Median milliseconds of one compiled train step on a fixed batch (after a compiling warm-up step)."""
    exp = Experiment(config, spec, Durations.of(config, steps_per_epoch=1))
    state, key = exp.init_state(), jax.random.PRNGKey(0)
    batch = exp.to_device({"image": np.zeros((config.batch_size, *exp.sample_input.shape[1:]), np.float32),
                           "label": np.zeros(config.batch_size, np.int32)})
    times = []
    for _ in range(TIMED_STEPS + 1):
        started = time.perf_counter()
        state, metrics = exp.train_step(state, batch, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times[1:])


def run_kind(config_path: str, kind: str, seeds: list[int], workdir: str, num_steps: int | None) -> dict:
    accuracies, walls = [], []
    for seed in seeds:
        config = kind_config(config_path, kind, seed, num_steps)
        started = time.perf_counter()
        accuracies.append(train_and_evaluate(config, os.path.join(workdir, f"seed{seed}"))["accuracy"])
        walls.append(time.perf_counter() - started)
    spec = make_source(config.dataset).spec
    model = create(config.model.name, num_classes=spec.num_classes, **model_overrides(config))
    shape = (1, *spec.image_shape)
    return {
        "kind": kind,
        "accuracies": accuracies,
        "params": count_params(model, shape),
        "macs": count_macs(model, shape),
        "step_ms": step_ms(config, spec),
        "wall_s": statistics.mean(walls),
        "batch_size": config.batch_size,
    }


def markdown_table(rows: list[dict]) -> str:
    seeds = len(rows[0]["accuracies"])
    lines = [
        f"| conv | test accuracy ({seeds} seed{'s' if seeds > 1 else ''}: mean ± sd) | parameters | MACs / image | "
        f"step time (batch {rows[0]['batch_size']}) | wall time per run |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        accuracy = 100 * np.asarray(r["accuracies"])
        spread = f" ± {accuracy.std(ddof=1):.2f}" if len(accuracy) > 1 else ""
        lines.append(f"| {r['kind']} | {accuracy.mean():.2f}%{spread} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | "
                     f"{r['step_ms']:.0f} ms | {r['wall_s']:.0f} s |")
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def parse_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"unknown conv types {unknown}; choose from {KINDS}")
    return kinds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="config file (path[:variant])")
    parser.add_argument("--kinds", type=parse_kinds, default=KINDS,
                        help="comma-separated conv types (default: all)")
    parser.add_argument("--seeds", type=parse_seeds, default=[0], help="comma-separated seeds (default: 0)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "ablation_conv"))
    parser.add_argument("--num-steps", type=int, default=None, help="override the config's training steps")
    args = parser.parse_args(argv)
    if args.num_steps is not None and args.num_steps < 1:
        parser.error(f"--num-steps must be >= 1, got {args.num_steps}")

    rows = []
    for kind in args.kinds:
        rows.append(run_kind(args.config, kind, args.seeds, os.path.join(args.workdir, kind), args.num_steps))
        print(f"{kind}: accuracies {rows[-1]['accuracies']}, {rows[-1]['step_ms']:.0f} ms/step", file=sys.stderr)
    table = markdown_table(rows)
    with open(os.path.join(args.workdir, "ablation_conv.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
