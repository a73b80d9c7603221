"""Training crops for a sliding-window digit detector, and the canvases it is evaluated on.

A window classifier learns 11 classes on ``window``×``window`` crops: the digits 0-9 (label ``d``) when a digit's
ink box is centred in the crop to within ``jitter`` pixels on each axis, and ``BACKGROUND`` (label 10) when no
digit's ink box centre lies within ``margin`` pixels (on either axis) of the crop's centre: empty canvas, clutter,
digits off-centre or cut off by the crop's border; three in four background crops are drawn among windows
holding some ink (``HARD_NEGATIVES``), since the empty canvas is easy. Between the two (a centre ``jitter`` to
``margin`` pixels off) no crop is taken: the detector's windows lie ``stride`` pixels apart, so a digit is always
within ``stride / 2`` of one of them, and a window a little off is neither taught as a digit nor as background.

The crops are cut from canvases of :func:`cnn.data.canvas.paste_digits` (several digits, clutter), padded with black
so that windows centred near the border fit, as the detector's first and last windows do on a test
canvas. ``make_window_crops("train", ...)`` uses MNIST's train digits only; the test canvases
(:func:`detection_canvases`) its test digits only, at sizes spanning an image pyramid's scales.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from cnn.data.canvas import Canvas, load_mnist, make_canvases, paste_digits
from cnn.data.sources import DATASETS, ArraySplit, DatasetSpec
from cnn.errors import UserError

BACKGROUND = 10
WINDOW = 32  # LeNet-5's input
# Digit sizes one pyramid level covers (21 to 31 pixels a side in a 32 window), and the pyramid: each level 1/√2 of
# the last, so that three levels cover the test canvases' digits of 21 to 62 pixels.
TRAIN_SCALE = (0.75, 1.1)
PYRAMID = (1.0, 2**-0.5, 0.5)
TEST_SCALE = (0.75, 2.2)
HARD_NEGATIVES = 0.75


def crops_from_canvas(canvas: Canvas, rng: np.random.Generator, window: int, positives: int, negatives: int,
                      jitter: int = 2, margin: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``positives`` crops centred on the canvas's digits (each digit at most once, in random order) and
    ``negatives`` background crops (random windows, redrawn up to 100 times while a digit is centred near them or,
    for a hard one, while they hold no ink):
    ``images (n, window, window)`` uint8, ``labels (n,)`` and the centred digit's ink ``boxes (n, 4)`` in crop
    coordinates (zeros for background)."""
    half, pad = window // 2, window // 2 + jitter  # a window centred anywhere on the canvas, jittered, fits
    padded = np.pad(canvas.image, pad)
    centres = (canvas.boxes[:, :2] + canvas.boxes[:, 2:]) / 2 + pad  # ink box centres, in padded coordinates
    crops, labels, boxes = [], [], []

    def cut(cy: int, cx: int) -> np.ndarray:
        return padded[cy - half: cy - half + window, cx - half: cx - half + window]

    for k in rng.permutation(len(centres))[:positives]:
        cx, cy = (np.floor(centres[k]) + rng.integers(-jitter, jitter + 1, size=2)).astype(int)
        crops.append(cut(cy, cx))
        labels.append(int(canvas.box_labels[k]))
        boxes.append(canvas.boxes[k] + pad - [cx - half, cy - half] * 2)
    height, width = canvas.image.shape
    for _ in range(negatives):
        hard = rng.random() < HARD_NEGATIVES
        for _ in range(100):
            cy, cx = int(rng.integers(pad, pad + height)), int(rng.integers(pad, pad + width))
            if not (np.abs(centres - [cx, cy]) < margin).all(axis=1).any() and (cut(cy, cx).any() or not hard):
                crops.append(cut(cy, cx))
                labels.append(BACKGROUND)
                boxes.append(np.zeros(4, np.float32))
                break
    return (np.array(crops, np.uint8).reshape(-1, window, window), np.array(labels, np.int64),
            np.array(boxes, np.float32).reshape(-1, 4))


