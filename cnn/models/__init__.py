"""The model zoo: ``create(name, num_classes=..., **overrides)`` returns a linen module applied as
``model.apply(variables, x, train=...)``."""

from __future__ import annotations

from functools import partial

import flax.linen as nn

from cnn.errors import ConfigError
from cnn.layers import ChebConv, conv_module
from cnn.models.alexnet import AlexNet
from cnn.models.audio import M5, LogMelCNN
from cnn.models.c3d import C3D
from cnn.models.common import BatchNorm
from cnn.models.efficientnet import BatchNormTF, EfficientNet
from cnn.models.fcn import FCN
from cnn.models.gcn import GCN
from cnn.models.lenet import LeNet5
from cnn.models.mnist1d import Mnist1dCNN
from cnn.models.resnet import BasicBlock, BottleneckBlock, CifarResNet, ResNet, SmallImageResNet, WindowResNet
from cnn.models.resnet3d import ResNet3d
from cnn.models.small_cnn import SmallCNN
from cnn.models.torchvision import load_torchvision as load_torchvision  # cnn.models.load_torchvision
from cnn.models.unet import UNet, UNet3D
from cnn.models.vgg import VGG
from cnn.registry import Registry

MODELS = Registry("model")
MODELS.register("small_cnn", SmallCNN)
MODELS.register("lenet5", LeNet5)
MODELS.register("alexnet", AlexNet)

# VGG configurations A, B, D, E: 3×3 convolutions per stage
MODELS.register("vgg11", partial(VGG, stage_sizes=(1, 1, 2, 2, 2)))
MODELS.register("vgg13", partial(VGG, stage_sizes=(2, 2, 2, 2, 2)))
MODELS.register("vgg16", partial(VGG, stage_sizes=(2, 2, 3, 3, 3)))
MODELS.register("vgg19", partial(VGG, stage_sizes=(2, 2, 4, 4, 4)))
MODELS.register("vgg11_bn", partial(VGG, stage_sizes=(1, 1, 2, 2, 2), norm=BatchNorm))
MODELS.register("vgg13_bn", partial(VGG, stage_sizes=(2, 2, 2, 2, 2), norm=BatchNorm))
MODELS.register("vgg16_bn", partial(VGG, stage_sizes=(2, 2, 3, 3, 3), norm=BatchNorm))
MODELS.register("vgg19_bn", partial(VGG, stage_sizes=(2, 2, 4, 4, 4), norm=BatchNorm))

# ResNets: blocks per stage
RESNETS = {
    "resnet18": partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock),
    "resnet34": partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock),
    "resnet50": partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckBlock),
    "resnet101": partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=BottleneckBlock),
    "resnet152": partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=BottleneckBlock),
}
for _name, _resnet in RESNETS.items():
    MODELS.register(_name, _resnet)

# CIFAR ResNets of depth 6n + 2: n basic blocks per stage
MODELS.register("cifar_resnet20", partial(CifarResNet, stage_sizes=(3, 3, 3)))
MODELS.register("cifar_resnet32", partial(CifarResNet, stage_sizes=(5, 5, 5)))
MODELS.register("cifar_resnet44", partial(CifarResNet, stage_sizes=(7, 7, 7)))
MODELS.register("cifar_resnet56", partial(CifarResNet, stage_sizes=(9, 9, 9)))
MODELS.register("cifar_resnet110", partial(CifarResNet, stage_sizes=(18, 18, 18)))
# resnet18 with a 3×3 /1 stem and no max pool, for 32×32 images (the common CIFAR-10 ResNet-18)
MODELS.register("cifar_resnet18", partial(SmallImageResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock))
# ... without zero padding: a window classifier that runs fully convolutionally (cnn.models.fully_conv)
MODELS.register("window_resnet8", partial(WindowResNet, stage_sizes=(1, 1, 1)))

