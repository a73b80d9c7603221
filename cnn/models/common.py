"""Pieces every model family shares: the default convolution and normalization that models take injected, and
the type of ``layer_chain()`` (the spatial layers along a model's longest path, for receptive fields), and the
head's average pool, global or windowed (``pool_window``: the classifier run fully convolutionally).

A model declares ``conv: ModuleDef = standard_conv`` and ``norm: ModuleDef = BatchNorm`` (or ``None``) as fields
and calls them as it would call ``nn.Conv`` and ``nn.BatchNorm``; ``cnn.models.create`` turns a config's
``model.conv`` name into the callable (``cnn.layers.conv_module``), so a module never resolves a name itself.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from cnn import layers, ops
from cnn.errors import InputShapeError
from cnn.layers import conv_module
from cnn.ops import Layer

# torchvision's BatchNorm2d: eps 1e-5, running averages updated with weight 0.1 (flax: kept with weight 0.9).
BatchNorm = partial(layers.BatchNorm, momentum=0.9, epsilon=1e-5)

# A convolution exactly as asked (``nn.Conv``'s signature, ``cnn.ops`` padding forms).
standard_conv = conv_module("standard")

Chain = list[tuple[str, list[Layer]]]


def check_input_rank(x: jax.Array, spatial_axes: int, model: str, layout: str) -> None:
    """An ``InputShapeError`` (a ``ValueError`` and a user error: one line from the CLIs) naming ``model`` and its
    ``layout`` unless ``x`` has ``spatial_axes`` between batch and channels (a volume given to a 2D model would
    otherwise fail deep inside a convolution)."""
    if x.ndim != spatial_axes + 2:
        raise InputShapeError(f"{model} takes {layout}, got an input of shape {tuple(x.shape)}")


def average_pool_head(x: jax.Array, window: int | None) -> jax.Array:
    """A classifier's global average pool ``(N, H, W, C) -> (N, C)`` when ``window`` is None; otherwise the mean of
    every ``window``×``window`` block at stride 1, ``(N, H - window + 1, W - window + 1, C)``: at each position the
    global pool of the feature map of one training window (:mod:`cnn.models.fully_conv`). The dense layers after it
    then act at every position, as 1×1 convolutions."""
    if window is None:
        return jnp.mean(x, axis=(1, 2))
    return ops.avg_pool(x, window, stride=1)
