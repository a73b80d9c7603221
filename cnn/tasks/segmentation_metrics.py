"""Segmentation losses and metrics beyond per-pixel cross-entropy: soft Dice, and the ISBI 2012 challenge's
foreground-restricted Rand error.

Soft Dice (Milletari et al. 2016), per class ``k`` on softmax probabilities ``p`` and one-hot labels ``y`` over the
counted pixels ``x`` (weight ``m(x)`` 0 or 1):

    Dice_k = (2 Σ_x m p_k y_k + s) / (Σ_x m (p_k + y_k) + s),     loss = 1 - mean_k Dice_k

summed over the whole batch; the smoothing ``s`` keeps a class absent from both the labels and the prediction at
``Dice_k = 1``. On hard predictions with ``s = 0``, ``Dice_k`` is the F1 score of class ``k``.

Adapted Rand error (Arganda-Carreras et al. 2015; the ISBI 2012 and SNEMI3D challenges), from the contingency table
``n_ij`` = pixels in true segment ``i`` and predicted segment ``j``, over the pixels whose true segment is not 0
(the membranes: "foreground-restricted"), with ``a_i = Σ_j n_ij``, ``b_j = Σ_i n_ij`` and ``n = Σ_ij n_ij``:

    P = (Σ_ij n_ij² - n) / (Σ_i a_i² - n),   R = (Σ_ij n_ij² - n) / (Σ_j b_j² - n),
    error = 1 - (Σ_ij n_ij² - n) / (α (Σ_i a_i² - n) + (1 - α)(Σ_j b_j² - n))     (α = 0.5: 1 - F-score)

(``P`` and ``R`` named as ``skimage.metrics.adapted_rand_error`` returns them). Each sum counts pairs of pixels
together in a segment, so the sums of several images add up (their segments are distinct): ``AdaptedRandError``
accumulates them over a split. Binary membrane/cell maps become segments as the challenge makes them: the connected
components (4-connected) of the cell class, the membrane pixels segment 0 (``segments_from_binary``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage


def soft_dice_loss(
    logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None, *, smooth: float = 1.0
) -> jax.Array:
    """``1 - mean_k Dice_k`` (module docstring) of ``logits (B, *S, K)`` against ``labels (B, *S)``; ``mask (B, *S)``
    weighs the counted pixels (0 for ignored ones, whose label may be any int).

    Raises:
      ValueError: ``labels`` or ``mask`` not of the logits' shape without the class axis.
    """
    if labels.shape != logits.shape[:-1] or (mask is not None and mask.shape != labels.shape):
        raise ValueError(f"labels and mask must have the logits' shape without classes, {logits.shape[:-1]}; got "
                         f"labels {labels.shape}, mask {None if mask is None else mask.shape}")
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    m = jnp.ones(labels.shape) if mask is None else mask.astype(jnp.float32)
    axes = tuple(range(labels.ndim))
    intersection = jnp.sum(m[..., None] * probabilities * onehot, axis=axes)
    total = jnp.sum(m[..., None] * (probabilities + onehot), axis=axes)
    return 1.0 - jnp.mean((2 * intersection + smooth) / (total + smooth))


def segments_from_binary(classes: np.ndarray, cell_class: int = 1) -> np.ndarray:
    """Segments of a membrane/cell class map ``(H, W)``: the 4-connected components of ``cell_class`` numbered
    from 1, everything else 0."""
    classes = np.asarray(classes)
    if classes.ndim != 2:
        raise ValueError(f"classes must be a 2D class map, got shape {classes.shape}")
    return ndimage.label(classes == cell_class)[0]


class AdaptedRandError:
    """The adapted Rand error (module docstring), accumulated over images: ``update`` per image, then ``result``."""

    def __init__(self, alpha: float = 0.5):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.joint = self.true = self.predicted = 0  # the three pair counts, Σ n² - n

    def update(self, pred_segments: np.ndarray, true_segments: np.ndarray) -> None:
        """Add an image's segments (ints of the same shape; true segment 0 is not counted)."""
        pred_segments, true_segments = np.asarray(pred_segments), np.asarray(true_segments)
        if pred_segments.shape != true_segments.shape:
            raise ValueError(f"pred_segments {pred_segments.shape} and true_segments {true_segments.shape} differ "
                             "in shape")
        counted = true_segments != 0
        true, pred = true_segments[counted].ravel(), pred_segments[counted].ravel()
        n = true.size
        for name, values in (("joint", np.stack([true, pred])), ("true", true[None]), ("predicted", pred[None])):
            counts = np.unique(values, axis=1, return_counts=True)[1].astype(np.int64)
            setattr(self, name, getattr(self, name) + int(counts @ counts) - n)

    def result(self) -> dict[str, float]:
        """``{"rand_error", "precision", "recall"}`` over the images so far (``skimage``'s ``are, prec, rec``)."""
        if not self.true or not self.predicted:
            raise ValueError("adapted Rand error: no pair of foreground pixels accumulated (update with images first)")
        f_denominator = self.alpha * self.true + (1 - self.alpha) * self.predicted
        return {"rand_error": 1.0 - self.joint / f_denominator, "precision": self.joint / self.true,
                "recall": self.joint / self.predicted}
