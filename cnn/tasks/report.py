"""Pictures that ``eval.py`` writes beside ``eval_<step>.json``: a confusion matrix, segmentation overlays."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: np.ndarray, path: str, title: str) -> None:
    plt = _pyplot()
    n = confusion.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 0.8 + 0.5 * n))
    ax.imshow(confusion, cmap="Blues")
    if n <= 20:
        for (i, j), count in np.ndenumerate(confusion):
            color = "white" if count > confusion.max() / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
    ax.set(xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_segmentation(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, num_classes: int,
                      ignore_label: int | None, path: str, title: str) -> None:
    """One row per image: the image, the true classes, the predicted classes, and the errors (red where the
    prediction is wrong, grey where the label is ignored)."""
    plt = _pyplot()
    colors = plt.get_cmap("tab20" if num_classes > 10 else "tab10", max(num_classes, 2))
    rows = len(images)
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2 * rows + 0.4), squeeze=False)
    for row, (image, true, pred) in enumerate(zip(images, truth, predicted, strict=True)):
        ignored = true == ignore_label if ignore_label is not None else np.zeros(true.shape, bool)
        errors = np.zeros((*true.shape, 3))
        errors[(pred != true) & ~ignored] = (1.0, 0.0, 0.0)
        errors[ignored] = (0.5, 0.5, 0.5)
        shown = (image, np.where(ignored, 0, true), pred, errors)
        for ax, picture, name in zip(axes[row], shown, ("image", "truth", "prediction", "errors"), strict=True):
            if name == "image":
                ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray")
            elif name == "errors":
                ax.imshow(picture)
            else:
                ax.imshow(picture, cmap=colors, vmin=0, vmax=max(num_classes - 1, 1), interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_detections(images: np.ndarray, found: list, truth: list, path: str, title: str) -> None:
    """One panel per image: its true boxes (green) and detections (red, with class and score)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.4), squeeze=False)
    for ax, image, detections, (true_boxes, _) in zip(axes[0], images, found, truth, strict=True):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        for boxes, color in ((true_boxes, "lime"), (detections.boxes, "red")):
            for x0, y0, x1, y1 in boxes:
                ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=color, lw=1))
        for (x0, y0, _, _), label, score in zip(detections.boxes, detections.labels, detections.scores, strict=True):
            ax.text(x0, y0 - 1, f"{label} {score:.2f}", color="red", fontsize=6)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
