"""Data augmentation for segmentation as in U-Net (Ronneberger et al. 2015, sec. 3.1): elastic deformations, flips,
90° rotations and random tiles, applied alike to an image and its label map. Pure numpy functions of a
``np.random.Generator``: the same generator state gives bitwise the same result, so a pipeline seeding one per
example from ``(seed, step, index)`` (``np.random.default_rng((seed, step, index))``) resumes exactly.

Elastic deformation: random displacement vectors ``u`` on a coarse ``3×3`` grid spanning the image (nodes at its
corners, edge midpoints and centre), each component drawn from ``N(0, σ²)`` with ``σ = 10`` px, interpolated over
every pixel by a bicubic spline (``scipy.ndimage.zoom``, order 3: it passes through the node values). The warped
image is ``I'(x) = I(x + u(x))``, sampled with bicubic interpolation for the image and nearest neighbour for the
label map (so labels keep their values); outside the image, the image is mirrored (as the overlap-tile inference
mirrors it).

The spline zoom is separable, ``u = Z_H c Z_Wᵀ`` with ``Z_n`` the ``(n, grid)`` matrix of the 1D zoom, so the field
costs two small matrix products, and only at the pixels asked for: a tile cut from the deformed (and mirror-padded)
image needs ``u`` and the resampling at its own pixels only (``at=(rows, cols)``, rows and columns of the image,
mirrored ones included via :func:`mirror_index`): the same values as deforming the whole image, then cutting.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage


@functools.lru_cache(maxsize=16)
def _spline_zoom(n: int, grid: int) -> np.ndarray:
    """The ``(n, grid)`` matrix of ``ndimage.zoom(·, n / grid, order=3, mode="mirror")`` on ``grid`` node values
    (column ``k``: the zoom of the ``k``-th unit vector; node ``k`` at pixel ``k·(n - 1)/(grid - 1)``)."""
    matrix = np.stack([ndimage.zoom(unit, n / grid, order=3, mode="mirror") for unit in np.eye(grid)], axis=1)
    matrix.setflags(write=False)  # shared by every call through the cache
    return matrix


def mirror_index(index: np.ndarray, n: int) -> np.ndarray:
    """The pixel of an axis of length ``n`` that ``index`` reads once the axis is mirrored as ``np.pad(...,
    mode="reflect")`` and ``ndimage`` ``mode="mirror"`` do (the edge pixel not repeated: -1 -> 1, n -> n - 2)."""
    period = max(2 * (n - 1), 1)
    index = np.abs(index) % period
    return np.where(index < n, index, period - index)


def elastic_displacement(rng: np.random.Generator, shape: tuple[int, int], *, sigma: float = 10.0,
                         grid: int = 3, at: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The displacement field ``(2, H, W)`` (rows, columns) of a random elastic deformation of an ``(H, W)`` image;
    with ``at=(rows, cols)`` (pixel indices) only at those pixels: ``(2, len(rows), len(cols))``."""
    if grid < 2 or min(shape) < grid:
        raise ValueError(f"grid must be at least 2 and at most the image size {shape}, got {grid}")
    coarse = rng.normal(0.0, sigma, (2, grid, grid))
    rows, cols = (np.arange(shape[0]), np.arange(shape[1])) if at is None else at
    return _spline_zoom(shape[0], grid)[rows] @ coarse @ _spline_zoom(shape[1], grid)[cols].T


