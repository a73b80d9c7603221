"""Metrics as JSON lines (``metrics.jsonl``) and TensorBoard events (``tb/``), written by process 0 only."""

from __future__ import annotations

import json
import os

import jax
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    def __init__(self, workdir: str, resume_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        if not self.enabled:
            return
        _truncate_after(self.path, resume_step)
        self.tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in metrics.items():
            self.tb.add_scalar(f"{split}/{name}", float(value), step)

    def close(self) -> None:
        if self.enabled:
            self.tb.close()


def _truncate_after(path: str, step: int) -> None:
    """On resume, drop records past the restored step: they are written again, so none appears twice."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            continue  # a line cut short by a kill
    with open(path, "w") as f:
        f.writelines(kept)


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]
