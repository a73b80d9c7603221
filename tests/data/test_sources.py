"""Data sources: real MNIST/Fashion-MNIST against the raw idx files, TFDS mock data, fail-fast, custom sources."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnn.data import make_source
from cnn.data.checksums import ChecksumError
from cnn.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent")


def read_idx(path: Path) -> np.ndarray:
    """The idx format (LeCun): big-endian magic (dtype code, rank), the dimensions, then the raw values."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(dims)


def row_digests(images: np.ndarray, labels: np.ndarray) -> list[tuple[str, int]]:
    flat = images.reshape(len(images), -1)
    return sorted((hashlib.sha1(row.tobytes()).hexdigest(), int(y)) for row, y in zip(flat, labels, strict=True))


@needs_shared
# Fashion-MNIST goes through the same builder code as MNIST: kept out of CI for time (run with -m slow).
@pytest.mark.parametrize("name", ["mnist", pytest.param("fashion_mnist", marks=pytest.mark.slow)])
def test_real_idx_datasets_equal_the_raw_files(name, tmp_path_factory):
    source = make_source({"name": name, "data_dir": str(tmp_path_factory.mktemp(name)),
                          "manual_dir": str(SHARED / name)})
    for split, prefix, count in (("train", "train", 60_000), ("test", "t10k", 10_000)):
        data = source.load(split)
        raw_images = read_idx(SHARED / name / f"{prefix}-images-idx3-ubyte.gz")
        raw_labels = read_idx(SHARED / name / f"{prefix}-labels-idx1-ubyte.gz")
        assert len(data) == count and data.images.shape == (count, 28, 28, 1)
        np.testing.assert_array_equal(np.bincount(data.labels, minlength=10), np.bincount(raw_labels, minlength=10))
        # Same (image, label) pairs: TFDS stores examples in its own order.
        assert row_digests(data.images, data.labels) == row_digests(raw_images, raw_labels)


