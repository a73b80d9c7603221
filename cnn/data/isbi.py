"""Dataset ``isbi2012_em``: the ISBI 2012 EM segmentation slices (the U-Net paper's data) as a dense dataset.

The 30 annotated 512×512 slices of ``config.dataset.manual_dir`` (``shared/data/isbi2012_em``: ``train/image`` and
``train/label``, each folder checked against its published digest), read from the PNGs directly (the TFDS builder
``cnn/data/builders/isbi2012_em.py`` holds the same slices; 30 small PNGs need no preparation step). The challenge's
30 test slices have no published labels, so the split is fixed here: slices 0–24 ``train``, 25–29 ``heldout``
(neighbouring slices are 50 nm apart: the held-out slices are the end of the stack, not a random draw).

Classes: 0 membrane (label PNG 0), 1 cell (label PNG 255). With ``config.dataset.weight_map`` true every slice also
carries the U-Net loss weight map (``cnn.data.weight_map.unet_weight_map``, ``w0 = 10``, ``σ = 5``, cells = class 1)
as the split's per-pixel ``weight``, which the pipeline moves with the image and the segmentation task multiplies
into the loss. It costs about 1.7 s a slice, so it is computed once and kept in
``<data_dir>/isbi2012_em/weights_<split>.npz`` (``data_dir`` as for TFDS datasets).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from cnn.data.checksums import FOLDER_SHA256, verify_folder
from cnn.data.sources import DATASETS, ArraySplit, DatasetSpec, check_split, resolve_data_dir
from cnn.data.weight_map import unet_weight_map
from cnn.errors import UserError

NAME = "isbi2012_em"
SPLITS = {"train": range(0, 25), "heldout": range(25, 30)}
FOLDERS = ("train/image", "train/label")
CELL = 1


def _read(path: str) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png)


class IsbiSource:
    def __init__(self, manual_dir: str | None, data_dir: str | None = None, weight_map: bool = False):
        if not manual_dir or not all(os.path.isdir(os.path.join(manual_dir, f)) for f in FOLDERS):
            raise UserError(f"dataset {NAME!r}: config.dataset.manual_dir={manual_dir!r} must hold {list(FOLDERS)} "
                            "(shared/data/isbi2012_em)")
        names = [f"{i}.png" for i in range(30)]
        for folder in FOLDERS:
            shared = f"{NAME}/{folder}"
            verify_folder(os.path.join(manual_dir, folder), names, shared, FOLDER_SHA256[shared])
        self.manual_dir, self.data_dir, self.weight_map = manual_dir, resolve_data_dir(data_dir), weight_map
        # Mean and std of the 25 train slices' pixels / 255.
        self.spec = DatasetSpec(2, (512, 512, 1), 255.0, (0.4912,), (0.1712,), tuple(SPLITS), kind="dense")

    def load(self, split: str) -> ArraySplit:
        check_split(NAME, split, tuple(SPLITS))
        slices = SPLITS[split]
        images = np.stack([_read(os.path.join(self.manual_dir, FOLDERS[0], f"{i}.png")) for i in slices])[..., None]
        labels = np.stack([_read(os.path.join(self.manual_dir, FOLDERS[1], f"{i}.png")) for i in slices])
        if images.shape[1:] != self.spec.image_shape or not np.isin(labels, (0, 255)).all():
            raise UserError(f"{self.manual_dir}: expected 512×512 slices and labels of 0 (membrane) / 255 (cell), got "
                            f"{images.shape[1:]} with label values {np.unique(labels)[:10].tolist()}")
        labels = (labels == 255).astype(np.int32)
        return ArraySplit(images, labels, self._weights(split, labels) if self.weight_map else None)

    def _weights(self, split: str, labels: np.ndarray) -> np.ndarray:
        path = os.path.join(self.data_dir, NAME, f"weights_{split}.npz")
        if os.path.isfile(path):
            with np.load(path) as cached:
                return cached["weight"]
        weight = np.stack([unet_weight_map(label, w0=10.0, sigma=5.0, cell_class=CELL) for label in labels])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path + ".tmp.npz", weight=weight)
        os.replace(path + ".tmp.npz", path)  # whole or absent, even with several runs starting at once
        return weight


DATASETS.register(NAME, lambda c: IsbiSource(c.get("manual_dir"), c.get("data_dir"), bool(c.get("weight_map"))))
