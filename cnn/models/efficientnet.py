"""EfficientNet-B0…B7 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for CNNs"), torchvision's build.

B0 (table 1 of the paper); every MBConv block has squeeze-and-excitation and, where its input and output shapes
agree, a residual connection with stochastic depth:

| stage  | operator               | stride | channels | layers | output (224²) |
|--------|------------------------|--------|----------|--------|---------------|
| stem   | conv 3×3, BN, SiLU     | 2      | 32       | 1      | 112²          |
| 1      | MBConv1, k3×3          | 1      | 16       | 1      | 112²          |
| 2      | MBConv6, k3×3          | 2      | 24       | 2      | 56²           |
| 3      | MBConv6, k5×5          | 2      | 40       | 2      | 28²           |
| 4      | MBConv6, k3×3          | 2      | 80       | 3      | 14²           |
| 5      | MBConv6, k5×5          | 1      | 112      | 3      | 14²           |
| 6      | MBConv6, k5×5          | 2      | 192      | 4      | 7²            |
| 7      | MBConv6, k3×3          | 1      | 320      | 1      | 7²            |
| head   | conv 1×1, BN, SiLU; global average pool, dropout, dense(num_classes) | | 1280 | | 1²   |

MBConv``e``, kernel ``k``, stride ``s``, ``C_in -> C_out``: 1×1 expansion to ``e·C_in`` (absent for ``e = 1``), BN,
SiLU; depthwise k×k /s, BN, SiLU; squeeze-and-excitation (global average, dense ``max(1, C_in / 4)``, SiLU, dense
``e·C_in``, sigmoid, channel-wise scale); 1×1 projection to ``C_out``, BN (no activation); then, if ``s = 1`` and
``C_in = C_out``, ``x + drop(y)`` where stochastic depth drops ``y`` for a whole example with probability
``p_b = stochastic_depth_rate · b / (number of blocks)`` for block ``b = 0, 1, ...`` and scales it by
``1 / (1 - p_b)`` otherwise (training only; the dropout rng).

Scaling (width, depth, dropout): b0 (1.0, 1.0, 0.2), b1 (1.0, 1.1, 0.2), b2 (1.1, 1.2, 0.3), b3 (1.2, 1.4, 0.3),
b4 (1.4, 1.8, 0.4), b5 (1.6, 2.2, 0.4), b6 (1.8, 2.6, 0.5), b7 (2.0, 3.1, 0.5). Channels ``c·width`` are rounded
to the nearest multiple of 8 (never below 90% of the unrounded value), layers to ``ceil(n·depth)``; the head has
4× the channels of the last stage. BatchNorm: torchvision's eps 1e-5, momentum 0.1 (flax ``momentum=0.9``) for
b0–b4; eps 1e-3, momentum 0.01 (flax 0.99) for b5–b7, whose weights were ported from TensorFlow. Parameters with
1000 classes: b0 5,288,548; b1 7,794,184; b2 9,109,994; b3 12,233,232; b4 19,341,616; b5 30,389,784;
b6 43,040,704; b7 66,347,960 (torchvision's counts). Padding is torch's symmetric ``k // 2``.

``conv`` swaps the depthwise k×k convolutions of the MBConv blocks (injected: ``cnn.models.common``, with
``feature_group_count`` = channels); the stem, the 1×1 convolutions and the squeeze-and-excitation stay standard.
``cnn.layers`` builds a grouped convolution of the kinds without groups (deformable, separable, locally_connected,
tiled, fft) as a standard one, so here only ``dilated`` changes the network.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import layers
from cnn.layers import ModuleDef
from cnn.models.common import BatchNorm, Chain, standard_conv
from cnn.ops import Layer

# torchvision's BatchNorm for the weights ported from TensorFlow (b5-b7).
BatchNormTF = partial(layers.BatchNorm, momentum=0.99, epsilon=1e-3)


class StageSpec(NamedTuple):
    """One row of table 1 (for B0): MBConv``expand_ratio``, ``kernel``, ``stride``, ``out`` channels, ``layers``."""

    expand_ratio: int
    kernel: int
    stride: int
    out: int
    layers: int


STEM_CHANNELS, STEM = 32, Layer(3, 2, 1, 1)  # conv 3×3 /2, padding 1
B0_STAGES = (
    StageSpec(1, 3, 1, 16, 1),
    StageSpec(6, 3, 2, 24, 2),
    StageSpec(6, 5, 2, 40, 2),
    StageSpec(6, 3, 2, 80, 3),
    StageSpec(6, 5, 1, 112, 3),
    StageSpec(6, 5, 2, 192, 4),
    StageSpec(6, 3, 1, 320, 1),
)


def round_channels(channels: float, divisor: int = 8) -> int:
    """The multiple of ``divisor`` nearest to ``channels`` (at least ``divisor``), one more if that loses >10%."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation and stochastic depth (see the module docstring)."""

    features: int
    expand_ratio: int
    kernel: int
    strides: int
    drop_rate: float
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        in_channels = x.shape[-1]
        hidden = round_channels(in_channels * self.expand_ratio)
        y = x
        if hidden != in_channels:
            y = standard_conv(hidden, (1, 1), use_bias=False, name="expand_conv")(y)
            y = nn.silu(self.norm(name="expand_bn")(y))
        y = self.conv(
            hidden, (self.kernel, self.kernel), self.strides, padding=self.kernel // 2, feature_group_count=hidden,
            use_bias=False, name="depthwise_conv",
        )(y)
        y = nn.silu(self.norm(name="depthwise_bn")(y))
        scale = jnp.mean(y, axis=(1, 2))
        scale = nn.silu(nn.Dense(max(1, in_channels // 4), name="se_reduce")(scale))
        y = y * nn.sigmoid(nn.Dense(hidden, name="se_expand")(scale))[:, None, None, :]
        y = self.norm(name="project_bn")(standard_conv(self.features, (1, 1), use_bias=False, name="project_conv")(y))
        if self.strides != 1 or in_channels != self.features:
            return y
        if train and self.drop_rate > 0:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1 - self.drop_rate, (y.shape[0], 1, 1, 1))
            y = jnp.where(keep, y / (1 - self.drop_rate), 0)
        return x + y


class EfficientNet(nn.Module):
    """EfficientNet scaled by ``width_mult`` (channels) and ``depth_mult`` (layers per stage) from B0."""

    width_mult: float = 1.0
    depth_mult: float = 1.0
    dropout_rate: float = 0.2
    stochastic_depth_rate: float = 0.2
    num_classes: int = 1000
    conv: ModuleDef = standard_conv
    norm: ModuleDef = BatchNorm

    def stages(self) -> list[StageSpec]:
        """Table 1 scaled: channels rounded to multiples of 8, layers ``ceil(n · depth_mult)``."""
        return [
            s._replace(out=round_channels(s.out * self.width_mult), layers=math.ceil(s.layers * self.depth_mult))
            for s in B0_STAGES
        ]

    def layer_chain(self) -> Chain:
        """``(module name, spatial layers since the previous entry)``: the stem convolution, then the last block
        of each stage (the depthwise convolutions; 1×1 convolutions leave the field as it is)."""
        chain = [("stem_conv", [STEM])]
        for i, s in enumerate(self.stages()):
            layers = [Layer(s.kernel, s.stride if j == 0 else 1, 1, s.kernel // 2) for j in range(s.layers)]
            chain.append((f"stage{i + 1}_block{s.layers}", layers))
        return chain

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = partial(self.norm, use_running_average=not train)
        stem = standard_conv(round_channels(STEM_CHANNELS * self.width_mult), (STEM.kernel,) * 2, STEM.stride,
                        padding=STEM.padding, use_bias=False, name="stem_conv")
        x = nn.silu(norm(name="stem_bn")(stem(x)))
        stages = self.stages()
        total_blocks, block = sum(s.layers for s in stages), 0
        for i, s in enumerate(stages):
            for j in range(s.layers):
                drop_rate = self.stochastic_depth_rate * block / total_blocks
                x = MBConv(
                    s.out, s.expand_ratio, s.kernel, s.stride if j == 0 else 1, drop_rate, self.conv, norm,
                    name=f"stage{i + 1}_block{j + 1}",
                )(x, train)
                block += 1
        x = standard_conv(4 * stages[-1].out, (1, 1), use_bias=False, name="head_conv")(x)
        x = nn.silu(norm(name="head_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)
