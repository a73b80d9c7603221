"""TFDS builder for the Free Spoken Digit Dataset: 3,000 recordings of the digits 0-9, 6 speakers x 50 each.

Z. Jackson et al., github.com/Jakobovski/free-spoken-digit-dataset (CC BY-SA 4.0). Files
``recordings/{digit}_{speaker}_{index}.wav``: mono 8 kHz 16-bit PCM, 1,148-18,262 samples. Each example holds
``audio`` (the int16 samples, variable length), ``label`` (the digit), ``speaker`` and ``index`` (0-49, the
speaker's take of that digit); the key is the file name.

Splits (the official one from the dataset's README: "Recordings numbered 0-4 (inclusive) are in the test and 5-49
are in the training set"; the speaker-held-out one asks whether a model generalises to a voice it never heard):

| split             | recordings                                                          | examples |
|-------------------|---------------------------------------------------------------------|----------|
| ``train``         | takes 5-49 of every speaker and digit                               | 2,700    |
| ``test``          | takes 0-4 of every speaker and digit                                | 300      |
| ``speaker_train`` | every take of the five speakers other than ``HELD_OUT_SPEAKER``     | 2,500    |
| ``speaker_test``  | every take of ``HELD_OUT_SPEAKER`` (jackson)                        | 500      |
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from cnn.data import checksums
from cnn.data.audio import SAMPLE_RATE, read_wav
from cnn.data.builders import manual

SHARED_FOLDER = "fsdd"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TAKES = 50
NUM_TEST_TAKES = 5  # takes 0..4 are the official test set
HELD_OUT_SPEAKER = "jackson"

RECORDINGS = [(digit, speaker, index) for digit in range(10) for speaker in SPEAKERS for index in range(TAKES)]


def wav_name(digit: int, speaker: str, index: int) -> str:
    return f"{digit}_{speaker}_{index}.wav"


class Fsdd(tfds.core.GeneratorBasedBuilder):
    """The Free Spoken Digit Dataset as a TFDS dataset (registered as ``fsdd``)."""

    name = "fsdd"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Official split: takes 0-4 test, 5-49 train.",
        "1.1.0": f"Speaker-held-out split: speaker_test = {HELD_OUT_SPEAKER}, speaker_train = the other five.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"manual_dir is shared/data/{SHARED_FOLDER}: it holds recordings/ with the 3,000 "
        "{digit}_{speaker}_{index}.wav files of github.com/Jakobovski/free-spoken-digit-dataset."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "audio": tfds.features.Audio(shape=(None,), dtype=np.int16, sample_rate=SAMPLE_RATE),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "speaker": tfds.features.ClassLabel(names=SPEAKERS),
                    "index": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=("audio", "label"),
            homepage="https://github.com/Jakobovski/free-spoken-digit-dataset",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        names = [wav_name(*recording) for recording in RECORDINGS]
        root = manual.manual_dir(self, dl_manager, [f"recordings/{name}" for name in names])
        folder = f"{SHARED_FOLDER}/recordings"
        checksums.verify_folder(root / "recordings", names, folder, checksums.FOLDER_SHA256[folder])
        return {
            "train": self._generate_examples(root, [r for r in RECORDINGS if r[2] >= NUM_TEST_TAKES]),
            "test": self._generate_examples(root, [r for r in RECORDINGS if r[2] < NUM_TEST_TAKES]),
            "speaker_train": self._generate_examples(root, [r for r in RECORDINGS if r[1] != HELD_OUT_SPEAKER]),
            "speaker_test": self._generate_examples(root, [r for r in RECORDINGS if r[1] == HELD_OUT_SPEAKER]),
        }

    def _generate_examples(self, root: Path, recordings: list[tuple[int, str, int]]):
        for digit, speaker, index in recordings:
            name = wav_name(digit, speaker, index)
            audio = read_wav(root / "recordings" / name)
            yield name, {"audio": audio, "label": digit, "speaker": speaker, "index": index}
