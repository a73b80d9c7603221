"""Dataset ``fsdd``: the Free Spoken Digit Dataset's recordings (:mod:`cnn.data.builders.fsdd`) as 8 kHz waveforms
``(samples, 1)``, int16, with their digit as label; splits ``train``/``test`` (the official one) and
``speaker_train``/``speaker_test`` (speaker jackson held out).

Clips differ in length (1,148 to 18,262 samples), batches do not. ``config.dataset.clip_length`` (default
``cnn.data.audio.CLIP_LENGTH`` = 8,192 samples, 1.02 s, at least as long as 99.4% of the recordings) fixes it:

* the training split (``config.dataset.train_split``): every clip at exactly ``clip_length`` samples, zeros
  appended or its centre kept (``cnn.data.audio.pad_or_crop``), as Dai et al. batch their clips;
* every other split: the **whole** clip, never cropped. A batch is zero-padded at the end to
  ``max(clip_length, its longest clip)``; with ``eval_batch_size = 1`` (the FSDD configs) a clip shorter than
  ``clip_length`` is seen exactly as in training, and a longer one whole and unpadded. The models pool globally,
  so any length works; each new length compiles the evaluation step once (a few of the 300 or 500 test clips).

The spec's ``image_shape`` is ``(clip_length, 1)``; ``decode`` divides by 32,768 (int16 to [-1, 1)). The waveform
statistics are left at mean 0, std 1: the M5 configs do not normalize the waveform (its first convolution is
followed by BatchNorm); the log-mel configs normalize the spectrogram with statistics of their own.
"""

from __future__ import annotations

import numpy as np

from cnn.data.audio import CLIP_LENGTH, pad_or_crop
from cnn.data.sources import DATASETS, DatasetSpec, TfdsDataset, TfdsSource, check_split
from cnn.errors import ConfigError

SPLITS = ("train", "test", "speaker_train", "speaker_test")
INT16_SCALE = 32768.0


class ClipSplit:
    """Clips of different lengths in memory, batched as the module docstring says: each at ``length`` samples when
    ``length`` is given, otherwise whole, a batch padded to ``max(min_length, its longest clip)``."""

    def __init__(self, clips: list[np.ndarray], labels: np.ndarray, length: int | None, min_length: int):
        self.clips, self.labels, self.length, self.min_length = clips, labels, length, min_length

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        clips = [self.clips[i] for i in indices]
        length = self.length or max(self.min_length, *(len(c) for c in clips))
        return np.stack([pad_or_crop(c, length) for c in clips])[..., None], self.labels[indices]

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        images, labels = self.gather(indices)
        return {"image": images, "label": labels}


class FsddSource:
    def __init__(self, dataset_config):
        self.clip_length = dataset_config.get("clip_length") or CLIP_LENGTH
        if not isinstance(self.clip_length, int) or self.clip_length < 1:
            raise ConfigError(f"config.dataset.clip_length must be a positive number of samples, got "
                              f"{self.clip_length!r}")
        self.train_split = dataset_config.get("train_split") or "train"
        self.spec = DatasetSpec(10, (self.clip_length, 1), INT16_SCALE, splits=SPLITS)
        self.tfds = TfdsSource("fsdd", dataset_config.get("data_dir"), dataset_config.get("manual_dir"),
                               bool(dataset_config.get("download")),
                               dataset=TfdsDataset("fsdd", self.spec, {},
                                                   "https://github.com/Jakobovski/free-spoken-digit-dataset"))

    def load(self, split: str) -> ClipSplit:
        import tensorflow_datasets as tfds

        check_split("fsdd", split, SPLITS)
        dataset = self.tfds.prepare().as_dataset(split=split, as_supervised=True)
        clips, labels = zip(*tfds.as_numpy(dataset), strict=True)
        length = self.clip_length if split == self.train_split else None
        return ClipSplit(list(clips), np.asarray(labels, np.int32), length, self.clip_length)


DATASETS.register("fsdd", FsddSource)
