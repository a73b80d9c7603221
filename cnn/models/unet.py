"""U-Net (Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
fig. 1) and 3D U-Net (Çiçek, Abdulkadir, Lienkamp, Brox & Ronneberger 2016, fig. 2).

U-Net, a 572×572×1 input tile (every convolution 3×3 unpadded + ReLU, ``-2`` pixels each):

| level      | contracting path          | size        | expanding path                                 | size      |
|------------|---------------------------|-------------|------------------------------------------------|-----------|
| 1          | conv 64, conv 64          | 572 → 568   | crop 568 → 392, concat, conv 64, conv 64, 1×1  | 392 → 388 |
| 2          | pool, conv 128, conv 128  | 284 → 280   | crop 280 → 200, concat, conv 128, conv 128     | 200 → 196 |
| 3          | pool, conv 256, conv 256  | 140 → 136   | crop 136 → 104, concat, conv 256, conv 256     | 104 → 100 |
| 4          | pool, conv 512, conv 512  | 68 → 64     | crop 64 → 56, concat, conv 512, conv 512       | 56 → 52   |
| 5 (bottom) | pool, conv 1024, conv 1024| 32 → 28     | up-conv 2×2 to 512 (28 → 56), up to level 4    |           |

Pooling is 2×2 max pooling /2; each expanding level starts with a 2×2 up-convolution /2 halving the channels, whose
output is concatenated with the centre crop of the contracting level's output ("copy and crop"); a final 1×1
convolution maps 64 channels to the classes. 572² in, 388² out; 31,030,658 parameters for 1 channel and 2 classes.
An input size is valid when every map entering a pooling has an even size (``unet_output_size``,
``nearest_valid_input_size``): 572 = 16·28 + 124 for a bottom map of 28.

3D U-Net, a 132×132×116×3 input (3×3×3 unpadded convolutions, each followed by BatchNorm then ReLU, 2×2×2 pooling):
analysis levels (32, 64), (64, 128), (128, 256), bottom (256, 512) — the channels double in a level's second
convolution, before the pooling; synthesis levels start with a 2×2×2 up-convolution that keeps the channels
(512 → 512), then two convolutions of 256, 128, 64; a 1×1×1 convolution gives 3 labels. 44×44×28 out. The paper's
text gives 19,069,955 parameters: the 3×3×3 and 1×1×1 convolutions with biases, the up-convolutions without, and the
BatchNorm without a learned scale and shift (Caffe's ``BatchNorm`` layer alone); that is this model's count.

``padding="SAME"`` (``unet_padded``) keeps every size: the output is the input's size for sizes divisible by
``2^depth``, and no cropping is needed. ``conv`` builds the 3×3 convolutions (injected: ``cnn.models.common``); the
up-convolutions and the final 1×1 stay standard. ``norm`` (none in the 2D paper) follows every 3×3 convolution.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.errors import ConfigError
from cnn.layers import ConvTranspose, ModuleDef
from cnn.models.common import BatchNorm, standard_conv

KERNEL = 3
CONVS_PER_LEVEL = 2
SHRINK = CONVS_PER_LEVEL * (KERNEL - 1)  # pixels an unpadded level removes per axis


def _trace_valid(size: int, depth: int) -> int | None:
    """The output size of an unpadded U-Net with ``depth`` poolings along one axis, or ``None`` where a map
    entering a pooling has an odd size or a map vanishes."""
    for _ in range(depth):
        size -= SHRINK
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= SHRINK  # the bottom level
    for _ in range(depth):
        size = 2 * size - SHRINK
        if size < 1:
            return None
    return size if size >= 1 else None


def unet_output_size(size: int, depth: int = 4) -> int:
    """The output size of the unpadded U-Net for an input of ``size`` along one axis (572 → 388 at depth 4).

    Raises:
      ConfigError: ``size`` is not a valid input size, naming the nearest valid one.
    """
    out = _trace_valid(size, depth)
    if out is None:
        nearest = nearest_valid_input_size(size, depth)
        raise ConfigError(
            f"unet: input size {size} is invalid at depth {depth} (every map entering a 2×2 pooling must have an even "
            f"size); the nearest valid input size is {nearest} (output {_trace_valid(nearest, depth)})"
        )
    return out


def nearest_valid_input_size(size: int, depth: int = 4) -> int:
    """The valid input size of the unpadded U-Net nearest to ``size`` (the larger one on a tie).

    The valid sizes are ``2^depth · b + SHRINK · (2^(depth+1) - 1)`` for a bottom map of ``b`` pixels, ``b`` large
    enough that no map of the expanding path vanishes."""
    step, offset = 2**depth, SHRINK * (2 ** (depth + 1) - 1)
    smallest = next(b for b in range(1, 4 * SHRINK + 2) if _trace_valid(step * b + offset, depth))
    b = max(round((size - offset) / step), smallest)
    candidates = [step * c + offset for c in (b - 1, b, b + 1) if c >= smallest]
    return min(candidates, key=lambda s: (abs(s - size), -s))


def _centre_crop(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The centre ``shape`` of ``x``'s spatial axes (the paper's "copy and crop")."""
    starts = [(n - m) // 2 for n, m in zip(x.shape[1:-1], shape, strict=True)]
    index = tuple(slice(s, s + m) for s, m in zip(starts, shape, strict=True))
    return x[(slice(None), *index, slice(None))]


class UNet(nn.Module):
    """U-Net with ``depth`` poolings on inputs ``(batch, *spatial, channels)`` of 2 or 3 spatial axes.

    Attributes:
      num_classes: the channels of the output logits ``(batch, *out_spatial, num_classes)``.
      width: the channels of the first level (64 in the paper), doubled at every level below.
      depth: the number of poolings (4 in the paper).
      padding: ``"VALID"`` (the paper: the output is smaller, see ``unet_output_size``) or ``"SAME"``.
    """

    num_classes: int = 2
    width: int = 64
    depth: int = 4
    padding: str = "VALID"
    conv: ModuleDef = standard_conv
    norm: ModuleDef | None = None

    double_in_second_conv: ClassVar[bool] = False  # 3D U-Net: a level's second convolution doubles the channels
    up_conv_keeps_channels: ClassVar[bool] = False  # 3D U-Net: 512 → 512; U-Net: 1024 → 512
    up_conv_bias: ClassVar[bool] = True

    def output_size(self, size: int) -> int:
        """The output size along an axis of ``size`` (raises ``ConfigError`` naming the nearest valid size)."""
        if self.padding == "VALID":
            return unet_output_size(size, self.depth)
        step = 2**self.depth
        if size % step:
            nearest = max(step, step * round(size / step))
            raise ConfigError(f"unet_padded: input size {size} is not divisible by {step} (2^depth, depth "
                              f"{self.depth}); the nearest valid input size is {nearest}")
        return size

    def _level(self, x: jax.Array, features: tuple[int, int], name: str, norm: ModuleDef | None) -> jax.Array:
        kernel = (KERNEL,) * (x.ndim - 2)
        for i, f in enumerate(features):
            x = self.conv(f, kernel, padding=self.padding, name=f"{name}_conv{i + 1}")(x)
            if norm:
                x = norm(name=f"{name}_norm{i + 1}")(x)
            x = nn.relu(x)
        return x

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim not in (4, 5):
            raise ConfigError(f"unet: input must be (batch, *spatial, channels), 2 or 3 spatial axes; got {x.shape}")
        if self.padding not in ("VALID", "SAME"):
            raise ConfigError(f"unet: padding must be 'VALID' or 'SAME', got {self.padding!r}")
        for size in x.shape[1:-1]:
            self.output_size(size)
        norm = partial(self.norm, use_running_average=not train) if self.norm else None
        window = (2,) * (x.ndim - 2)
        double = int(self.double_in_second_conv)
        skips = []
        for level in range(self.depth + 1):
            if level:
                x = ops.max_pool(x, window)
            features = (self.width * 2**level, self.width * 2 ** (level + double))
            x = self._level(x, features, f"down{level + 1}", norm)
            skips.append(x)
        for level in reversed(range(self.depth)):
            up = x.shape[-1] if self.up_conv_keeps_channels else x.shape[-1] // 2
            x = ConvTranspose(up, window, strides=window, padding="VALID", use_bias=self.up_conv_bias,
                              name=f"up{level + 1}_upconv")(x)
            x = jnp.concatenate([_centre_crop(skips[level], x.shape[1:-1]), x], axis=-1)
            features = (self.width * 2 ** (level + double),) * 2
            x = self._level(x, features, f"up{level + 1}", norm)
        return standard_conv(self.num_classes, (1,) * (x.ndim - 2), name="output")(x)


class UNet3D(UNet):
    """3D U-Net (Çiçek et al. 2016): 3 levels, width 32, BatchNorm without scale and shift before every ReLU."""

    num_classes: int = 3
    width: int = 32
    depth: int = 3
    norm: ModuleDef | None = partial(BatchNorm, use_scale=False, use_bias=False)

    double_in_second_conv: ClassVar[bool] = True
    up_conv_keeps_channels: ClassVar[bool] = True
    up_conv_bias: ClassVar[bool] = False
