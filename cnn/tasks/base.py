"""What a task owns: what a batch holds, the training loss, the evaluation's exact sums, and the report.

A run (``cnn.train.experiment``) asks its task, and nothing else, about anything that differs between kinds of
problems. Evaluation is exact: the compiled step returns per-batch *sums* (of losses, counts, confusion matrices)
over the real examples only (a padded batch's ``mask`` is 0 on its padding; masked pixels and nodes are never
counted), summed again over batches on the host in float64/int64, so that each metric is the same whatever the
batch size, the device count and the process count. Metrics that need every example at once (ROC AUC, Rand error)
come from per-example outputs collected in split order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn.data import ArraySplit, DatasetSpec, TrainStream, eval_batches
from cnn.data.preprocess import Preprocess
from cnn.data.streaming import StreamingSplit
from cnn.errors import ConfigError, UserError

Batch = dict[str, np.ndarray]


def masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """``sum(w · v) / sum(w)``, 0 where every weight is 0 (a batch with nothing to count)."""
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


class Accumulator:
    """Host-side running totals of one evaluation: per-batch sums (float64), and the per-example outputs of the
    real examples in split order: all of them when ``keep_examples``, else the first ``keep_first`` (for pictures)."""

    def __init__(self, keep_examples: bool, keep_first: int = 0):
        self.keep_examples, self.keep_first = keep_examples, keep_first
        self.sums: dict[str, np.ndarray] = {}
        self.examples: dict[str, list[np.ndarray]] = {}
        self.kept = 0

    @property
    def wants_examples(self) -> bool:
        return self.keep_examples or self.kept < self.keep_first

    def add(self, sums: dict[str, np.ndarray], examples: dict[str, np.ndarray] | None) -> None:
        for name, value in sums.items():
            value = np.asarray(value, np.float64)
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        if examples is None:
            return
        real = np.asarray(examples["mask"]) > 0
        take = slice(None) if self.keep_examples else slice(self.keep_first - self.kept)
        for name, value in examples.items():
            if name != "mask":
                self.examples.setdefault(name, []).append(np.asarray(value)[real][take])
        self.kept += int(real.sum())

    def stacked(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.examples.items()}


class Task:
    """One kind of problem; subclasses fill in the hooks. ``config`` is the run's whole config."""

    name: ClassVar[str]
    data_kind: ClassVar[str]  # the DatasetSpec.kind it learns from: "image", "dense" or "graph"
    # Scalar eval metrics and whether larger is better: what checkpoint.best_metric and a sweep may name.
    metrics: ClassVar[dict[str, str]]
    progress_metric: ClassVar[str]  # the training metric shown beside the loss on the progress bar
    shard_batch: ClassVar[bool] = True  # batches split over the devices along axis 0 (False: replicated)
    preprocessed: ClassVar[bool] = True  # its batches go through config.dataset.*_preprocess (images do)
    needs_examples: ClassVar[bool] = False  # the metrics need per-example outputs, not only sums
    ignore_label: int | None = None  # a label value that is never learned nor counted
    report_examples: ClassVar[int] = 0  # examples whose outputs the report pictures

    def __init__(self, config: ml_collections.ConfigDict, spec: DatasetSpec):
        if spec.kind != self.data_kind:
            raise ConfigError(f"task {self.name!r} learns from {self.data_kind} datasets, but dataset "
                              f"{config.dataset.name!r} holds {spec.kind} data; choose a task for it "
                              f"(config.task.name) or another dataset")
        if config.dataset.get("weight_map") and self.data_kind != "dense":
            raise ConfigError(f"config.dataset.weight_map is set, but task {self.name!r} has no per-pixel label maps "
                              "to weigh; use it with the segmentation task (or set it to false)")
        self.config, self.spec = config, spec

    # --- data ---
    def steps_per_epoch(self, split: Any, global_batch: int) -> int:
        return max(len(split) // global_batch, 1)

    def train_stream(self, split: Any, preprocess: Preprocess, global_batch: int, seed: int,
                     process_index: int, process_count: int) -> TrainStream:
        return TrainStream(split, preprocess, global_batch, seed, process_index, process_count)

    def eval_batches(self, split: Any, preprocess: Preprocess, global_batch: int, process_index: int,
                     process_count: int) -> Iterator[Batch]:
        return eval_batches(split, preprocess, global_batch, process_index, process_count)

    def check_split(self, split: Any, name: str) -> None:
        """Fail with one line, naming the split and the offending values, on labels the task cannot learn from."""
        if isinstance(split, ArraySplit):
            check_labels(split.labels, self.spec.num_classes, f"split {name!r}", self.ignore_label)
        elif isinstance(split, StreamingSplit):  # labels unknown until read: every gathered batch is checked
            split.check_labels = functools.partial(check_labels, num_classes=self.spec.num_classes,
                                                   where=f"split {name!r} (streamed)", ignore_label=self.ignore_label)

    def check_batch(self, batch: Batch) -> None:
        """One line naming the key and the expected shape, for a batch that does not hold what the task reads."""

    def model_input(self, batch: dict[str, Any]) -> Any:
        return batch["image"]

    def sample_batch(self) -> Batch:
        """One example of the dataset's kind, all zeros, as the source gives it (before preprocessing)."""
        return {"image": np.zeros((1, *self.spec.image_shape), np.uint8), "label": np.zeros((1,), np.int32)}

    def eval_model(self, model: Any) -> Any:
        """The network evaluation applies to the trained ``model``'s variables (default: the model itself)."""
        return model

    def sample_input(self, batch: Batch) -> Any:
        """One example of what the model is applied to (for initialization), from a preprocessed batch."""
        return jax.tree.map(lambda x: np.zeros_like(x[:1]), self.model_input(batch))

    # --- computed inside the compiled steps ---
    def loss(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The training loss (a mean) and the training metrics of one (micro)batch."""
        raise NotImplementedError

    def eval_sums(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        raise NotImplementedError

    def eval_examples(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-example outputs (with the batch's ``mask``), for metrics over whole splits and --save_predictions."""
        raise NotImplementedError

    # --- on the host ---
    def result(self, totals: Accumulator) -> dict[str, Any]:
        """Metrics from an evaluation's totals: every name in ``metrics`` plus ``count`` and any arrays."""
        raise NotImplementedError

    def summary(self, result: dict[str, Any]) -> str:
        """One line for the terminal."""
        return ", ".join(f"{name} {result[name]:.4f}" for name in self.metrics)

    def write_report(self, result: dict[str, Any], totals: Accumulator, directory: str, step: int,
                     title: str) -> list[str]:
        """Pictures beside ``eval_<step>.json`` in ``directory``; returns their paths. ``totals`` holds the first
        ``report_examples`` examples' outputs."""
        return []

    def predictions(self, totals: Accumulator) -> dict[str, np.ndarray]:
        """What ``eval.py --save_predictions`` writes, in split order."""
        return totals.stacked()


def check_labels(labels: np.ndarray, num_classes: int, where: str, ignore_label: int | None = None) -> None:
    """Labels must be integers in ``[0, num_classes)`` (or the ignore label)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_label is not None:
        bad &= labels != ignore_label
    if bad.any():
        values = np.unique(labels[bad])
        allowed = f"0..{num_classes - 1}" + (f" or the ignore label {ignore_label}" if ignore_label is not None
                                             else "")
        raise UserError(f"{where}: {int(bad.sum())} label(s) outside {allowed}: {values[:10].tolist()}")


def raise_batch_error(key: str, expected: str, value: np.ndarray | None) -> None:
    got = "no such key" if value is None else f"shape {tuple(value.shape)}"
    raise UserError(f"batch key {key!r}: expected shape {expected}, got {got}")
