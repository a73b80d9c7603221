"""The model zoo: ``create(name, num_classes=..., **overrides)`` returns a linen module applied as
``model.apply(variables, x, train=...)``."""

from __future__ import annotations

from functools import partial

import flax.linen as nn

from cnn.errors import ConfigError
from cnn.layers import conv_module
from cnn.models.alexnet import AlexNet
from cnn.models.common import BatchNorm
from cnn.models.efficientnet import BatchNormTF, EfficientNet
from cnn.models.lenet import LeNet5
from cnn.models.resnet import BasicBlock, BottleneckBlock, CifarResNet, ResNet, WindowResNet
from cnn.models.small_cnn import SmallCNN
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
MODELS.register("resnet18", partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock))
MODELS.register("resnet34", partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock))
MODELS.register("resnet50", partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckBlock))
MODELS.register("resnet101", partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=BottleneckBlock))
MODELS.register("resnet152", partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=BottleneckBlock))

# CIFAR ResNets of depth 6n + 2: n basic blocks per stage
MODELS.register("cifar_resnet20", partial(CifarResNet, stage_sizes=(3, 3, 3)))
MODELS.register("cifar_resnet32", partial(CifarResNet, stage_sizes=(5, 5, 5)))
MODELS.register("cifar_resnet44", partial(CifarResNet, stage_sizes=(7, 7, 7)))
MODELS.register("cifar_resnet56", partial(CifarResNet, stage_sizes=(9, 9, 9)))
MODELS.register("cifar_resnet110", partial(CifarResNet, stage_sizes=(18, 18, 18)))
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