# EfficientNets: width and depth multipliers, dropout; b5-b7 with the BatchNorm of their TensorFlow weights
EfficientNetTF = partial(EfficientNet, norm=BatchNormTF)
MODELS.register("efficientnet_b0", partial(EfficientNet, width_mult=1.0, depth_mult=1.0, dropout_rate=0.2))
MODELS.register("efficientnet_b1", partial(EfficientNet, width_mult=1.0, depth_mult=1.1, dropout_rate=0.2))
MODELS.register("efficientnet_b2", partial(EfficientNet, width_mult=1.1, depth_mult=1.2, dropout_rate=0.3))
MODELS.register("efficientnet_b3", partial(EfficientNet, width_mult=1.2, depth_mult=1.4, dropout_rate=0.3))
MODELS.register("efficientnet_b4", partial(EfficientNet, width_mult=1.4, depth_mult=1.8, dropout_rate=0.4))
MODELS.register("efficientnet_b5", partial(EfficientNetTF, width_mult=1.6, depth_mult=2.2, dropout_rate=0.4))
MODELS.register("efficientnet_b6", partial(EfficientNetTF, width_mult=1.8, depth_mult=2.6, dropout_rate=0.5))
MODELS.register("efficientnet_b7", partial(EfficientNetTF, width_mult=2.0, depth_mult=3.1, dropout_rate=0.5))

# Graph convolutional networks on a cnn.ops.Graph: GCN, and its Chebyshev baseline of polynomial order K
MODELS.register("gcn", GCN)
MODELS.register("chebnet_k2", partial(GCN, conv=partial(ChebConv, order=2)))
MODELS.register("chebnet_k3", partial(GCN, conv=partial(ChebConv, order=3)))
# U-Nets: the paper's unpadded one (572² → 388²), the "same"-padded variant with BatchNorm, the 3D one on volumes
MODELS.register("unet", UNet)
MODELS.register("unet_padded", partial(UNet, padding="SAME", norm=BatchNorm))
MODELS.register("unet3d", UNet3D)

# Fully convolutional networks on every ImageNet ResNet: FCN-32s and FCN-8s
for _name, _resnet in RESNETS.items():
    for _stride in (32, 8):
        MODELS.register(f"fcn{_stride}s_{_name}", partial(FCN, backbone=_resnet, output_stride=_stride))
# 1D: sequences and waveforms; 2D: spectrograms
MODELS.register("mnist1d_cnn", Mnist1dCNN)
MODELS.register("m5", M5)
MODELS.register("log_mel_cnn", LogMelCNN)

# 3D: video (block convolutions per stage) and volumes
MODELS.register("r3d_18", partial(ResNet3d, stem="r3d", block_kinds=("3d",) * 4))
MODELS.register("mc3_18", partial(ResNet3d, stem="r3d", block_kinds=("3d", "2d", "2d", "2d")))
MODELS.register("r2plus1d_18", partial(ResNet3d, stem="r2plus1d", block_kinds=("2+1d",) * 4))
MODELS.register("fr2d_18", partial(ResNet3d, stem="frames", block_kinds=("2d",) * 4))  # per-frame 2D
MODELS.register("c3d", C3D)
MODELS.register("resnet18_3d", partial(ResNet3d, stem="volume", block_kinds=("3d",) * 4))


def create(name: str, *, num_classes: int, **overrides) -> nn.Module:
    """Build model ``name``; ``overrides`` set its fields (an unknown field fails naming the valid ones).

    ``conv`` given by name (``config.model.conv``: a kind of ``cnn.layers.CONV_TYPES``) is resolved here, once, into
    the constructor the model calls."""
    constructor = MODELS.get(name)
    if isinstance(overrides.get("conv"), str):
        overrides["conv"] = conv_module(overrides["conv"])
    try:
        return constructor(num_classes=num_classes, **overrides)
    except TypeError as error:
        model_class = getattr(constructor, "func", constructor)  # registered as a functools.partial
        fields = sorted(getattr(model_class, "__dataclass_fields__", {}).keys() - {"parent", "name"})
        raise ConfigError(f"model {name!r}: {error}; its fields are {fields}") from None
