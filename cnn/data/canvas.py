"""Canvases of real MNIST digits for segmentation and detection: a seeded generator that pastes digits at random
positions and sizes onto a black canvas, with their per-pixel classes and boxes.

A digit pasted at scale ``s`` is the 28×28 MNIST image resized to ``round(28 s)`` pixels a side (Pillow's bilinear
filter, antialiased when shrinking) and placed whole on the canvas. Its **ink** is the set of its pixels brighter
than ``INK_THRESHOLD`` × its brightest pixel; these pixels, and only these, carry its class in ``class_map``
(``0`` = background, digit ``d`` -> ``d + 1``), and its box is the tight box around them. Boxes are in continuous
pixel coordinates ``(x0, y0, x1, y1)``: pixel ``(row r, column c)`` covers ``[c, c + 1) × [r, r + 1)``, so a box
holds columns ``x0 .. x1 - 1`` and its area is its pixel count's bounding rectangle (COCO's convention).

* The image is the pixelwise maximum of what is pasted (white ink on black adds up like strokes on paper).
* ``overlap=False`` (default): each digit's square never meets another's; a digit that finds no free place in 100
  random tries is not pasted (a crowded canvas holds fewer digits than asked). ``overlap=True``: digits go anywhere
  and a later digit's ink overwrites the classes of earlier ones (their boxes stay those of their own ink).
* ``clutter``: fragments (a quarter to a half of a side) cut around an ink pixel of other digits of the same array,
  pasted where no digit is: ink that is background in ``class_map``, so a detector must learn to ignore parts.

The train split's canvases use only MNIST's train digits and the test split's only its test digits:
:func:`make_canvases` draws from :func:`load_mnist` of its own split.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from cnn.data.checksums import verify
from cnn.data.idx import read_idx
from cnn.data.sources import DATASETS, TFDS_DATASETS, ArraySplit, DatasetSpec
from cnn.errors import UserError

MNIST_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
SPLIT_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
INK_THRESHOLD = 0.5
PLACEMENT_TRIES = 100


class Canvas(NamedTuple):
    image: np.ndarray  # (H, W) uint8
    class_map: np.ndarray  # (H, W) int32: 0 background, digit d -> d + 1
    boxes: np.ndarray  # (K, 4) float32 x0, y0, x1, y1: the tight box of each digit's ink
    box_labels: np.ndarray  # (K,) int32 digit classes


def load_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's ``split`` (``train`` or ``test``) from the idx files in ``root`` (default ``<repo>/../shared/data/
    mnist``), each checked against its sha256: images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64, read-only."""
    if split not in SPLIT_FILES:
        raise UserError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    return _load_mnist(split, os.path.normpath(root or MNIST_DIR))


@functools.lru_cache(maxsize=4)
def _load_mnist(split: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name in SPLIT_FILES[split]:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise UserError(f"{path}: MNIST file not found (shared/data/README.md says where the idx files come from)")
        verify(path, TFDS_DATASETS["mnist"].manual_files[name])
        arrays.append(read_idx(path))
    images, labels = arrays[0], arrays[1].astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def ink_mask(patch: np.ndarray) -> np.ndarray:
    """The pixels of a pasted digit that carry its class: brighter than ``INK_THRESHOLD`` × its brightest pixel."""
    return patch > INK_THRESHOLD * patch.max()


def _resize(digit: np.ndarray, side: int) -> np.ndarray:
    if digit.shape == (side, side):
        return digit
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR))


def _free_spot(rng: np.random.Generator, shape: tuple[int, int], canvas_size: tuple[int, int],
               taken: list[tuple[int, int, int, int]]) -> tuple[int, int] | None:
    """Top-left ``(y, x)`` of a ``shape`` rectangle inside the canvas that meets none of ``taken`` (y0, x0, y1, x1)."""
    (h, w), (height, width) = shape, canvas_size
    for _ in range(PLACEMENT_TRIES):
        y, x = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
        if all(y + h <= t[0] or t[2] <= y or x + w <= t[1] or t[3] <= x for t in taken):
            return y, x
    return None


