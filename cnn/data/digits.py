"""TFDS builder over the 8x8 handwritten digits that scikit-learn ships (no download).

1,797 grayscale 8x8 images with values 0..16 (UCI "Optical Recognition of Handwritten Digits", the test set of
Alpaydin & Kaynak 1998). Fixed split, in file order: the first 1,437 images are ``train``, the last 360 ``test``.
The file is read from scikit-learn's package data, so building the dataset needs no network.
"""

from __future__ import annotations

import gzip
import importlib.resources
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

NUM_TRAIN = 1437
NUM_EXAMPLES = 1797


def read_bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """Images ``(1797, 8, 8)`` uint8 in 0..16 and labels ``(1797,)`` from scikit-learn's ``digits.csv.gz``."""
    path = importlib.resources.files("sklearn.datasets") / "data" / "digits.csv.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape != (NUM_EXAMPLES, 65):
        raise ValueError(f"{path}: expected a (1797, 65) table, got {table.shape}")
    return table[:, :64].reshape(-1, 8, 8).astype(np.uint8), table[:, 64]


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """The scikit-learn 8x8 digits as a TFDS dataset (registered as ``sklearn_digits``)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First 1,437 examples train, last 360 test."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # the data ships with scikit-learn
        images, labels = read_bundled_digits()
        return {
            "train": self._generate_examples(images[:NUM_TRAIN], labels[:NUM_TRAIN], offset=0),
            "test": self._generate_examples(images[NUM_TRAIN:], labels[NUM_TRAIN:], offset=NUM_TRAIN),
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, offset: int):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield offset + i, {"image": image[..., None], "label": int(label)}
