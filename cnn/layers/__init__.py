"""Thin linen modules over ``cnn.ops``: one layer per operator, channels last.

``conv_module(kind)`` gives a constructor with ``nn.Conv``'s call signature for every kind in ``CONV_TYPES``, so a
model can take its convolution as a config choice.
"""

from cnn.layers.conv import CONV_TYPES, DEFAULT_KERNEL_INIT, Conv, ModuleDef, conv_module

__all__ = ["CONV_TYPES", "DEFAULT_KERNEL_INIT", "Conv", "ModuleDef", "conv_module"]
