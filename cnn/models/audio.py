"""Audio models: M5 on raw waveforms (Dai, Dai, Qu, Li & Das 2017, "Very Deep Convolutional Neural Networks for Raw
Waveforms", table 1) and a small 2D CNN on log-mel spectrograms (``cnn.data.audio.log_mel_spectrogram``).

M5, input ``(batch, samples, 1)`` (8 kHz in the paper; every convolution is followed by BN and ReLU):

| layer | operation                                  | output (32,000 samples) | parameters |
|-------|--------------------------------------------|-------------------------|------------|
| conv1 | conv 80, 128 channels, stride 4; max 4 /4   | 2,000 × 128             | 10,496     |
| conv2 | conv 3, 128 channels; max 4 /4             | 500 × 128               | 49,408     |
| conv3 | conv 3, 256 channels; max 4 /4             | 125 × 256               | 98,816     |
| conv4 | conv 3, 512 channels; max 4 /4             | 31 × 512                | 394,240    |
| head  | global average pool, dense(num_classes)    | 10                      | 5,130      |

558,090 parameters with 10 classes (the paper's table: "0.5M"; convolutions without bias, BN scale and offset).
Convolutions pad "SAME" (the paper keeps the length through the small kernels); the poolings drop a remainder,
so a clip needs at least 1,021 samples (``ceil(n / 4) >= 4⁴``): the shortest FSDD recording has 1,148.

LogMelCNN, input ``(batch, mel bands, frames, 1)`` (channels last, like an image):

| block | operation                                  | output (40 × 64 input) | parameters |
|-------|--------------------------------------------|------------------------|------------|
| 1     | conv 3×3 32, BN, ReLU; max 2×2 /2          | 20 × 32 × 32           | 352        |
| 2     | conv 3×3 64, BN, ReLU; max 2×2 /2          | 10 × 16 × 64           | 18,560     |
| 3     | conv 3×3 128, BN, ReLU; max 2×2 /2         | 5 × 8 × 128            | 73,984     |
| 4     | conv 3×3 128, BN, ReLU                     | 5 × 8 × 128            | 147,712    |
| head  | global average pool, dense(num_classes)    | 10                     | 1,290      |

241,898 parameters with 10 classes; any spectrogram of at least 8 × 8 (three poolings).

``conv`` builds every convolution but the first (injected: ``cnn.models.common``); ``norm`` the normalization.
The poolings are ``cnn.ops.max_pool`` (as in every model of the zoo), whose gradient is several times faster on
CPU than flax's ``nn.max_pool`` (the same values and gradients).
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.errors import InputShapeError
from cnn.layers import ModuleDef
from cnn.models.common import BatchNorm, check_input_rank, standard_conv

M5_LAYERS = ((80, 4, 128), (3, 1, 128), (3, 1, 256), (3, 1, 512))  # kernel, stride, channels
M5_POOL = 4
M5_MIN_LENGTH = 4 * (M5_POOL**4 - 1) + 1  # ceil(n / 4) >= 4**4

LOG_MEL_WIDTHS = (32, 64, 128, 128)
LOG_MEL_POOLED = 3  # blocks followed by a 2×2 max pool
LOG_MEL_MIN_SIZE = 2**LOG_MEL_POOLED


class M5(nn.Module):
    num_classes: int = 10
    conv: ModuleDef = standard_conv
    norm: ModuleDef = BatchNorm

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_input_rank(x, 1, "M5", "waveforms (batch, samples, channels)")
        if x.shape[1] < M5_MIN_LENGTH:
            raise InputShapeError(f"M5 needs clips of at least {M5_MIN_LENGTH} samples (a stride-4 convolution and "
                                  f"four poolings by 4), got {x.shape[1]}")
        norm = partial(self.norm, use_running_average=not train)
        for i, (kernel, stride, features) in enumerate(M5_LAYERS):
            conv = standard_conv if i == 0 else self.conv
            x = conv(features, kernel, stride, padding="SAME", use_bias=False, name=f"conv{i + 1}")(x)
            x = nn.relu(norm(name=f"bn{i + 1}")(x))
            x = ops.max_pool(x, M5_POOL)
        x = jnp.mean(x, axis=1)
        return nn.Dense(self.num_classes, name="head")(x)


class LogMelCNN(nn.Module):
    num_classes: int = 10
    conv: ModuleDef = standard_conv
    norm: ModuleDef = BatchNorm

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_input_rank(x, 2, "LogMelCNN", "spectrograms (batch, mel bands, frames, channels)")
        if min(x.shape[1:3]) < LOG_MEL_MIN_SIZE:
            raise InputShapeError(f"LogMelCNN needs spectrograms of at least {LOG_MEL_MIN_SIZE}×{LOG_MEL_MIN_SIZE} "
                             f"(mel bands × frames), got {tuple(x.shape[1:3])}")
        norm = partial(self.norm, use_running_average=not train)
        for i, features in enumerate(LOG_MEL_WIDTHS):
            conv = standard_conv if i == 0 else self.conv
            x = conv(features, (3, 3), padding=1, use_bias=False, name=f"conv{i + 1}")(x)
            x = nn.relu(norm(name=f"bn{i + 1}")(x))
            if i < LOG_MEL_POOLED:
                x = ops.max_pool(x, 2)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)
