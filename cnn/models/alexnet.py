"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) in torchvision's one-tower variant (from "One weird trick",
Krizhevsky 2014: 64, 192, 384, 256, 256 channels, no local response normalization):

| layer | kernel / stride / padding  | channels | output (224²) |
|-------|----------------------------|----------|---------------|
| conv1 | 11×11 / 4 / 2, ReLU        | 64       | 55²           |
| pool1 | max 3×3 / 2                |          | 27²           |
| conv2 | 5×5 / 1 / 2, ReLU          | 192      | 27²           |
| pool2 | max 3×3 / 2                |          | 13²           |
| conv3 | 3×3 / 1 / 1, ReLU          | 384      | 13²           |
| conv4 | 3×3 / 1 / 1, ReLU          | 256      | 13²           |
| conv5 | 3×3 / 1 / 1, ReLU          | 256      | 13²           |
| pool5 | max 3×3 / 2                |          | 6²            |
| head  | adaptive average pool to 6×6, dropout, dense 4096, ReLU, dropout, dense 4096, ReLU, dense(num_classes) |

61,100,840 parameters with 1000 classes (torchvision's count). Inputs of at least 63×63 (pool5 then has one
output, which the adaptive pool repeats to 6×6).

``conv`` builds conv2–conv5 (injected: ``cnn.models.common``); conv1, the 11×11 stride-4 convolution on the pixels,
stays standard, as the stems of the other families. ``norm`` (default none) adds a normalization after every
convolution, called with ``use_running_average``.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax

from cnn.layers import ModuleDef
from cnn.models.common import Chain, standard_conv
from cnn.ops import Layer, adaptive_pool, max_pool

# (features, kernel, stride, padding, max pool after) of conv1..conv5
LAYERS = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)
MIN_SIZE = 63


class AlexNet(nn.Module):
    num_classes: int = 1000
    dropout_rate: float = 0.5
    conv: ModuleDef = standard_conv
    norm: ModuleDef | None = None

    def layer_chain(self) -> Chain:
        """``(module name, spatial layers since the previous entry)`` for conv1..conv5 (a pool joins the next)."""
        chain, pending = [], []
        for i, (_, kernel, stride, padding, pool) in enumerate(LAYERS):
            chain.append((f"conv{i + 1}", [*pending, Layer(kernel, stride, 1, padding)]))
            pending = [Layer(3, 2)] if pool else []
        return chain

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"AlexNet needs images of at least {MIN_SIZE}×{MIN_SIZE}, got {x.shape}")
        norm = partial(self.norm, use_running_average=not train) if self.norm else None
        for i, (features, kernel, stride, padding, pool) in enumerate(LAYERS):
            conv = standard_conv if i == 0 else self.conv
            x = conv(features, (kernel, kernel), stride, padding=padding, name=f"conv{i + 1}")(x)
            if norm:
                x = norm(name=f"bn{i + 1}")(x)
            x = nn.relu(x)
            if pool:
                x = max_pool(x, 3, stride=2)
        x = adaptive_pool(x, 6, "avg").reshape(x.shape[0], -1)
        for k in (1, 2):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.relu(nn.Dense(4096, name=f"fc{k}")(x))
        return nn.Dense(self.num_classes, name="head")(x)
