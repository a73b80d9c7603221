"""TFDS builders over shared/data: each built into a tmp data_dir and compared with an independent read of the files
(PIL, scipy.io.wavfile, numpy.load, the stdlib unpickler, Kipf & Welling's preprocessing); checksums; fail fast."""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.sparse
import tensorflow_datasets as tfds
from PIL import Image

from cnn.data import checksums
from cnn.data.builders import AdrenalMnist3d, Fsdd, Isbi2012Em, ManualFilesMissingError, Mnist1d, Planetoid
from cnn.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED.resolve()} is absent")

# TFDS name -> folder of shared/data given as manual_dir
FOLDERS = {"isbi2012_em": "isbi2012_em", "fsdd": "fsdd", "adrenal_mnist3d/28": "medmnist3d",
           "adrenal_mnist3d/64": "medmnist3d", "mnist1d": "mnist1d", "planetoid/cora": "planetoid",
           "planetoid/citeseer": "planetoid"}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """``build(name)`` prepares the TFDS dataset ``name`` from shared/data once per module and returns its builder."""
    data_dir = tmp_path_factory.mktemp("tfds")
    builders = {}

    def prepare(name: str) -> tfds.core.DatasetBuilder:
        if name not in builders:
            builder = tfds.builder(name, data_dir=data_dir)
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=str(SHARED / FOLDERS[name])))
            builders[name] = builder
        return builders[name]

    return prepare


def examples(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
    return list(tfds.as_numpy(builder.as_dataset(split=split)))


def sorted_rows(*columns: np.ndarray) -> list[bytes]:
    """Rows of aligned arrays as bytes, sorted: compares two datasets as multisets (TFDS stores them key-hashed)."""
    return sorted(b"".join(np.ascontiguousarray(column[i]).tobytes() for column in columns)
                  for i in range(len(columns[0])))


# --- checksums -------------------------------------------------------------------------------------------------------

def sha256sums() -> dict[str, str]:
    lines = (SHARED / "SHA256SUMS").read_text().splitlines()
    return {path.removeprefix("./"): digest for digest, path in (line.split(maxsplit=1) for line in lines)}


@needs_shared
def test_file_table_equals_sha256sums():
    listed = sha256sums()
    assert {path: listed[path] for path in checksums.FILE_SHA256} == checksums.FILE_SHA256
    read_by_builders = {path for path in listed if path.startswith(("planetoid/", "medmnist3d/", "mnist1d/"))}
    assert read_by_builders == set(checksums.FILE_SHA256)


@needs_shared
def test_folder_table_equals_the_readme_and_the_sha256sums_lines():
    text = (SHARED / "README.md").read_text()
    published = dict((folder, digest) for digest, folder in re.findall(r"^([0-9a-f]{64})  (\S+) \(", text, re.M))
    assert published == checksums.FOLDER_SHA256
    lines = (SHARED / "SHA256SUMS").read_text().splitlines(keepends=True)
    for folder, digest in checksums.FOLDER_SHA256.items():  # the README's `grep ' ./DIR/' SHA256SUMS | sha256sum`
        assert hashlib.sha256("".join(line for line in lines if f" ./{folder}/" in line).encode()).hexdigest() == digest


@needs_shared
def test_folder_digest_is_location_independent_and_catches_one_changed_byte(tmp_path):
    names, expected = [f"{i}.png" for i in range(30)], checksums.FOLDER_SHA256["isbi2012_em/test"]
    copy = shutil.copytree(SHARED / "isbi2012_em" / "test", tmp_path / "elsewhere")
    checksums.verify_folder(copy, names, "isbi2012_em/test", expected)
    data = bytearray((copy / "7.png").read_bytes())
    data[1000] ^= 1
    (copy / "7.png").write_bytes(bytes(data))
    with pytest.raises(checksums.ChecksumError, match=rf"{re.escape(str(copy))}: .*30 files.*expected {expected}"):
        checksums.verify_folder(copy, names, "isbi2012_em/test", expected)


def test_verify_names_the_file_and_both_digests(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"published")
    checksums.verify(path, hashlib.sha256(b"published").hexdigest())
    path.write_bytes(b"damaged")
    expected, actual = hashlib.sha256(b"published").hexdigest(), hashlib.sha256(b"damaged").hexdigest()
    message = rf"{re.escape(str(path))}: sha256 is {actual}, expected {expected}"
    with pytest.raises(checksums.ChecksumError, match=message):
        checksums.verify(path, expected)
    assert issubclass(checksums.ChecksumError, UserError)


@pytest.mark.parametrize("digest", ["abc", "G" * 64, "A" * 64, None])
def test_verify_rejects_a_malformed_digest(tmp_path, digest):
    with pytest.raises(ValueError, match="expected_sha256 must be 64 lowercase hex digits"):
        checksums.verify(tmp_path, digest)


# --- fail fast -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "a_file"), [
    ("isbi2012_em", "train/image/0.png"), ("fsdd", "recordings/0_george_0.wav"),
    ("adrenal_mnist3d/64", "adrenalmnist3d_64.npz"), ("mnist1d", "mnist1d_data.pkl"),
    ("planetoid/citeseer", "ind.citeseer.x")])
