"""Detect objects in images with a trained window classifier (``detect.py``): the classifier of a run's checkpoint
run fully convolutionally (:mod:`cnn.models.fully_conv`) over each image's pyramid, its windows' softmax scores
turned into boxes, per-class non-maximum suppression across scales (:func:`cnn.ops.detection.pyramid_detections`).

For each image ``DIR/<name>.json`` (boxes ``x0, y0, x1, y1`` in the image's pixels, class, score, best first),
``DIR/<name>_heatmap.png`` (each object class's score map at each scale) and ``DIR/<name>_boxes.png`` (the image
with its boxes). A run of task ``detection`` brings its background class (never a box) and its classes' template
boxes; any other classification run's classes are all objects, each box its whole window.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from cnn.data.preprocess import BatchRandom
from cnn.data.windows import image_pyramid
from cnn.errors import UserError
from cnn.models.fully_conv import fully_convolutional
from cnn.ops.detection import Detections, pyramid_detections
from cnn.tasks.detection import detection_settings
from cnn.tasks.report import _pyplot
from cnn.train.config import load_config
from cnn.train.evaluate import select_steps
from cnn.train.experiment import plan_evaluation

CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def read_image(path: str, channels: int) -> np.ndarray:
    """``(H, W, channels)`` uint8, or one line naming the file."""
    try:
        with Image.open(path) as picture:
            picture = picture.convert("L") if picture.mode in ("1", "I;16") else picture
            picture = picture.convert("RGB") if picture.mode == "P" else picture
            mode, image = picture.mode, np.asarray(picture)
    except (OSError, UnidentifiedImageError) as error:
        raise UserError(f"{path}: cannot read it as an image ({error})") from None
    if CHANNELS.get(mode) != channels:
        raise UserError(f"{path}: {CHANNELS.get(mode, mode)} channel(s) ({mode} image), but the model reads "
                        f"{channels}")
    return image.reshape(*image.shape[:2], channels)


def detect_images(workdir: str, images: Sequence[str], out: str, scales: Sequence[float] | None = None,
                  threshold: float | None = None, nms_iou: float | None = None, step: int | None = None) -> list[dict]:
    """Detect in every image of ``images`` and write its three files into ``out``; returns the JSON records.
    ``scales``, ``threshold`` and ``nms_iou`` default to the run's ``config.task`` (else
    :func:`cnn.tasks.detection.detection_settings`'s)."""
    if not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir}: no such directory")
    names = [os.path.splitext(os.path.basename(path))[0] for path in images]
    if len(set(names)) != len(names):
        raise UserError(f"--images: two images share a name ({sorted(names)}): their outputs would overwrite")
    config = load_config(workdir)
    with config.unlocked():
        for key, value in (("scales", scales), ("score_threshold", threshold), ("nms_iou", nms_iou)):
            if value is not None:
                config.task[key] = value
    plan = plan_evaluation(config, workdir)
    exp = plan.experiment
    all_scales, threshold, nms_iou = detection_settings(config.task)
    window, channels = exp.sample_input.shape[1], exp.sample_input.shape[-1]
    net = fully_convolutional(exp.model, window)
    objects = exp.spec.num_classes - 1 if exp.task.name == "detection" else exp.spec.num_classes
    templates = plan.eval_split.templates if exp.task.name == "detection" else None
    try:
        chosen = select_steps(plan.checkpoints.steps(), step, False)
        if not chosen:
            raise UserError(f"--workdir={workdir}: no checkpoints in {plan.checkpoints.directory}")
        state = plan.checkpoints.restore(chosen[0], exp.abstract_state())
    finally:
        plan.checkpoints.close()
    variables = {"params": state.params, **state.model_state}
    scores = jax.jit(lambda x: jax.nn.softmax(net.score_map(variables, x))[0, ..., :objects])
    os.makedirs(out, exist_ok=True)
    records = []
    for path, name in zip(images, names, strict=True):
        image = read_image(path, channels)
        levels = [(s, level) for s, level in zip(all_scales, image_pyramid(image, all_scales), strict=True)
                  if min(level.shape[:2]) >= net.extent]
        if not levels:
            raise UserError(f"{path}: {image.shape[0]}×{image.shape[1]} is smaller than the window "
                            f"({net.extent}×{net.extent}) at every scale {list(all_scales)}")
        maps = [np.asarray(scores(exp.eval_preprocess.batch({"image": level[None]}, BatchRandom((0, 0), 1))["image"]))
                for _, level in levels]
        used = [s for s, _ in levels]
        found = pyramid_detections(maps, used, net.stride, window, threshold, nms_iou, templates)
        record = {"image": path, "height": image.shape[0], "width": image.shape[1], "window": window,
                  "stride": net.stride, "scales": used, "score_threshold": threshold, "nms_iou": nms_iou,
                  "detections": [{"box": [round(float(v), 2) for v in box], "class": int(label), "score": float(score)}
                                 for box, label, score in zip(found.boxes, found.labels, found.scores, strict=True)]}
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(record, f, indent=1)
        plot_heatmaps(maps, used, os.path.join(out, f"{name}_heatmap.png"), title=os.path.basename(path))
        draw_boxes(image, found, os.path.join(out, f"{name}_boxes.png"))
        records.append(record)
    return records


def plot_heatmaps(maps: Sequence[np.ndarray], scales: Sequence[float], path: str, title: str) -> None:
    """A row per scale, a column per class: the score of every window (0 to 1)."""
    plt = _pyplot()
    classes = maps[0].shape[-1]
    fig, axes = plt.subplots(len(maps), classes, figsize=(1.2 * classes, 1.3 * len(maps) + 0.4), squeeze=False)
    for row, (scores, scale) in enumerate(zip(maps, scales, strict=True)):
        for c in range(classes):
            ax = axes[row, c]
            ax.imshow(scores[..., c], vmin=0, vmax=1, cmap="magma")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(f"class {c}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"scale {scale:.3g}", fontsize=8)
    fig.suptitle(f"{title}: window scores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_boxes(image: np.ndarray, found: Detections, path: str) -> None:
    """The image (grey as RGB) with each box and its class and score."""
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image[..., :3]).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for box, label, score in zip(found.boxes, found.labels, found.scores, strict=True):
        draw.rectangle([float(v) for v in box], outline=(255, 64, 64))
        draw.text((float(box[0]) + 1, float(box[1]) + 1), f"{label} {score:.2f}", fill=(255, 255, 0))
    picture.save(path)
