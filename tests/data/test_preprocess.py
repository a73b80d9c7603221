"""Preprocessing ops against their definitions; determinism per (seed, step); independence of the process count."""

from __future__ import annotations

import numpy as np
import pytest

from cnn.data import BatchRandom, DatasetSpec, build_preprocess
from cnn.errors import ConfigError

SPEC = DatasetSpec(10, (6, 6, 3), 255.0, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8)


def run(chain: str, images=IMAGES, seed=(0, 0)):
    return build_preprocess(chain, SPEC)(images, BatchRandom(seed, len(images)))


def test_decode_and_normalize_formula():
    np.testing.assert_allclose(run("decode"), IMAGES / 255.0, rtol=1e-6)
    expected = (IMAGES / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.3])
    np.testing.assert_allclose(run("decode|normalize"), expected, rtol=1e-5, atol=1e-6)
    cifar = (IMAGES / 255.0 - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2470, 0.2435, 0.2616])
    np.testing.assert_allclose(run("decode|normalize('cifar10')"), cifar, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run("decode|normalize(0.5, 2.0)"), (IMAGES / 255.0 - 0.5) / 2.0, rtol=1e-5, atol=1e-6)


def test_random_crop_takes_a_window_of_the_padded_image():
    out = run("random_crop(4, pad=1)")
    padded = np.pad(IMAGES, [(0, 0), (1, 1), (1, 1), (0, 0)])
    assert out.shape == (8, 4, 4, 3)
    for image, crop in zip(padded, out, strict=True):
        windows = [image[a:a + 4, b:b + 4] for a in range(5) for b in range(5)]
        assert any(np.array_equal(crop, w) for w in windows)
    np.testing.assert_array_equal(out, run("random_crop(4, pad=1)"))  # same (seed, step): same crops
    assert not np.array_equal(out, run("random_crop(4, pad=1)", seed=(0, 1)))


def test_flips_and_center_crop():
    out = run("flip_lr")
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, IMAGES, strict=True)]
    kept = [np.array_equal(o, i) for o, i in zip(out, IMAGES, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    np.testing.assert_array_equal(run("flip_lr(1.0)|flip_ud(1.0)"), IMAGES[:, ::-1, ::-1])
    np.testing.assert_array_equal(run("center_crop(4)"), IMAGES[:, 1:5, 1:5])
    np.testing.assert_array_equal(run("pad(2)"), np.pad(IMAGES, [(0, 0), (2, 2), (2, 2), (0, 0)]))


def test_resize_keeps_constant_images_and_identity():
    constant = np.full((2, 6, 6, 3), 7, np.uint8)
    np.testing.assert_allclose(run("decode|resize(12)", constant), np.full((2, 12, 12, 3), 7 / 255), rtol=1e-6)
    np.testing.assert_allclose(run("decode|resize(6)"), IMAGES / 255.0, rtol=1e-6)


def test_augmentation_does_not_depend_on_the_process_count():
    chain = build_preprocess("random_crop(4, pad=2)|flip_lr", SPEC)
    whole = chain(IMAGES, BatchRandom((3, 9), 8))
    parts = [chain(IMAGES[2 * i: 2 * i + 2], BatchRandom((3, 9), 8, slice(2 * i, 2 * i + 2))) for i in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize(("chain", "message"), [
    ("decode|blur", "unknown preprocessing op 'blur'; choose from"),
    ("random_crop(4, pad=", "cannot parse preprocessing op"),
    ("random_crop(__import__('os'))", "cannot parse preprocessing op"),
    ("normalize('imagenet21k')", "no statistics for it"),
    ("center_crop(1, 2, 3)", "preprocessing op 'center_crop(1, 2, 3)'"),
])
def test_bad_chains_fail_naming_the_op(chain, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_preprocess(chain, SPEC)


def test_speed_plays_each_clip_at_a_rate_drawn_in_its_range():
    """A ramp x[n] = n (zeros after 60 samples) played r times as fast is y[n] = r·n up to n = 59 / r: each clip's
    rate read off its output lies in [low, high], the clips differ, and the samples past the ramp are zero."""
    spec = DatasetSpec(10, (100, 1), 1.0)
    ramp = np.r_[np.arange(60.0), np.zeros(40)][None, :, None].repeat(6, axis=0)
    out = build_preprocess("speed(0.8, 1.2)", spec)(ramp, BatchRandom((0, 3), 6))
    rates = out[:, 1, 0]
    assert np.all((rates >= 0.8) & (rates <= 1.2)) and len(set(rates.round(6))) == 6
    for clip, r in zip(out[:, :, 0], rates, strict=True):
        inside = np.arange(100) <= 59 / r
        np.testing.assert_allclose(clip[inside], r * np.arange(100)[inside], rtol=1e-5)
        assert np.all(clip[np.arange(100) >= 60 / r] == 0)
    with pytest.raises(ConfigError, match="expected 0 < low <= high"):
        build_preprocess("speed(1.2, 0.8)", spec)
    with pytest.raises(ConfigError, match=r"speed: expected mono waveforms \(batch, samples, 1\)"):
        run("speed")


def test_augmented_stream_restarted_at_step_k_equals_uninterrupted():
    from cnn.data import ArraySplit, TrainStream

    split = ArraySplit(RNG.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8), np.arange(40, dtype=np.int32) % 10)
    chain = build_preprocess("decode|random_crop(6, pad=2)|flip_lr|normalize", SPEC)
    uninterrupted = list(TrainStream(split, chain, global_batch=8, seed=5).iterate(0, 12))
    restarted = list(TrainStream(split, chain, global_batch=8, seed=5).iterate(7, 12))  # a new process at step 7
    for before, after in zip(uninterrupted[7:], restarted, strict=True):
        np.testing.assert_array_equal(before["image"], after["image"])
        np.testing.assert_array_equal(before["label"], after["label"])
