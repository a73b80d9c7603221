"""Datasets by name: where the examples come from and how pixels are scaled.

Every split is loaded through TFDS (prepared in ``data_dir``, default ``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets``) into host memory as numpy arrays; batching is done by :mod:`cnn.data.pipeline`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from cnn.errors import UserError
from cnn.registry import Registry

DATASETS = Registry("dataset")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A TFDS dataset and the statistics used to standardize it: ``(pixel / scale - mean) / std``."""

    tfds_name: str
    num_classes: int
    image_shape: tuple[int, ...]
    scale: float
    mean: float
    std: float
    splits: tuple[str, ...] = ("train", "test")


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """One split in memory: ``images (N, *spatial, channels)`` and integer ``labels (N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


# Mean and std of the training pixels after scaling to [0, 1].
DATASETS.register("digits", lambda: DatasetSpec("sklearn_digits", 10, (8, 8, 1), 16.0, 0.3054, 0.3755))


def resolve_data_dir(data_dir: str | None) -> str:
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def load_split(name: str, split: str, data_dir: str | None = None) -> ArraySplit:
    """Load ``split`` of dataset ``name`` into memory, preparing the TFDS dataset on first use."""
    spec = DATASETS.get(name)()
    if split not in spec.splits:
        raise UserError(f"dataset {name!r} has no split {split!r}; choose from {list(spec.splits)}")
    from cnn.platform import hide_accelerators_from_tensorflow

    hide_accelerators_from_tensorflow()
    import tensorflow_datasets as tfds

    from cnn.data import digits  # noqa: F401  (registers the sklearn_digits builder with TFDS)

    builder = tfds.builder(spec.tfds_name, data_dir=resolve_data_dir(data_dir))
    builder.download_and_prepare()
    images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    return ArraySplit(images=np.asarray(images), labels=np.asarray(labels, dtype=np.int32))
