"""The model zoo: ``create(name, num_classes=..., **overrides)`` returns a linen module applied as
``model.apply(variables, x, train=...)``."""

from __future__ import annotations

import flax.linen as nn

from cnn.errors import ConfigError
from cnn.models.small_cnn import SmallCNN
from cnn.registry import Registry

MODELS = Registry("model")
MODELS.register("small_cnn", SmallCNN)


def create(name: str, *, num_classes: int, **overrides) -> nn.Module:
    """Build model ``name``; ``overrides`` set its fields (an unknown field fails naming the valid ones)."""
    constructor = MODELS.get(name)
    try:
        return constructor(num_classes=num_classes, **overrides)
    except TypeError as error:
        fields = sorted(getattr(constructor, "__dataclass_fields__", {}).keys() - {"parent", "name"})
        raise ConfigError(f"model {name!r}: {error}; its fields are {fields}") from None
