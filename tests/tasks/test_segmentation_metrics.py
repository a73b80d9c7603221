"""Segmentation metrics against independent references: the adapted Rand error against
``skimage.metrics.adapted_rand_error`` (one image, and several as one image of distinct segments), segments against
``skimage.measure.label``, soft Dice against a numpy loop of its formula and, on hard predictions, scikit-learn's
per-class F1 score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax
from skimage.measure import label as connected_components
from skimage.metrics import adapted_rand_error
from sklearn.metrics import f1_score

from cnn.tasks.segmentation_metrics import AdaptedRandError, segments_from_binary, soft_dice_loss


def random_segments(rng: np.random.Generator, shape=(24, 20)) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) segment maps: blocks of a few labels, the truth with a membrane label 0 and the prediction
    a noisy copy of it."""
    true = np.kron(rng.integers(0, 6, (shape[0] // 4, shape[1] // 4)), np.ones((4, 4), int))
    pred = np.where(rng.random(shape) < 0.2, rng.integers(0, 9, shape), true + 10 * (rng.random(shape) < 0.1))
    return pred, true


def test_rand_error_of_one_image_equals_scikit_image():
    metric = AdaptedRandError()
    pred, true = random_segments(np.random.default_rng(0))
    metric.update(pred, true)
    are, precision, recall = adapted_rand_error(true, pred)
    np.testing.assert_allclose(list(metric.result().values()), [are, precision, recall], rtol=1e-12)
    assert 0.05 < are < 0.95  # a case where the error is neither 0 nor 1


def test_rand_error_accumulates_over_images():
    rng = np.random.default_rng(1)
    metric = AdaptedRandError(alpha=0.3)
    images = [random_segments(rng) for _ in range(3)]
    for pred, true in images:
        metric.update(pred, true)
    # one wide image holding all three, every image's segments renumbered apart (0 stays the true membrane)
    true = np.concatenate([np.where(t > 0, t + 100 * i, 0) for i, (_, t) in enumerate(images)], axis=1)
    pred = np.concatenate([p + 100 * i for i, (p, _) in enumerate(images)], axis=1)
    expected = adapted_rand_error(true, pred, alpha=0.3)
    np.testing.assert_allclose(list(metric.result().values()), expected, rtol=1e-12)


def test_segments_are_the_connected_components_of_the_cell_class():
    classes = (np.random.default_rng(2).random((30, 30)) < 0.55).astype(np.int32)
    np.testing.assert_array_equal(segments_from_binary(classes), connected_components(classes == 1, connectivity=1))


def test_rand_error_bad_input():
    metric = AdaptedRandError()
    with pytest.raises(ValueError, match="differ in shape"):
        metric.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="no pair of foreground pixels"):
        metric.result()
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        AdaptedRandError(alpha=2)


def test_soft_dice_against_its_formula_with_ignored_pixels():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 5, 4, 3))
    labels = rng.integers(0, 3, (2, 5, 4))
    mask = rng.random((2, 5, 4)) < 0.7
    labels[~mask] = 255  # an ignore label: out of the classes
    p = softmax(logits, axis=-1)
    dice = []
    for k in range(3):
        inter = total = 0.0
        for index in np.ndindex(labels.shape):
            if mask[index]:
                inter += p[index][k] * (labels[index] == k)
                total += p[index][k] + (labels[index] == k)
        dice.append((2 * inter + 1.0) / (total + 1.0))
    loss = soft_dice_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), jnp.asarray(mask))
    np.testing.assert_allclose(loss, 1 - np.mean(dice), rtol=1e-5)


def test_soft_dice_of_hard_predictions_is_one_minus_the_mean_f1():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, (3, 8, 8))
    predicted = np.where(rng.random(labels.shape) < 0.3, rng.integers(0, 4, labels.shape), labels)
    logits = 100.0 * jax.nn.one_hot(predicted, 4)  # softmax saturates to one-hot
    f1 = f1_score(labels.ravel(), predicted.ravel(), average=None, labels=range(4))
    np.testing.assert_allclose(soft_dice_loss(logits, jnp.asarray(labels), smooth=0.0), 1 - f1.mean(), rtol=1e-5)
    assert float(soft_dice_loss(100.0 * jax.nn.one_hot(labels, 4), jnp.asarray(labels))) < 1e-6


def test_soft_dice_shape_mismatch():
    with pytest.raises(ValueError, match="must have the logits' shape without classes"):
        soft_dice_loss(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 5), jnp.int32))
