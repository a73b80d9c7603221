"""Segmentation: a class at every pixel (structured output), per-pixel softmax cross-entropy.

A batch holds ``image (B, *spatial, C)`` and ``label (B, *spatial)`` (and optionally ``weight (B, *spatial)``, a
per-pixel loss weight such as U-Net's weight map); the model returns logits ``(B, *out_spatial, K)``. An output
smaller than its input (an unpadded network, e.g. U-Net's valid convolutions) is compared with the centre of the
label map, cropped to the output's size. Pixels whose label is ``config.task.ignore_label`` are neither learned nor
counted.

Loss (``config.task.loss``): ``"cross_entropy"``, ``sum_x w(x) · (-log softmax(z(x))[y(x)]) / |{x : y(x) not
ignored}|`` with ``w = 1`` without a weight map; ``"dice"``, the soft Dice loss over the batch's counted pixels
(``cnn.tasks.segmentation_metrics.soft_dice_loss``; it has no per-pixel weight); or ``"cross_entropy+dice"``, their
sum (the weight map, if any, weighs the cross-entropy term): the cross-entropy learns every pixel, the Dice term
weighs each class as much as the background, so a rare class's uncertain pixels are not given up to the majority.
Evaluation, exact over a split, from the confusion matrix ``C[true, predicted]`` of the counted pixels: pixel
accuracy ``trace(C) / sum(C)`` and pixel error ``1 -`` it; per class ``IoU_k = C_kk / (sum_j C_kj + sum_j C_jk -
C_kk)`` and ``Dice_k = 2 C_kk / (sum_j C_kj + sum_j C_jk)``, and their means over the classes that occur (in the
truth or the prediction: a class absent from both has no IoU); the cross-entropy, unweighted, per counted pixel.
With ``config.task.rand_error`` (two classes, 1 = cell): the ISBI challenge's adapted Rand error of the split, from
every predicted map (``AdaptedRandError`` over the 4-connected cell segments of prediction and truth).
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
from cnn.tasks.segmentation_metrics import AdaptedRandError, segments_from_binary, soft_dice_loss

LOSSES = ("cross_entropy", "dice", "cross_entropy+dice")


def center_crop_to(x: jax.Array, spatial: tuple[int, ...]) -> jax.Array:
    """The centre ``spatial`` window of ``x (B, *spatial_in, ...)``."""
    starts = [(n - o) // 2 for n, o in zip(x.shape[1 : 1 + len(spatial)], spatial, strict=True)]
    return x[(slice(None), *(slice(s, s + o) for s, o in zip(starts, spatial, strict=True)))]


class Segmentation(Task):
    name = "segmentation"
    data_kind = "dense"
    metrics: ClassVar[dict[str, str]] = {"mean_iou": "max", "pixel_accuracy": "max", "pixel_error": "min",
                                         "mean_dice": "max", "loss": "min"}
    progress_metric = "pixel_accuracy"
    report_examples = 4

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.num_classes = spec.num_classes
        self.ignore_label = config.task.get("ignore_label")
        if self.ignore_label is not None and 0 <= self.ignore_label < self.num_classes:
            raise ConfigError(f"config.task.ignore_label={self.ignore_label} is one of the {self.num_classes} classes; "
                         "use a value outside 0..num_classes - 1 (e.g. 255 or -1)")
        self.loss_name = config.task.get("loss") or "cross_entropy"
        if self.loss_name not in LOSSES:
            raise ConfigError(f"config.task.loss={self.loss_name!r}: choose from {list(LOSSES)}")
        if self.loss_name == "dice" and config.dataset.get("weight_map"):
            raise ConfigError("config.task.loss='dice' has no per-pixel weight: set config.dataset.weight_map=false "
                              "or use config.task.loss='cross_entropy'")
        self.rand_error = bool(config.task.get("rand_error"))
        if self.rand_error:
            if self.num_classes != 2:
                raise ConfigError(f"config.task.rand_error needs two classes (0 membrane, 1 cell); dataset "
                                  f"{config.dataset.name!r} has {self.num_classes}")
            self.needs_examples = True
            self.metrics = {**self.metrics, "rand_error": "min"}

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
        pixels = jnp.maximum(jnp.sum(counted), 1.0)
        correct = jnp.sum((jnp.argmax(outputs, -1) == labels) * counted)
        loss = 0.0
        if self.loss_name != "dice":
            loss = jnp.sum(cross_entropy(outputs, labels) * weights) / pixels
        if self.loss_name != "cross_entropy":
            loss = loss + soft_dice_loss(outputs, labels, counted)
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
        extra = {}
        if self.rand_error:
            examples, rand = totals.stacked(), AdaptedRandError()
            for pred, label in zip(examples["pred"], examples["label"], strict=True):
                rand.update(segments_from_binary(pred), segments_from_binary(label))
            extra["rand_error"] = rand.result()["rand_error"]
        return {
            **extra,
            "mean_iou": float(iou[occurs].mean()),
            "pixel_accuracy": float(hits.sum()) / pixels,
            "pixel_error": 1.0 - float(hits.sum()) / pixels,
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

