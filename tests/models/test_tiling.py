"""Overlap-tile inference against the prediction of the whole mirror-padded image at once (numpy's ``np.pad``
``reflect``), on a narrow unpadded U-Net."""

import jax
import numpy as np
import pytest

from cnn.models import create
from cnn.models.tiling import overlap_tile_predict
from tests.models.test_zoo import random_variables


def test_tiles_equal_the_whole_image():
    model = create("unet", num_classes=3, width=2, depth=2)  # valid inputs 4·b + 28, outputs 4·b - 12
    images = np.random.default_rng(0).standard_normal((2, 40, 28, 1), dtype=np.float32)
    variables = random_variables(model, (1, 60, 60, 1))
    predict = jax.jit(lambda x: model.apply(variables, x, train=False))
    tiled = overlap_tile_predict(predict, images, tile_size=60, batch_size=3)  # 20² output tiles, margin 20
    whole = predict(np.pad(images, ((0, 0), (20, 20), (20, 20), (0, 0)), mode="reflect"))  # 80×68 → 40×28
    assert tiled.shape == whole.shape == (2, 40, 28, 3)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)


def test_bad_images_and_tiles():
    predict = jax.jit(lambda x: x[:, 1:-2, 1:-2, :])  # an odd margin
    with pytest.raises(ValueError, match="images must be"):
        overlap_tile_predict(predict, np.zeros((8, 8, 1)), tile_size=8)
    with pytest.raises(ValueError, match="smaller by an even margin"):
        overlap_tile_predict(predict, np.zeros((1, 8, 8, 1)), tile_size=8)
