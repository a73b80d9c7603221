"""TFDS builder for AdrenalMNIST3D (MedMNIST v2): 1,584 adrenal gland shape masks, normal or hyperplasia.

J. Yang et al., "MedMNIST v2", Scientific Data 2023 (CC BY 4.0). Each volume is the shape mask of one left or right
adrenal gland, cropped to 64 mm around its centre; label 0 = normal, 1 = hyperplasia (MedMNIST's ``INFO``).

| config | file                      | volume            | train | validation | test |
|--------|---------------------------|-------------------|-------|------------|------|
| ``28`` | ``adrenalmnist3d.npz``    | (28, 28, 28, 1)   | 1,188 | 98         | 298  |
| ``64`` | ``adrenalmnist3d_64.npz`` | (64, 64, 64, 1)   | 1,188 | 98         | 298  |

Splits are the npz's official patient-level ``train_*``, ``val_*`` (TFDS split ``validation``) and ``test_*``
arrays, in file order (the example key is the index in its array). Volumes are uint8 in 0..255, stored
zlib-compressed (they are mostly zeros).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from cnn.data.builders import manual

SHARED_FOLDER = "medmnist3d"
SPLITS = {"train": "train", "validation": "val", "test": "test"}  # TFDS split -> npz key prefix
LABEL_NAMES = ("normal", "hyperplasia")


@dataclasses.dataclass
class AdrenalConfig(tfds.core.BuilderConfig):
    """One edge length of the volumes and the npz file that holds them."""

    size: int = 28
    filename: str = "adrenalmnist3d.npz"


class AdrenalMnist3d(tfds.core.GeneratorBasedBuilder):
    """AdrenalMNIST3D as a TFDS dataset (registered as ``adrenal_mnist3d``, configs ``28`` and ``64``)."""

    name = "adrenal_mnist3d"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Official train/val/test split of the MedMNIST npz."}
    BUILDER_CONFIGS: ClassVar[list[AdrenalConfig]] = [
        AdrenalConfig(name="28", description="28x28x28 volumes", size=28, filename="adrenalmnist3d.npz"),
        AdrenalConfig(name="64", description="64x64x64 volumes", size=64, filename="adrenalmnist3d_64.npz"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"manual_dir is shared/data/{SHARED_FOLDER}: it holds adrenalmnist3d.npz (config 28) and "
        "adrenalmnist3d_64.npz (config 64), MedMNIST's files (zenodo.org/records/10519652)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(size, size, size, 1), dtype=np.uint8,
                                                  encoding=tfds.features.Encoding.ZLIB),
                    "label": tfds.features.ClassLabel(names=LABEL_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://medmnist.com/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        filename = self.builder_config.filename
        root = manual.manual_dir(self, dl_manager, [filename])
        manual.verify_files(root, SHARED_FOLDER, [filename])
        with np.load(root / filename, allow_pickle=False) as arrays:
            data = {key: arrays[key] for key in arrays.files}
        return {split: self._generate_examples(data[f"{key}_images"], data[f"{key}_labels"])
                for split, key in SPLITS.items()}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i, (image, label) in enumerate(zip(images, labels.reshape(-1), strict=True)):
            yield i, {"image": image[..., None], "label": int(label)}
