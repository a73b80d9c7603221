"""The U-Net loss weight map (Ronneberger et al. 2015, eq. 2), from a label mask:

    w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))² / (2σ²))

``w_c`` balances the class frequencies, ``d1`` and ``d2`` are the distances from ``x`` to the nearest and the
second-nearest cell; the paper uses ``w0 = 10``, ``σ ≈ 5`` px. The second term makes the network learn the thin
borders between touching cells (the paper's fig. 3d).

Here: the cells are the connected components (4-connected, ``scipy.ndimage.label``) of ``cell_class``; a distance
is Euclidean to the nearest pixel of the cell (``scipy.ndimage.distance_transform_edt``); the border term is added on
the pixels outside every cell (inside a cell ``d1 = 0`` and the term would only blur the cell's own border), and is
0 where fewer than two cells exist. ``w_c = n / (K · n_k)`` for the ``K`` classes present (scikit-learn's "balanced"
weights: every class weighs as much in total); ignored pixels weigh 0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def unet_weight_map(
    labels: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    cell_class: int = 1,
    ignore_label: int | None = None,
) -> np.ndarray:
    """``w(x)`` of the module docstring for a label mask ``labels`` ``(H, W)`` of ints, as float32 ``(H, W)``.

    Raises:
      ValueError: ``labels`` not a 2D integer array, or ``sigma`` not positive.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2D integer mask, got {labels.dtype} of shape {labels.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    valid = labels != ignore_label if ignore_label is not None else np.ones(labels.shape, bool)
    classes, counts = np.unique(labels[valid], return_counts=True)
    balance = np.zeros(labels.shape)
    for k, n_k in zip(classes, counts, strict=True):
        balance[labels == k] = valid.sum() / (len(classes) * n_k)

    cells, num_cells = ndimage.label(labels == cell_class)
    border = np.zeros(labels.shape)
    if num_cells >= 2:
        d1 = np.full(labels.shape, np.inf)
        d2 = np.full(labels.shape, np.inf)
        for cell in range(1, num_cells + 1):  # keep the two smallest distances over the cells
            d = ndimage.distance_transform_edt(cells != cell)
            d2 = np.minimum(d2, np.maximum(d1, d))
            d1 = np.minimum(d1, d)
        border = np.where(cells == 0, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)), 0.0)
    return np.where(valid, balance + border, 0.0).astype(np.float32)
