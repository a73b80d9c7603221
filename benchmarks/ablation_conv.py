"""Convolution ablation: one model trained with each kind of ``cnn.layers.CONV_TYPES`` swapped in, through the real
harness, then a markdown table of test accuracy, parameters, MACs and step time per kind.

    python benchmarks/ablation_conv.py                                   # every kind, configs/ablation_conv.py
    python benchmarks/ablation_conv.py --kinds standard,fft --workdir runs/ablation_conv --num-steps 100

Each kind trains with ``cnn.train.loop.train_and_evaluate`` in its own workdir (``<workdir>/<kind>``); rerunning
resumes, so a kind whose run is finished is only evaluated again. Parameters and MACs (``cnn.tools.macs``: the
multiply-accumulates of convolutions and dense layers in the jaxpr, for one image) come from the model the config
builds; the step time is the median over the logging intervals of ``metrics.jsonl`` (the first interval holds the
compilation and weighs nothing in the median), data waiting included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cnn.platform import configure_xla_cpu  # noqa: E402

configure_xla_cpu()  # before JAX starts

from cnn.data import make_source  # noqa: E402
from cnn.layers import CONV_TYPES  # noqa: E402
from cnn.models import create  # noqa: E402
from cnn.tools.macs import count_macs, count_params  # noqa: E402
from cnn.train.config import load_config_file, model_overrides  # noqa: E402
from cnn.train.loop import train_and_evaluate  # noqa: E402

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "ablation_conv.py")
KINDS = ["standard", *(kind for kind in CONV_TYPES.names() if kind != "standard")]  # the baseline first


def median_step_ms(metrics_path: str) -> float:
    """Median milliseconds per training step over the logged intervals of a run."""
    with open(metrics_path) as f:
        records = [json.loads(line) for line in f]
    rates = [r["steps_per_second"] for r in records if r.get("split") == "train" and "steps_per_second" in r]
    return 1e3 / statistics.median(rates)


def run_kind(config_path: str, kind: str, workdir: str, num_steps: int | None) -> dict:
    config = load_config_file(config_path)
    config.model.conv = kind
    if num_steps:
        config.num_steps = config.eval_every_steps = config.checkpoint_every_steps = num_steps
    started = time.perf_counter()
    metrics = train_and_evaluate(config, workdir)
    wall = time.perf_counter() - started
    spec = make_source(config.dataset).spec
    model = create(config.model.name, num_classes=spec.num_classes, **model_overrides(config))
    shape = (1, *spec.image_shape)
    return {
        "kind": kind,
        "accuracy": metrics["accuracy"],
        "params": count_params(model, shape),
        "macs": count_macs(model, shape),
        "step_ms": median_step_ms(os.path.join(workdir, "metrics.jsonl")),
        "wall_s": wall,
        "steps": config.num_steps,
        "batch_size": config.batch_size,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| conv | test accuracy | parameters | MACs / image | step time (batch {}) | run wall time |".format(
            rows[0]["batch_size"]),
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | {100 * r['accuracy']:.2f}% | {r['params']:,} | {r['macs'] / 1e6:.2f} M | "
                     f"{r['step_ms']:.0f} ms | {r['wall_s']:.0f} s |")
    return "\n".join(lines)


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
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "ablation_conv"))
    parser.add_argument("--num-steps", type=int, default=None, help="override the config's training steps")
    args = parser.parse_args(argv)
    if args.num_steps is not None and args.num_steps < 1:
        parser.error(f"--num-steps must be >= 1, got {args.num_steps}")

    rows = []
    for kind in args.kinds:
        rows.append(run_kind(args.config, kind, os.path.join(args.workdir, kind), args.num_steps))
        print(f"{kind}: accuracy {rows[-1]['accuracy']:.4f}, {rows[-1]['step_ms']:.0f} ms/step", file=sys.stderr)
    table = markdown_table(rows)
    with open(os.path.join(args.workdir, "ablation_conv.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
