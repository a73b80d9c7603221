"""Splits read example by example, for datasets larger than host memory (ImageNet's 1.28M images).

A streaming split holds no pixels. ``gather(indices)`` reads the records at those indices (random access: a TFDS
dataset prepared as ArrayRecord, or one image file each), decodes them and fits each image to the dataset's shape
``(H, W, C)`` on a pool of threads (image decoders release the GIL):

    scale = max(H / h, W / w)                       the shorter side (relative to the target) reaches the target
    image  -> resize to (round(h * scale), round(w * scale)), antialiased bilinear
           -> the centre H × W crop

so the aspect ratio is kept and nothing is stretched. For ImageNet at 256 × 256 this is the usual "resize the shorter
side to 256, then crop" of He et al.; a random 224 crop of it is the training input, the centre 224 crop the eval one.

Batching stays step-indexed (:mod:`cnn.data.pipeline`): the batch of step ``k`` is a pure function of the seed and
``k``, whether the split lives in memory or is streamed, so resuming is exact either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cnn.errors import UserError

ReadExample = Callable[[int], tuple[np.ndarray, int]]
CheckLabels = Callable[[np.ndarray], None]


def default_workers() -> int:
    return min(32, os.cpu_count() or 1)


def fit_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize ``image (h, w[, c])`` so that it covers ``shape = (H, W, C)``, then take the centre crop."""
    from PIL import Image

    if image.shape == tuple(shape):
        return image
    if len(shape) != 3:
        raise UserError(f"an example of shape {image.shape} differs from the dataset's {tuple(shape)}; only 2D images "
                        "are resized")
    height, width, channels = shape
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] != channels:
        raise UserError(f"an image of shape {image.shape} does not have the dataset's {channels} channel(s)")
    h, w = image.shape[:2]
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        size = (max(width, round(w * scale)), max(height, round(h * scale)))  # PIL sizes are (width, height)
        resized = Image.fromarray(image.squeeze(-1) if channels == 1 else image).resize(size, Image.BILINEAR)
        top, left = (size[1] - height) // 2, (size[0] - width) // 2
        image = np.asarray(resized).reshape(size[1], size[0], channels)[top : top + height, left : left + width]
    return np.ascontiguousarray(image, np.uint8)


class StreamingSplit:
    """``length`` examples, each read by ``read(index) -> (image, label)`` when a batch asks for it.

    Its labels are seen only when read, so ``check_labels`` (set by the task that learns from the split:
    ``Task.check_split``) checks those of every gathered batch."""

    def __init__(self, read: ReadExample, length: int, image_shape: Sequence[int], workers: int = 0):
        if length < 1:
            raise UserError("a streaming split needs at least one example")
        self.read, self.length, self.image_shape = read, length, tuple(image_shape)
        self.workers = workers or default_workers()
        self.check_labels: CheckLabels | None = None
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return self.length

    def _read_many(self, indices: np.ndarray) -> list[tuple[np.ndarray, int]]:
        return [self.read(int(i)) for i in indices]

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        images, labels = self.gather(indices)
        return {"image": images, "label": labels}

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The images ``(len(indices), *image_shape)`` and labels at ``indices``, in that order."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cnn-decode")
        # One chunk per worker: a task per example costs more than decoding a small image.
        chunks = np.array_split(np.asarray(indices), min(self.workers, max(len(indices), 1)))
        examples = [example for chunk in self._pool.map(self._read_many, chunks) for example in chunk]
        images = np.stack([image for image, _ in examples]) if examples else np.zeros((0, *self.image_shape), np.uint8)
        labels = np.asarray([label for _, label in examples], np.int32)
        if self.check_labels is not None:
            self.check_labels(labels)
        return images, labels
