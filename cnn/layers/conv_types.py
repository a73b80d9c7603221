"""Kinds of convolution behind one constructor with ``nn.Conv``'s call signature, chosen by name.

A model written as ``conv = conv_module(kind)`` then ``conv(features, kernel_size, strides=..., ...)(x)`` computes
the same shapes with any kind, so the convolution becomes a config choice (``CONV_TYPES``):

    standard           Conv as asked
    dilated            Conv with the dilation doubled on every axis where the kernel is larger than 1 (so 1×1
                       stays 1×1, 3×3 reads a 5×5 field); non-"SAME" padding grows by the added extent
                       d·(k - 1) per axis (split low/high as SAME splits) so the output size stays that of the
                       undilated conv
    deformable         DeformableConv, modulated (DCNv2), one offset group; 2D only
    separable          SeparableConv, depth multiplier 1 (depthwise then pointwise)
    locally_connected  LocallyConnected (unshared weights; its parameter shapes depend on the input size)
    tiled              TiledConv with 2 kernels per axis
    fft                Conv(method="fft")
    acs                ACSConv: one 2D kernel whose output channels split over the axial, coronal and sagittal
                       planes of a volume (Yang et al. 2021); 3D only

Fallbacks to ``standard``, where a kind cannot honour the arguments:
  * a 1×1 kernel, in every kind: it has no spatial extent to dilate, deform, separate, untie or transform;
  * ``feature_group_count > 1`` for deformable, acs, separable, locally_connected, tiled and fft: their operators have
    no groups, and a grouped or depthwise convolution is already a factorized one;
  * deformable on other than 2 spatial axes (``ops.deformable_conv`` is 2D);
  * acs on other than 3 spatial axes, or on a kernel that is not cubic (a ``1×3×3`` or ``3×1×1`` kernel is already
    a factorized one);
  * fft with a stride or dilation above 1 (``ops.fft_conv`` computes stride 1, dilation 1: a strided FFT
    convolution would compute every output and discard most).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn

from cnn.layers.acs import ACSConv
from cnn.layers.conv import DEFAULT_KERNEL_INIT, Conv, Initializer
from cnn.layers.deformable import DeformableConv
from cnn.layers.local import LocallyConnected, TiledConv
from cnn.layers.separable import SeparableConv
from cnn.ops.args import IntOrSeq, Padding, as_tuple, effective_kernel_size, resolve_padding
from cnn.registry import Registry

ModuleDef = Callable[..., nn.Module]


@dataclass(frozen=True)
class ConvSpec:
    """The arguments of an ``nn.Conv`` call, the kernel geometry as tuples of one int per spatial axis."""

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Padding
    kernel_dilation: tuple[int, ...]
    feature_group_count: int
    common: dict[str, Any]  # use_bias, kernel_init, bias_init, dtype, name: passed on to every kind

    def ungrouped(self) -> dict[str, Any]:
        """Every argument but ``feature_group_count``, which only ``Conv`` takes."""
        return {"features": self.features, "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "kernel_dilation": self.kernel_dilation, **self.common}

    def conv(self, **changes: Any) -> Conv:
        """A ``Conv`` with these arguments, some replaced by ``changes``."""
        return Conv(**{**self.ungrouped(), "feature_group_count": self.feature_group_count, **changes})


CONV_TYPES = Registry("conv type")


def _standard_if_grouped(build: Callable[[ConvSpec], nn.Module]) -> Callable[[ConvSpec], nn.Module]:
    """``build`` for ungrouped convolutions, ``Conv`` for grouped ones."""
    return lambda spec: build(spec) if spec.feature_group_count == 1 else spec.conv()


CONV_TYPES.register("standard", lambda spec: spec.conv())
CONV_TYPES.register("deformable", _standard_if_grouped(
    lambda spec: DeformableConv(**spec.ungrouped()) if len(spec.kernel_size) == 2 else spec.conv()
))
CONV_TYPES.register("separable", _standard_if_grouped(lambda spec: SeparableConv(**spec.ungrouped())))
CONV_TYPES.register("locally_connected", _standard_if_grouped(lambda spec: LocallyConnected(**spec.ungrouped())))
CONV_TYPES.register("acs", _standard_if_grouped(
    lambda spec: ACSConv(**spec.ungrouped()) if len(set(spec.kernel_size)) == 1 and len(spec.kernel_size) == 3
    else spec.conv()
))
CONV_TYPES.register("tiled", _standard_if_grouped(lambda spec: TiledConv(**spec.ungrouped(), tile=2)))


@CONV_TYPES.register("fft")
def _fft(spec: ConvSpec) -> nn.Module:
    ones = (1,) * len(spec.kernel_size)
    fft_able = spec.strides == ones and spec.kernel_dilation == ones and spec.feature_group_count == 1
    return spec.conv(method="fft" if fft_able else "xla")


@CONV_TYPES.register("dilated")
def _dilated(spec: ConvSpec) -> nn.Module:
    dilation = tuple(2 * d if k > 1 else d for k, d in zip(spec.kernel_size, spec.kernel_dilation, strict=True))
    padding = spec.padding
    if not (isinstance(padding, str) and padding.upper() == "SAME"):  # SAME keeps the output size by itself
        # Other padding does not depend on the input size: resolve it at any size, then add the grown extent.
        pads = resolve_padding(padding, spec.kernel_size, spec.kernel_size, spec.strides, spec.kernel_dilation)
        grown = [
            new - old
            for new, old in zip(
                effective_kernel_size(spec.kernel_size, dilation),
                effective_kernel_size(spec.kernel_size, spec.kernel_dilation),
                strict=True,
            )
        ]
        padding = [(lo + g // 2, hi + g - g // 2) for (lo, hi), g in zip(pads, grown, strict=True)]
    return spec.conv(kernel_dilation=dilation, padding=padding)


def conv_module(kind: str) -> ModuleDef:
    """A constructor with ``nn.Conv``'s call signature building convolutions of ``kind`` (see the module docstring).

    ``conv = conv_module(kind)``; ``conv(features, kernel_size, strides=1, padding="SAME", kernel_dilation=1,
    feature_group_count=1, use_bias=True, kernel_init=..., bias_init=..., dtype=None, name=None)`` returns a module
    applied as ``module(x)`` to ``(batch, *spatial, channels)``, whose output has the shape ``nn.Conv``'s would
    have for the same arguments. As in ``nn.Conv``, an int ``kernel_size`` is a 1D kernel. ``padding``: the forms
    of ``cnn.ops.args`` (``"VALID" | "SAME" | "FULL" | int | [(low, high), ...]``).

    Raises:
      ConfigError: unknown ``kind`` (naming the known ones).
    """
    build = CONV_TYPES.get(kind)

    def conv(
        features: int,
        kernel_size: IntOrSeq,
        strides: IntOrSeq = 1,
        padding: Padding = "SAME",
        kernel_dilation: IntOrSeq = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        kernel_init: Initializer = DEFAULT_KERNEL_INIT,
        bias_init: Initializer = nn.initializers.zeros,
        dtype: Any = None,
        name: str | None = None,
    ) -> nn.Module:
        ndim = 1 if isinstance(kernel_size, int) else len(kernel_size)
        spec = ConvSpec(
            features=features,
            kernel_size=as_tuple(kernel_size, ndim, "kernel_size"),
            strides=as_tuple(strides, ndim, "strides"),
            padding=padding,
            kernel_dilation=as_tuple(kernel_dilation, ndim, "kernel_dilation"),
            feature_group_count=feature_group_count,
            common={"use_bias": use_bias, "kernel_init": kernel_init, "bias_init": bias_init, "dtype": dtype,
                    "name": name},
        )
        if all(k == 1 for k in spec.kernel_size):
            return spec.conv()
        return build(spec)

    conv.__name__ = conv.__qualname__ = f"{kind}_conv"
    return conv