def make_window_crops(split: str, count: int, seed: int, window: int = WINDOW, scale: tuple[float, float] = TRAIN_SCALE,
                      background: float = 0.5, root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """``count`` crops of MNIST's ``split`` digits, a ``background`` fraction of them background, shuffled, the same
    for the same ``(split, seed)``: ``images (count, window, window, 1)`` uint8, ``labels (count,)`` (0-9, 10 for
    background), ``boxes (count, 4)`` (the centred digit's ink box in the crop; zeros for background)."""
    if not 0 <= background <= 1:
        raise ValueError(f"background must be a fraction in [0, 1], got {background}")
    digits, labels = load_mnist(split, root)
    rng = np.random.default_rng(seed)
    wanted = np.array([count - round(background * count), round(background * count)])
    parts = []
    while wanted.any():
        canvas = paste_digits(digits, labels, rng, (4 * window, 4 * window), (0, 6), scale,
                              clutter=int(rng.integers(0, 9)))
        part = crops_from_canvas(canvas, rng, window, positives=min(int(wanted[0]), 6),
                                 negatives=min(int(wanted[1]), 4))
        wanted -= [(part[1] != BACKGROUND).sum(), (part[1] == BACKGROUND).sum()]
        parts.append(part)
    order = rng.permutation(count)
    images, crop_labels, boxes = (np.concatenate(arrays)[order] for arrays in zip(*parts, strict=True))
    return {"images": images[..., None], "labels": crop_labels, "boxes": boxes}


def write_window_dataset(path: str | os.PathLike, train_count: int, test_count: int, seed: int, **crop_kwargs) -> None:
    """An ``.npz`` that the ``numpy`` dataset trains on (``<split>_images``, ``<split>_labels``, and ``<split>_boxes``
    for box templates): train crops from MNIST's train digits, test crops from its test digits."""
    arrays = {}
    for split, count, split_seed in (("train", train_count, seed), ("test", test_count, seed + 1)):
        for key, value in make_window_crops(split, count, split_seed, **crop_kwargs).items():
            arrays[f"{split}_{key}"] = value
    np.savez_compressed(path, **arrays)


def box_templates(labels: np.ndarray, boxes: np.ndarray, num_classes: int = 10, window: int = WINDOW) -> np.ndarray:
    """``(num_classes, 4)``: the mean ink box of each digit class in its crops, the box a detection of that class
    draws in its window (a "1" is narrower than a "0"); the whole window for a class without crops."""
    whole = np.array([0, 0, window, window], np.float32)
    return np.stack([boxes[labels == c].mean(axis=0) if (labels == c).any() else whole
                     for c in range(num_classes)]).astype(np.float32)


def detection_canvases(count: int, seed: int, canvas_size: tuple[int, int] = (128, 128),
                       num_digits: tuple[int, int] = (2, 5), scale: tuple[float, float] = TEST_SCALE,
                       clutter: int = 6, root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The detection test set: :func:`cnn.data.canvas.make_canvases` of MNIST's test digits, of sizes spanning the
    pyramid ``PYRAMID`` (21 to 62 pixels a side), with clutter."""
    return make_canvases("test", count, seed, canvas_size=canvas_size, num_digits=num_digits, root=root, scale=scale,
                         clutter=clutter)


def image_pyramid(image: np.ndarray, scales: tuple[float, ...] = PYRAMID) -> list[np.ndarray]:
    """``image (H, W)`` or ``(H, W, C)`` uint8 rescaled by each of ``scales`` to ``round(H s)×round(W s)`` (Pillow's
    bilinear filter, antialiased when shrinking, as the canvases' digits are): the levels a sliding window scans."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C) uint8, got {image.dtype} {image.shape}")
    picture = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    levels = []
    for scale in scales:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        levels.append(np.asarray(picture.resize(size, Image.Resampling.BILINEAR)).reshape(size[1], size[0],
                                                                                           *image.shape[2:]))
    return levels


@dataclasses.dataclass(frozen=True)
class CanvasSplit:
    """Detection canvases with their ground truth: ``images (N, H, W, 1)`` uint8, ``boxes (N, K, 4)`` (padding
    zeros), ``box_labels (N, K)`` (padding -1), and the ``templates (10, 4)`` a detection of each class draws in its
    window (:func:`box_templates` of the train crops: no test digit shapes them)."""

    images: np.ndarray
    boxes: np.ndarray
    box_labels: np.ndarray
    templates: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


class WindowSource:
    """Dataset ``digit_windows``: the window classifier's crops (11 classes, ``BACKGROUND`` = 10) and the canvases
    it detects digits on. Splits: ``train`` (:func:`make_window_crops` of MNIST's train digits), ``test`` (crops of
    its test digits) and ``canvases`` (:func:`detection_canvases`, test digits: a :class:`CanvasSplit`, what the
    ``detection`` task evaluates). ``config.dataset.generator`` holds ``train_examples``, ``test_examples``,
    ``canvases`` (how many of each), ``canvas_size`` and ``seed``; the crops are ``WINDOW``×``WINDOW``."""

    splits = ("train", "test", "canvases")

    def __init__(self, generator: dict, root: str | None = None):
        self.options, self.root = dict(generator), root
        self._splits: dict[str, ArraySplit | CanvasSplit] = {}  # each made once
        self._crops: dict[str, dict[str, np.ndarray]] = {}
        for key in ("train_examples", "test_examples", "canvases", "seed"):
            value = self.options.get(key)
            least = 0 if key == "seed" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise UserError(f"config.dataset.generator.{key} must be an integer >= {least}, got {value!r}")
        pixels = self.crops("train")["images"].astype(np.float64) / 255.0
        self.spec = DatasetSpec(BACKGROUND + 1, (WINDOW, WINDOW, 1), 255.0, (round(float(pixels.mean()), 4),),
                                (round(float(pixels.std()), 4),), self.splits)

    def crops(self, split: str) -> dict[str, np.ndarray]:
        """:func:`make_window_crops` of ``split`` ("train" or "test"), made once."""
        if split not in self._crops:
            seed = self.options["seed"] + (split == "test")  # as write_window_dataset
            self._crops[split] = make_window_crops(split, self.options[f"{split}_examples"], seed, root=self.root)
        return self._crops[split]

    def load(self, split: str) -> ArraySplit | CanvasSplit:
        if split not in self.splits:
            raise UserError(f"dataset 'digit_windows' has no split {split!r}; choose from {list(self.splits)}")
        if split in self._splits:
            return self._splits[split]
        if split == "canvases":
            train = self.crops("train")
            try:
                made = detection_canvases(self.options["canvases"], self.options["seed"],
                                          tuple(self.options.get("canvas_size") or (128, 128)), root=self.root)
            except ValueError as error:
                raise UserError(f"config.dataset.generator: {error}") from None
            self._splits[split] = CanvasSplit(made["images"][..., None], made["boxes"], made["box_labels"],
                                              box_templates(train["labels"], train["boxes"]))
        else:
            crops = self.crops(split)
            self._splits[split] = ArraySplit(crops["images"], crops["labels"].astype(np.int32))
        return self._splits[split]


DATASETS.register("digit_windows", lambda c: WindowSource(c.get("generator"), c.get("manual_dir")))