@needs_shared
def test_corrupt_manual_file_is_refused(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in os.listdir(SHARED / "mnist"):
        (manual / name).symlink_to(SHARED / "mnist" / name)
    (manual / "t10k-labels-idx1-ubyte.gz").unlink()
    (manual / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    source = make_source({"name": "mnist", "data_dir": str(tmp_path / "tfds"), "manual_dir": str(manual)})
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte\.gz"):
        source.prepare()


def test_unprepared_dataset_without_files_fails_fast_naming_them(tmp_path):
    source = make_source({"name": "cifar10", "data_dir": str(tmp_path)})
    with pytest.raises(UserError, match=r"cifar-10-binary\.tar\.gz.*--config\.dataset\.manual_dir"):
        source.prepare()
    with pytest.raises(UserError, match=r"lacks \['cifar-10-binary\.tar\.gz'\]"):
        make_source({"name": "cifar10", "data_dir": str(tmp_path), "manual_dir": str(tmp_path)}).prepare()


@pytest.mark.parametrize(("name", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_through_tfds_mock_data(name, classes, tmp_path):
    import tensorflow_datasets as tfds

    source = make_source({"name": name, "data_dir": str(tmp_path), "download": True})  # mock_data patches it out
    with tfds.testing.mock_data(num_examples=12):
        data = source.load("train")
    assert data.images.shape == (12, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int32 and data.labels.min() >= 0 and data.labels.max() < classes
    assert source.spec.num_classes == classes


def test_numpy_source(tmp_path):
    rng = np.random.default_rng(0)
    train_images, train_labels = rng.integers(0, 256, (10, 6, 6, 1), dtype=np.uint8), np.arange(10) % 3
    path = tmp_path / "data.npz"
    np.savez(path, train_images=train_images, train_labels=train_labels, test_images=train_images[:4],
             test_labels=train_labels[:4])
    source = make_source({"name": "numpy", "path": str(path)})
    assert (source.spec.num_classes, source.spec.image_shape, source.spec.splits) == (3, (6, 6, 1), ("test", "train"))
    np.testing.assert_allclose(source.spec.mean, [(train_images / 255.0).mean()], atol=1e-4)
    np.testing.assert_array_equal(source.load("test").images, train_images[:4])
    with pytest.raises(UserError, match="has no split 'val'"):
        source.load("val")
    np.savez(tmp_path / "bad.npz", images=train_images)
    with pytest.raises(UserError, match="expected arrays train_images"):
        make_source({"name": "numpy", "path": str(tmp_path / "bad.npz")})


def test_a_file_that_is_not_an_npz_of_integer_labels_is_one_line(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "one.npy", np.zeros(3))
    np.savez(tmp_path / "whole.npz", train_images=np.zeros((4, 2, 2, 1)), train_labels=np.zeros(4, int))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:100])
    for name in ("text.npz", "one.npy", "cut.npz"):
        with pytest.raises(UserError, match=rf"^dataset 'numpy': .*/{name} is not a readable .npz of arrays \("):
            make_source({"name": "numpy", "path": str(tmp_path / name)})
    np.savez(tmp_path / "floats.npz", train_images=np.zeros((4, 2, 2, 1)), train_labels=np.array([0, 1.7, 2, 1]))
    with pytest.raises(UserError, match=r"floats.npz: labels must be integers \(class indices\), got train_labels "
                                        r"\(float64\)$"):
        make_source({"name": "numpy", "path": str(tmp_path / "floats.npz")})


@pytest.mark.parametrize(("split", "labels", "message"), [
    ("test", np.array([0, 3, 4, 5, 1]), r"^split 'test': 2 label\(s\) outside 0\.\.3: \[4, 5\]$"),
    ("train", np.array([0, 1, 2, 3, -1, 0, 1, 2]), r"^split 'train': 1 label\(s\) outside 0\.\.3: \[-1\]$"),
])
def test_numpy_labels_outside_the_classes_name_the_split_and_values(tmp_path, split, labels, message):
    from cnn.tasks import make_task
    from configs.default import get_config

    arrays = {"train_images": np.zeros((8, 4, 4, 1), np.uint8), "train_labels": np.arange(8) % 4,
              "test_images": np.zeros((5, 4, 4, 1), np.uint8), "test_labels": np.arange(5) % 4}
    arrays[f"{split}_labels"] = labels
    np.savez(tmp_path / "d.npz", **arrays)
    source = make_source({"name": "numpy", "path": str(tmp_path / "d.npz")})
    if split == "train":  # num_classes comes from the train labels' maximum: 4 here too
        assert source.spec.num_classes == 4
    with pytest.raises(UserError, match=message):
        make_task(get_config("runlocal"), source.spec).check_split(source.load(split), split)


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    from cnn.data.prepare import main

    (tmp_path / "f").write_text("")
    assert main(["digits", f"--data_dir={tmp_path / 'f'}"]) == 2
    assert capsys.readouterr().err == f"error: data_dir {tmp_path / 'f'} is a file, not a directory\n"


def write_image_folder(root: Path, per_class: int = 6, size: int = 10) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for label, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                value = 40 + 150 * label + i  # classes differ in brightness: learnable in a few steps
                Image.new("RGB", (size, size), (value, value, value)).save(root / split / name / f"{i}.png")


def test_image_folder_source(tmp_path):
    write_image_folder(tmp_path)
    source = make_source({"name": "image_folder", "path": str(tmp_path), "image_size": (8, 8), "channels": 3})
    assert source.spec.num_classes == 2 and source.spec.image_shape == (8, 8, 3)
    data = source.load("train")
    assert data.images.shape == (12, 8, 8, 3)
    np.testing.assert_array_equal(data.labels, [0] * 6 + [1] * 6)
    assert data.images[0, 0, 0, 0] == 40 and data.images[6, 0, 0, 0] == 190  # constant images survive resizing
    with pytest.raises(UserError, match="must hold a train/ folder"):
        make_source({"name": "image_folder", "path": str(tmp_path / "nope")})


def test_train_on_own_image_folder_with_one_config_change(tmp_path):
    write_image_folder(tmp_path / "images")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [sys.executable, "train.py", "--config=configs/default.py:runlocal", f"--workdir={tmp_path / 'run'}",
         "--config.dataset.name=image_folder", f"--config.dataset.path={tmp_path / 'images'}",
         "--config.batch_size=4", "--config.eval_batch_size=4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(12 examples)" in result.stdout
    shutil.rmtree(tmp_path / "run")


@needs_shared
@pytest.mark.parametrize(("name", "folder", "shape", "counts"), [
    ("mnist1d", "mnist1d", (40, 1), {"train": 4000, "test": 1000}),
    ("adrenal_mnist3d", "medmnist3d", (28, 28, 28, 1), {"train": 1188, "validation": 98, "test": 298}),
])
def test_shared_classification_sets_as_sources(name, folder, shape, counts, tmp_path):
    source = make_source({"name": name, "data_dir": str(tmp_path), "manual_dir": str(SHARED / folder)})
    for split, count in counts.items():
        data = source.load(split)
        assert data.images.shape == (count, *shape) and data.images.shape[1:] == source.spec.image_shape
    labels = source.load("train").labels
    assert labels.max() + 1 == source.spec.num_classes


def test_imagenet_on_mock_data_is_fitted_to_the_spec(tmp_path):
    source = make_source({"name": "imagenet2012", "data_dir": str(tmp_path), "mock_examples": 5})
    images, labels = source.load("validation").gather(np.arange(5))
    assert images.shape == (5, 256, 256, 3) and images.dtype == np.uint8
    assert labels.max() < 1000
    with pytest.raises(UserError, match=r"ILSVRC2012_img_train\.tar"):
        make_source({"name": "imagenet2012", "data_dir": str(tmp_path)}).load("train")


# --- several processes, one data dir --------------------------------------------------------------------------------

PREPARE_AT_A_SIGNAL = """
import os, sys, time
from cnn.data import make_source
from tests.data.test_sources import split_digest

data_dir, signals, me = sys.argv[1:]
source = make_source({"name": "digits", "data_dir": data_dir})
open(os.path.join(signals, "ready-" + me), "w").close()
while not os.path.exists(os.path.join(signals, "go")):  # both start preparing at the same moment
    time.sleep(0.005)
for split in ("train", "test"):
    data = source.load(split)
    print("read", split, len(data), split_digest(data.images, data.labels))
"""


def split_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """One digest of a split's (image, label) pairs, whatever their order."""
    return hashlib.sha1(repr(row_digests(images, labels)).encode()).hexdigest()


def test_two_processes_prepare_one_dataset_into_one_data_dir_at_once(tmp_path):
    """One prepares (under the lock), the other waits and reads it; both read the digits of scikit-learn."""
    from sklearn.datasets import load_digits

    data_dir = tmp_path / "tfds"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    processes = [subprocess.Popen([sys.executable, "-c", PREPARE_AT_A_SIGNAL, str(data_dir), str(tmp_path), str(i)],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            for process in processes:
                process.kill()
            raise AssertionError(f"a process did not start: {[p.communicate()[1][-2000:] for p in processes]}")
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=240) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]

    digits = load_digits()  # the reference: scikit-learn's loader; train = the first 1,437 in file order
    images, labels = digits.images.astype(np.uint8)[..., None], digits.target
    expected = [f"read train 1437 {split_digest(images[:1437], labels[:1437])}",
                f"read test 360 {split_digest(images[1437:], labels[1437:])}"]
    read = [[line for line in stdout.splitlines() if line.startswith("read ")] for stdout, _ in outputs]
    assert read == [expected, expected]


def test_prepare_command_logs_without_progress_bars_when_not_on_a_terminal(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-m", "cnn.data.prepare", "digits", f"--data_dir={tmp_path}"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "digits: prepared in" in result.stdout
    output = result.stdout + result.stderr
    assert "\x1b[" not in output and "\r" not in output  # tqdm's cursor moves and redraws
    assert len(output.splitlines()) < 20, output  # with progress bars: hundreds of lines


def test_a_failed_preparation_leaves_no_dataset_folders_and_names_the_flags(tmp_path):
    (tmp_path / "downloads").mkdir()  # shared by every dataset: kept
    source = make_source({"name": "mnist1d", "data_dir": str(tmp_path)})  # no manual_dir: its builder refuses
    with pytest.raises(UserError) as error:
        source.prepare()
    assert "--manual_dir=FOLDER" in str(error.value) and "--config.dataset.manual_dir=FOLDER" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".prepare-mnist1d.lock", "downloads"]
    assert list((tmp_path / "downloads").iterdir()) == []
