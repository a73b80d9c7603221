"""VGG (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image Recognition"), table 1,
as torchvision builds it:

| stage | channels | vgg11 (A) | vgg13 (B) | vgg16 (D) | vgg19 (E) | then        |
|-------|----------|-----------|-----------|-----------|-----------|-------------|
| 1     | 64       | 1         | 2         | 2         | 2         | max pool /2 |
| 2     | 128      | 1         | 2         | 2         | 2         | max pool /2 |
| 3     | 256      | 2         | 2         | 3         | 4         | max pool /2 |
| 4     | 512      | 2         | 2         | 3         | 4         | max pool /2 |
| 5     | 512      | 2         | 2         | 3         | 4         | max pool /2 |
| head  | adaptive average pool to 7×7, dense 4096, ReLU, dropout, dense 4096, ReLU, dropout, dense(num_classes) |

(``classifier_width`` sets the two hidden dense layers, 4096 in the paper.)

Every convolution is 3×3, stride 1, padding 1, with a bias, followed by ReLU (``_bn`` variants: conv, norm, ReLU;
the conv keeps its bias, as torchvision). Parameters with 1000 classes: vgg11 132,863,336, vgg13 133,047,848,
vgg16 138,357,544, vgg19 143,667,240; vgg11_bn 132,868,840, vgg13_bn 133,053,736, vgg16_bn 138,365,992,
vgg19_bn 143,678,248. Inputs of at least 32×32 (five 2×2 poolings); the adaptive pool makes any larger size work.

``conv`` builds every 3×3 convolution (injected: ``cnn.models.common``). ``norm``: ``None`` (plain VGG) or a
normalization constructor called with ``use_running_average`` (the ``_bn`` variants pass BatchNorm).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax

from cnn.layers import ModuleDef
from cnn.models.common import Chain, standard_conv
from cnn.ops import Layer, adaptive_pool, max_pool

WIDTHS = (64, 128, 256, 512, 512)
MIN_SIZE = 32


class VGG(nn.Module):
    """VGG with ``stage_sizes`` 3×3 convolutions in each of its five stages."""

    stage_sizes: Sequence[int]
    num_classes: int = 1000
    dropout_rate: float = 0.5
    classifier_width: int = 4096  # the two hidden dense layers (e.g. 512 for CIFAR-sized experiments)
    conv: ModuleDef = standard_conv
    norm: ModuleDef | None = None

    def layer_chain(self) -> Chain:
        """``(module name, spatial layers since the previous entry)``: the last convolution of each stage."""
        chain = []
        for i, num_convs in enumerate(self.stage_sizes):
            pool = [Layer(2, 2)] if i else []
            chain.append((f"conv{i + 1}_{num_convs}", pool + [Layer(3, 1, 1, 1)] * num_convs))
        return chain

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"VGG needs images of at least {MIN_SIZE}×{MIN_SIZE} (five 2×2 poolings), got {x.shape}")
        norm = partial(self.norm, use_running_average=not train) if self.norm else None
        for i, (features, num_convs) in enumerate(zip(WIDTHS, self.stage_sizes, strict=True)):
            for j in range(num_convs):
                x = self.conv(features, (3, 3), padding=1, name=f"conv{i + 1}_{j + 1}")(x)
                if norm:
                    x = norm(name=f"bn{i + 1}_{j + 1}")(x)
                x = nn.relu(x)
            x = max_pool(x, 2)
        x = adaptive_pool(x, 7, "avg").reshape(x.shape[0], -1)
        for k in (1, 2):
            x = nn.relu(nn.Dense(self.classifier_width, name=f"fc{k}")(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)
