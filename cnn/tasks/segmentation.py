"""Segmentation: a class at every pixel (structured output), per-pixel softmax cross-entropy.

A batch holds ``image (B, *spatial, C)`` and ``label (B, *spatial)`` (and optionally ``weight (B, *spatial)``, a
per-pixel loss weight such as U-Net's weight map); the model returns logits ``(B, *out_spatial, K)``. An output
smaller than its input (an unpadded network, e.g. U-Net's valid convolutions) is compared with the centre of the
label map, cropped to the output's size. Pixels whose label is ``config.task.ignore_label`` are neither learned nor
counted.

Loss: ``sum_x w(x) · (-log softmax(z(x))[y(x)]) / |{x : y(x) not ignored}|`` with ``w = 1`` without a weight map.
Evaluation, exact over a split, from the confusion matrix ``C[true, predicted]`` of the counted pixels: pixel
accuracy ``trace(C) / sum(C)``; per class ``IoU_k = C_kk / (sum_j C_kj + sum_j C_jk - C_kk)`` and
``Dice_k = 2 C_kk / (sum_j C_kj + sum_j C_jk)``, and their means over the classes that occur (in the truth or the
prediction: a class absent from both has no IoU); the loss, unweighted, per counted pixel.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from cnn.errors import ConfigError
from cnn.tasks.base import Accumulator, Batch, Task, check_labels, raise_batch_error
from cnn.tasks.classification import cross_entropy
from cnn.tasks.report import plot_segmentation


def center_crop_to(x: jax.Array, spatial: tuple[int, ...]) -> jax.Array:
    """The centre ``spatial`` window of ``x (B, *spatial_in, ...)``."""
    starts = [(n - o) // 2 for n, o in zip(x.shape[1 : 1 + len(spatial)], spatial, strict=True)]
    return x[(slice(None), *(slice(s, s + o) for s, o in zip(starts, spatial, strict=True)))]


class Segmentation(Task):
    name = "segmentation"
    data_kind = "dense"
    metrics: ClassVar[dict[str, str]] = {"mean_iou": "max", "pixel_accuracy": "max", "mean_dice": "max",
                                         "loss": "min"}
    progress_metric = "pixel_accuracy"
    report_examples = 4

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.num_classes = spec.num_classes
        self.ignore_label = config.task.get("ignore_label")
        if self.ignore_label is not None and 0 <= self.ignore_label < self.num_classes:
            raise ConfigError(f"config.task.ignore_label={self.ignore_label} is one of the {self.num_classes} classes; "
                         "use a value outside 0..num_classes - 1 (e.g. 255 or -1)")

    def sample_batch(self) -> Batch:
        return {"image": np.zeros((1, *self.spec.image_shape), np.uint8),
                "label": np.zeros((1, *self.spec.image_shape[:-1]), np.int32)}

    def check_split(self, split, name):
        if hasattr(split, "labels"):
            check_labels(split.labels, self.num_classes, f"split {name!r}", self.ignore_label)

    def check_batch(self, batch: Batch) -> None:
        image, label = batch["image"], batch.get("label")
        spatial = image.shape[1:-1]
        if label is None or label.shape != image.shape[:-1]:
            raise_batch_error("label", f"(batch, {', '.join(map(str, spatial))}) like the image's "
                                       f"{tuple(image.shape)} without channels", label)
        weight = batch.get("weight")
        if weight is not None and weight.shape != label.shape:
            raise_batch_error("weight", f"{tuple(label.shape)}, the label map's", weight)

    def _counted(self, outputs, batch) -> tuple[jax.Array, jax.Array]:
        """The label map cropped to the output, and the per-pixel 0/1 weight of the pixels that count."""
        labels = center_crop_to(batch["label"], outputs.shape[1:-1])
        counted = jnp.ones(labels.shape, jnp.float32)
        if self.ignore_label is not None:
            counted = counted * (labels != self.ignore_label)
        if "mask" in batch:  # the padding examples of an eval batch
            counted = counted * batch["mask"].reshape((-1,) + (1,) * (labels.ndim - 1))
        return jnp.where(labels == self.ignore_label, 0, labels) if self.ignore_label is not None else labels, counted

    def loss(self, outputs, batch):
        labels, counted = self._counted(outputs, batch)
        weights = counted
        if "weight" in batch:
            weights = weights * center_crop_to(batch["weight"], outputs.shape[1:-1])
        losses = cross_entropy(outputs, labels)
        pixels = jnp.maximum(jnp.sum(counted), 1.0)
        correct = jnp.sum((jnp.argmax(outputs, -1) == labels) * counted)
        loss = jnp.sum(losses * weights) / pixels
        return loss, {"loss": loss, "pixel_accuracy": correct / pixels}

    def eval_sums(self, outputs, batch):
        labels, counted = self._counted(outputs, batch)
        predictions = jnp.argmax(outputs, -1)
        confusion = jnp.zeros((self.num_classes,) * 2, jnp.float32).at[labels, predictions].add(counted)
        return {"loss_sum": jnp.sum(cross_entropy(outputs, labels) * counted), "confusion": confusion,
                "images": jnp.sum(batch["mask"])}

    def eval_examples(self, outputs, batch):
        spatial = outputs.shape[1:-1]
        return {"pred": jnp.argmax(outputs, -1).astype(jnp.int32), "label": center_crop_to(batch["label"], spatial),
                "image": center_crop_to(batch["image"], spatial), "mask": batch["mask"]}

    def result(self, totals: Accumulator) -> dict[str, Any]:
        confusion = np.rint(totals.sums["confusion"]).astype(np.int64)
        true, predicted, hits = confusion.sum(1), confusion.sum(0), confusion.diagonal()
        union = true + predicted - hits
        occurs = union > 0
        iou = np.where(occurs, hits / np.maximum(union, 1), np.nan)
        dice = np.where(occurs, 2 * hits / np.maximum(true + predicted, 1), np.nan)
        pixels = int(confusion.sum())
        return {
            "mean_iou": float(iou[occurs].mean()),
            "pixel_accuracy": float(hits.sum()) / pixels,
            "mean_dice": float(dice[occurs].mean()),
            "loss": float(totals.sums["loss_sum"]) / pixels,
            "count": round(float(totals.sums["images"])),
            "pixels": pixels,
            "iou": [None if np.isnan(v) else float(v) for v in iou],
            "dice": [None if np.isnan(v) else float(v) for v in dice],
            "confusion": confusion,
        }

    def write_report(self, result, totals, directory, step, title):
        first = totals.stacked()
        path = os.path.join(directory, f"segmentation_{step}.png")
        plot_segmentation(first["image"][: self.report_examples], first["label"][: self.report_examples],
                          first["pred"][: self.report_examples], self.num_classes, self.ignore_label, path,
                          title=f"{title}: mean IoU {result['mean_iou']:.4f}")
        return [path]

    def predictions(self, totals: Accumulator) -> dict[str, np.ndarray]:
        examples = totals.stacked()
        return {"pred": examples["pred"], "label": examples["label"]}

