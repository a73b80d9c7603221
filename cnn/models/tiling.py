"""Overlap-tile inference (Ronneberger et al. 2015, sec. 2 and fig. 2): segment an image of any size with a network
whose output tile is smaller than its input tile.

A network mapping a ``T_in``-pixel input tile to a ``T_out``-pixel output tile sees a margin
``m = (T_in - T_out) / 2`` of context around each output pixel (92 px for the U-Net's 572 → 388). The image is
mirrored by ``m`` at its borders (the missing context), and by the extra pixels that make whole output tiles; then
output tile ``(i, j)`` covers pixels ``[i·T_out, (i + 1)·T_out)`` and is predicted from the padded image's window
``[i·T_out, i·T_out + T_in)``. The tiles tile the output without overlap and their input windows overlap by ``2m``,
so the stitched prediction equals the prediction of the whole mirrored image at once, for a network that is
translation equivariant by ``T_out`` (the unpadded U-Net: ``T_out`` a multiple of ``2^depth``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def overlap_tile_predict(
    predict: Callable[[jax.Array], jax.Array],
    images: np.ndarray,
    tile_size: int | tuple[int, int],
    batch_size: int = 8,
) -> np.ndarray:
    """Logits ``(B, H, W, K)`` of ``images`` ``(B, H, W, C)``, predicted tile by tile (see the module docstring).

    ``predict`` maps input tiles ``(n, *tile_size, C)`` to logits ``(n, T_out_h, T_out_w, K)`` (e.g. a jitted
    ``lambda x: model.apply(variables, x, train=False)``); it is called on batches of exactly ``batch_size`` tiles
    (the last one padded), so it compiles once.

    Raises:
      ValueError: ``images`` not 4-dimensional, or an output tile larger than the input tile, or of odd margin.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (batch, height, width, channels), got shape {images.shape}")
    th, tw = (tile_size, tile_size) if isinstance(tile_size, int) else tuple(tile_size)
    b, h, w, c = images.shape
    out = jax.eval_shape(predict, jax.ShapeDtypeStruct((batch_size, th, tw, c), jnp.float32))
    oh, ow, num_classes = out.shape[1:]
    margins = (th - oh, tw - ow)
    if min(margins) < 0 or any(m % 2 for m in margins):
        raise ValueError(f"tile_size {(th, tw)}: the output tile {(oh, ow)} must be smaller by an even margin")
    my, mx = margins[0] // 2, margins[1] // 2
    ny, nx = -(-h // oh), -(-w // ow)
    padded = np.pad(images, ((0, 0), (my, my + ny * oh - h), (mx, mx + nx * ow - w), (0, 0)), mode="reflect")
    corners = [(n, i * oh, j * ow) for n in range(b) for i in range(ny) for j in range(nx)]
    tiles = np.stack([padded[n, y : y + th, x : x + tw] for n, y, x in corners])
    extra = -len(tiles) % batch_size
    tiles = np.concatenate([tiles, np.zeros((extra, *tiles.shape[1:]), tiles.dtype)])
    logits = np.concatenate([np.asarray(predict(tiles[k : k + batch_size])) for k in range(0, len(tiles), batch_size)])
    stitched = np.empty((b, ny * oh, nx * ow, num_classes), logits.dtype)
    for (n, y, x), tile in zip(corners, logits, strict=False):  # the padding tiles are dropped
        stitched[n, y : y + oh, x : x + ow] = tile
    return stitched[:, :h, :w]