def test_missing_manual_files_fail_at_once_naming_directory_and_files(tmp_path, name, a_file):
    builder = tfds.builder(name, data_dir=tmp_path / "tfds")
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "absent"))
    start = time.perf_counter()
    absent, partial = re.escape(str(tmp_path / "absent")), re.escape(str(tmp_path / "partial"))
    with pytest.raises(ManualFilesMissingError, match=rf"{name}: .*{absent}.*{re.escape(a_file)}"):
        builder.download_and_prepare(download_config=config)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "unrelated.txt").write_text("not data")
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "partial"))
    with pytest.raises(ManualFilesMissingError, match=rf"missing \(manual_dir {partial}\): .*{re.escape(a_file)}"):
        builder.download_and_prepare(download_config=config)
    assert time.perf_counter() - start < 5
    assert issubclass(ManualFilesMissingError, UserError) and issubclass(ManualFilesMissingError, FileNotFoundError)


@needs_shared
def test_a_damaged_file_is_refused_before_it_is_read(tmp_path):
    manual = tmp_path / "mnist1d"
    manual.mkdir()
    (manual / "mnist1d_data.pkl").write_bytes((SHARED / "mnist1d" / "mnist1d_data.pkl").read_bytes()[:-1])
    with pytest.raises(checksums.ChecksumError, match=r"mnist1d_data\.pkl: sha256 is"):
        tfds.builder("mnist1d", data_dir=tmp_path / "tfds").download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


# --- builders on the real files --------------------------------------------------------------------------------------

def test_builders_are_registered_under_their_names():
    assert {cls.name for cls in (Isbi2012Em, Fsdd, AdrenalMnist3d, Mnist1d, Planetoid)} == {
        "isbi2012_em", "fsdd", "adrenal_mnist3d", "mnist1d", "planetoid"}
    assert [c.name for c in AdrenalMnist3d.BUILDER_CONFIGS] == ["28", "64"]
    assert [c.name for c in Planetoid.BUILDER_CONFIGS] == ["cora", "citeseer"]


@needs_shared
def test_isbi2012_em_equals_the_pngs(build):
    builder = build("isbi2012_em")
    root = SHARED / "isbi2012_em"
    for split, image_folder in (("train", "train/image"), ("test", "test")):
        rows = sorted(examples(builder, split), key=lambda example: example["slice"])
        assert [row["slice"] for row in rows] == list(range(30))
        for row in rows:
            image = np.asarray(Image.open(root / image_folder / f"{row['slice']}.png"))
            np.testing.assert_array_equal(row["image"][..., 0], image)
            if split == "train":
                label = np.asarray(Image.open(root / "train" / "label" / f"{row['slice']}.png"))
                np.testing.assert_array_equal(row["mask"][..., 0], (label == 255).astype(np.uint8))  # 1 = cell
                assert row["has_mask"]
            else:
                assert not row["has_mask"] and not row["mask"].any()
    assert builder.info.features["image"].shape == (512, 512, 1)


