"""Detection with a sliding window: train a window classifier, evaluate it as a detector on whole canvases.

Training is :class:`~cnn.tasks.classification.Classification` of ``window``×``window`` crops whose last class is
background (dataset ``digit_windows``). Evaluation runs the classifier fully convolutionally
(:func:`cnn.models.fully_conv.fully_convolutional`, same variables) over every level of each canvas's image pyramid
(``config.task.scales``): the softmax of every window, whose object classes at least ``config.task.score_threshold``
become boxes (the class's template box in the window, mapped back through the level's scale), suppressed per class
across levels at ``config.task.nms_iou`` (:func:`cnn.ops.detection.pyramid_detections`). Reported: AP at IoU 0.5 of
each object class and their mean, ``map50``, as COCO computes them (:func:`cnn.ops.detection.average_precision`).

Exact where sums apply: ``windows`` counts the windows scored over the real canvases (the padding of the last batch
masked out), whatever the batch size and device count; AP needs every canvas's detections at once, so the score maps
come back per canvas, in split order (``Accumulator`` examples), and the detection runs on the host.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from cnn.data import ArraySplit, eval_batches
from cnn.data.windows import PYRAMID, CanvasSplit, image_pyramid
from cnn.errors import ConfigError, UserError
from cnn.models.fully_conv import FullyConvolutional, fully_convolutional
from cnn.ops.detection import Detections, average_precision, mean_average_precision, pyramid_detections
from cnn.tasks.base import Accumulator, check_labels
from cnn.tasks.classification import Classification
from cnn.tasks.report import plot_detections

IOU = 0.5  # the IoU at which a detection matches a ground-truth box (VOC's, COCO's AP50)


def detection_settings(task_config) -> tuple[tuple[float, ...], float, float]:
    """``(scales, score_threshold, nms_iou)`` of ``config.task``, checked; defaults: ``PYRAMID``, 0.5 and 0.3."""
    scales = tuple(float(s) for s in task_config.get("scales", PYRAMID))
    if not scales or min(scales) <= 0 or len(set(scales)) != len(scales):
        raise ConfigError(f"config.task.scales must be distinct positive numbers, got {scales}")
    threshold, nms_iou = float(task_config.get("score_threshold", 0.5)), float(task_config.get("nms_iou", 0.3))
    for key, value in (("score_threshold", threshold), ("nms_iou", nms_iou)):
        if not 0 <= value <= 1:
            raise ConfigError(f"config.task.{key} must be in [0, 1], got {value}")
    return scales, threshold, nms_iou


class Detection(Classification):
    name = "detection"
    metrics: ClassVar[dict[str, str]] = {"map50": "max"}
    report_examples = 4  # canvases drawn with their boxes

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.needs_examples = True
        self.num_objects = spec.num_classes - 1  # the last class is background
        self.window = spec.image_shape[0]
        if spec.image_shape[0] != spec.image_shape[1]:
            raise ConfigError(f"task 'detection' needs square windows, got examples of {spec.image_shape}")
        self.scales, self.threshold, self.nms_iou = detection_settings(config.task)
        self.net: FullyConvolutional | None = None
        self.canvases: CanvasSplit | None = None  # the split being evaluated: its ground truth and templates
        self._found: tuple[Accumulator, list[Detections]] | None = None

    def eval_model(self, model):
        self.net = fully_convolutional(model, self.window)
        return self.net.model

    def check_split(self, split, name):
        if isinstance(split, CanvasSplit):
            check_labels(split.box_labels, self.num_objects, f"split {name!r} boxes", ignore_label=-1)
        elif name == self.config.dataset.train_split:
            super().check_split(split, name)
        else:
            raise UserError(f"split {name!r} holds window crops; task 'detection' evaluates on canvases with boxes "
                            "(dataset 'digit_windows', split 'canvases'); evaluate windows with task 'classification'")

    def eval_batches(self, split, preprocess, global_batch, process_index, process_count):
        """Each pyramid level of every canvas, level by level (a level's canvases share a shape)."""
        self.canvases = split
        for scale in self.scales:
            level = np.stack([image_pyramid(image, (scale,))[0] for image in split.images])
            if min(level.shape[1:3]) < self.net.extent:
                height, width = split.images.shape[1:3]
                raise UserError(f"config.task.scales: at scale {scale} a {height}×{width} canvas is "
                                f"{level.shape[1]}×{level.shape[2]}, smaller than the window "
                                f"({self.net.extent}×{self.net.extent})")
            yield from eval_batches(ArraySplit(level, np.zeros(len(level), np.int32)), preprocess, global_batch,
                                    process_index, process_count)

    @staticmethod
    def _key(rows: int, cols: int) -> str:
        return f"scores_{rows}x{cols}"  # the levels differ in shape, hence in key

    def eval_sums(self, outputs, batch):
        return {"windows": jnp.sum(batch["mask"]) * outputs.shape[1] * outputs.shape[2]}

    def eval_examples(self, outputs, batch):
        scores = jax.nn.softmax(outputs, -1)[..., :self.num_objects]
        return {self._key(*outputs.shape[1:3]): scores, "mask": batch["mask"]}

    def detections(self, totals: Accumulator) -> list[Detections]:
        """Each canvas's detections, in the original canvas's pixels, from the score maps of its levels (made once
        per evaluation: the result, the report and the predictions read them)."""
        if self._found is not None and self._found[0] is totals:
            return self._found[1]
        examples, height, width = totals.stacked(), *self.canvases.images.shape[1:3]
        maps = [examples[self._key(*self.net.score_shape(round(height * s), round(width * s)))]
                for s in self.scales]
        found = [pyramid_detections([m[n] for m in maps], self.scales, self.net.stride, self.window, self.threshold,
                                    self.nms_iou, self.canvases.templates) for n in range(len(self.canvases))]
        self._found = (totals, found)
        return found

    def ground_truth(self) -> list[tuple[np.ndarray, np.ndarray]]:
        real = self.canvases.box_labels >= 0
        return [(boxes[keep], labels[keep]) for boxes, labels, keep in
                zip(self.canvases.boxes, self.canvases.box_labels, real, strict=True)]

    def result(self, totals: Accumulator) -> dict[str, Any]:
        found = self.detections(totals)
        ap = average_precision(found, self.ground_truth(), self.num_objects, IOU)
        return {"map50": mean_average_precision(ap), "ap50": [None if np.isnan(a) else float(a) for a in ap],
                "count": len(found), "num_boxes": int((self.canvases.box_labels >= 0).sum()),
                "num_detections": sum(len(d.scores) for d in found), "windows": round(float(totals.sums["windows"]))}

    def summary(self, result):
        return f"mAP@0.5 {result['map50']:.4f} ({result['num_detections']} detections, {result['num_boxes']} digits)"

    def write_report(self, result, totals, directory, step, title):
        path = os.path.join(directory, f"detections_{step}.png")
        shown = slice(self.report_examples)
        plot_detections(self.canvases.images[shown], self.detections(totals)[shown], self.ground_truth()[shown], path,
                        title=f"{title}: mAP@0.5 {result['map50']:.4f}")
        return [path]

    def predictions(self, totals: Accumulator) -> dict[str, np.ndarray]:
        """Every detection (``boxes`` x0, y0, x1, y1 in canvas pixels, ``scores``, ``labels``, ``image``: the
        canvas's index) and the ground truth (``truth_*``), in split order."""
        found, truth = self.detections(totals), self.ground_truth()
        return {"boxes": np.concatenate([d.boxes for d in found]).reshape(-1, 4),
                "scores": np.concatenate([d.scores for d in found]),
                "labels": np.concatenate([d.labels for d in found]),
                "image": np.repeat(np.arange(len(found)), [len(d.scores) for d in found]),
                "truth_boxes": np.concatenate([boxes for boxes, _ in truth]).reshape(-1, 4),
                "truth_labels": np.concatenate([labels for _, labels in truth]),
                "truth_image": np.repeat(np.arange(len(truth)), [len(labels) for _, labels in truth])}
