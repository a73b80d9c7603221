"""Residual networks (He et al. 2016, "Deep Residual Learning for Image Recognition"), torchvision's layout.

ImageNet ResNets (table 1 of the paper; stride 2 on the first 3×3 of a downsampling block, "ResNet v1.5"):

| stage  | output (224²) | resnet18 / 34 (basic: 3×3, 3×3) | resnet50 / 101 / 152 (bottleneck: 1×1, 3×3, 1×1 ×4) |
|--------|---------------|---------------------------------|-----------------------------------------------------|
| stem   | 112² → 56²    | 7×7 64 /2, BN, ReLU; max pool 3×3 /2                                                  |
| stage1 | 56²           | [64] × 2 / 3                    | [64, 256] × 3 / 3 / 3                               |
| stage2 | 28²           | [128] × 2 / 4                   | [128, 512] × 4 / 4 / 8                              |
| stage3 | 14²           | [256] × 2 / 6                   | [256, 1024] × 6 / 23 / 36                           |
| stage4 | 7²            | [512] × 2 / 3                   | [512, 2048] × 3 / 3 / 3                             |
| head   | 1²            | global average pool, dense(num_classes)                                               |

A block computes ``relu(F(x) + shortcut(x))``; the shortcut is the identity, or where the shape changes a 1×1
convolution with the block's stride and BN (option B). Parameters with 1000 classes: resnet18 11,689,512, resnet34
21,797,672, resnet50 25,557,032, resnet101 44,549,160, resnet152 60,192,808 (torchvision's counts).

CIFAR ResNets (sec. 4.2 of the paper): a 3×3 16 stem, three stages of ``n`` basic blocks with 16, 32, 64 channels
on 32², 16², 8² maps (depth ``6n + 2``: resnet20, 32, 44, 56, 110 for n = 3, 5, 7, 9, 18), global average pool and
dense. The shortcuts are option A: the identity, subsampled by the stride and zero-padded to the new channel count
(no parameters). Parameters with 10 classes: 269,722 / 464,154 / 658,586 / 853,018 / 1,727,962.

``conv`` builds the 3×3 convolutions of the stages (injected: ``cnn.models.common``); the stem and the 1×1 convolutions
(bottleneck ends, projections) stay standard. ``norm`` builds the normalization (BatchNorm with torchvision's
eps 1e-5 and momentum 0.1, i.e. flax ``momentum=0.9``, by default); it is called with ``use_running_average``.
Padding is torch's symmetric ``k // 2`` (not XLA's "SAME", which pads stride-2 convolutions on the high side only).
``features_only=True`` returns the output of every stage (strides 4, 8, 16, 32 for the ImageNet ResNets) instead
of the logits, and builds no head: the dense heads of ``cnn.models.fcn`` read them.

Window ResNet (``window_resnet8``): the CIFAR ResNet with no zero padding at all, a classifier of fixed-size windows
that can run fully convolutionally over a larger image (``cnn.models.fully_conv``; zero padding would show a crop
zeros at its border where the large image has pixels). Every 3×3 convolution is "valid", so a block's output is
smaller than its input, and the shortcut reads the input at the centre of each output unit's receptive field
(offset ``start`` of ``cnn.ops.receptive_field``: ``s + 1`` for a basic block of stride ``s``, as U-Net crops its
skip connections). On a 32×32 window with one block per stage: 30² stem, 26², 10², 2² stage outputs, stride 4;
75,290 parameters with 10 classes (cifar_resnet20 less two basic blocks per stage).

CIFAR ResNet-18 (``cifar_resnet18``): the ImageNet resnet18 on 32×32 images, the layout of the widely used
CIFAR-10 training scripts (kuangliu/pytorch-cifar, and torch.compile benchmarks): a 3×3 /1 stem with no max pool,
then the four stages of basic blocks [2, 2, 2, 2], 64 → 512 channels on 32², 16², 8², 4² maps, option B shortcuts.
11,173,962 parameters with 10 classes (torchvision's resnet18 with ``conv1`` a 3×3 /1 convolution and ``maxpool``
the identity has the same count).

``pool_window`` (default None: the classifier) makes the global average pool a windowed one (``cnn.models.fully_conv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn.layers import ModuleDef
from cnn.models.common import BatchNorm, Chain, average_pool_head, check_input_rank, standard_conv
from cnn.ops import Layer, max_pool, receptive_field


def _shortcut(x: jax.Array, features: int, strides: int, kind: str, norm: ModuleDef) -> jax.Array:
    """The identity where shapes agree, else option B (1×1 conv /stride + norm) or A (subsample, zero channels)."""
    if strides == 1 and x.shape[-1] == features:
        return x
    if kind == "projection":
        x = standard_conv(features, (1, 1), strides, padding=0, use_bias=False, name="proj_conv")(x)
        return norm(name="proj_bn")(x)
    if kind != "zero_pad":
        raise ValueError(f"shortcut must be 'projection' or 'zero_pad', got {kind!r}")
    x = x[:, ::strides, ::strides, :]
    extra = features - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


def _add_shortcut(block: BasicBlock | BottleneckBlock, x: jax.Array, y: jax.Array) -> jax.Array:
    """``relu(y + shortcut(x))``, the shortcut read where each output unit's field is centred (without padding the
    block's output starts ``start`` pixels into its input and is smaller)."""
    offset = int(receptive_field(block.layer_chain(block.strides, block.padding))[-1].start)
    shortcut = _shortcut(x[:, offset:, offset:], block.features * block.expansion, block.strides, block.shortcut,
                         block.norm)
    return nn.relu(y + shortcut[:, : y.shape[1], : y.shape[2]])


