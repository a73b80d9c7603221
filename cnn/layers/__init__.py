"""Thin linen modules over ``cnn.ops``: one layer per operator, channels last.

``conv_module(kind)`` gives a constructor with ``nn.Conv``'s call signature for every kind in ``CONV_TYPES``, so a
model can take its convolution as a config choice.
"""

from cnn.layers.acs import ACSConv
from cnn.layers.conv import CONV_METHODS, DEFAULT_KERNEL_INIT, FFT_CROSSOVER_KERNEL_SIZE, Conv, ConvTranspose
from cnn.layers.conv_types import CONV_TYPES, ConvSpec, ModuleDef, conv_module
from cnn.layers.deformable import DeformableConv
from cnn.layers.graph import ChebConv, GCNConv
from cnn.layers.local import LocallyConnected, TiledConv
from cnn.layers.norm import BatchNorm
from cnn.layers.pooling import AdaptivePool, AvgPool, ChannelPool, GlobalPool, LpPool, MaxPool, WeightedPool
from cnn.layers.separable import SeparableConv

__all__ = [
    "CONV_METHODS",
    "CONV_TYPES",
    "DEFAULT_KERNEL_INIT",
    "FFT_CROSSOVER_KERNEL_SIZE",
    "ACSConv",
    "AdaptivePool",
    "AvgPool",
    "BatchNorm",
    "ChannelPool",
    "ChebConv",
    "Conv",
    "ConvSpec",
    "ConvTranspose",
    "DeformableConv",
    "GCNConv",
    "GlobalPool",
    "LocallyConnected",
    "LpPool",
    "MaxPool",
    "ModuleDef",
    "SeparableConv",
    "TiledConv",
    "WeightedPool",
    "conv_module",
]