def _check_args(digits: np.ndarray, labels: np.ndarray, canvas_size: tuple[int, int],
                num_digits: int | tuple[int, int], scale: tuple[float, float], clutter: int) -> tuple[int, int]:
    if digits.ndim != 3 or digits.dtype != np.uint8 or len(digits) != len(labels) or not len(digits):
        raise ValueError(f"digits must be a non-empty (N, h, w) uint8 array with N labels, got {digits.dtype} "
                         f"{digits.shape} and {np.shape(labels)} labels")
    low, high = (num_digits, num_digits) if np.isscalar(num_digits) else num_digits
    if not 0 <= low <= high:
        raise ValueError(f"num_digits must be a count >= 0 or a range (low, high) with 0 <= low <= high, "
                         f"got {num_digits}")
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must be a range (low, high) with 0 < low <= high, got {scale}")
    largest = round(max(digits.shape[1:]) * scale[1])
    if min(canvas_size) < largest:
        raise ValueError(f"canvas_size {tuple(canvas_size)} is smaller than the largest digit ({largest} pixels a side "
                         f"at scale {scale[1]})")
    if clutter < 0:
        raise ValueError(f"clutter must be a count >= 0, got {clutter}")
    return int(low), int(high)


def paste_digits(digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator, canvas_size: tuple[int, int],
                 num_digits: int | tuple[int, int], scale: tuple[float, float] = (1.0, 1.0), clutter: int = 0,
                 overlap: bool = False) -> Canvas:
    """One canvas of ``canvas_size`` (H, W) holding ``num_digits`` (a count, or a range ``(low, high)`` drawn from
    inclusively) digits drawn from ``digits``/``labels``, each scaled by a factor drawn uniformly from ``scale``,
    and ``clutter`` fragments of other digits (see the module docstring)."""
    low, high = _check_args(digits, labels, canvas_size, num_digits, scale, clutter)
    image = np.zeros(canvas_size, np.uint8)
    class_map = np.zeros(canvas_size, np.int32)
    taken, boxes, box_labels = [], [], []

    def scaled_digit() -> tuple[np.ndarray, int]:
        index = int(rng.integers(len(digits)))
        return _resize(digits[index], round(digits.shape[1] * rng.uniform(*scale))), int(labels[index])

    for _ in range(int(rng.integers(low, high + 1))):
        patch, label = scaled_digit()
        spot = _free_spot(rng, patch.shape, canvas_size, [] if overlap else taken)
        mask = ink_mask(patch)
        if spot is None or not mask.any():
            continue
        (y, x), (h, w) = spot, patch.shape
        taken.append((y, x, y + h, x + w))
        np.maximum(image[y:y + h, x:x + w], patch, out=image[y:y + h, x:x + w])
        class_map[y:y + h, x:x + w][mask] = label + 1
        rows, cols = np.nonzero(mask)
        boxes.append((x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1))
        box_labels.append(label)

    for _ in range(clutter):
        patch, _ = scaled_digit()
        rows, cols = np.nonzero(ink_mask(patch))
        if not len(rows):
            continue
        side = int(rng.integers(max(1, len(patch) // 4), len(patch) // 2 + 1))
        centre = int(rng.integers(len(rows)))  # cut around an ink pixel, so the fragment holds ink
        r0 = int(np.clip(rows[centre] - side // 2, 0, len(patch) - side))
        c0 = int(np.clip(cols[centre] - side // 2, 0, len(patch) - side))
        fragment = patch[r0:r0 + side, c0:c0 + side]
        spot = _free_spot(rng, fragment.shape, canvas_size, taken)
        if spot is not None:
            y, x = spot
            np.maximum(image[y:y + side, x:x + side], fragment, out=image[y:y + side, x:x + side])

    return Canvas(image, class_map, np.array(boxes, np.float32).reshape(-1, 4), np.array(box_labels, np.int32))


def make_canvases(split: str, count: int, seed: int, *, canvas_size: tuple[int, int], num_digits: int | tuple[int, int],
                  root: str | os.PathLike | None = None, **paste_kwargs) -> dict[str, np.ndarray]:
    """``count`` canvases of MNIST's ``split`` digits (:func:`paste_digits` with the other arguments), the same for
    the same ``(split, seed)``, stacked: ``images (count, H, W)`` uint8, ``class_maps (count, H, W)`` int32, and the
    boxes padded to the most digits a canvas may hold, ``K``: ``boxes (count, K, 4)`` float32 (padding zeros),
    ``box_labels (count, K)`` int32 (padding -1) and ``num_boxes (count,)`` int32."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    digits, labels = load_mnist(split, root)
    rng = np.random.default_rng(seed)
    canvases = [paste_digits(digits, labels, rng, canvas_size, num_digits, **paste_kwargs) for _ in range(count)]
    most = num_digits if np.isscalar(num_digits) else num_digits[1]
    boxes = np.zeros((count, most, 4), np.float32)
    box_labels = np.full((count, most), -1, np.int32)
    for i, canvas in enumerate(canvases):
        boxes[i, :len(canvas.boxes)] = canvas.boxes
        box_labels[i, :len(canvas.box_labels)] = canvas.box_labels
    return {"images": np.stack([c.image for c in canvases]), "class_maps": np.stack([c.class_map for c in canvases]),
            "boxes": boxes, "box_labels": box_labels, "num_boxes": np.array([len(c.boxes) for c in canvases], np.int32)}


class CanvasSource:
    """Dataset ``digit_canvases``: segmentation of real MNIST digits on canvases, a class per pixel (0 background,
    ``d + 1`` digit ``d``: 11 classes). ``config.dataset.image_size`` is the canvas; ``config.dataset.generator``
    holds ``train_examples``, ``test_examples``, ``num_digits`` (a count or a ``(low, high)`` range), ``scale`` (a
    ``(low, high)`` range of digit sizes, 1.0 = 28 px) and ``seed``. Train canvases are made from MNIST's train
    digits, test canvases from its test digits only; each split is the same for the same settings."""

    def __init__(self, image_size: tuple[int, int], generator: dict, root: str | None = None):
        self.size, self.options, self.root = tuple(image_size), dict(generator), root
        self._splits: dict[str, ArraySplit] = {}  # each made once
        for key in ("train_examples", "test_examples"):
            if not isinstance(self.options.get(key), int) or self.options[key] < 1:
                raise UserError(f"config.dataset.generator.{key} must be a positive integer, got "
                                f"{self.options.get(key)!r}")
        mean, std = self._stats(self.load("train").images)
        self.spec = DatasetSpec(11, (*self.size, 1), 255.0, mean, std, ("train", "test"), kind="dense")

    @staticmethod
    def _stats(images: np.ndarray) -> tuple[tuple[float], tuple[float]]:
        pixels = images.astype(np.float64) / 255.0
        return (round(float(pixels.mean()), 4),), (round(float(pixels.std()), 4),)

    def load(self, split: str) -> ArraySplit:
        if split not in SPLIT_FILES:
            raise UserError(f"dataset 'digit_canvases' has no split {split!r}; choose from {list(SPLIT_FILES)}")
        if split not in self._splits:
            options = self.options
            made = make_canvases(split, options[f"{split}_examples"], options["seed"], canvas_size=self.size,
                                 num_digits=tuple(options["num_digits"]), scale=tuple(options["scale"]),
                                 root=self.root)
            self._splits[split] = ArraySplit(made["images"][..., None], made["class_maps"])
        return self._splits[split]


DATASETS.register("digit_canvases", lambda c: CanvasSource(c.get("image_size") or (64, 64), c.get("generator"),
                                                           c.get("manual_dir")))
