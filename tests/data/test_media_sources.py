"""The 1D and 3D datasets through the pipeline: FSDD's clips batched at a fixed length for training and whole for
evaluation (numpy slicing as the reference), the ``log_mel`` op against librosa on real recordings (read by
scipy), the moving-digits source's statistics (numpy), and bad input as one line: a split whose examples do not
have the spec's shape, a 2D model given volumes and a clip shorter than M5's receptive field through
``plan_training`` (what train.py runs; the CLIs print a ``UserError`` as one line)."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.io.wavfile

from cnn.config_defaults import base_config
from cnn.data import BatchRandom, build_preprocess, make_source
from cnn.data.fsdd import INT16_SCALE, ClipSplit
from cnn.data.sources import DatasetSpec
from cnn.errors import InputShapeError, UserError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_clip_split_crops_for_training_and_keeps_whole_clips_for_evaluation():
    rng = np.random.default_rng(0)
    clips = [rng.integers(-100, 100, n).astype(np.int16) for n in (100, 301, 50)]
    labels = np.array([3, 1, 4], np.int32)
    train = ClipSplit(clips, labels, length=200, min_length=200)
    images, got_labels = train.gather(np.array([0, 1, 2]))
    assert images.shape == (3, 200, 1) and list(got_labels) == [3, 1, 4]
    np.testing.assert_array_equal(images[0, :, 0], np.r_[clips[0], np.zeros(100)])  # zeros appended
    np.testing.assert_array_equal(images[1, :, 0], clips[1][50:250])  # the centre of 301 samples
    whole = ClipSplit(clips, labels, length=None, min_length=200)
    np.testing.assert_array_equal(whole.gather(np.array([1]))[0][0, :, 0], clips[1])  # longer: whole, unpadded
    np.testing.assert_array_equal(whole.gather(np.array([2]))[0][0, :, 0], np.r_[clips[2], np.zeros(150)])
    batch = whole.gather(np.array([0, 1]))[0]  # padded to the batch's longest clip
    assert batch.shape == (2, 301, 1)
    np.testing.assert_array_equal(batch[0, :, 0], np.r_[clips[0], np.zeros(201)])


def test_clip_splits_feed_the_training_and_evaluation_streams():
    """The pipeline asks a split for ``batch(indices)`` (a dict), as it asks an ``ArraySplit``."""
    from cnn.data.pipeline import TrainStream, eval_batches

    spec = DatasetSpec(10, (200, 1), INT16_SCALE)
    clips = [np.full(n, 7, np.int16) for n in (100, 301, 50, 200)]
    labels = np.array([3, 1, 4, 1], np.int32)
    decode = build_preprocess("decode", spec)
    train = TrainStream(ClipSplit(clips, labels, 200, 200), decode, global_batch=2, seed=0)
    batch = train.batch(0)
    assert batch["image"].shape == (2, 200, 1) and set(batch["label"]) <= {1, 3, 4}
    shapes = [b["image"].shape for b in eval_batches(ClipSplit(clips, labels, None, 200), decode, global_batch=1)]
    assert shapes == [(1, 200, 1), (1, 301, 1), (1, 200, 1), (1, 200, 1)]


@pytest.mark.skipif(not (SHARED / "fsdd").is_dir(), reason="needs ../shared/data/fsdd")
def test_log_mel_op_equals_librosa_on_a_batch_of_recordings():
    clips = [scipy.io.wavfile.read(SHARED / "fsdd" / "recordings" / name)[1] for name in ("0_george_0.wav",
                                                                                          "7_theo_12.wav")]
    batch = np.stack([np.pad(c, (0, 4096 - len(c))) if len(c) < 4096 else c[:4096] for c in clips])[..., None]
    spec = DatasetSpec(10, (4096, 1), INT16_SCALE)
    got = build_preprocess("decode|log_mel", spec)(batch, BatchRandom((0, 0), 2))
    assert got.shape == (2, 40, 33, 1)
    for clip, ours in zip(batch[..., 0], got[..., 0], strict=True):
        power = librosa.feature.melspectrogram(y=clip.astype(np.float32) / 32768, sr=8000, n_fft=256, hop_length=128,
                                               n_mels=40)
        np.testing.assert_allclose(ours, librosa.power_to_db(power, amin=1e-10, top_db=None), atol=1e-3)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="needs ../shared/data/mnist")
def test_moving_digits_source_spec_and_splits():
    source = make_source({"name": "moving_digits", "image_size": (34, 34), "manual_dir": str(SHARED / "mnist"),
                          "generator": {"train_examples": 6, "test_examples": 3, "frames": 4, "seed": 0}})
    train = source.load("train")
    pixels = train.images.astype(np.float64) / 255
    assert source.spec.image_shape == (4, 34, 34, 1) and source.spec.num_classes == 4
    assert source.spec.mean[0] == pytest.approx(pixels.mean(), abs=1e-4)
    assert source.spec.std[0] == pytest.approx(pixels.std(), abs=1e-4)
    assert len(source.load("test")) == 3
    with pytest.raises(UserError, match="dataset 'moving_digits' has no split 'validation'"):
        source.load("validation")


def volumes_npz(path: Path, train_size: int, test_size: int) -> str:
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 255, (4, *(train_size,) * 3, 1), dtype=np.uint8),
             train_labels=np.array([0, 1, 0, 1]), test_labels=np.array([0, 1]),
             test_images=rng.integers(0, 255, (2, *(test_size,) * 3, 1), dtype=np.uint8))
    return str(path)


def test_volumes_of_another_size_than_the_spec_are_one_line(tmp_path):
    source = make_source({"name": "numpy", "path": volumes_npz(tmp_path / "v.npz", 8, 6)})
    with pytest.raises(UserError, match=r"dataset 'numpy' split 'test': examples of shape \(6, 6, 6, 1\), expected "
                                        r"\(8, 8, 8, 1\)") as error:
        source.load("test")
    assert "\n" not in str(error.value)


def plan_init(tmp_path: Path, model: str, path: str):
    from cnn.train.experiment import plan_training

    config = base_config("numpy", model)
    config.dataset.path = path
    config.batch_size, config.eval_batch_size, config.num_steps = 2, 2, 1
    plan_training(config, str(tmp_path / "run")).experiment.init_state()


def test_a_2d_model_given_volumes_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"ResNet takes images \(batch, height, width, channels\), got an input of "
                                        r"shape \(1, 8, 8, 8, 1\)"):
        plan_init(tmp_path, "resnet18", volumes_npz(tmp_path / "v.npz", 8, 8))


def test_a_clip_shorter_than_m5_takes_is_a_user_error(tmp_path):
    path = tmp_path / "clips.npz"
    clips = np.random.default_rng(0).integers(-99, 99, (2, 1000, 1)).astype(np.int16)
    np.savez(path, train_images=clips, train_labels=np.array([0, 1]), test_images=clips, test_labels=np.array([0, 1]))
    with pytest.raises(InputShapeError, match=r"M5 needs clips of at least 1021 samples .*, got 1000"):
        plan_init(tmp_path, "m5", str(path))
