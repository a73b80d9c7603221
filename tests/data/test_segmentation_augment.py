"""The segmentation augmentation ops of a config string (rot90, elastic, mirror_pad with flips and random crops):
label and weight maps move with the image, labels keep their values, and the batches are a pure function of
(seed, step): a resumed stream and a stream split over two processes give bitwise the batches of one run."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cnn.data import ArraySplit, BatchRandom, DatasetSpec, build_preprocess
from cnn.data.pipeline import TrainStream
from cnn.errors import ConfigError

SPEC = DatasetSpec(2, (32, 32, 1), 255.0, (0.5,), (0.2,), kind="dense")
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
LABELS = (IMAGES[..., 0] > 128).astype(np.int32)  # a label every moved pixel must keep: its image value decides it
WEIGHTS = RNG.uniform(0.5, 3.0, (8, 32, 32)).astype(np.float32)
AUGMENT = "decode|rot90|flip_lr|elastic(sigma=10, grid=3)|mirror_pad(4)|random_crop(24)|normalize"
FUSED = "decode|rot90|flip_lr|elastic(sigma=10, grid=3, pad=4, crop=24)|normalize"  # the same, computing only the crop


def batch(chain: str, step: int = 0) -> dict[str, np.ndarray]:
    data = {"image": IMAGES, "label": LABELS, "weight": WEIGHTS}
    return build_preprocess(chain, SPEC).batch(data, BatchRandom((0, step), len(IMAGES)))


def test_symmetries_and_mirror_padding_move_the_label_and_weight_with_the_image():
    out = batch("rot90|flip_lr|flip_ud|mirror_pad(3)|random_crop(20)")
    np.testing.assert_array_equal(out["label"], (out["image"][..., 0] > 128).astype(np.int32))
    # Each weight pixel still sits at its image pixel: find the transform of each example among the 8 symmetries.
    for n in range(len(IMAGES)):
        image, weight = np.pad(IMAGES[n, ..., 0], 3, mode="reflect"), np.pad(WEIGHTS[n], 3, mode="reflect")
        found = False
        for k in range(4):
            for flip in (False, True):
                a, w = np.rot90(image, k), np.rot90(weight, k)
                a, w = (a[:, ::-1], w[:, ::-1]) if flip else (a, w)
                for y in range(a.shape[0] - 19):
                    for x in range(a.shape[1] - 19):
                        if np.array_equal(a[y:y + 20, x:x + 20], out["image"][n, ..., 0]):
                            found |= np.array_equal(w[y:y + 20, x:x + 20], out["weight"][n])
        assert found, n


def test_elastic_keeps_label_values_and_is_the_identity_without_displacement():
    out = batch("elastic(sigma=10, grid=3)")
    assert out["label"].dtype == np.int32 and set(np.unique(out["label"])) <= {0, 1}
    assert out["weight"].dtype == np.float32 and out["weight"].min() >= 0.5 - 1e-5  # linear: within the range
    assert not np.array_equal(out["label"], LABELS)
    still = batch("elastic(sigma=0, grid=3)")
    np.testing.assert_allclose(still["image"], IMAGES, atol=1e-3)  # the spline passes through the pixels
    np.testing.assert_array_equal(still["label"], LABELS)
    np.testing.assert_allclose(still["weight"], WEIGHTS, rtol=1e-5)


@pytest.mark.parametrize("augment", [AUGMENT, FUSED])
def test_a_resumed_or_split_stream_gives_bitwise_the_same_batches(augment):
    split = ArraySplit(IMAGES, LABELS, WEIGHTS)
    chain = build_preprocess(augment, SPEC)
    whole = list(TrainStream(split, chain, 4, seed=7).iterate(0, 6))
    resumed = list(TrainStream(split, chain, 4, seed=7).iterate(3, 6))
    halves = [TrainStream(split, chain, 4, seed=7, process_index=p, process_count=2).batch(4) for p in (0, 1)]
    assert set(whole[0]) == {"image", "label", "weight"} and whole[0]["image"].shape == (4, 24, 24, 1)
    for key in whole[0]:
        for a, b in zip(whole[3:], resumed, strict=True):
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(whole[4][key], np.concatenate([h[key] for h in halves]))
    assert not np.array_equal(whole[0]["image"], whole[1]["image"])


def test_augmentation_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"rot90: needs square 2D images .* got \(2, 4, 6, 1\)"):
        build_preprocess("rot90", SPEC)(np.zeros((2, 4, 6, 1), np.uint8), BatchRandom((0, 0), 2))
    with pytest.raises(ConfigError, match=r"elastic: needs 2D images"):
        build_preprocess("elastic", SPEC)(np.zeros((2, 4, 4, 4, 1), np.uint8), BatchRandom((0, 0), 2))


@pytest.mark.parametrize("pad, crop", [(4, 24), (40, 100)])  # 40: mirrored more than once around a 32² image
def test_elastic_with_a_crop_is_scipy_deform_then_mirror_pad_then_crop(pad, crop):
    out = batch(f"decode|elastic(sigma=10, grid=3, pad={pad}, crop={crop})", step=3)
    # The reference: the draws of BatchRandom((0, 3), 8) in the chain's order, scipy's zoom and map_coordinates on
    # the whole image, numpy's reflect padding, then the crop.
    rng = np.random.default_rng([0, 3])
    generators = [np.random.default_rng(s) for s in rng.integers(0, 2**63 - 1, size=8)]
    rows, cols = (rng.integers(0, 32 + 2 * pad - crop + 1, size=8) for _ in range(2))
    grid = np.stack(np.mgrid[0:32, 0:32]).astype(np.float64)
    for n, g in enumerate(generators):
        field = np.stack([ndimage.zoom(c, 32 / 3, order=3, mode="mirror") for c in g.normal(0.0, 10.0, (2, 3, 3))])
        window = (slice(rows[n], rows[n] + crop), slice(cols[n], cols[n] + crop))
        for key, plane, order in [("image", IMAGES[n, ..., 0] / np.float32(255), 3), ("label", LABELS[n], 0),
                                  ("weight", WEIGHTS[n], 1)]:
            warped = ndimage.map_coordinates(plane, grid + field, order=order, mode="mirror")
            expected = np.pad(warped, pad, mode="reflect")[window]
            got = out[key][n, ..., 0] if key == "image" else out[key][n]
            if key == "label":
                np.testing.assert_array_equal(got, expected)
            else:
                np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(ConfigError, match=r"elastic\(crop=50\): larger than the images \(32, 32\) mirror-padded by 4"):
        batch("elastic(pad=4, crop=50)")
