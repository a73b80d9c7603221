"""Digit canvases: the IDX reader against hand-written bytes, MNIST's published label counts, reproducibility, and
class maps, boxes and the split's digits against brute-force loops over the pasted pixels."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from cnn.data.canvas import load_mnist, make_canvases, paste_digits
from cnn.data.checksums import ChecksumError
from cnn.data.idx import read_idx
from cnn.errors import UserError

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"real data folder {MNIST.resolve()} is absent")

# Examples per class, 0..9, in LeCun's MNIST (as tabulated e.g. by TFDS's and torchvision's documentation).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def blob_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic 28×28 "digit" per class: random ink in a random sub-rectangle, zero elsewhere."""
    rng = np.random.default_rng(seed)
    digits = np.zeros((10, 28, 28), np.uint8)
    for digit in digits:
        r0, c0 = rng.integers(2, 10, size=2)
        r1, c1 = rng.integers(18, 27, size=2)
        digit[r0:r1, c0:c1] = rng.integers(0, 256, size=(r1 - r0, c1 - c0))
    return digits, np.arange(10)


def loop_ink(digit: np.ndarray) -> list[tuple[int, int]]:
    peak = max(int(v) for v in digit.ravel())
    return [(r, c) for r in range(digit.shape[0]) for c in range(digit.shape[1]) if digit[r, c] > peak / 2]


def test_idx_reader_reads_handmade_file_and_rejects_bad_ones(tmp_path):
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 3, 4) + values.tobytes()))
    np.testing.assert_array_equal(read_idx(good), values)
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + b"abc")
    with pytest.raises(UserError, match="short: header gives shape"):
        read_idx(short)
    floats = tmp_path / "floats"
    floats.write_bytes(struct.pack(">BBBBI", 0, 0, 0x0D, 1, 1) + b"\0\0\0\0")
    with pytest.raises(UserError, match="floats: not an unsigned-byte IDX"):
        read_idx(floats)


@needs_mnist
def test_load_mnist_matches_published_counts():
    train_images, train_labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert train_images.dtype == np.uint8
    assert np.bincount(train_labels).tolist() == TRAIN_COUNTS
    assert np.bincount(test_labels).tolist() == TEST_COUNTS


def test_load_mnist_names_missing_and_damaged_files(tmp_path):
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte\.gz: MNIST file not found"):
        load_mnist("test", tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not mnist")
    with pytest.raises(ChecksumError, match=r"t10k-images-idx3-ubyte\.gz: sha256 is"):
        load_mnist("test", tmp_path)
    with pytest.raises(UserError, match="split must be one of"):
        load_mnist("validation")


def test_same_seed_same_canvas_other_seed_other_canvas():
    digits, labels = blob_digits()
    kwargs = dict(canvas_size=(80, 96), num_digits=(2, 4), scale=(0.6, 1.4), clutter=3)
    first = paste_digits(digits, labels, np.random.default_rng(7), **kwargs)
    again = paste_digits(digits, labels, np.random.default_rng(7), **kwargs)
    other = paste_digits(digits, labels, np.random.default_rng(8), **kwargs)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.image, other.image)


def test_class_map_image_and_boxes_against_pixel_loop():
    """At scale 1 without clutter, every pasted digit is a digit of the array: rebuild the canvas pixel by pixel
    from the boxes (the digit is known from its label: one digit per class) and compare."""
    digits, labels = blob_digits(1)
    canvas = paste_digits(digits, labels, np.random.default_rng(3), (70, 90), 4)
    assert len(canvas.boxes) == 4
    expected_map = np.zeros((70, 90), np.int64)
    expected_image = np.zeros((70, 90), np.int64)
    for (x0, y0, x1, y1), label in zip(canvas.boxes.astype(int), canvas.box_labels, strict=True):
        ink = loop_ink(digits[label])
        top, left = min(r for r, _ in ink), min(c for _, c in ink)
        assert (x1 - x0, y1 - y0) == (max(c for _, c in ink) - left + 1, max(r for r, _ in ink) - top + 1)
        for r, c in ink:
            expected_map[y0 + r - top, x0 + c - left] = label + 1
        for r in range(28):
            for c in range(28):
                y, x = y0 - top + r, x0 - left + c
                expected_image[y, x] = max(expected_image[y, x], digits[label][r, c])
    np.testing.assert_array_equal(canvas.class_map, expected_map)
    np.testing.assert_array_equal(canvas.image, expected_image)