@needs_shared
def test_fsdd_equals_the_wav_files_with_the_official_split(build):
    builder = build("fsdd")
    speakers = builder.info.features["speaker"].names
    assert speakers == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    for split, takes in (("train", range(5, 50)), ("test", range(5))):
        rows = examples(builder, split)
        found = sorted((int(row["label"]), speakers[row["speaker"]], int(row["index"])) for row in rows)
        assert found == sorted((digit, speaker, take) for digit in range(10) for speaker in speakers for take in takes)
        for row in rows:
            name = f"{row['label']}_{speakers[row['speaker']]}_{row['index']}.wav"
            rate, samples = scipy.io.wavfile.read(SHARED / "fsdd" / "recordings" / name)
            assert rate == 8000 and row["audio"].dtype == np.int16
            np.testing.assert_array_equal(row["audio"], samples)
    assert builder.info.splits["train"].num_examples == 2700 and builder.info.splits["test"].num_examples == 300
    held_out = [speakers[row["speaker"]] for row in examples(builder, "speaker_test")]
    assert held_out == ["jackson"] * 500
    seen = {speakers[row["speaker"]] for row in examples(builder, "speaker_train")}
    assert seen == set(speakers) - {"jackson"} and builder.info.splits["speaker_train"].num_examples == 2500


@needs_shared
def test_adrenal_mnist3d_equals_the_npz(build):
    builder = build("adrenal_mnist3d/28")
    arrays = np.load(SHARED / "medmnist3d" / "adrenalmnist3d.npz")
    for split, key, count in (("train", "train", 1188), ("validation", "val", 98), ("test", "test", 298)):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        assert data["image"].shape == (count, 28, 28, 28, 1) and data["image"].dtype == np.uint8
        assert sorted_rows(data["image"], data["label"].astype(np.uint8)) == sorted_rows(
            arrays[f"{key}_images"][..., None], arrays[f"{key}_labels"][:, 0])
    assert builder.info.features["label"].names == ["normal", "hyperplasia"]


@needs_shared
def test_adrenal_mnist3d_64_config_reads_the_64_file(tmp_path):
    """The examples the 64 config generates, without writing 415 MB of records (the slow test builds it)."""
    builder = tfds.builder("adrenal_mnist3d/64", data_dir=tmp_path)
    assert builder.info.features["image"].shape == (64, 64, 64, 1)
    manager = tfds.download.DownloadManager(download_dir=tmp_path, manual_dir=SHARED / "medmnist3d",
                                            manual_dir_instructions=builder.MANUAL_DOWNLOAD_INSTRUCTIONS)
    arrays = np.load(SHARED / "medmnist3d" / "adrenalmnist3d_64.npz")
    for split, generator in builder._split_generators(manager).items():
        key = {"train": "train", "validation": "val", "test": "test"}[split]
        rows = list(generator)
        assert len(rows) == len(arrays[f"{key}_labels"])
        index, first = rows[0]
        np.testing.assert_array_equal(first["image"][..., 0], arrays[f"{key}_images"][index])
        assert first["label"] == arrays[f"{key}_labels"][index, 0]


@pytest.mark.slow
@needs_shared
def test_adrenal_mnist3d_64_builds_and_equals_the_npz(build):
    builder = build("adrenal_mnist3d/64")
    arrays = np.load(SHARED / "medmnist3d" / "adrenalmnist3d_64.npz")
    data = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1))
    assert sorted_rows(data["image"], data["label"].astype(np.uint8)) == sorted_rows(
        arrays["test_images"][..., None], arrays["test_labels"][:, 0])
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
        "train": 1188, "validation": 98, "test": 298}


@needs_shared
def test_mnist1d_equals_the_pickle(build):
    builder = build("mnist1d")
    with open(SHARED / "mnist1d" / "mnist1d_data.pkl", "rb") as file:
        raw = pickle.load(file)  # the stdlib unpickler as the reference (the file's sha256 is checked above)
    for split, x, y, count in (("train", "x", "y", 4000), ("test", "x_test", "y_test", 1000)):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        assert data["sequence"].shape == (count, 40, 1) and data["sequence"].dtype == np.float32
        assert sorted_rows(data["sequence"][..., 0], data["label"]) == sorted_rows(
            raw[x].astype(np.float32), raw[y].astype(data["label"].dtype))


