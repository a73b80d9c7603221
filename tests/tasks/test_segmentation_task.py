"""The segmentation task's ISBI metrics and options: the Rand error of an evaluation equals scikit-image's
``adapted_rand_error`` on the same maps, the pixel error numpy's mismatch rate, the Dice loss option a numpy loop
of the soft Dice formula; bad settings fail with one line."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy.special import softmax
from skimage.metrics import adapted_rand_error

from cnn.config_defaults import base_config
from cnn.data import DatasetSpec
from cnn.errors import ConfigError
from cnn.tasks import make_task
from cnn.tasks.base import Accumulator

SPEC = DatasetSpec(2, (24, 24, 1), kind="dense")


def task(num_classes: int = 2, **options):
    config = base_config("isbi2012_em", "unet")
    config.task.name = "segmentation"
    config.task.update(options)
    return make_task(config, DatasetSpec(num_classes, (24, 24, 1), kind="dense"))


def cell_maps(rng: np.random.Generator, n: int) -> np.ndarray:
    """Membrane/cell maps with several cells: thresholded smooth noise."""
    noise = ndimage.gaussian_filter(rng.normal(size=(n, 24, 24)), (0, 2, 2))
    return (noise > -0.05).astype(np.int32)


def test_rand_and_pixel_error_of_an_evaluation_equal_scikit_image_and_numpy():
    rng = np.random.default_rng(3)
    labels, predicted = cell_maps(rng, 3), cell_maps(rng, 3)
    logits = np.stack([predicted == 0, predicted == 1], -1).astype(np.float32)
    segmentation = task(rand_error=True)
    assert segmentation.needs_examples and segmentation.metrics["rand_error"] == "min"
    totals = Accumulator(keep_examples=True)
    for part in (slice(0, 2), slice(2, 3)):  # two eval batches, the second padded
        batch = {"image": jnp.zeros((2, 24, 24, 1)), "label": jnp.asarray(np.pad(labels[part], ((0, 1), (0, 0),
                 (0, 0)))[:2]), "mask": jnp.asarray([1.0, 1.0 if part.stop - part.start == 2 else 0.0])}
        outputs = jnp.asarray(np.pad(logits[part], ((0, 1), (0, 0), (0, 0), (0, 0)))[:2])
        totals.add(segmentation.eval_sums(outputs, batch), segmentation.eval_examples(outputs, batch))
    result = segmentation.result(totals)

    # The stack of the three images, each image's segments distinct from the others': cells are the 4-connected
    # components; a predicted membrane is one segment per image (scikit-image ignores only the true label 0).
    true_segments = np.stack([np.where(m > 0, ndimage.label(m)[0] + 1000 * n, 0) for n, m in enumerate(labels)])
    pred_segments = np.stack([np.where(m > 0, ndimage.label(m)[0], 999) + 1000 * n for n, m in enumerate(predicted)])
    error, _, _ = adapted_rand_error(true_segments, pred_segments)
    assert result["rand_error"] == pytest.approx(error, abs=1e-12)
    assert result["pixel_error"] == pytest.approx(np.mean(labels != predicted), abs=1e-12)
    assert result["count"] == 3


def test_dice_loss_option_equals_the_soft_dice_formula():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 6, 6)).astype(np.int32)
    labels[0, 0] = 9  # ignored
    loss, _ = task(3, loss="dice", ignore_label=9).loss(jnp.asarray(logits), {"label": jnp.asarray(labels)})
    p = softmax(logits.astype(np.float64), -1)
    dice = []
    for k in range(3):
        inter = total = 0.0
        for n, i, j in np.ndindex(2, 6, 6):
            if labels[n, i, j] != 9:
                y = float(labels[n, i, j] == k)
                inter, total = inter + p[n, i, j, k] * y, total + p[n, i, j, k] + y
        dice.append((2 * inter + 1) / (total + 1))
    assert float(loss) == pytest.approx(1 - np.mean(dice), rel=1e-5)


def test_cross_entropy_plus_dice_is_their_sum_by_hand():
    # Two pixels, two classes, logits (0, log 3) and (0, 0), labels 1 and 0: softmax p = (1/4, 3/4) and (1/2, 1/2).
    # Cross-entropy: (-log 3/4 - log 1/2) / 2. Dice (smooth 1): class 0 (2·1/2 + 1) / (3/4 + 1 + 1) = 8/11,
    # class 1 (2·3/4 + 1) / (5/4 + 1 + 1) = 10/13.
    logits = jnp.asarray([[[[0.0, np.log(3.0)], [0.0, 0.0]]]], jnp.float32)
    loss, _ = task(2, loss="cross_entropy+dice").loss(logits, {"label": jnp.asarray([[[1, 0]]], jnp.int32)})
    expected = (np.log(4 / 3) + np.log(2)) / 2 + 1 - (8 / 11 + 10 / 13) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_settings_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"config.task.loss='focal': choose from \['cross_entropy', 'dice', "
                                          r"'cross_entropy\+dice'\]"):
        task(loss="focal")
    with pytest.raises(ConfigError, match=r"rand_error needs two classes .* has 3"):
        task(3, rand_error=True)
    config = base_config("isbi2012_em", "unet")
    config.task.name, config.task.loss, config.dataset.weight_map = "segmentation", "dice", True
    with pytest.raises(ConfigError, match=r"loss='dice' has no per-pixel weight"):
        make_task(config, SPEC)
    config = base_config("mnist", "lenet5")
    config.dataset.weight_map = True
    with pytest.raises(ConfigError, match=r"weight_map is set, but task 'classification' has no per-pixel label"):
        make_task(config, DatasetSpec(10, (28, 28, 1)))
