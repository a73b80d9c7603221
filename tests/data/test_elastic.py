"""Segmentation augmentation: determinism in the generator, labels kept in their set, the identity for a zero
displacement, the displacement field's statistics (node values ``N(0, σ²)``, checked over many draws), and image and
label transformed alike (an image equal to its label map stays equal under symmetries and tiles)."""

import numpy as np
import pytest
from scipy import ndimage

from cnn.data.elastic import augment, elastic_deform, elastic_displacement, flip_rotate, random_tile, warp

RNG = np.random.default_rng(7)
IMAGE = RNG.random((41, 37, 2)).astype(np.float32)
LABEL = RNG.choice(np.array([0, 3, 255], np.int32), (41, 37))


def test_same_seed_bitwise_same_result():
    first = augment(np.random.default_rng((5, 11)), IMAGE, LABEL, tile_size=24, label_size=16)
    again = augment(np.random.default_rng((5, 11)), IMAGE, LABEL, tile_size=24, label_size=16)
    other = augment(np.random.default_rng((5, 12)), IMAGE, LABEL, tile_size=24, label_size=16)
    assert first[0].shape == (24, 24, 2) and first[1].shape == (16, 16)
    for a, b in zip(first, again, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert first[0].tobytes() != other[0].tobytes()


def test_labels_keep_their_values():
    for seed in range(5):
        _, label = elastic_deform(np.random.default_rng(seed), IMAGE, LABEL, sigma=20.0)
        assert label.dtype == LABEL.dtype and set(np.unique(label)) <= {0, 3, 255}
        assert (label != LABEL).any()  # it did move


def test_zero_displacement_is_the_identity():
    zero = np.zeros((2, *LABEL.shape))
    np.testing.assert_allclose(warp(IMAGE, zero, order=3), IMAGE, atol=1e-5)
    np.testing.assert_array_equal(warp(LABEL, zero, order=0), LABEL)


def test_displacement_field_statistics():
    sigma = 10.0
    fields = np.stack([elastic_displacement(np.random.default_rng(s), (41, 41), sigma=sigma) for s in range(500)])
    nodes = fields[:, :, ::20, ::20]  # the 3×3 grid's nodes: pixels 0, 20, 40
    # the spline passes through the node draws, which are N(0, σ²): 9000 of them, sd estimate within ~1%
    np.testing.assert_allclose(nodes[0], np.random.default_rng(0).normal(0.0, sigma, (2, 3, 3)), atol=1e-9)
    assert abs(nodes.mean()) < 4 * sigma / np.sqrt(nodes.size)
    assert 0.95 * sigma < nodes.std() < 1.05 * sigma
    # between the nodes the field averages them: a smaller spread, but still a displacement
    assert 0.3 * sigma < fields[:, :, 10, 10].std() < 0.9 * sigma


def test_symmetries_and_tiles_move_image_and_label_alike():
    image = LABEL.astype(np.float32)
    rotations = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        out_image, out_label = flip_rotate(rng, image, LABEL)
        np.testing.assert_array_equal(out_image, out_label)
        rotations.add(out_label.tobytes())
        tile, label_tile = random_tile(rng, out_image, out_label, tile_size=20, label_size=12)
        np.testing.assert_array_equal(tile[4:-4, 4:-4], label_tile)  # the label tile is the image tile's centre
    assert len(rotations) >= 6  # of the 8 symmetries


def test_bad_input():
    with pytest.raises(ValueError, match="must share H and W"):
        flip_rotate(RNG, IMAGE, LABEL[:-1])
    with pytest.raises(ValueError, match="even margin"):
        random_tile(RNG, IMAGE, LABEL, tile_size=21, label_size=12)
    with pytest.raises(ValueError, match="even margin"):
        random_tile(RNG, IMAGE, LABEL, tile_size=60, label_size=50)


def test_a_weight_map_moves_with_the_label():
    rng = np.random.default_rng(3)
    image, label, weight = augment(rng, IMAGE[..., 0], LABEL, tile_size=24, label_size=16, weight=LABEL / 255.0,
                                   sigma=0.0)  # no deformation: the weight tile is the label tile, scaled
    assert image.shape == (24, 24) and weight.shape == label.shape == (16, 16)
    np.testing.assert_allclose(weight, label / 255.0, atol=1e-6)
    again = augment(np.random.default_rng(3), IMAGE[..., 0], LABEL, tile_size=24, label_size=16, sigma=0.0)
    np.testing.assert_array_equal(again[1], label)  # the weight does not change the draws
    np.testing.assert_allclose(again[0], image, atol=1e-6)


@pytest.mark.parametrize("shape, grid", [((41, 37), 3), ((30, 52), 4)])
def test_displacement_is_scipy_zoom_of_the_node_draws(shape, grid):
    nodes = np.random.default_rng(2).normal(0.0, 10.0, (2, grid, grid))
    expected = np.stack([ndimage.zoom(c, (shape[0] / grid, shape[1] / grid), order=3, mode="mirror") for c in nodes])
    np.testing.assert_allclose(elastic_displacement(np.random.default_rng(2), shape, grid=grid), expected, atol=1e-12)
    rows, cols = np.array([5, 0, 5, 29]), np.arange(3, 9)  # any pixels, in any order, repeated
    window = elastic_displacement(np.random.default_rng(2), shape, grid=grid, at=(rows, cols))
    np.testing.assert_allclose(window, expected[:, rows][:, :, cols], atol=1e-12)
