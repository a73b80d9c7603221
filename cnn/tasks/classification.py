"""Classification: one label per example (an image, a clip, a volume), softmax cross-entropy.

Loss: ``-mean_i log softmax(z_i)[y_i]`` against targets smoothed towards uniform by ``config.label_smoothing``.
Evaluation, exact over a split: accuracy, loss (unsmoothed), the confusion matrix ``C[true, predicted]`` and the
accuracy of each class (its row's diagonal share); top-5 accuracy where there are more than 10 classes; ROC AUC
(the probability that a random positive scores above a random negative, ties counting one half: Mann-Whitney's
U / (P·N)) of the positive class's softmax score for two-class problems.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnn.tasks.base import Accumulator, Batch, Task, masked_mean, raise_batch_error
from cnn.tasks.report import plot_confusion

TOP_K = 5


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy against one-hot labels smoothed towards uniform by ``label_smoothing``."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: Mann-Whitney's U over ``P · N`` with midranks for ties."""
    positive = positive.astype(bool)
    num_pos, num_neg = int(positive.sum()), int((~positive).sum())
    if num_pos == 0 or num_neg == 0:
        return float("nan")  # undefined with one class present
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Midranks: every member of a run of equal scores gets the mean of the run's 1-based ranks.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    u = ranks[positive].sum() - num_pos * (num_pos + 1) / 2
    return float(u / (num_pos * num_neg))


class Classification(Task):
    name = "classification"
    data_kind = "image"
    # Every metric it may report; an instance keeps those its dataset has (top-5: > 10 classes; AUC: 2 classes).
    metrics: ClassVar[dict[str, str]] = {"accuracy": "max", "loss": "min", f"top{TOP_K}_accuracy": "max",
                                         "roc_auc": "max"}
    progress_metric = "accuracy"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.num_classes = spec.num_classes
        self.label_smoothing = config.label_smoothing
        self.top_k = self.num_classes > 10
        self.two_class = self.num_classes == 2
        self.metrics = {name: better for name, better in self.metrics.items()
                        if (name != f"top{TOP_K}_accuracy" or self.top_k) and (name != "roc_auc" or self.two_class)}
        self.needs_examples = self.two_class

    def check_batch(self, batch: Batch) -> None:
        label = batch.get("label")
        if label is None or label.ndim != 1:
            raise_batch_error("label", "(batch,)", label)

    def loss(self, outputs, batch):
        losses = cross_entropy(outputs, batch["label"], self.label_smoothing)
        correct = (jnp.argmax(outputs, -1) == batch["label"]).astype(jnp.float32)
        if "mask" in batch:  # only some examples count (node classification's training nodes)
            loss, accuracy = masked_mean(losses, batch["mask"]), masked_mean(correct, batch["mask"])
        else:
            loss, accuracy = losses.mean(), correct.mean()
        return loss, {"loss": loss, "accuracy": accuracy}

    def eval_sums(self, outputs, batch):
        mask, labels = batch["mask"], batch["label"]
        predictions = jnp.argmax(outputs, -1)
        sums = {
            "loss_sum": jnp.sum(cross_entropy(outputs, labels) * mask),
            "correct": jnp.sum((predictions == labels) * mask),
            "count": jnp.sum(mask),
            "confusion": jnp.zeros((self.num_classes,) * 2, jnp.float32).at[labels, predictions].add(mask),
        }
        if self.top_k:
            top = jax.lax.top_k(outputs, TOP_K)[1]
            sums["top_k_correct"] = jnp.sum(jnp.any(top == labels[:, None], -1) * mask)
        return sums

    def eval_examples(self, outputs, batch):
        return {"logits": outputs, "label": batch["label"], "mask": batch["mask"]}

    def result(self, totals: Accumulator) -> dict[str, Any]:
        sums = totals.sums
        count = round(float(sums["count"]))
        confusion = np.rint(sums["confusion"]).astype(np.int64)
        per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
        result = {
            "accuracy": float(sums["correct"]) / count,
            "loss": float(sums["loss_sum"]) / count,
            "count": count,
            "per_class_accuracy": [float(a) if n else None for a, n in zip(per_class, confusion.sum(1), strict=True)],
            "confusion": confusion,
        }
        if self.top_k:
            result[f"top{TOP_K}_accuracy"] = float(sums["top_k_correct"]) / count
        if self.two_class:
            examples = totals.stacked()
            scores = jax.nn.softmax(examples["logits"], -1)[:, 1]
            result["roc_auc"] = roc_auc(np.asarray(scores), examples["label"] == 1)
        return result

    def write_report(self, result, totals, directory, step, title):
        path = os.path.join(directory, f"confusion_{step}.png")
        plot_confusion(result["confusion"], path, title=f"{title}: accuracy {result['accuracy']:.4f}")
        return [path]

