"""Tasks by name (``config.task.name``): what differs between kinds of problems, and nothing else.

- ``classification`` (image datasets): ``image (B, ..., C)``, ``label (B,)``; cross-entropy with label smoothing;
  accuracy, loss, confusion matrix, per-class accuracy, top-5 (more than 10 classes), ROC AUC (2 classes);
  ``confusion_<step>.png``.
- ``segmentation`` (dense datasets): ``image``, ``label (B, ...)``, optional ``weight (B, ...)``; per-pixel
  cross-entropy with an ignore label and a weight map; pixel accuracy, mean IoU, mean Dice, IoU and Dice per class;
  ``segmentation_<step>.png`` (image, truth, prediction, errors).
- ``node_classification`` (graph datasets): ``features (N, F)``, ``senders``/``receivers (E,)``, ``label (N,)``,
  ``mask (N,)``; cross-entropy and classification's metrics over the split's nodes; ``confusion_<step>.png``.
- ``detection`` (image datasets of windows, the last class background; evaluated on canvases with boxes):
  trained as classification, evaluated fully convolutionally over an image pyramid; AP@0.5 per class and ``map50``.

See :mod:`cnn.tasks.base` for what a task owns.
"""

from __future__ import annotations

import ml_collections

from cnn.data import DatasetSpec
from cnn.registry import Registry
from cnn.tasks.base import Accumulator, Task
from cnn.tasks.classification import Classification
from cnn.tasks.detection import Detection
from cnn.tasks.node_classification import NodeClassification
from cnn.tasks.segmentation import Segmentation

TASKS = Registry("task")
for _task in (Classification, Segmentation, NodeClassification, Detection):
    TASKS.register(_task.name, _task)


def make_task(config: ml_collections.ConfigDict, spec: DatasetSpec) -> Task:
    """The task of ``config.task.name`` for a dataset of ``spec``."""
    return TASKS.get(config.task.name)(config, spec)


def metric_directions(task: str) -> dict[str, str]:
    """The scalar eval metrics task ``task`` may report (``"max"`` or ``"min"``: which is better), what
    ``checkpoint.best_metric`` and a sweep's ``metric`` may name; a dataset may lack some (top-5 needs more than 10
    classes)."""
    return dict(TASKS.get(task).metrics)


__all__ = ["TASKS", "Accumulator", "Task", "make_task", "metric_directions"]