def kipf_load_data(name: str) -> tuple[np.ndarray, np.ndarray, scipy.sparse.spmatrix, list[int]]:
    """``gcn/utils.py: load_data`` of Kipf & Welling, transcribed (adjacency from the dict without networkx)."""
    parts = {}
    for part in ("x", "y", "tx", "ty", "allx", "ally", "graph"):
        with open(SHARED / "planetoid" / f"ind.{name}.{part}", "rb") as file:
            parts[part] = pickle.load(file, encoding="latin1")
    test_idx_reorder = [int(line) for line in (SHARED / "planetoid" / f"ind.{name}.test.index").read_text().split()]
    test_idx_range = np.sort(test_idx_reorder)
    tx, ty = parts["tx"], parts["ty"]
    if name == "citeseer":
        test_idx_range_full = range(min(test_idx_reorder), max(test_idx_reorder) + 1)
        tx_extended = scipy.sparse.lil_matrix((len(test_idx_range_full), parts["x"].shape[1]))
        tx_extended[test_idx_range - min(test_idx_range), :] = tx
        tx = tx_extended
        ty_extended = np.zeros((len(test_idx_range_full), parts["y"].shape[1]))
        ty_extended[test_idx_range - min(test_idx_range), :] = ty
        ty = ty_extended
    features = scipy.sparse.vstack((parts["allx"], tx)).tolil()
    features[test_idx_reorder, :] = features[test_idx_range, :]
    labels = np.vstack((parts["ally"], ty))
    labels[test_idx_reorder, :] = labels[test_idx_range, :]
    sources = [u for u, targets in parts["graph"].items() for _ in targets]
    targets = [v for targets in parts["graph"].values() for v in targets]
    adj = scipy.sparse.coo_matrix((np.ones(len(sources)), (sources, targets)), shape=(len(labels),) * 2)
    return features.toarray(), labels, adj, test_idx_range.tolist()


@needs_shared
@pytest.mark.parametrize(("name", "nodes", "num_features", "classes", "train", "edges", "unlabelled"), [
    ("cora", 2708, 1433, 7, 140, 10556, 0),  # PyG Planetoid: 10,556 edges, 5,278 undirected
    ("citeseer", 3327, 3703, 6, 120, 9104, 15),  # PyG Planetoid: 9,104 edges
])
def test_planetoid_equals_kipf_preprocessing(build, name, nodes, num_features, classes, train, edges, unlabelled):
    (graph,) = examples(build(f"planetoid/{name}"), "full")
    features, one_hot, adj, test_nodes = kipf_load_data(name)
    np.testing.assert_array_equal(graph["features"], features.astype(np.float32))
    assert graph["features"].shape == (nodes, num_features)
    labelled = one_hot.sum(axis=1) > 0
    np.testing.assert_array_equal(graph["labels"][labelled], one_hot.argmax(axis=1)[labelled])
    assert (graph["labels"][~labelled] == -1).all() and (~labelled).sum() == unlabelled
    assert graph["labels"].max() + 1 == classes

    symmetric = ((adj + adj.T) > 0).astype(np.int8).tolil()
    symmetric.setdiag(0)
    rows, cols = symmetric.tocsr().nonzero()
    reference = np.stack([rows, cols], axis=1)
    np.testing.assert_array_equal(graph["edges"], reference[np.lexsort((cols, rows))])
    assert len(graph["edges"]) == edges and graph["edges"].dtype == np.int32

    node = np.arange(nodes)
    np.testing.assert_array_equal(graph["train_mask"], node < train)
    np.testing.assert_array_equal(graph["val_mask"], (node >= train) & (node < train + 500))
    np.testing.assert_array_equal(np.flatnonzero(graph["test_mask"]), test_nodes)
    assert graph["test_mask"].sum() == 1000
    assert (np.bincount(graph["labels"][graph["train_mask"]]) == 20).all()  # the Planetoid split: 20 per class
