"""TFDS builder for MNIST-1D, the published default data set: 4,000 train + 1,000 test sequences of length 40.

S. Greydanus, D. Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024 (Apache-2.0). Each sequence is one of
10 digit-like 1D templates, padded, translated, sheared, scaled, blurred and noised. The file
``mnist1d_data.pkl`` is a pickled dict (``x``, ``y``, ``x_test``, ``y_test``, the time grid ``t`` and the
``templates``), read through :mod:`cnn.data.safe_pickle`. ``sequence`` is ``x`` as float32 with a channel axis,
``(40, 1)``, channels last like the images; the key is the row in ``x`` / ``x_test``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from cnn.data import safe_pickle
from cnn.data.builders import manual

SHARED_FOLDER = "mnist1d"
FILENAME = "mnist1d_data.pkl"
LENGTH = 40


class Mnist1d(tfds.core.GeneratorBasedBuilder):
    """MNIST-1D as a TFDS dataset (registered as ``mnist1d``)."""

    name = "mnist1d"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "The published mnist1d_data.pkl: 4,000 train, 1,000 test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"manual_dir is shared/data/{SHARED_FOLDER}: it holds {FILENAME} from github.com/greydanus/mnist1d."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "sequence": tfds.features.Tensor(shape=(LENGTH, 1), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("sequence", "label"),
            homepage="https://github.com/greydanus/mnist1d",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = manual.manual_dir(self, dl_manager, [FILENAME])
        manual.verify_files(root, SHARED_FOLDER, [FILENAME])
        with open(root / FILENAME, "rb") as file:
            data = safe_pickle.load(file)
        return {
            "train": self._generate_examples(data["x"], data["y"]),
            "test": self._generate_examples(data["x_test"], data["y_test"]),
        }

    def _generate_examples(self, sequences: np.ndarray, labels: np.ndarray):
        for i, (sequence, label) in enumerate(zip(sequences.astype(np.float32), labels, strict=True)):
            yield i, {"sequence": sequence[:, None], "label": int(label)}
