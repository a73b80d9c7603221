"""Window-classifier crops: each crop found again in its canvas by exhaustive search, its label checked against the
digits' centres; the .npz loads as a ``numpy`` dataset."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from cnn.data import windows
from cnn.data.canvas import Canvas
from cnn.data.files import NumpySource
from cnn.data.windows import (
    BACKGROUND,
    WindowSource,
    crops_from_canvas,
    detection_canvases,
    image_pyramid,
    make_window_crops,
    write_window_dataset,
)
from cnn.errors import UserError
from tests.data.test_canvas import needs_mnist


def test_crops_are_centred_on_digits_or_far_from_all():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, size=(60, 70)).astype(np.uint8)  # noise: every window is unique
    boxes = np.array([[0, 6, 3, 25], [30, 20, 41, 37], [50, 40, 66, 58]], np.float32)  # the first at the border
    canvas = Canvas(image, np.zeros(image.shape, np.int32), boxes, np.array([4, 7, 1], np.int32))
    window, jitter, margin = 16, 2, 6
    crops, labels, crop_boxes = crops_from_canvas(canvas, rng, window, positives=5, negatives=40, jitter=jitter,
                                                  margin=margin)
    assert crops.shape == (43, 16, 16) and (labels != BACKGROUND).sum() == 3
    pad = window // 2 + jitter
    views = sliding_window_view(np.pad(image, pad), (window, window))
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for crop, label, crop_box in zip(crops, labels, crop_boxes, strict=True):
        (top, left), = np.argwhere((views == crop).all(axis=(2, 3))) - pad  # found exactly once; canvas coordinates
        centre = np.array([left, top]) + window // 2
        if label == BACKGROUND:
            assert (np.abs(centres - centre).max(axis=1) >= margin).all()
            np.testing.assert_array_equal(crop_box, 0)
        else:
            (k,) = np.flatnonzero(canvas.box_labels == label)
            assert (np.abs(np.floor(centres[k]) - centre) <= jitter).all()
            np.testing.assert_array_equal(crop_box, boxes[k] - [left, top] * 2)


def test_crops_of_a_split_use_its_digits_and_are_reproducible(monkeypatch):
    asked = []
    rng = np.random.default_rng(1)
    digits = np.zeros((10, 28, 28), np.uint8)
    digits[:, 6:22, 9:19] = rng.integers(1, 256, size=(10, 16, 10))

    def load(split, root=None):
        asked.append(split)
        return digits, np.arange(10)

    monkeypatch.setattr(windows, "load_mnist", load)
    first = make_window_crops("test", 50, seed=3, background=0.4)
    again = make_window_crops("test", 50, seed=3, background=0.4)
    assert asked == ["test", "test"]
    assert first["images"].shape == (50, 32, 32, 1) and first["images"].dtype == np.uint8
    assert (first["labels"] == BACKGROUND).sum() == 20
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])


@needs_mnist
def test_window_dataset_loads_as_a_numpy_source(tmp_path):
    path = tmp_path / "windows.npz"
    write_window_dataset(path, train_count=60, test_count=20, seed=0)
    source = NumpySource(str(path))
    assert source.spec.num_classes == 11 and source.spec.image_shape == (32, 32, 1)
    assert len(source.load("train")) == 60 and len(source.load("test")) == 20


def test_pyramid_levels_have_the_scaled_sizes():
    image = np.random.default_rng(2).integers(0, 256, size=(60, 80, 1)).astype(np.uint8)
    levels = image_pyramid(image, (1.0, 2**-0.5, 0.5))
    assert [level.shape for level in levels] == [(60, 80, 1), (42, 57, 1), (30, 40, 1)]
    np.testing.assert_array_equal(levels[0], image)
    flat = image_pyramid(np.full((60, 80), 77, np.uint8), (0.5,))[0]
    assert flat.shape == (30, 40) and (flat == 77).all()  # a filter's weights sum to 1


@needs_mnist
def test_digit_windows_source_serves_the_seeded_crops_and_test_canvases():
    source = WindowSource({"train_examples": 30, "test_examples": 12, "canvases": 3, "canvas_size": (72, 64),
                           "seed": 5})
    train, test, canvases = source.load("train"), source.load("test"), source.load("canvases")
    expected_train, expected_test = make_window_crops("train", 30, 5), make_window_crops("test", 12, 6)
    np.testing.assert_array_equal(train.images, expected_train["images"])
    np.testing.assert_array_equal(test.labels, expected_test["labels"])
    pixels = expected_train["images"] / 255.0
    assert source.spec.num_classes == 11 and source.spec.image_shape == (32, 32, 1)
    np.testing.assert_allclose([*source.spec.mean, *source.spec.std], [pixels.mean(), pixels.std()], atol=1e-4)
    made = detection_canvases(3, seed=5, canvas_size=(72, 64))
    np.testing.assert_array_equal(canvases.images[..., 0], made["images"])
    np.testing.assert_array_equal(canvases.box_labels, made["box_labels"])
    for c in range(10):  # each class's mean ink box in the train crops; the whole window for one without crops
        mine = expected_train["labels"] == c
        expected = expected_train["boxes"][mine].mean(0) if mine.any() else [0, 0, 32, 32]
        np.testing.assert_allclose(canvases.templates[c], expected, rtol=1e-6)


def test_digit_windows_source_rejects_bad_settings():
    with pytest.raises(UserError, match=r"generator\.canvases must be an integer >= 1"):
        WindowSource({"train_examples": 30, "test_examples": 12, "canvases": 0, "seed": 0})