class BasicBlock(nn.Module):
    """``relu(bn(conv3×3(relu(bn(conv3×3 /s (x))))) + shortcut(x))``; ``features`` output channels; ``padding`` of
    the 3×3 convolutions (1, or 0 in a window ResNet)."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    shortcut: str = "projection"
    padding: int = 1
    expansion: ClassVar[int] = 1

    @staticmethod
    def layer_chain(strides: int, padding: int = 1) -> list[Layer]:
        """The spatial layers of the longest path through the block, along one axis."""
        return [Layer(3, strides, 1, padding), Layer(3, 1, 1, padding)]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.features, (3, 3), self.strides, padding=self.padding, use_bias=False, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, (3, 3), 1, padding=self.padding, use_bias=False, name="conv2")(y)
        y = self.norm(name="bn2")(y)
        return _add_shortcut(self, x, y)


class BottleneckBlock(nn.Module):
    """``relu(bn(conv1×1 4w (relu(bn(conv3×3 /s (relu(bn(conv1×1 w (x))))))))) + shortcut(x))``, ``w = features``."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    shortcut: str = "projection"
    padding: int = 1
    expansion: ClassVar[int] = 4

    @staticmethod
    def layer_chain(strides: int, padding: int = 1) -> list[Layer]:
        return [Layer(3, strides, 1, padding)]  # the 1×1 convolutions leave the field as it is

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.features, (1, 1), use_bias=False, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, (3, 3), self.strides, padding=self.padding, use_bias=False, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(self.features * self.expansion, (1, 1), use_bias=False, name="conv3")(y)
        y = self.norm(name="bn3")(y)
        return _add_shortcut(self, x, y)


class ResNet(nn.Module):
    """ImageNet ResNet; ``stage_sizes`` blocks per stage of ``block_cls``, widths ``width · 2^i``."""

    stage_sizes: Sequence[int]
    block_cls: type[BasicBlock] | type[BottleneckBlock]
    num_classes: int = 1000
    width: int = 64
    conv: ModuleDef = standard_conv
    norm: ModuleDef = BatchNorm
    features_only: bool = False  # return every stage's output (for dense heads: cnn.models.fcn), not the logits
    pool_window: int | None = None

    stem: ClassVar[Layer] = Layer(7, 2, 1, 3)  # conv 7×7 /2, padding 3
    stem_pool: ClassVar[Layer | None] = Layer(3, 2, 1, 1)  # max pool 3×3 /2, padding 1
    shortcut: ClassVar[str] = "projection"
    block_padding: ClassVar[int] = 1

    def layer_chain(self) -> Chain:
        """``(module name, spatial layers since the previous entry)`` along the longest path: the stem
        convolution, then the last block of each stage (its output is the stage's)."""
        chain = [("stem_conv", [self.stem])]
        for i, num_blocks in enumerate(self.stage_sizes):
            layers = [self.stem_pool] if i == 0 and self.stem_pool else []
            for j in range(num_blocks):
                layers = layers + self.block_cls.layer_chain(self._strides(i, j), self.block_padding)
            chain.append((f"stage{i + 1}_block{num_blocks}", layers))
        return chain

    @staticmethod
    def _strides(stage: int, block: int) -> int:
        return 2 if stage > 0 and block == 0 else 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array | list[jax.Array]:
        check_input_rank(x, 2, type(self).__name__, "images (batch, height, width, channels)")
        norm = partial(self.norm, use_running_average=not train)
        stem, pool = self.stem, self.stem_pool
        x = standard_conv(
            self.width, (stem.kernel,) * 2, stem.stride, padding=stem.padding, use_bias=False, name="stem_conv"
        )(x)
        x = nn.relu(norm(name="stem_bn")(x))
        if pool:
            x = max_pool(x, pool.kernel, stride=pool.stride, padding=pool.padding)
        stages = []
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                block = self.block_cls(self.width * 2**i, self._strides(i, j), self.conv, norm, self.shortcut,
                                       self.block_padding, name=f"stage{i + 1}_block{j + 1}")
                x = block(x)
            stages.append(x)
        if self.features_only:
            return stages
        x = average_pool_head(x, self.pool_window)
        return nn.Dense(self.num_classes, name="head")(x)


class CifarResNet(ResNet):
    """CIFAR ResNet of depth ``6n + 2``: a 3×3 stem, ``stage_sizes = (n, n, n)`` basic blocks, option A shortcuts."""

    stage_sizes: Sequence[int] = (3, 3, 3)
    block_cls: type[BasicBlock] | type[BottleneckBlock] = BasicBlock
    num_classes: int = 10
    width: int = 16

    stem: ClassVar[Layer] = Layer(3, 1, 1, 1)  # conv 3×3, padding 1
    stem_pool: ClassVar[Layer | None] = None
    shortcut: ClassVar[str] = "zero_pad"


class SmallImageResNet(ResNet):
    """An ImageNet ResNet with a stem for 32×32 images: 3×3 /1, no max pool (``cifar_resnet18``)."""

    stem: ClassVar[Layer] = Layer(3, 1, 1, 1)  # conv 3×3, padding 1
    stem_pool: ClassVar[Layer | None] = None


class WindowResNet(CifarResNet):
    """CIFAR ResNet without zero padding: a classifier of fixed-size windows (see the module docstring)."""

    stem: ClassVar[Layer] = Layer(3, 1, 1, 0)  # conv 3×3, valid
    block_padding: ClassVar[int] = 0
