"""Streaming splits: images fitted without distortion, random access equal to the in-memory split, batches that do
not depend on whether the split is streamed, and the errors of a wrong file format."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnn.data import DatasetSpec, TrainStream, build_preprocess, files, make_source, sources
from cnn.data.streaming import StreamingSplit, fit_image
from cnn.errors import ConfigError, UserError


def test_fit_image_crops_the_centre_without_resizing_when_one_side_fits():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :10] = image[:, 30:] = 255  # outside the centre 20 columns
    image[:, 10:30] = np.arange(20, dtype=np.uint8)[None, :, None]
    np.testing.assert_array_equal(fit_image(image, (20, 20, 3)), image[:, 10:30])


@pytest.mark.parametrize(("height", "width"), [(16, 16), (12, 24), (30, 15)])
def test_fit_image_is_a_plain_resize_when_the_aspect_ratio_matches(height, width):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    target = (height * 2, width * 2, 3)
    expected = np.asarray(Image.fromarray(image).resize((width * 2, height * 2), Image.BILINEAR))
    np.testing.assert_array_equal(fit_image(image, target), expected)


def test_fit_image_keeps_the_aspect_ratio_of_a_wide_image():
    # Left half dark, right half bright: a centre crop of the 2:1 image keeps both halves, side by side.
    image = np.zeros((10, 20), np.uint8)
    image[:, 10:] = 200
    out = fit_image(image, (40, 40, 1))
    assert out.shape == (40, 40, 1)
    assert (out[:, :15] == 0).all() and (out[:, 25:] == 200).all()


def test_fit_image_errors():
    with pytest.raises(UserError, match="3 channel"):
        fit_image(np.zeros((4, 4, 1), np.uint8), (4, 4, 3))
    with pytest.raises(UserError, match="only 2D images"):
        fit_image(np.zeros((5, 5, 5, 1), np.uint8), (4, 4, 4, 1))
    cube = np.ones((4, 4, 4, 1), np.uint8)
    assert fit_image(cube, (4, 4, 4, 1)) is cube


@pytest.mark.parametrize("workers", [1, 3, 16])
def test_gather_returns_the_examples_in_the_order_asked(workers):
    table = {i: (np.full((2, 2, 1), i, np.uint8), i % 7) for i in range(11)}
    split = StreamingSplit(table.__getitem__, 11, (2, 2, 1), workers)
    indices = np.array([10, 3, 3, 0, 7])
    images, labels = split.gather(indices)
    np.testing.assert_array_equal(images[:, 0, 0, 0], indices)
    np.testing.assert_array_equal(labels, indices % 7)
    assert split.gather(np.array([], int))[0].shape == (0, 2, 2, 1)


def test_streamed_digits_equal_the_in_memory_split(tmp_path):
    streamed = make_source({"name": "digits", "data_dir": str(tmp_path / "ar"), "streaming": True})
    in_memory = make_source({"name": "digits", "data_dir": str(tmp_path / "tfrecord")})
    for split in ("train", "test"):
        stream, memory = streamed.load(split), in_memory.load(split)
        assert isinstance(stream, StreamingSplit) and len(stream) == len(memory)
        order = np.random.default_rng(1).permutation(len(memory))
        images, labels = stream.gather(order)
        np.testing.assert_array_equal(images, memory.images[order])
        np.testing.assert_array_equal(labels, memory.labels[order])
    # Batches are a function of (seed, step) alone, whichever way the split is held.
    preprocess = build_preprocess("decode|random_crop(8, pad=1)|normalize", streamed.spec)
    a = TrainStream(streamed.load("train"), preprocess, 64, seed=3)
    b = TrainStream(in_memory.load("train"), preprocess, 64, seed=3)
    for step in (0, 21, 22, 57):
        np.testing.assert_array_equal(a.batch(step)["image"], b.batch(step)["image"])
        np.testing.assert_array_equal(a.batch(step)["label"], b.batch(step)["label"])


def test_streaming_a_dataset_prepared_in_another_format_says_how_to_fix_it(tmp_path):
    make_source({"name": "digits", "data_dir": str(tmp_path)}).load("test")  # prepared as TFRecord
    with pytest.raises(UserError, match=r"ArrayRecord.*--streaming"):
        make_source({"name": "digits", "data_dir": str(tmp_path), "streaming": True}).load("test")


def test_a_dataset_prepared_for_streaming_also_loads_into_memory(tmp_path):
    streamed = make_source({"name": "digits", "data_dir": str(tmp_path), "streaming": True}).load("test")
    in_memory = make_source({"name": "digits", "data_dir": str(tmp_path), "streaming": False}).load("test")
    assert isinstance(in_memory, sources.ArraySplit)
    np.testing.assert_array_equal(streamed.gather(np.arange(len(in_memory)))[0], in_memory.images)


def test_a_split_too_large_for_memory_streams_unless_told_not_to(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_IN_MEMORY_BYTES", 100 * 64)  # 100 digits of 8×8
    make_source({"name": "digits", "data_dir": str(tmp_path / "ar"), "streaming": True}).load("test")
    assert isinstance(make_source({"name": "digits", "data_dir": str(tmp_path / "ar")}).load("train"), StreamingSplit)
    with pytest.raises(UserError, match="too large for host memory"):
        make_source({"name": "digits", "data_dir": str(tmp_path / "ar"), "streaming": False}).load("train")
    with pytest.raises(UserError, match=r"holds it as TFRecord.*--streaming"):
        make_source({"name": "digits", "data_dir": str(tmp_path / "tfrecord")}).load("train")


def write_mixed_folder(root, sizes=((12, 20), (20, 12), (16, 16), (9, 30))):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i, (h, w) in enumerate(sizes):
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_image_folder_streams_the_same_images_it_loads(tmp_path, monkeypatch):
    write_mixed_folder(tmp_path)
    config = {"name": "image_folder", "path": str(tmp_path), "image_size": (8, 8), "channels": 3}
    in_memory = make_source(config)
    streamed = make_source({**config, "streaming": True, "num_workers": 2})
    assert streamed.spec == in_memory.spec  # 8 train images < STATS_SAMPLE: the sample is the whole split
    memory, stream = in_memory.load("test"), streamed.load("test")
    assert isinstance(stream, StreamingSplit) and memory.images.shape == (8, 8, 8, 3)
    np.testing.assert_array_equal(stream.gather(np.arange(8))[0], memory.images)
    np.testing.assert_array_equal(stream.gather(np.arange(8))[1], [0] * 4 + [1] * 4)
    # The first file, 12×20: resized to 8×13, then its centre 8 columns.
    first = np.asarray(Image.open(tmp_path / "test" / "a" / "0.png").resize((13, 8), Image.BILINEAR))
    np.testing.assert_array_equal(memory.images[0], first[:, 2:10])
    monkeypatch.setattr(files.ImageFolderSource, "STATS_SAMPLE", 3)
    sampled = make_source({**config, "streaming": True})
    assert sampled.spec.mean != in_memory.spec.mean  # statistics of 3 of the 8 train images
    with pytest.raises(ConfigError, match="channels must be 1"):
        make_source({**config, "channels": 4})


def test_a_streamed_label_out_of_range_stops_the_batch_that_reads_it():
    from cnn.tasks import make_task
    from configs.default import get_config

    spec = DatasetSpec(num_classes=10, image_shape=(2, 2, 1), scale=1.0, mean=(0.0,), std=(1.0,))
    labels = {i: i % 10 for i in range(40)} | {29: 12, 33: -1}  # two bad labels, met only when read
    split = StreamingSplit(lambda i: (np.zeros((2, 2, 1), np.uint8), labels[i]), 40, (2, 2, 1), workers=2)
    make_task(get_config("runlocal"), spec).check_split(split, "train")
    np.testing.assert_array_equal(split.gather(np.arange(29))[1], np.arange(29) % 10)  # good examples pass
    with pytest.raises(UserError, match=r"^split 'train' \(streamed\): 2 label\(s\) outside 0\.\.9: \[-1, 12\]$"):
        split.gather(np.arange(20, 40))
    stream = TrainStream(split, build_preprocess("decode", spec), 40, seed=0)
    with pytest.raises(UserError, match=r"split 'train' \(streamed\)"):
        stream.batch(0)
