"""A window classifier run over a whole image at once: every window's scores in one pass (OverFeat, Sermanet et al.
2014; the lecture's "detection with a sliding window", Goodfellow et al., Deep Learning, ch. 9).

A classifier trained on ``window``×``window`` crops computes, for a crop ``c``,

    y(c) = head( 1/f² Σ_{a, b < f} trunk(c)[a, b] )

where the trunk (convolutions and poolings, none padded) maps a window to an ``f``×``f`` feature map and ``head``
is the dense layers. With jump ``J`` (the product of the trunk's strides), the trunk of an H×W image holds, at
``(i + a, j + b)``, the value that the crop at ``(i J, j J)`` holds at ``(a, b)``: every layer's windows inside the
crop are windows of the image. Hence

    score[i, j] = head( 1/f² Σ_{a, b < f} trunk(image)[i + a, j + b] ) = y(image[iJ : iJ + window, jJ : jJ + window])

The global pool becomes an ``f``×``f`` average pool of stride 1 (``pool_window = f``) and the dense layers act at
every position: the first one, of kernel ``W`` on the pooled vector, is a convolution with an ``f``×``f`` kernel of
``W / f²`` at every tap, covering the feature map it saw in training; the next ones are 1×1 convolutions. The trunk
runs once over the image instead of once per window: overlapping windows share its work.

A cell reads ``extent = (f - 1) J + r`` input pixels a side (``r``: the trunk's receptive field): the window, less
any last rows and columns that the floors of strided layers drop. There are ``(H - extent) // J + 1`` cells down.

The conversion refuses, with one line saying why, a model whose output is not a function of the window alone:
* one without a ``pool_window`` field: its head is not a global average pool then dense layers (AlexNet's and VGG's
  adaptive pools fit any input to a fixed grid; EfficientNet's squeeze-excitation pools each block globally);
* zero padding anywhere in ``layer_chain()``: a crop sees zeros at its border where the image has pixels;
* a convolution kind other than standard or separable (dilated pads to keep sizes, deformable reads offsets from a
  padded convolution, locally connected and tiled weights depend on the position) or a norm other than BatchNorm;
* a window too small to leave the trunk a feature map.
BatchNorm applies its running statistics (``train=False``), a per-channel affine map: the same at every position.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax

from cnn.errors import ConfigError
from cnn.layers import BatchNorm
from cnn.models.common import Chain
from cnn.ops import Layer, receptive_field

# Convolution kinds (``cnn.layers.conv_module`` names) whose output at a position reads only the pixels under the
# kernel there, with weights shared by all positions.
WINDOW_CONVS = ("standard_conv", "separable_conv")


@dataclasses.dataclass(frozen=True)
class FullyConvolutional:
    """A classifier run fully convolutionally: ``score_map(variables, images)`` is ``(N, rows, cols, classes)``,
    cell ``(i, j)`` the classifier's logits on the window at ``(i stride, j stride)``; same variables."""

    model: nn.Module  # the classifier with ``pool_window = feature_window``
    window: int  # the training crop's side
    stride: int  # input pixels between adjacent cells: the product of the strides
    extent: int  # input pixels a cell reads, a side (<= window)
    feature_window: int  # side of the trunk's feature map on one window: the extent of the windowed pool

    def score_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(rows, cols)`` of the score map of an ``height``×``width`` image."""
        if min(height, width) < self.extent:
            raise ValueError(f"image of {height}×{width} is smaller than the window ({self.extent}×{self.extent})")
        return (height - self.extent) // self.stride + 1, (width - self.extent) // self.stride + 1

    def score_map(self, variables, images: jax.Array) -> jax.Array:
        """Logits of every window of ``images (N, H, W, C)``: ``(N, rows, cols, classes)``."""
        self.score_shape(*images.shape[1:3])
        return self.model.apply(variables, images, train=False)


def _chain_layers(model: nn.Module) -> list[tuple[str, Layer]]:
    chain: Chain = model.layer_chain()
    return [(name, layer) for name, layers in chain for layer in layers]


def fully_convolutional(model: nn.Module, window: int) -> FullyConvolutional:
    """``model``, a classifier of ``window``×``window`` crops, as a network mapping an image to a score map (see the
    module docstring); :class:`ConfigError` naming the reason when the outputs could not equal the crop loop's."""
    kind = type(model).__name__
    if "pool_window" not in getattr(type(model), "__dataclass_fields__", {}):
        raise ConfigError(f"{kind} cannot be made fully convolutional: its head is not a global average pool "
                          "followed by dense layers (no pool_window field)")
    conv = getattr(getattr(model, "conv", None), "__name__", "standard_conv")
    if conv not in WINDOW_CONVS:
        raise ConfigError(f"{kind} with {conv} cannot be made fully convolutional: only {', '.join(WINDOW_CONVS)} "
                          "read the same pixels with the same weights at every position")
    norm = getattr(model, "norm", None)
    if norm is not None and getattr(norm, "func", norm) not in (BatchNorm, nn.BatchNorm):
        raise ConfigError(f"{kind} with norm {norm} cannot be made fully convolutional: only BatchNorm (its running "
                          "statistics) normalizes every position alike")
    layers = _chain_layers(model)
    for name, layer in layers:
        if layer.padding not in (0, (0, 0)):
            raise ConfigError(f"{kind} cannot be made fully convolutional: {name} pads with zeros ({layer}), which a "
                              "crop sees at its border where the image has pixels; use a model without padding "
                              "(lenet5, window_resnet8)")
    size = window
    for name, layer in layers:
        size = (size - layer.dilation * (layer.kernel - 1) - 1) // layer.stride + 1
        if size < 1:
            raise ConfigError(f"window {window} is too small for {kind}: nothing is left of it after {name}")
    stride = math.prod(layer.stride for _, layer in layers)
    field = receptive_field([layer for _, layer in layers])[-1].size
    return FullyConvolutional(model.clone(pool_window=size), window, stride, (size - 1) * stride + field, size)

