"""The U-Net weight map against a brute-force computation: cells from scikit-image's ``measure.label``, distances
by a loop over every pixel of every cell, class weights from scikit-learn's "balanced" ``compute_class_weight``."""

import math

import numpy as np
import pytest
from skimage.measure import label as connected_components
from sklearn.utils.class_weight import compute_class_weight

from cnn.data.weight_map import unet_weight_map

MASK = np.array(
    [
        [1, 1, 0, 0, 0, 0, 0, 1, 1, 1],
        [1, 1, 0, 1, 1, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 0, 2, 2, 0, 1],
        [0, 1, 0, 0, 0, 0, 2, 2, 0, 1],  # class 2: not a cell, another class
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 1, 0, 1],  # (6, 7) and (6, 9): no diagonal neighbours of other cells
    ]
)


def brute_force(mask: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    cells = connected_components(mask == 1, connectivity=1)
    pixels = {c: np.argwhere(cells == c) for c in range(1, cells.max() + 1)}
    classes = np.unique(mask)
    weights = dict(zip(classes, compute_class_weight("balanced", classes=classes, y=mask.ravel()), strict=True))
    out = np.zeros(mask.shape)
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            out[y, x] = weights[mask[y, x]]
            if cells[y, x] == 0:
                d1, d2 = sorted(min(math.hypot(y - p, x - q) for p, q in cell) for cell in pixels.values())[:2]
                out[y, x] += w0 * math.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return out


@pytest.mark.parametrize(("w0", "sigma"), [(10.0, 5.0), (3.0, 1.5)])
def test_weight_map_against_brute_force(w0, sigma):
    np.testing.assert_allclose(unet_weight_map(MASK, w0=w0, sigma=sigma), brute_force(MASK, w0, sigma), rtol=1e-6)


def test_ignored_pixels_weigh_nothing_and_one_cell_has_no_border_term():
    mask = np.array([[0, 0, 1], [0, 255, 1]])
    weights = unet_weight_map(mask, ignore_label=255)
    np.testing.assert_allclose(weights, [[5 / 6, 5 / 6, 5 / 4], [5 / 6, 0, 5 / 4]], rtol=1e-6)  # 5 pixels, 2 classes


def test_bad_input():
    with pytest.raises(ValueError, match="labels must be a 2D integer mask"):
        unet_weight_map(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="sigma must be positive"):
        unet_weight_map(MASK, sigma=0)
