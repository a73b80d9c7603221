"""The small 1D CNN of MNIST-1D (Greydanus & Kobak 2024, "Scaling down deep learning with MNIST-1D";
``ConvBase`` in github.com/greydanus/mnist1d):

| layer  | operation                              | output (length 40) | parameters |
|--------|----------------------------------------|--------------------|------------|
| conv1  | conv 5, 25 channels, stride 2, pad 1, ReLU | 19 × 25        | 150        |
| conv2  | conv 3, 25 channels, stride 2, pad 1, ReLU | 10 × 25        | 1,900      |
| conv3  | conv 3, 25 channels, stride 2, pad 1, ReLU | 5 × 25         | 1,900      |
| linear | flatten, dense(num_classes)            | 10                 | 1,260      |

5,210 parameters with 10 classes. The flatten reads 5 positions; on sequences of another length the conv3 output
is first averaged to 5 positions (adaptive average pooling, the identity at length 40), so any length of at least 3
works. ``conv`` builds conv2 and conv3 (injected: ``cnn.models.common``); conv1, on the signal, stays standard.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from cnn import ops
from cnn.errors import InputShapeError
from cnn.layers import ModuleDef
from cnn.models.common import check_input_rank, standard_conv

POSITIONS = 5  # conv3's output length on the published length-40 sequences
MIN_LENGTH = 3  # conv1 (kernel 5, padding 1) needs length + 2 >= 5


class Mnist1dCNN(nn.Module):
    num_classes: int = 10
    channels: int = 25
    conv: ModuleDef = standard_conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or normalization
        check_input_rank(x, 1, "Mnist1dCNN", "sequences (batch, length, channels)")
        if x.shape[1] < MIN_LENGTH:
            raise InputShapeError(f"Mnist1dCNN needs sequences of at least {MIN_LENGTH} samples, got {x.shape[1]}")
        x = nn.relu(standard_conv(self.channels, 5, 2, padding=1, name="conv1")(x))
        x = nn.relu(self.conv(self.channels, 3, 2, padding=1, name="conv2")(x))
        x = nn.relu(self.conv(self.channels, 3, 2, padding=1, name="conv3")(x))
        # torch flattens (channels, length): channel-major, so the dense weights line up with the published model's
        x = ops.adaptive_pool(x, POSITIONS, reduce="avg").transpose(0, 2, 1).reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, name="linear")(x)
