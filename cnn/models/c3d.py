"""C3D (Tran et al. 2015, "Learning Spatiotemporal Features with 3D Convolutional Networks", fig. 3): eight 3×3×3
convolutions (stride 1, padding 1, ReLU), five max poolings, two dense layers of 4,096.

| layer          | operation                               | output (16×112×112×3 clip) | parameters  |
|----------------|-----------------------------------------|----------------------------|-------------|
| conv1a, pool1  | conv 64; max 1×2×2 /(1, 2, 2)           | 16×56×56×64                | 5,248       |
| conv2a, pool2  | conv 128; max 2×2×2 /2                  | 8×28×28×128                | 221,312     |
| conv3a-b, pool3| conv 256, conv 256; max 2×2×2 /2        | 4×14×14×256                | 2,654,720   |
| conv4a-b, pool4| conv 512, conv 512; max 2×2×2 /2        | 2×7×7×512                  | 10,617,856  |
| conv5a-b, pool5| conv 512, conv 512; max 2×2×2 /2, pad (0, 1, 1) | 1×4×4×512          | 14,156,800  |
| fc6, fc7       | dense 4,096, ReLU, dropout 0.5 (each)   | 4,096                      | 50,339,840  |
| fc8            | dense(num_classes)                      | 487 (Sports-1M)            | 1,995,239   |

79,991,015 parameters with 487 classes. pool5 pads height and width by one (the Caffe original rounds its output
up, 7 → 4, as the common PyTorch port's padding does). For any clip length and size the pool5 output is averaged
to the 1×4×4 grid fc6 reads (adaptive average pooling: the identity on 16×112×112 clips); a clip needs at least
16 frames of 16×16 for pool5 to have an output.

``conv`` builds conv2a-conv5b (injected: ``cnn.models.common``); conv1a, on the pixels, stays standard. ``norm``
(default none: the paper has none) adds a normalization after every convolution, called with
``use_running_average``.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax

from cnn import ops
from cnn.errors import InputShapeError
from cnn.layers import ModuleDef
from cnn.models.common import check_input_rank, standard_conv

STAGES = ((64,), (128,), (256, 256), (512, 512), (512, 512))
POOL5_GRID = (1, 4, 4)
MIN_FRAMES, MIN_SIZE = 16, 16


class C3D(nn.Module):
    num_classes: int = 487
    dropout_rate: float = 0.5
    conv: ModuleDef = standard_conv
    norm: ModuleDef | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_input_rank(x, 3, "C3D", "clips (batch, time, height, width, channels)")
        if x.shape[1] < MIN_FRAMES or min(x.shape[2:4]) < MIN_SIZE:
            raise InputShapeError(f"C3D needs clips of at least {MIN_FRAMES} frames of {MIN_SIZE}×{MIN_SIZE} (its four "
                             f"time poolings and five space poolings), got {tuple(x.shape[1:4])}")
        norm = partial(self.norm, use_running_average=not train) if self.norm else None
        for i, widths in enumerate(STAGES):
            for j, features in enumerate(widths):
                name = f"conv{i + 1}{'ab'[j]}"
                conv = standard_conv if i == 0 else self.conv
                x = conv(features, (3, 3, 3), padding=1, name=name)(x)
                if norm:
                    x = norm(name=f"{name}_norm")(x)
                x = nn.relu(x)
            window = (1, 2, 2) if i == 0 else (2, 2, 2)
            padding = ((0, 0), (1, 1), (1, 1)) if i == len(STAGES) - 1 else "VALID"
            x = ops.max_pool(x, window, padding=padding)
        x = ops.adaptive_pool(x, POOL5_GRID, reduce="avg").reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = nn.relu(nn.Dense(4096, name=name)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="fc8")(x)
