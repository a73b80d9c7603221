"""Fully convolutional networks (Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic
Segmentation", fig. 3) on a zoo ResNet, whose global pool and dense classifier become a 1×1 "score" convolution:

| net     | coarse scores                                                        | then, to the input size  |
|---------|----------------------------------------------------------------------|--------------------------|
| FCN-32s | score32 = 1×1 conv(stage4) (stride 32)                               | bilinear ×32             |
| FCN-16s | score16 = up2(score32) + 1×1 conv(stage3) (stride 16)                | bilinear ×16             |
| FCN-8s  | score8 = up2(score16) + 1×1 conv(stage2) (stride 8)                  | bilinear ×8              |

``up2`` is a learned 4×4 transposed convolution /2 (one per class, padding 1: ``n → 2n``) initialised to bilinear
interpolation, as in the paper; its output is cropped to the finer map (a ResNet stage of an odd-sized map is one
pixel short of twice the next). The skip scores start at zero (the paper: "initialized to zero"), so training starts
from the coarser net's output. The last upsampling is a fixed bilinear resize to the input's size (``jax.image.resize``,
half-pixel centres, as torchvision's FCN), the paper's last deconvolution being fixed to bilinear too, so any input
size gives logits ``(batch, H, W, num_classes)``.

``backbone``: an ImageNet ResNet constructor of the zoo (the registry has ``fcn32s_resnet18`` … ``fcn8s_resnet152``),
built with ``features_only=True`` and this model's ``conv`` and ``norm``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn.errors import ConfigError
from cnn.layers import ConvTranspose, ModuleDef
from cnn.models.common import BatchNorm, standard_conv

SKIPS = {32: 0, 16: 1, 8: 2}  # output stride -> skips from finer stages


def bilinear_upsampling_kernel(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """``(k, k, C, C)`` kernel of a ``ConvTranspose`` /``(k + 1) // 2`` upsampling each channel bilinearly:
    ``f(a) f(b)`` on the diagonal, ``f(a) = 1 - |a - c| / factor`` with ``c`` the kernel's centre
    (``[1/4, 3/4, 3/4, 1/4]`` for ``k = 4``). ``key`` is unused (an ``nn.initializers`` signature)."""
    del key
    k, _, features, channels = shape
    if shape[0] != shape[1] or features != channels:
        raise ValueError(f"a bilinear kernel needs shape (k, k, C, C), got {shape}")
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 else factor - 0.5
    f = 1 - jnp.abs(jnp.arange(k) - centre) / factor
    return (f[:, None, None, None] * f[None, :, None, None] * jnp.eye(channels)).astype(dtype)


class FCN(nn.Module):
    """FCN-``output_stride``s: scores from the last ``1 + SKIPS[output_stride]`` stages of ``backbone``."""

    backbone: ModuleDef
    num_classes: int = 21
    output_stride: int = 8
    conv: ModuleDef = standard_conv
    norm: ModuleDef = BatchNorm

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.output_stride not in SKIPS:
            raise ConfigError(f"fcn: output_stride must be one of {sorted(SKIPS)}, got {self.output_stride}")
        stages = self.backbone(conv=self.conv, norm=self.norm, features_only=True, name="backbone")(x, train)
        score = standard_conv(self.num_classes, (1, 1), name="score32")(stages[-1])
        for k in range(SKIPS[self.output_stride]):
            stride = 16 // 2**k
            fine = stages[-2 - k]
            score = ConvTranspose(self.num_classes, (4, 4), strides=2, padding=1, use_bias=False,
                                  kernel_init=bilinear_upsampling_kernel, name=f"up{stride}")(score)
            skip = standard_conv(self.num_classes, (1, 1), kernel_init=nn.initializers.zeros, name=f"score{stride}")
            score = score[:, : fine.shape[1], : fine.shape[2]] + skip(fine)
        return jax.image.resize(score, (*x.shape[:3], self.num_classes), "bilinear")