def warp(array: np.ndarray, displacement: np.ndarray, order: int,
         at: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``array (H, W)`` or ``(H, W, C)`` sampled at ``x + displacement(x)``: ``order`` 3 (bicubic, as float32) for
    images, 0 (nearest neighbour, the dtype kept) for label maps; mirrored outside. With ``at=(rows, cols)`` only at
    those pixels ``x`` (``displacement`` given there: ``(2, len(rows), len(cols))``)."""
    rows, cols = (np.arange(array.shape[0]), np.arange(array.shape[1])) if at is None else at
    if displacement.shape != (2, len(rows), len(cols)):
        raise ValueError(f"displacement {displacement.shape} must be (2, {len(rows)}, {len(cols)}) for the array's "
                         f"{array.shape} at the pixels asked for")
    coordinates = np.stack(np.meshgrid(rows, cols, indexing="ij")) + displacement
    values = array.astype(np.float32) if order else array

    def sample(plane: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(plane, coordinates, order=order, mode="mirror")

    return sample(values) if array.ndim == 2 else np.stack([sample(values[..., c]) for c in range(array.shape[2])], -1)


def elastic_deform(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, *, sigma: float = 10.0,
                   grid: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One random elastic deformation of ``image (H, W[, C])`` (bicubic) and ``label (H, W)`` (nearest)."""
    _check_pair(image, label)
    displacement = elastic_displacement(rng, label.shape, sigma=sigma, grid=grid)
    return warp(image, displacement, order=3), warp(label, displacement, order=0)


def flip_rotate(rng: np.random.Generator, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 symmetries of the square (a rotation by ``k·90°``, then maybe a left-right flip), uniformly."""
    _check_pair(image, label)
    k, flip = rng.integers(4), rng.integers(2)
    image, label = np.rot90(image, k, axes=(0, 1)), np.rot90(label, k, axes=(0, 1))
    if flip:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def random_tile(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, tile_size: int,
                label_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A uniformly placed ``label_size`` square of ``label`` and the ``tile_size`` square of ``image`` centred on it,
    the image mirrored where the tile passes its border (an unpadded network's input tile and output tile: the
    U-Net's 572 and 388; ``label_size`` defaults to ``tile_size``)."""
    _check_pair(image, label)
    label_size = tile_size if label_size is None else label_size
    margin = (tile_size - label_size) // 2
    if tile_size - label_size != 2 * margin or margin < 0 or not 0 < label_size <= min(label.shape):
        raise ValueError(f"tile_size {tile_size} and label_size {label_size}: the label tile must fit the label map "
                         f"{label.shape} and be smaller than the image tile by an even margin")
    y, x = (rng.integers(n - label_size + 1) for n in label.shape)
    pads = ((margin, margin), (margin, margin)) + ((0, 0),) * (image.ndim - 2)
    padded = np.pad(image, pads, mode="reflect")
    return padded[y : y + tile_size, x : x + tile_size], label[y : y + label_size, x : x + label_size]


def augment(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, tile_size: int,
            label_size: int | None = None, *, weight: np.ndarray | None = None, sigma: float = 10.0,
            grid: int = 3) -> tuple[np.ndarray, ...]:
    """The training augmentation: a symmetry of the square, an elastic deformation, then a random tile:
    ``(image tile, label tile)``, and the ``weight (H, W)`` tile (a per-pixel loss weight, e.g. the U-Net weight map
    computed once per image) if given, moved as an image channel and cropped as the label."""
    channels = image if image.ndim == 3 else image[..., None]
    if weight is not None:
        if weight.shape != label.shape:
            raise ValueError(f"weight {weight.shape} must have the label's shape {label.shape}")
        channels = np.concatenate([channels.astype(np.float32), weight[..., None].astype(np.float32)], axis=-1)
    channels, label = flip_rotate(rng, channels, label)
    channels, label = elastic_deform(rng, channels, label, sigma=sigma, grid=grid)
    tile, label = random_tile(rng, channels, label, tile_size, label_size)
    if weight is None:
        return (tile if image.ndim == 3 else tile[..., 0]), label
    margin = (tile_size - label.shape[0]) // 2
    weight_tile = tile[margin : margin + label.shape[0], margin : margin + label.shape[1], -1]
    return (tile[..., :-1] if image.ndim == 3 else tile[..., 0]), label, np.maximum(weight_tile, 0.0)


def _check_pair(image: np.ndarray, label: np.ndarray) -> None:
    if label.ndim != 2 or image.shape[:2] != label.shape or image.ndim not in (2, 3):
        raise ValueError(f"image (H, W[, C]) and label (H, W) must share H and W, got {image.shape} and {label.shape}")
