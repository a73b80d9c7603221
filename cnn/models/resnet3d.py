"""3D residual networks: video (Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action
Recognition", torchvision's ``r3d_18``, ``mc3_18``, ``r2plus1d_18``) and volumes (MedMNIST v2's 3D ResNet-18:
the CIFAR-style ResNet-18 with 3D kernels, Yang et al. 2023).

Input ``(batch, time or depth, height, width, channels)``. Every network is four stages of two basic blocks,
widths 64, 128, 256, 512, stride 2 on the first block of stages 2-4, global average pool, dense:

| network      | stem                                         | stage 1    | stages 2-4  | parameters (400 classes) |
|--------------|----------------------------------------------|------------|-------------|--------------------------|
| r3d_18       | 3×7×7 64 /(1, 2, 2), BN, ReLU                | 3×3×3      | 3×3×3       | 33,371,472               |
| mc3_18       | 3×7×7 64 /(1, 2, 2), BN, ReLU                | 3×3×3      | 1×3×3       | 11,695,440               |
| r2plus1d_18  | 1×7×7 45 /(1, 2, 2), BN, ReLU; 3×1×1 64, BN, ReLU | (2+1)D | (2+1)D      | 31,505,325               |
| fr2d_18      | 1×7×7 64 /(1, 2, 2), BN, ReLU                | 1×3×3      | 1×3×3       | 11,381,712               |
| resnet18_3d  | 3×3×3 64, BN, ReLU (no pooling)              | 3×3×3      | 3×3×3       | (MedMNIST: 2 classes)    |

``fr2d_18`` is Tran et al.'s f-R2D: a 2D ResNet-18 applied to every frame (no temporal extent anywhere), its
features averaged over time by the global pool; it has the 2D ResNet-18's parameters (torchvision's ``resnet18``
count less its head: 11,689,512 - 513 · 600).

Block convolutions: ``3d`` a 3×3×3 convolution (stride s on every axis); ``2d`` a 1×3×3 one ("mixed convolution":
no temporal extent and no temporal stride in stages 2-4 of mc3); ``2+1d`` a 1×3×3 convolution to ``M`` mid-planes
(stride s in space), BN, ReLU, then a 3×1×1 one (stride s in time), with ``M = 27·C_in·C_out /
(9·C_in + 3·C_out)`` (floored) so that it has the parameters of a 3×3×3 convolution. As torchvision, ``M`` is
sized once per block from the block's input and output widths and used by both of its convolutions. The shortcut
is the identity, or a 1×1×1 convolution with the block's stride (the first block's stride on the axes that
convolution strides) and BN.

``conv`` builds the convolutions of the blocks (injected: ``cnn.models.common``; ``conv="acs"`` makes the 3×3×3
ones ACS convolutions) and, in ``resnet18_3d``, also the stem, since MedMNIST's ResNet-18+ACS converts every
convolution of the network; the video stems stay standard. ``norm`` is BatchNorm with torchvision's settings.
Any clip length and size (padding keeps every stage at least one position; global pooling at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn.layers import ModuleDef
from cnn.models.common import BatchNorm, check_input_rank, standard_conv

BLOCK_KINDS = ("3d", "2d", "2+1d")
STEMS = ("r3d", "r2plus1d", "frames", "volume")


def mid_planes(in_features: int, features: int) -> int:
    """(2+1)D mid-planes: a 1×3×3 and a 3×1×1 convolution with the parameters of one 3×3×3 convolution."""
    return (27 * in_features * features) // (9 * in_features + 3 * features)


def _strides(kind: str, s: int) -> tuple[int, int, int]:
    return (1, s, s) if kind == "2d" else (s, s, s)


class Block3d(nn.Module):
    """``relu(bn(conv(relu(bn(conv /s (x))))) + shortcut(x))``, ``conv`` of ``kind`` (see the module docstring)."""

    features: int
    strides: int
    kind: str
    conv: ModuleDef
    norm: ModuleDef

    def _conv(self, x: jax.Array, strides: int, mid: int, name: str) -> jax.Array:
        if self.kind == "2+1d":
            x = self.conv(mid, (1, 3, 3), (1, strides, strides), padding=[(0, 0), (1, 1), (1, 1)], use_bias=False,
                          name=f"{name}_spatial")(x)
            x = nn.relu(self.norm(name=f"{name}_mid_bn")(x))
            return self.conv(self.features, (3, 1, 1), (strides, 1, 1), padding=[(1, 1), (0, 0), (0, 0)],
                             use_bias=False, name=f"{name}_temporal")(x)
        kernel = (1, 3, 3) if self.kind == "2d" else (3, 3, 3)
        padding = [(k // 2, k // 2) for k in kernel]
        return self.conv(self.features, kernel, _strides(self.kind, strides), padding=padding, use_bias=False,
                         name=name)(x)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"block kind must be one of {list(BLOCK_KINDS)}, got {self.kind!r}")
        mid = mid_planes(x.shape[-1], self.features)
        y = nn.relu(self.norm(name="bn1")(self._conv(x, self.strides, mid, "conv1")))
        y = self.norm(name="bn2")(self._conv(y, 1, mid, "conv2"))
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = standard_conv(self.features, (1, 1, 1), _strides(self.kind, self.strides), padding=0,
                                     use_bias=False, name="proj_conv")(x)
            shortcut = self.norm(name="proj_bn")(shortcut)
        return nn.relu(y + shortcut)


class ResNet3d(nn.Module):
    """A 3D ResNet: ``stem`` (one of ``STEMS``), ``stage_sizes`` blocks per stage of ``block_kinds[i]``."""

    stem: str
    block_kinds: Sequence[str]
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 400
    width: int = 64
    conv: ModuleDef = standard_conv
    norm: ModuleDef = BatchNorm

    def _stem(self, x: jax.Array, norm: ModuleDef) -> jax.Array:
        if self.stem == "r2plus1d":
            x = standard_conv(45, (1, 7, 7), (1, 2, 2), padding=[(0, 0), (3, 3), (3, 3)], use_bias=False,
                              name="stem_spatial")(x)
            x = nn.relu(norm(name="stem_mid_bn")(x))
            x = standard_conv(self.width, (3, 1, 1), padding=[(1, 1), (0, 0), (0, 0)], use_bias=False,
                              name="stem_temporal")(x)
        elif self.stem in ("r3d", "frames"):
            t = 3 if self.stem == "r3d" else 1
            x = standard_conv(self.width, (t, 7, 7), (1, 2, 2), padding=[(t // 2, t // 2), (3, 3), (3, 3)],
                              use_bias=False, name="stem_conv")(x)
        elif self.stem == "volume":
            x = self.conv(self.width, (3, 3, 3), padding=1, use_bias=False, name="stem_conv")(x)
        else:
            raise ValueError(f"stem must be one of {list(STEMS)}, got {self.stem!r}")
        return nn.relu(norm(name="stem_bn")(x))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_input_rank(x, 3, type(self).__name__, "volumes or clips (batch, depth or time, height, width, channels)")
        norm = partial(self.norm, use_running_average=not train)
        x = self._stem(x, norm)
        for i, (num_blocks, kind) in enumerate(zip(self.stage_sizes, self.block_kinds, strict=True)):
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = Block3d(self.width * 2**i, strides, kind, self.conv, norm, name=f"stage{i + 1}_block{j + 1}")(x)
        x = jnp.mean(x, axis=(1, 2, 3))
        return nn.Dense(self.num_classes, name="head")(x)
