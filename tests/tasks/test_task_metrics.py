"""The tasks' metrics against independent references: scikit-learn's accuracy, confusion matrix, top-k accuracy and
ROC AUC on the per-example outputs an evaluation keeps, the exact sums unchanged by the batch size, and the
segmentation loss, IoU and Dice against numpy loops of their formulas (ignore label, weight map, output smaller than
the label map)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax, softmax
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, top_k_accuracy_score

from cnn.config_defaults import base_config
from cnn.data import ArraySplit, DatasetSpec
from cnn.errors import ConfigError
from cnn.tasks import make_task
from cnn.tasks.classification import roc_auc
from cnn.train.experiment import Experiment

DIGITS = load_digits()
IMAGES = DIGITS.images.astype(np.uint8)[..., None]  # 8×8, values 0..16


def evaluated(labels: np.ndarray, num_classes: int, eval_batch_size: int):
    """A freshly initialized small CNN evaluated on the real 8×8 digits with these labels, keeping every example."""
    config = base_config("digits", "small_cnn")
    config.model.width = 4
    config.eval_batch_size = eval_batch_size
    exp = Experiment(config, DatasetSpec(num_classes, (8, 8, 1), 16.0, (0.3,), (0.4,)))
    state = exp.init_state()
    return exp.evaluate(state, ArraySplit(IMAGES[: len(labels)], labels.astype(np.int32)), keep_examples=True)


@pytest.mark.parametrize("num_classes", [2, 20])
def test_classification_metrics_equal_scikit_learn_on_the_kept_outputs(num_classes):
    # 2 classes: even and odd digits; 20: the digit, plus 10 for the second half (more than 10 classes: top-5).
    n = 300
    labels = DIGITS.target[:n] % 2 if num_classes == 2 else DIGITS.target[:n] + 10 * (np.arange(n) >= n // 2)
    result, totals = evaluated(labels, num_classes, eval_batch_size=64)
    logits, kept = totals.stacked()["logits"], totals.stacked()["label"]
    np.testing.assert_array_equal(kept, labels)  # split order, padding dropped
    predicted = logits.argmax(-1)
    assert result["count"] == n
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-12)
    np.testing.assert_array_equal(result["confusion"], confusion_matrix(labels, predicted, labels=range(num_classes)))
    per_class = [np.mean(predicted[labels == c] == c) if (labels == c).any() else None for c in range(num_classes)]
    assert result["per_class_accuracy"] == pytest.approx(per_class)
    expected_loss = -np.mean(log_softmax(logits.astype(np.float64), -1)[np.arange(n), labels])
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    if num_classes == 2:
        assert result["roc_auc"] == pytest.approx(roc_auc_score(labels, softmax(logits, -1)[:, 1]), abs=1e-9)
        assert "top5_accuracy" not in result
    else:
        assert result["top5_accuracy"] == pytest.approx(
            top_k_accuracy_score(labels, logits, k=5, labels=range(num_classes)), abs=1e-12)
        assert "roc_auc" not in result
    if num_classes == 2:
        return
    # Exact sums: another batch size (the last batch partial, 300 = 42 × 7 + 6) counts the same.
    again, _ = evaluated(labels, num_classes, eval_batch_size=7)
    for name in ("accuracy", "count", "per_class_accuracy", "top5_accuracy", "roc_auc"):
        assert again.get(name) == result.get(name)
    np.testing.assert_array_equal(again["confusion"], result["confusion"])


def test_roc_auc_with_ties_equals_scikit_learn():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    positive = rng.random(200) < 0.3
    assert roc_auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    assert np.isnan(roc_auc(scores, np.zeros(200, bool)))  # one class only: undefined


def segmentation_task(num_classes: int, ignore_label: int | None):
    config = base_config("digit_canvases", "unet_padded")
    config.task.name, config.task.ignore_label = "segmentation", ignore_label
    return make_task(config, DatasetSpec(num_classes, (8, 8, 1), kind="dense"))


def test_segmentation_loss_and_sums_equal_loops_of_the_formulas():
    """Logits 4×4 for 8×8 label maps (an unpadded network): the centre of the labels counts; ignored pixels and
    padding examples never count; the weight map weighs the training loss only."""
    rng = np.random.default_rng(1)
    k, ignore = 3, 255
    logits = rng.normal(size=(3, 4, 4, k)).astype(np.float32)
    labels = rng.integers(0, k, (3, 8, 8)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = ignore
    weight = rng.uniform(0.5, 2.0, (3, 8, 8)).astype(np.float32)
    mask = np.array([1.0, 1.0, 0.0], np.float32)  # the third example is padding
    task = segmentation_task(k, ignore)
    batch = {"label": jnp.asarray(labels), "weight": jnp.asarray(weight), "mask": jnp.asarray(mask)}
    loss, metrics = task.loss(jnp.asarray(logits), batch)
    sums = jax.device_get(task.eval_sums(jnp.asarray(logits), batch))

    centre = labels[:, 2:6, 2:6]
    logp = log_softmax(logits.astype(np.float64), -1)
    weighted = counted = unweighted = 0.0
    confusion = np.zeros((k, k))
    for n in range(3):
        for i in range(4):
            for j in range(4):
                y = centre[n, i, j]
                if y == ignore or mask[n] == 0:
                    continue
                counted += 1
                weighted += weight[n, i + 2, j + 2] * -logp[n, i, j, y]
                unweighted += -logp[n, i, j, y]
                confusion[y, logits[n, i, j].argmax()] += 1
    assert float(loss) == pytest.approx(weighted / counted, rel=1e-5)
    assert float(metrics["pixel_accuracy"]) == pytest.approx(np.trace(confusion) / counted, rel=1e-6)
    np.testing.assert_array_equal(sums["confusion"], confusion)
    assert float(sums["loss_sum"]) == pytest.approx(unweighted, rel=1e-5)

    from cnn.tasks.base import Accumulator

    totals = Accumulator(keep_examples=False)
    totals.add(sums, None)
    result = task.result(totals)
    for c in range(k):
        tp, fp, fn = confusion[c, c], confusion[:, c].sum() - confusion[c, c], confusion[c].sum() - confusion[c, c]
        assert result["iou"][c] == pytest.approx(tp / (tp + fp + fn))
        assert result["dice"][c] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["mean_iou"] == pytest.approx(np.mean(result["iou"]))
    assert result["count"] == 2 and result["pixels"] == counted


def test_task_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"ignore_label=1 is one of the 3 classes"):
        segmentation_task(3, 1)
    config = base_config("digits", "small_cnn")
    config.task.name = "segmentation"
    with pytest.raises(ConfigError, match=r"task 'segmentation' learns from dense datasets, but dataset 'digits' holds "
                                          r"image data"):
        make_task(config, DatasetSpec(10, (8, 8, 1)))
    config.task.name = "detect"
    with pytest.raises(ConfigError, match=r"unknown task 'detect'; choose from \['classification', "):
        make_task(config, DatasetSpec(10, (8, 8, 1)))
    config.task.name, config.checkpoint.best_metric = "classification", "mean_iou"
    with pytest.raises(ConfigError, match=r"best_metric='mean_iou' is not a metric of task 'classification'"):
        Experiment(config, DatasetSpec(10, (8, 8, 1)))