def test_boxes_are_tight_and_disjoint_for_scaled_digits():
    digits, labels = blob_digits(2)
    for seed in range(5):
        canvas = paste_digits(digits, labels, np.random.default_rng(seed), (120, 120), (3, 6), scale=(0.5, 1.7),
                              clutter=4)
        covered = np.zeros(canvas.class_map.shape, bool)
        for (x0, y0, x1, y1), label in zip(canvas.boxes.astype(int), canvas.box_labels, strict=True):
            inside = canvas.class_map[y0:y1, x0:x1] == label + 1
            # tight: every edge row and column of the box holds a pixel of the class
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert not covered[y0:y1, x0:x1].any(), "boxes of non-overlapping digits meet"
            covered[y0:y1, x0:x1] = True
        assert not canvas.class_map[~covered].any(), "class pixels outside every box"


def test_overlap_later_digit_overwrites_classes():
    digits, labels = blob_digits(3)
    canvas = paste_digits(digits, labels, np.random.default_rng(0), (28, 28), 2, overlap=True)
    first, second = canvas.box_labels
    second_ink = np.zeros((28, 28), bool)
    second_ink[tuple(np.array(loop_ink(digits[second])).T)] = True
    first_only = np.zeros((28, 28), bool)
    first_only[tuple(np.array(loop_ink(digits[first])).T)] = True
    first_only &= ~second_ink
    assert (canvas.class_map[second_ink] == second + 1).all()
    assert (canvas.class_map[first_only] == first + 1).all()
    np.testing.assert_array_equal(canvas.image, np.maximum(digits[first], digits[second]))


def test_clutter_is_ink_of_background_class():
    digits, labels = blob_digits(4)
    canvas = paste_digits(digits, labels, np.random.default_rng(0), (64, 64), 0, scale=(0.8, 1.2), clutter=6)
    assert canvas.image.max() > 0 and not canvas.class_map.any() and canvas.boxes.shape == (0, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(canvas_size=(20, 40), num_digits=1), "canvas_size"),
    (dict(canvas_size=(40, 40), num_digits=(3, 1)), "num_digits"),
    (dict(canvas_size=(40, 40), num_digits=1, scale=(0.0, 1.0)), "scale"),
    (dict(canvas_size=(40, 40), num_digits=1, clutter=-1), "clutter"),
])
def test_bad_arguments_are_named(kwargs, message):
    digits, labels = blob_digits()
    with pytest.raises(ValueError, match=message):
        paste_digits(digits, labels, np.random.default_rng(0), **kwargs)


@needs_mnist
def test_each_split_pastes_only_its_own_digits():
    """At scale 1, the pixels in a box are the tight ink crop of the pasted digit: find each among both splits."""
    def crop_hashes(images: np.ndarray) -> set[bytes]:
        ink = images > images.max(axis=(1, 2), keepdims=True) / 2
        rows, cols = ink.any(2), ink.any(1)
        top, bottom = rows.argmax(1), 28 - rows[:, ::-1].argmax(1)
        left, right = cols.argmax(1), 28 - cols[:, ::-1].argmax(1)
        return {hashlib.sha1(image[t:b, l:r].tobytes() + bytes([b - t, r - l])).digest()
                for image, t, b, l, r in zip(images, top, bottom, left, right, strict=True)}

    hashes = {split: crop_hashes(load_mnist(split)[0]) for split in ("train", "test")}
    for split, other in (("train", "test"), ("test", "train")):
        canvases = make_canvases(split, 3, seed=0, canvas_size=(84, 84), num_digits=3, clutter=3)
        for image, boxes, count in zip(canvases["images"], canvases["boxes"], canvases["num_boxes"], strict=True):
            for x0, y0, x1, y1 in boxes[:count].astype(int):
                crop = hashlib.sha1(image[y0:y1, x0:x1].tobytes() + bytes([y1 - y0, x1 - x0])).digest()
                assert crop in hashes[split] and crop not in hashes[other]

