"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to Document Recognition", fig. 2)
in its common simplified form:

| layer | operation                                 | output (32×32×1 input) | parameters |
|-------|-------------------------------------------|------------------------|------------|
| C1    | conv 5×5, 6 maps, valid, squash           | 28×28×6                | 156        |
| S2    | average pool 2×2 / 2                      | 14×14×6                | 0          |
| C3    | conv 5×5, 16 maps, valid, squash          | 10×10×16               | 2,416      |
| S4    | average pool 2×2 / 2                      | 5×5×16                 | 0          |
| C5    | conv 5×5, 120 maps, valid, squash         | 1×1×120                | 48,120     |
| F6    | global average pool, dense 84, squash     | 84                     | 10,164     |
| out   | dense(num_classes)                        | 10                     | 850        |

61,706 parameters with 10 classes. Simplified from the paper: C3 connects every S2 map (the paper's table I
connects each C3 map to 3, 4 or 6 of them: 1,516 parameters instead of 2,416); S2/S4 are plain averages (the
paper's have a trainable coefficient and bias per map, 12 and 32 parameters); the output is a dense layer (the
paper's is a layer of Euclidean RBF units with fixed weights). The squashing function is the paper's
``f(a) = 1.7159 tanh(2a / 3)``. Inputs of at least 32×32 (pad 28×28 MNIST digits by 2, as the paper does); on a
larger input C5 is a map and the global average pool (the identity on 32×32) takes its mean.

``conv`` builds C3 and C5 (injected: ``cnn.models.common``); C1, on the pixels, stays standard. ``norm`` (default none)
adds a normalization after every convolution, called with ``use_running_average``. ``pool_window`` (default None:
the classifier) makes the global average pool a windowed one (``cnn.models.fully_conv``): a score map per position.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn.layers import ModuleDef
from cnn.models.common import Chain, average_pool_head, standard_conv
from cnn.ops import Layer

MIN_SIZE = 32


def squash(a: jax.Array) -> jax.Array:
    """LeCun et al.'s scaled tanh: ``f(±1) = ±1`` and the gain is largest at 0."""
    return 1.7159 * jnp.tanh(2.0 / 3.0 * a)


class LeNet5(nn.Module):
    num_classes: int = 10
    conv: ModuleDef = standard_conv
    norm: ModuleDef | None = None
    pool_window: int | None = None

    def layer_chain(self) -> Chain:
        """``(module name, spatial layers since the previous entry)`` for C1, C3 and C5."""
        return [("C1", [Layer(5)]), ("C3", [Layer(2, 2), Layer(5)]), ("C5", [Layer(2, 2), Layer(5)])]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"LeNet-5 needs images of at least {MIN_SIZE}×{MIN_SIZE}, got {x.shape}")
        norm = partial(self.norm, use_running_average=not train) if self.norm else None
        for name, features in (("C1", 6), ("C3", 16), ("C5", 120)):
            if name != "C1":
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            conv = standard_conv if name == "C1" else self.conv
            x = conv(features, (5, 5), padding="VALID", name=name)(x)
            if norm:
                x = norm(name=f"{name}_norm")(x)
            x = squash(x)
        x = average_pool_head(x, self.pool_window)
        x = squash(nn.Dense(84, name="F6")(x))
        return nn.Dense(self.num_classes, name="output")(x)
