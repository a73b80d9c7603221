"""TFDS builder for the Free Spoken Digit Dataset: 3,000 recordings of the digits 0-9, 6 speakers x 50 each.

Z. Jackson et al., github.com/Jakobovski/free-spoken-digit-dataset (CC BY-SA 4.0). Files
``recordings/{digit}_{speaker}_{index}.wav``: mono 8 kHz 16-bit PCM, 1,148-18,262 samples. Each example holds
``audio`` (the int16 samples, variable length), ``label`` (the digit), ``speaker`` and ``index`` (0-49, the
speaker's take of that digit); the key is the file name.

Split, the dataset's official one (its README: "Recordings numbered 0-4 (inclusive) are in the test and 5-49 are in
the training set"): ``test`` = index 0-4 (300 recordings), ``train`` = index 5-49 (2,700). Every speaker is in both.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from cnn.data import checksums
from cnn.data.builders import manual

SHARED_FOLDER = "fsdd"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TAKES = 50
NUM_TEST_TAKES = 5  # takes 0..4 are the official test set
SAMPLE_RATE = 8000

RECORDINGS = [(digit, speaker, index) for digit in range(10) for speaker in SPEAKERS for index in range(TAKES)]


def wav_name(digit: int, speaker: str, index: int) -> str:
    return f"{digit}_{speaker}_{index}.wav"


def read_wav(path: Path) -> np.ndarray:
    """The samples of a mono 16-bit PCM wav at 8 kHz as int16; ``ValueError`` for any other format."""
    with wave.open(str(path), "rb") as wav:
        layout = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
        if layout != (1, 2, SAMPLE_RATE):
            raise ValueError(f"{path}: expected mono 16-bit PCM at {SAMPLE_RATE} Hz, got (channels, bytes per "
                             f"sample, rate) = {layout}")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)


class Fsdd(tfds.core.GeneratorBasedBuilder):
    """The Free Spoken Digit Dataset as a TFDS dataset (registered as ``fsdd``)."""

    name = "fsdd"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Official split: takes 0-4 test, 5-49 train."}
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
        }

    def _generate_examples(self, root: Path, recordings: list[tuple[int, str, int]]):
        for digit, speaker, index in recordings:
            name = wav_name(digit, speaker, index)
            audio = read_wav(root / "recordings" / name)
            yield name, {"audio": audio, "label": digit, "speaker": speaker, "index": index}
