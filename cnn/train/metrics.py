"""Metrics as JSON lines (``metrics.jsonl``) and TensorBoard events (``tb/``), written by process 0 only.

``metrics.jsonl`` is the record. On resume, its lines past the restored step are dropped (they are written again),
and the TensorBoard events are rewritten from what remains: event files cannot be cut at a step, so appending would
show the dropped points twice, and points a killed run had not flushed would be missing.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    def __init__(self, workdir: str, resume_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        if not self.enabled:
            return
        kept = _truncate_after(self.path, resume_step)
        tb_dir = os.path.join(workdir, "tb")
        if os.path.isdir(tb_dir):
            shutil.rmtree(tb_dir)
        self.tb = SummaryWriter(tb_dir)
        for record in kept:
            self._add_scalars(record["step"], record["split"],
                              {k: v for k, v in record.items() if k not in ("step", "split")})

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._add_scalars(step, split, metrics)

    def _add_scalars(self, step: int, split: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.tb.add_scalar(f"{split}/{name}", float(value), step)

    def close(self) -> None:
        if self.enabled:
            self.tb.close()


def _truncate_after(path: str, step: int) -> list[dict]:
    """On resume, drop records past the restored step: they are written again, so none appears twice. Returns the
    records kept."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            if record["step"] <= step:
                kept.append((line, record))
        except (ValueError, KeyError):
            continue  # a line cut short by a kill
    with open(path, "w") as f:
        f.writelines(line for line, _ in kept)
    return [record for _, record in kept]


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]
