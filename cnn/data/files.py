"""Datasets from the user's own files: an image folder, or a numpy ``.npz`` (``config.dataset.path``).

* ``image_folder``: ``dataset.path/<split>/<class>/*.png|jpg`` (one subfolder per class), each image fitted to
  ``dataset.image_size`` (shorter side resized, centre crop; :func:`cnn.data.streaming.fit_image`).
* ``numpy``: ``dataset.path`` is an ``.npz`` with ``<split>_images`` and ``<split>_labels`` arrays.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence

import numpy as np

from cnn.data.sources import (
    DATASETS,
    ArraySplit,
    DatasetSpec,
    check_example_shape,
    check_split,
    too_large_for_memory,
)
from cnn.data.streaming import StreamingSplit, fit_image
from cnn.errors import ConfigError, UserError


def _channel_stats(images: np.ndarray, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / scale
    return tuple(pixels.mean(0).round(4).tolist()), tuple(pixels.std(0).round(4).tolist())


class NumpySource:
    """``path``: an ``.npz`` holding ``<split>_images`` (uint8 or float) and ``<split>_labels`` for each split."""

    def __init__(self, path: str):
        if not path or not os.path.isfile(path):
            raise UserError(f"dataset 'numpy': config.dataset.path={path!r} is not a file")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                self.arrays = {k: arrays[k] for k in arrays.files}
        except (EOFError, OSError, TypeError, ValueError, zipfile.BadZipFile) as error:
            # not an .npz (another file: ValueError; one .npy array: TypeError, no context manager), or a damaged one
            reason = next(iter(str(error).splitlines()), type(error).__name__)
            raise UserError(f"dataset 'numpy': {path} is not a readable .npz of arrays ({reason})") from None
        splits = tuple(sorted(k[: -len("_images")] for k in self.arrays if k.endswith("_images")))
        if "train" not in splits or any(f"{s}_labels" not in self.arrays for s in splits):
            raise UserError(f"{path}: expected arrays train_images, train_labels (and <split>_images/_labels for "
                            f"other splits), got {sorted(self.arrays)}")
        floats = [f"{s}_labels ({self.arrays[f'{s}_labels'].dtype})" for s in splits
                  if not np.issubdtype(self.arrays[f"{s}_labels"].dtype, np.integer)]
        if floats:  # a cast would truncate 2.7 to 2 without a word
            raise UserError(f"{path}: labels must be integers (class indices), got {', '.join(floats)}")
        train = self.arrays["train_images"]
        if train.ndim < 3:
            raise UserError(f"{path}: train_images must be (N, *spatial, channels), got shape {train.shape}")
        scale = 255.0 if train.dtype == np.uint8 else 1.0
        mean, std = _channel_stats(train, scale)
        self.spec = DatasetSpec(int(self.arrays["train_labels"].max()) + 1, tuple(train.shape[1:]), scale, mean, std,
                                splits)

    def load(self, split: str) -> ArraySplit:
        check_split("numpy", split, self.spec.splits)
        check_example_shape("numpy", split, self.arrays[f"{split}_images"], self.spec.image_shape)
        return ArraySplit(self.arrays[f"{split}_images"], self.arrays[f"{split}_labels"].astype(np.int32))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class ImageFolderSource:
    """``path/<split>/<class>/<image>``: class names are the sorted subfolder names of the train split.

    A split is read into memory unless it is too large for it (or ``streaming`` is true): then each batch reads its
    files. The normalization statistics come from the whole train split in memory, from ``STATS_SAMPLE`` of its
    images (a fixed random sample) when streaming.
    """

    STATS_SAMPLE = 2048

    def __init__(self, path: str, image_size: Sequence[int], channels: int = 3, streaming: bool | None = None,
                 workers: int = 0):
        if not path or not os.path.isdir(os.path.join(path, "train")):
            raise UserError(f"dataset 'image_folder': config.dataset.path={path!r} must hold a train/ folder with "
                            "one subfolder per class")
        if channels not in (1, 3):
            raise ConfigError(f"config.dataset.channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        self.path, self.channels, self.streaming, self.workers = path, channels, streaming, workers
        self.image_shape = (*tuple(image_size), channels)
        self.classes = sorted(d for d in os.listdir(os.path.join(path, "train"))
                              if os.path.isdir(os.path.join(path, "train", d)))
        if not self.classes:
            raise UserError(f"{path}/train has no class subfolders")
        splits = tuple(s for s in sorted(os.listdir(path)) if os.path.isdir(os.path.join(path, s)))
        self._train = train = self._streaming_split("train")  # listed once: ImageNet's holds 1.28M files
        sample = np.arange(len(train))
        if self._streams(train):
            sample = np.sort(np.random.default_rng(0).permutation(len(train))[: self.STATS_SAMPLE])
        mean, std = _channel_stats(train.gather(sample)[0], 255.0)
        self.spec = DatasetSpec(len(self.classes), self.image_shape, 255.0, mean, std, splits)

    def _files(self, split: str) -> list[tuple[str, int]]:
        root = os.path.join(self.path, split)
        unknown = sorted(set(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) - set(self.classes))
        if unknown:  # its images would be dropped silently, or learned as another class
            raise UserError(f"{root}: class folder(s) {unknown[:5]} are not classes of {self.path}/train (its "
                            f"{len(self.classes)} classes: {self.classes[:5]}{'...' if len(self.classes) > 5 else ''})")
        files = []
        for label, name in enumerate(self.classes):
            folder = os.path.join(self.path, split, name)
            if os.path.isdir(folder):
                files += [(os.path.join(folder, f), label) for f in sorted(os.listdir(folder))
                          if f.lower().endswith(IMAGE_SUFFIXES)]
        if not files:
            raise UserError(f"{self.path}/{split}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
        return files

    def _streaming_split(self, split: str) -> StreamingSplit:
        from PIL import Image

        files = self._files(split)

        def read(index: int) -> tuple[np.ndarray, int]:
            file, label = files[index]
            try:
                with Image.open(file) as image:
                    pixels = np.asarray(image.convert("RGB" if self.channels == 3 else "L"), np.uint8)
            except (OSError, ValueError) as error:  # PIL: a corrupt, truncated or mislabeled file
                raise UserError(f"{file}: not a readable image ({error})") from None
            return fit_image(pixels, self.image_shape), label

        return StreamingSplit(read, len(files), self.image_shape, self.workers)

    def _streams(self, split: StreamingSplit) -> bool:
        return self.streaming or (self.streaming is None and too_large_for_memory(len(split), self.image_shape))

    def load(self, split: str) -> ArraySplit | StreamingSplit:
        check_split("image_folder", split, self.spec.splits)
        stream = self._train if split == "train" else self._streaming_split(split)
        return stream if self._streams(stream) else ArraySplit(*stream.gather(np.arange(len(stream))))


DATASETS.register("numpy", lambda c: NumpySource(c.get("path")))
DATASETS.register("image_folder", lambda c: ImageFolderSource(c.get("path"), c.get("image_size") or (32, 32),
                                                              c.get("channels") or 3, c.get("streaming"),
                                                              c.get("num_workers") or 0))
