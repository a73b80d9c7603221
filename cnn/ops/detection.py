"""Detection from a sliding window's score maps: boxes through an image pyramid, non-maximum suppression, and
average precision (Everingham et al. 2010 for VOC; Lin et al. 2014 and ``pycocotools`` for COCO). Pure numpy:
these run on the host after the network.

Boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates (pixel ``(r, c)`` covers ``[c, c + 1) × [r, r + 1)``)
and overlap is measured by the intersection over union

    IoU(a, b) = |a ∩ b| / |a ∪ b|.

**Pyramid.** The image is rescaled by each ``scale`` (``< 1`` shrinks it, so that larger objects fit the window)
and the window classifier runs over every level. Cell ``(i, j)`` of a level's score map is the window at
``(j J, i J)`` of the rescaled image (``J``: the stride); a detection of class ``c`` there draws the box ``t_c`` (a
template in window coordinates, e.g. the class's mean ink box; default the whole window), which in the original
image is ``((j J, i J, j J, i J) + t_c) / scale``.

**Non-maximum suppression** (greedy, per class): take the highest-scoring box, drop every box of its class that
overlaps it with ``IoU > iou_threshold``, repeat with the rest. Equal scores keep their input order.

**Average precision at one IoU threshold, as COCO defines it** (``pycocotools.cocoeval``, area range "all"; VOC 2010+
differs only in integrating the interpolated curve over all recall values instead of at 101 points):

1. Per class, each image's detections sorted by score (at most ``max_per_image`` kept); those of all images
   (in image order) sorted by score again, ties keeping that order.
2. In that order each detection matches the not yet matched ground-truth box of its image and class with the
   highest IoU ``>= t`` (equal IoUs: the later box); matched: true positive, otherwise false positive.
3. After the ``k`` best detections, ``recall_k = TP_k / G`` (``G`` ground-truth boxes of the class) and
   ``precision_k = TP_k / k``; precision is made monotone, ``p_k = max_{k' >= k} precision_k'``.
4. ``AP = 1/101 Σ_{r in {0, 0.01, ..., 1}} p_{k(r)}``, ``k(r)`` the first ``k`` with ``recall_k >= r`` (0 if none).

A class without ground truth has no AP (NaN) and is left out of the mean (mAP); a class with ground truth but no
detections has AP 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


class Detections(NamedTuple):
    boxes: np.ndarray  # (D, 4) float x0, y0, x1, y1
    scores: np.ndarray  # (D,)
    labels: np.ndarray  # (D,) int class


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of every box of ``a (N, 4)`` with every box of ``b (M, 4)``; 0 where the union is empty."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _by_score(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(scores), kind="stable")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best first."""
    order = _by_score(scores)
    iou = box_iou(boxes, boxes)
    keep, suppressed = [], np.zeros(len(order), bool)
    for i in order:
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > iou_threshold
    return np.array(keep, np.int64)


def class_nms(detections: Detections, iou_threshold: float) -> Detections:
    """:func:`nms` within each class; the kept detections, best first."""
    groups = [np.flatnonzero(detections.labels == c) for c in np.unique(detections.labels)]
    keep = np.concatenate([group[nms(detections.boxes[group], detections.scores[group], iou_threshold)]
                           for group in groups] + [np.zeros(0, np.int64)])
    keep = keep[_by_score(detections.scores[keep])]
    return Detections(detections.boxes[keep], detections.scores[keep], detections.labels[keep])


def window_detections(scores: np.ndarray, stride: int, window: int, scale: float = 1.0, threshold: float = 0.5,
                      templates: np.ndarray | None = None) -> Detections:
    """Every cell and class of a score map ``(rows, cols, classes)`` (object classes only) scoring at least
    ``threshold``, as boxes in the original image (see "Pyramid"); ``templates (classes, 4)`` in window coordinates,
    default the whole ``window``."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    scores = np.asarray(scores)
    if templates is None:
        templates = np.tile(np.array([0, 0, window, window], np.float32), (scores.shape[-1], 1))
    if np.shape(templates) != (scores.shape[-1], 4):
        raise ValueError(f"templates must be (classes, 4) = ({scores.shape[-1]}, 4), got {np.shape(templates)}")
    rows, cols, labels = np.nonzero(scores >= threshold)
    origin = np.stack([cols, rows, cols, rows], axis=1) * stride
    boxes = (origin + np.asarray(templates)[labels]) / scale
    return Detections(boxes.astype(np.float32), scores[rows, cols, labels], labels.astype(np.int64))


def pyramid_detections(score_maps: Sequence[np.ndarray], scales: Sequence[float], stride: int, window: int,
                       threshold: float = 0.5, iou_threshold: float = 0.3,
                       templates: np.ndarray | None = None) -> Detections:
    """The detections of every pyramid level (:func:`window_detections`, ``score_maps[k]`` of the image rescaled by
    ``scales[k]``) in the original image's pixels, after :func:`class_nms` across levels."""
    if len(score_maps) != len(scales):
        raise ValueError(f"one score map per scale: got {len(score_maps)} maps and {len(scales)} scales")
    levels = [window_detections(m, stride, window, s, threshold, templates) for m, s in zip(score_maps, scales,
                                                                                            strict=True)]
    return class_nms(Detections(*(np.concatenate(parts) for parts in zip(*levels, strict=True))), iou_threshold)


def average_precision(detections: Sequence[Detections], ground_truth: Sequence[tuple[np.ndarray, np.ndarray]],
                      num_classes: int, iou_threshold: float = 0.5, max_per_image: int | None = 100) -> np.ndarray:
    """``(num_classes,)`` AP of each class at ``iou_threshold`` as COCO computes it (module docstring; NaN for a class
    without ground truth), over images ``detections[n]`` against ``ground_truth[n] = (boxes (G, 4), labels (G,))``."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"one ground truth per image: got {len(detections)} detections and {len(ground_truth)}")
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        scores, matched, num_truth = [], [], 0
        for found, (truth_boxes, truth_labels) in zip(detections, ground_truth, strict=True):
            truth = np.asarray(truth_boxes).reshape(-1, 4)[np.asarray(truth_labels) == c]
            mine = np.flatnonzero(found.labels == c)
            mine = mine[_by_score(found.scores[mine])][:max_per_image]
            num_truth += len(truth)
            iou = box_iou(found.boxes[mine], truth)
            taken = np.zeros(len(truth), bool)
            for d in range(len(mine)):
                best, best_iou = -1, min(iou_threshold, 1 - 1e-10)
                for g in range(len(truth)):
                    if not taken[g] and iou[d, g] >= best_iou:
                        best, best_iou = g, iou[d, g]
                if best >= 0:
                    taken[best] = True
                matched.append(best >= 0)
            scores.extend(found.scores[mine])
        if num_truth == 0:
            continue
        hits = np.array(matched, bool)[_by_score(np.array(scores))]
        true_pos = np.cumsum(hits)
        recall = true_pos / num_truth
        precision = true_pos / np.arange(1, len(hits) + 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        first = np.searchsorted(recall, RECALL_POINTS, side="left")  # len(hits) where recall never gets there
        ap[c] = np.concatenate([precision, [0.0]])[first].mean()
    return ap


def mean_average_precision(ap: np.ndarray) -> float:
    """The mean AP over the classes that have ground truth (COCO's mAP at one IoU threshold)."""
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
