"""Moving digits: clips of one real MNIST digit sliding across a blank canvas (Moving-MNIST style, Srivastava et al.
2015), labelled by the direction of motion, a label that needs the order of the frames.

Clip ``i`` of a split: a digit drawn from MNIST's images of that split (test clips from MNIST's test digits only),
a direction ``label`` (0 right, 1 left, 2 down, 3 up) and a speed ``v`` of 1 or 2 pixels per frame; frame ``t``
(of ``frames``) holds the 28×28 digit with its top-left corner at

    p(t) = p(0) + t · v · u(label),       u = (0, 1), (0, -1), (1, 0), (-1, 0)  as (row, column)

on a ``size × size`` canvas of zeros, the start ``p(0)`` uniform among those that keep the digit inside for the whole
clip. A direction and its reverse visit the same positions with the same probabilities, so a model that pools
per-frame 2D features over time sees the same set of frames for both and cannot tell them apart; a convolution
over time (3D, (2+1)D) can. Seeded: the same ``(split, count, seed)`` gives the same clips.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cnn.data.sources import DATASETS, ArraySplit, DatasetSpec, check_split
from cnn.errors import UserError

MNIST_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
IMAGE_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
DIGIT = 28
DIRECTIONS = np.array([(0, 1), (0, -1), (1, 0), (-1, 0)])  # right, left, down, up as (row, column) steps
DIRECTION_NAMES = ("right", "left", "down", "up")
SPEEDS = (1, 2)


class Clips(NamedTuple):
    clips: np.ndarray  # (N, frames, size, size, 1) uint8
    labels: np.ndarray  # (N,) int32: the direction of motion
    digits: np.ndarray  # (N,) int64: the index of the MNIST image in its split
    positions: np.ndarray  # (N, frames, 2) int64: the digit's top-left (row, column) in each frame


def read_mnist_images(split: str, root: Path = MNIST_DIR) -> np.ndarray:
    """MNIST's images of ``split`` (``train`` or ``test``), ``(N, 28, 28)`` uint8, from the gzip idx file."""
    if split not in IMAGE_FILES:
        raise UserError(f"split must be one of {sorted(IMAGE_FILES)}, got {split!r}")
    path = Path(root) / IMAGE_FILES[split]
    try:
        with gzip.open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise UserError(f"{path}: cannot read the MNIST idx file ({error})") from None
    magic, count, rows, cols = np.frombuffer(data[:16], ">i4")
    if magic != 2051 or (rows, cols) != (DIGIT, DIGIT) or len(data) != 16 + count * rows * cols:
        raise UserError(f"{path}: not an idx3 file of 28×28 images (magic {magic}, shape {(count, rows, cols)})")
    return np.frombuffer(data, np.uint8, offset=16).reshape(count, DIGIT, DIGIT)


def make_clips(split: str, count: int, seed: int, *, frames: int = 10, size: int = 48,
               root: Path = MNIST_DIR) -> Clips:
    """``count`` clips from MNIST's ``split`` digits (see the module docstring)."""
    travel = (frames - 1) * max(SPEEDS)
    if size < DIGIT + travel:
        raise UserError(f"size must be at least {DIGIT + travel} for {frames} frames at up to {max(SPEEDS)} pixels "
                        f"per frame, got {size}")
    images = read_mnist_images(split, root)
    rng = np.random.default_rng([seed, list(IMAGE_FILES).index(split)])
    digits = rng.integers(len(images), size=count)
    labels = rng.integers(len(DIRECTIONS), size=count).astype(np.int32)
    speeds = rng.choice(SPEEDS, size=count)
    steps = DIRECTIONS[labels] * speeds[:, None]  # (N, 2)
    # start: uniform over the positions keeping the digit on the canvas from the first frame to the last
    span = size - DIGIT - np.abs(steps) * (frames - 1)  # (N, 2) free room per axis
    start = (rng.random((count, 2)) * (span + 1)).astype(np.int64) + np.maximum(-steps, 0) * (frames - 1)
    positions = start[:, None, :] + np.arange(frames)[None, :, None] * steps[:, None, :]
    clips = np.zeros((count, frames, size, size, 1), np.uint8)
    for i in range(count):
        for t, (row, col) in enumerate(positions[i]):
            clips[i, t, row : row + DIGIT, col : col + DIGIT, 0] = images[digits[i]]
    return Clips(clips, labels, digits, positions)


class MovingDigitsSource:
    """Dataset ``moving_digits``: the clips of :func:`make_clips`, ``(frames, size, size, 1)`` uint8, labelled by the
    direction of motion (4 classes). ``config.dataset.image_size`` is the square canvas ``(size, size)``;
    ``config.dataset.generator`` holds ``train_examples``, ``test_examples``, ``frames`` and ``seed``;
    ``config.dataset.manual_dir`` the MNIST idx files (default ``../shared/data/mnist``)."""

    def __init__(self, image_size: tuple[int, int], generator: dict, root: str | None = None):
        size = tuple(image_size)
        if len(size) != 2 or size[0] != size[1]:
            raise UserError(f"config.dataset.image_size must be a square canvas (size, size), got {size}")
        self.size, self.options, self.root = size[0], dict(generator), Path(root) if root else MNIST_DIR
        for key in ("train_examples", "test_examples", "frames"):
            if not isinstance(self.options.get(key), int) or self.options[key] < 1:
                raise UserError(f"config.dataset.generator.{key} must be a positive integer, got "
                                f"{self.options.get(key)!r}")
        self._splits: dict[str, ArraySplit] = {}  # each made once
        pixels = self.load("train").images.astype(np.float64) / 255.0
        self.spec = DatasetSpec(len(DIRECTIONS), (self.options["frames"], self.size, self.size, 1), 255.0,
                                (round(float(pixels.mean()), 4),), (round(float(pixels.std()), 4),), ("train", "test"))

    def load(self, split: str) -> ArraySplit:
        check_split("moving_digits", split, tuple(IMAGE_FILES))
        if split not in self._splits:
            made = make_clips(split, self.options[f"{split}_examples"], self.options["seed"],
                              frames=self.options["frames"], size=self.size, root=self.root)
            self._splits[split] = ArraySplit(made.clips, made.labels)
        return self._splits[split]


DATASETS.register("moving_digits", lambda c: MovingDigitsSource(c.get("image_size") or (48, 48), c.get("generator"),
                                                                c.get("manual_dir")))
