"""Detection ops: IoU against counted pixels, NMS against the textbook loop, pyramid boxes by hand, and average
precision against pycocotools on the same boxes (images without detections or ground truth, ties, duplicates)."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cnn.ops.detection import (
    Detections,
    average_precision,
    box_iou,
    class_nms,
    mean_average_precision,
    nms,
    pyramid_detections,
    window_detections,
)


def random_boxes(rng, n, size=40, largest=20):
    corner = rng.integers(0, size - 2, size=(n, 2))
    extent = rng.integers(1, largest, size=(n, 2))
    return np.concatenate([corner, np.minimum(corner + extent, size)], axis=1).astype(np.float64)


def test_iou_counts_pixels():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 12), random_boxes(rng, 9)

    def pixels(box):
        x0, y0, x1, y1 = box.astype(int)
        return {(r, c) for r in range(y0, y1) for c in range(x0, x1)}

    expected = [[len(pixels(p) & pixels(q)) / len(pixels(p) | pixels(q)) for q in b] for p in a]
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-12)
    assert box_iou(a, np.zeros((0, 4))).shape == (12, 0)


def textbook_nms(boxes, scores, threshold):
    """While boxes are left: keep the best (the first of equals), drop those overlapping it by more than threshold."""
    left, keep = list(range(len(boxes))), []
    while left:
        best = max(left, key=lambda i: (scores[i], -i))
        keep.append(best)
        left = [i for i in left if i != best and box_iou(boxes[best], boxes[i])[0, 0] <= threshold]
    return keep


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5])
def test_nms_matches_the_textbook_loop(threshold):
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 60)
    scores = rng.integers(0, 8, size=60) / 8  # many ties
    assert nms(boxes, scores, threshold).tolist() == textbook_nms(boxes, scores, threshold)


def test_class_nms_never_suppresses_across_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40]], np.float32)
    found = class_nms(Detections(boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([3, 5, 3, 3])), 0.5)
    assert found.scores.tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert found.labels.tolist() == [3, 5, 3]


def test_window_boxes_map_back_through_the_scale():
    scores = np.zeros((5, 6, 3), np.float32)
    scores[2, 4, 1] = 0.9  # cell (row 2, col 4): window at x = 16, y = 8 of the half-size image
    found = window_detections(scores, stride=4, window=32, scale=0.5, threshold=0.5)
    np.testing.assert_allclose(found.boxes, [[32, 16, 96, 80]])
    assert found.labels.tolist() == [1] and found.scores.tolist() == pytest.approx([0.9])
    templates = np.array([[0, 0, 32, 32], [10, 4, 20, 28], [0, 0, 1, 1]], np.float32)
    found = window_detections(scores, 4, 32, 0.5, 0.5, templates)
    np.testing.assert_allclose(found.boxes, [[(16 + 10) * 2, (8 + 4) * 2, (16 + 20) * 2, (8 + 28) * 2]])


def test_pyramid_merges_levels_with_nms():
    big, small = np.zeros((3, 3, 1)), np.zeros((2, 2, 1))
    small[0, 0, 0] = 0.8  # (0, 0, 32, 32) at scale 0.8: (0, 0, 40, 40)
    big[0, 0, 0] = 0.7  # (0, 0, 32, 32): IoU 1024 / 1600 with it: suppressed
    big[1, 1, 0] = 0.6  # (16, 16, 48, 48): IoU 576 / 2048 < 0.3: kept
    found = pyramid_detections([big, small], [1.0, 0.8], stride=16, window=32, threshold=0.5, iou_threshold=0.3)
    np.testing.assert_allclose(found.boxes, [[0, 0, 40, 40], [16, 16, 48, 48]])


def coco_ap(detections, truth, num_classes):
    """AP per class at IoU 0.5 from pycocotools (-1 for a class without ground truth)."""
    images = [{"id": n + 1} for n in range(len(truth))]
    annotations = []
    for n, (boxes, labels) in enumerate(truth):
        for (x0, y0, x1, y1), c in zip(boxes.tolist(), labels, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": n + 1, "category_id": int(c) + 1,
                                "iscrowd": 0, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    results = [{"image_id": n + 1, "category_id": int(c) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)}
               for n, found in enumerate(detections)
               for (x0, y0, x1, y1), s, c in zip(found.boxes.tolist(), found.scores, found.labels, strict=True)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c + 1} for c in range(num_classes)]}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.params.iouThrs = np.array([0.5])
        evaluation.params.maxDets = [100]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, :, 0, 0]  # (recall points, classes), area "all"
    return np.where((precision > -1).all(axis=0), precision.mean(axis=0), -1)


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_equals_pycocotools(seed):
    rng = np.random.default_rng(seed)
    num_classes = 4  # class 3 never has ground truth
    truth, detections = [], []
    for n in range(7):
        count = 0 if n == 1 else int(rng.integers(1, 6))  # image 1: no ground truth
        boxes = random_boxes(rng, count)
        labels = rng.integers(0, 3, size=count)
        truth.append((boxes, labels))
        if n == 2:  # image 2: no detections
            detections.append(Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)))
            continue
        # noisy copies of the truth (some duplicated, some relabelled) and random false positives
        copies = np.repeat(np.arange(count), rng.integers(0, 3, size=count))
        noisy = boxes[copies] + rng.integers(-3, 4, size=(len(copies), 4))
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        extra = int(rng.integers(0, 4))
        found_labels = np.concatenate([np.where(rng.random(len(copies)) < 0.2, rng.integers(0, 4, len(copies)),
                                                labels[copies]), rng.integers(0, 4, extra)])
        scores = rng.integers(0, 6, size=len(found_labels)) / 6  # ties within and across images
        detections.append(Detections(np.concatenate([noisy, random_boxes(rng, extra)]), scores, found_labels))
    # one detection at IoU exactly 0.5: a match (>= t)
    truth[0] = (np.concatenate([truth[0][0], [[0, 0, 10, 10]]]), np.concatenate([truth[0][1], [2]]))
    detections[0] = Detections(np.concatenate([detections[0].boxes, [[0, 0, 10, 5]]]),
                               np.concatenate([detections[0].scores, [1.0]]), np.concatenate([detections[0].labels,
                                                                                              [2]]))
    ours = average_precision(detections, truth, num_classes)
    reference = coco_ap(detections, truth, num_classes)
    assert np.isnan(ours[3]) and reference[3] == -1
    np.testing.assert_allclose(ours[:3], reference[:3], rtol=0, atol=1e-12)
    assert mean_average_precision(ours) == pytest.approx(reference[:3].mean(), abs=1e-12)


def test_class_with_truth_but_no_detections_scores_zero():
    truth = [(np.array([[0, 0, 5, 5]], np.float64), np.array([1]))]
    found = [Detections(np.array([[0, 0, 5, 5]], np.float64), np.array([0.9]), np.array([0]))]
    ours = average_precision(found, truth, 2)
    assert np.isnan(ours[0]) and ours[1] == 0
    np.testing.assert_array_equal(coco_ap(found, truth, 2), [-1, 0])
