"""TFDS builder for the ISBI 2012 EM segmentation challenge: 30 annotated + 30 test slices, 512x512 grayscale.

Serial-section TEM of the Drosophila first-instar larva ventral nerve cord (Cardona et al. 2010, PLoS Biol
8(10):e1000502); Arganda-Carreras et al. 2015; the U-Net paper's dataset. The slices are the PNGs of
github.com/zhixuhao/unet ``data/membrane`` (one per slice of the challenge's ``train-volume.tif``,
``train-labels.tif`` and ``test-volume.tif``).

Features: ``image`` (512, 512, 1) uint8, the original PNG bytes; ``mask`` (512, 512, 1) uint8 in {0, 1} with
**1 = cell (label 255), 0 = membrane (label 0)**, i.e. ``label_png // 255``; ``has_mask``; ``slice`` (0-29, the
position in the stack: neighbouring slices are 50 nm apart, so they are not independent).

Splits: ``train`` = the 30 annotated slices; ``test`` = the 30 challenge test slices, whose masks were never
published. TFDS needs the same features in every split, so test examples carry an all-zero ``mask`` with
``has_mask = False``: filter on ``has_mask`` before computing a loss or a score (the train split is all True).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from cnn.data import checksums
from cnn.data.builders import manual

SHARED_FOLDER = "isbi2012_em"
NUM_SLICES = 30
SIZE = 512
FOLDERS = {"image": "train/image", "label": "train/label", "test": "test"}  # under manual_dir
LABEL_MEMBRANE, LABEL_CELL = 0, 255


def read_mask(path: Path) -> np.ndarray:
    """A label PNG as a (512, 512, 1) uint8 mask, 1 = cell, 0 = membrane; ``ValueError`` for other pixel values."""
    with Image.open(path) as png:
        label = np.asarray(png)
    if label.shape != (SIZE, SIZE) or not np.isin(label, (LABEL_MEMBRANE, LABEL_CELL)).all():
        raise ValueError(f"{path}: expected a {SIZE}x{SIZE} single-channel label image of 0 (membrane) and "
                         f"255 (cell), got shape {label.shape} with values {np.unique(label)[:10]}")
    return (label == LABEL_CELL).astype(np.uint8)[..., None]


class Isbi2012Em(tfds.core.GeneratorBasedBuilder):
    """The ISBI 2012 EM segmentation slices as a TFDS dataset (registered as ``isbi2012_em``)."""

    name = "isbi2012_em"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "30 annotated train slices, 30 unannotated test slices."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"manual_dir is shared/data/{SHARED_FOLDER}: it holds train/image/{{0..29}}.png, train/label/{{0..29}}.png "
        "and test/{0..29}.png, the slices of github.com/zhixuhao/unet data/membrane."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(SIZE, SIZE, 1)),
                    "mask": tfds.features.Image(shape=(SIZE, SIZE, 1)),
                    "has_mask": tfds.features.Scalar(dtype=np.bool_),
                    "slice": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("image", "mask"),
            homepage="https://imagej.net/events/isbi-2012-segmentation-challenge",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        names = [f"{i}.png" for i in range(NUM_SLICES)]
        files = [f"{folder}/{name}" for folder in FOLDERS.values() for name in names]
        root = manual.manual_dir(self, dl_manager, files)
        for folder in FOLDERS.values():
            shared = f"{SHARED_FOLDER}/{folder}"
            checksums.verify_folder(root / folder, names, shared, checksums.FOLDER_SHA256[shared])
        return {"train": self._generate_examples(root, annotated=True),
                "test": self._generate_examples(root, annotated=False)}

    def _generate_examples(self, root: Path, annotated: bool):
        no_mask = np.zeros((SIZE, SIZE, 1), np.uint8)
        for i in range(NUM_SLICES):
            image = root / (FOLDERS["image"] if annotated else FOLDERS["test"]) / f"{i}.png"
            mask = read_mask(root / FOLDERS["label"] / f"{i}.png") if annotated else no_mask
            yield i, {"image": image, "mask": mask, "has_mask": annotated, "slice": i}
