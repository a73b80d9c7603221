"""The model zoo: ``create(name, num_classes=..., **overrides)`` returns a linen module applied as
``model.apply(variables, x, train=...)``."""

from __future__ import annotations

from functools import partial

import flax.linen as nn

from cnn.errors import ConfigError
from cnn.models.alexnet import AlexNet
from cnn.models.efficientnet import BatchNormTF, EfficientNet
from cnn.models.lenet import LeNet5
from cnn.models.resnet import BasicBlock, BatchNorm, BottleneckBlock, CifarResNet, ResNet
from cnn.models.small_cnn import SmallCNN
from cnn.models.vgg import VGG
from cnn.registry import Registry

MODELS = Registry("model")
MODELS.register("small_cnn", SmallCNN)
MODELS.register("lenet5", LeNet5)
MODELS.register("alexnet", AlexNet)

VGG_STAGE_SIZES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
for depth, stage_sizes in VGG_STAGE_SIZES.items():
    MODELS.register(f"vgg{depth}", partial(VGG, stage_sizes=stage_sizes))
    MODELS.register(f"vgg{depth}_bn", partial(VGG, stage_sizes=stage_sizes, norm=BatchNorm))

RESNET_STAGE_SIZES = {
    18: ((2, 2, 2, 2), BasicBlock),
    34: ((3, 4, 6, 3), BasicBlock),
    50: ((3, 4, 6, 3), BottleneckBlock),
    101: ((3, 4, 23, 3), BottleneckBlock),
    152: ((3, 8, 36, 3), BottleneckBlock),
}
for depth, (stage_sizes, block_cls) in RESNET_STAGE_SIZES.items():
    MODELS.register(f"resnet{depth}", partial(ResNet, stage_sizes=stage_sizes, block_cls=block_cls))
for depth in (20, 32, 44, 56, 110):  # depth 6n + 2: n basic blocks per stage
    MODELS.register(f"cifar_resnet{depth}", partial(CifarResNet, stage_sizes=((depth - 2) // 6,) * 3))

EFFICIENTNET_SCALING = {  # (width, depth, dropout), Tan & Le 2019; b5-b7 with the TensorFlow BatchNorm
    "b0": (1.0, 1.0, 0.2),
    "b1": (1.0, 1.1, 0.2),
    "b2": (1.1, 1.2, 0.3),
    "b3": (1.2, 1.4, 0.3),
    "b4": (1.4, 1.8, 0.4),
    "b5": (1.6, 2.2, 0.4),
    "b6": (1.8, 2.6, 0.5),
    "b7": (2.0, 3.1, 0.5),
}
for variant, (width, depth, dropout) in EFFICIENTNET_SCALING.items():
    norm = BatchNormTF if variant in ("b5", "b6", "b7") else BatchNorm
    MODELS.register(
        f"efficientnet_{variant}",
        partial(EfficientNet, width_mult=width, depth_mult=depth, dropout_rate=dropout, norm=norm),
    )


def create(name: str, *, num_classes: int, **overrides) -> nn.Module:
    """Build model ``name``; ``overrides`` set its fields (an unknown field fails naming the valid ones)."""
    constructor = MODELS.get(name)
    try:
        return constructor(num_classes=num_classes, **overrides)
    except TypeError as error:
        model_class = getattr(constructor, "func", constructor)  # registered as a functools.partial
        fields = sorted(getattr(model_class, "__dataclass_fields__", {}).keys() - {"parent", "name"})
        raise ConfigError(f"model {name!r}: {error}; its fields are {fields}") from None
