"""A small VGG-style CNN for tiny images (the default experiment on the 8x8 digits).

| stage | layers                                   | output (8x8 input) |
|-------|------------------------------------------|--------------------|
| 1     | conv3x3(w) - BN - ReLU, conv3x3(w) - BN - ReLU | 8 x 8 x w     |
| pool  | max 2x2 / 2                              | 4 x 4 x w          |
| 2     | conv3x3(2w) - BN - ReLU, conv3x3(2w) - BN - ReLU | 4 x 4 x 2w  |
| head  | global average pool, dropout, dense(num_classes) | num_classes |
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from cnn.ops import max_pool


class SmallCNN(nn.Module):
    num_classes: int
    width: int = 32
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        def conv_bn_relu(x, features):
            x = nn.Conv(features, (3, 3), padding="SAME", use_bias=False, kernel_init=nn.initializers.he_normal())(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            return nn.relu(x)

        x = conv_bn_relu(conv_bn_relu(x, self.width), self.width)
        x = max_pool(x, 2)
        x = conv_bn_relu(conv_bn_relu(x, 2 * self.width), 2 * self.width)
        x = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
