"""Moving digits from real MNIST: every frame holds the named MNIST test (or train) image at the stated position
(read back with an idx parser of the test's own), the positions move in the labelled direction, seeded."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from cnn.data.moving_digits import MNIST_DIR, make_clips
from cnn.errors import UserError

needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"{MNIST_DIR.resolve()} is absent")


def idx_images(name: str) -> np.ndarray:
    """The idx3 format written out: 16 header bytes (magic, count, rows, cols as big-endian int32), then pixels."""
    raw = gzip.decompress((MNIST_DIR / name).read_bytes())
    count = int.from_bytes(raw[4:8], "big")
    return np.frombuffer(raw[16:], np.uint8).reshape(count, 28, 28)


@needs_mnist
@pytest.mark.parametrize(("split", "file"),
                         [("test", "t10k-images-idx3-ubyte.gz"), ("train", "train-images-idx3-ubyte.gz")])
def test_frames_hold_the_split_digit_moving_in_the_label_direction(split, file):
    images = idx_images(file)
    data = make_clips(split, 24, seed=3, frames=6)
    assert data.clips.shape == (24, 6, 48, 48, 1) and data.clips.dtype == np.uint8
    steps = {0: (0, 1), 1: (0, -1), 2: (1, 0), 3: (-1, 0)}
    for clip, label, digit, positions in zip(*data, strict=True):
        moves = np.diff(positions, axis=0)
        speed = np.abs(moves).sum(axis=1)
        assert len(set(speed)) == 1 and speed[0] in (1, 2)
        assert (moves == np.array(steps[int(label)]) * speed[0]).all()
        for frame, (row, col) in zip(clip, positions, strict=True):
            assert 0 <= row <= 48 - 28 and 0 <= col <= 48 - 28
            np.testing.assert_array_equal(frame[row : row + 28, col : col + 28, 0], images[digit])
            assert frame.sum(dtype=np.int64) == images[digit].sum(dtype=np.int64)  # nothing else on the canvas
    assert set(data.labels) == {0, 1, 2, 3}


@needs_mnist
def test_seeded():
    a, b, c = make_clips("test", 8, seed=0), make_clips("test", 8, seed=0), make_clips("test", 8, seed=1)
    np.testing.assert_array_equal(a.clips, b.clips)
    assert not np.array_equal(a.digits, c.digits)


def test_bad_arguments_are_one_line(tmp_path):
    with pytest.raises(UserError, match=r"split must be one of \['test', 'train'\], got 'val'"):
        make_clips("val", 1, 0)
    with pytest.raises(UserError, match=r"size must be at least 46 for 10 frames"):
        make_clips("test", 1, 0, size=40)
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte.gz: cannot read the MNIST idx file"):
        make_clips("test", 1, 0, root=Path(tmp_path))
