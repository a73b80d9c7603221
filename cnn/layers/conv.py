"""Convolution layers over ``cnn.ops.correlate`` / ``cnn.ops.fft_conv`` (Goodfellow et al., Deep Learning, ch. 9).

``Conv`` is a drop-in for ``flax.linen.Conv`` (same field names and defaults, channels last) computing

    y[n, i, o] = sum_k sum_{c < C_g} x_pad[n, i·s + k·d, g(o)·C_g + c] · w[k, c, o] + b[o]

with the kernel ``w`` of shape ``(*kernel_size, in_channels // feature_group_count, features)`` and ``x_pad`` the
input padded by ``padding`` with the ``boundary`` values (see ``cnn.ops.correlate``).

``conv_module(kind)`` returns a constructor with ``nn.Conv``'s call signature for each kind of ``CONV_TYPES`` (the
model zoo swaps it for ``nn.Conv``); see ``conv_module`` for what each kind computes and its fallbacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.errors import ConfigError
from cnn.ops._args import IntOrSeq, Padding, as_tuple, pad_boundary, resolve_padding
from cnn.registry import Registry

ModuleDef = Callable[..., nn.Module]
Initializer = Callable[..., jax.Array]

# He et al. 2015 for ReLU networks: variance 2 / fan_in, fan_in = prod(kernel_size) · in_channels / groups.
# torchvision's ResNet uses fan_out instead (nn.initializers.variance_scaling(2.0, "fan_out", "normal")).
DEFAULT_KERNEL_INIT: Initializer = nn.initializers.he_normal()

CONV_METHODS = ("xla", "fft", "auto")

# method="auto" switches to fft_conv when the kernel's geometric-mean size prod(kernel_size) ** (1 / ndim) is at
# least this (stride 1, dilation 1, groups 1). Provisional until benchmarks/ops.py's measurement lands.
FFT_CROSSOVER_KERNEL_SIZE = 11


def spatial_tuple(value: IntOrSeq, ndim: int, name: str) -> tuple[int, ...]:
    """An int (the same on every spatial axis) or one int per axis, as a tuple of ``ndim`` positive ints."""
    return as_tuple(value, ndim, name)


def pre_pad(x: jax.Array, padding: Padding, kernel_size, strides, dilation, boundary: str) -> tuple[jax.Array, Padding]:
    """``x`` padded with the ``boundary`` values and the padding left to apply (zeros need none beforehand)."""
    if boundary == "zeros":
        return x, padding
    pads = resolve_padding(padding, x.shape[1:-1], kernel_size, strides, dilation)
    return pad_boundary(x, pads, boundary), "VALID"


class Conv(nn.Module):
    """Convolution (cross-correlation) with stride, dilation, groups, any padding form and boundary.

    Attributes:
      features: output channels.
      kernel_size: an int (the same on every spatial axis of the input; ``nn.Conv`` reads an int as a 1D kernel)
        or one int per spatial axis.
      strides, kernel_dilation: an int or one per spatial axis.
      padding: ``"VALID" | "SAME" | "FULL" | int | [(low, high), ...]`` (``cnn.ops._args``).
      feature_group_count: groups ``G``; the kernel is ``(*kernel_size, in_channels // G, features)``.
      kernel_init: He normal over fan_in by default (``DEFAULT_KERNEL_INIT``); a field so models choose theirs.
      boundary: the values outside the input: ``"zeros" | "reflect" | "replicate" | "circular"``.
      method: ``"xla"`` (``ops.correlate``), ``"fft"`` (``ops.fft_conv``: stride 1, dilation 1, groups 1 only)
        or ``"auto"`` (FFT when it can and the kernel is at least ``FFT_CROSSOVER_KERNEL_SIZE``).
    """

    features: int
    kernel_size: IntOrSeq
    strides: IntOrSeq = 1
    padding: Padding = "SAME"
    kernel_dilation: IntOrSeq = 1
    feature_group_count: int = 1
    use_bias: bool = True
    kernel_init: Initializer = DEFAULT_KERNEL_INIT
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32
    boundary: str = "zeros"
    method: str = "xla"

    def uses_fft(self, ndim: int) -> bool:
        """Whether ``method`` computes this layer by FFT on inputs with ``ndim`` spatial axes."""
        if self.method not in CONV_METHODS:
            raise ConfigError(f"method must be one of {list(CONV_METHODS)}, got {self.method!r}")
        kernel_size = spatial_tuple(self.kernel_size, ndim, "kernel_size")
        fft_able = (
            spatial_tuple(self.strides, ndim, "strides") == (1,) * ndim
            and spatial_tuple(self.kernel_dilation, ndim, "kernel_dilation") == (1,) * ndim
            and self.feature_group_count == 1
        )
        if self.method == "fft" and not fft_able:
            raise ValueError(
                f"method='fft' needs strides 1, kernel_dilation 1 and feature_group_count 1, got strides="
                f"{self.strides!r}, kernel_dilation={self.kernel_dilation!r}, "
                f"feature_group_count={self.feature_group_count!r}"
            )
        if self.method == "auto":
            return fft_able and math.prod(kernel_size) >= FFT_CROSSOVER_KERNEL_SIZE**ndim
        return self.method == "fft"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ndim = x.ndim - 2
        kernel_size = spatial_tuple(self.kernel_size, ndim, "kernel_size")
        strides = spatial_tuple(self.strides, ndim, "strides")
        dilation = spatial_tuple(self.kernel_dilation, ndim, "kernel_dilation")
        groups = self.feature_group_count
        if x.shape[-1] % groups:
            raise ValueError(f"feature_group_count={groups} must divide the input channels {x.shape[-1]}")
        kernel = self.param(
            "kernel", self.kernel_init, (*kernel_size, x.shape[-1] // groups, self.features), self.param_dtype
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if self.uses_fft(ndim):
            x, padding = pre_pad(x, self.padding, kernel_size, strides, dilation, self.boundary)
            y = ops.fft_conv(x, kernel, padding=padding)
        else:
            y = ops.correlate(
                x, kernel, stride=strides, padding=self.padding, dilation=dilation, groups=groups,
                boundary=self.boundary,
            )
        return y if bias is None else y + bias


@dataclass(frozen=True)
class ConvSpec:
    """The arguments of an ``nn.Conv`` call, kernel geometry normalized to tuples of one int per spatial axis."""

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Padding
    kernel_dilation: tuple[int, ...]
    feature_group_count: int
    common: dict[str, Any] = field(default_factory=dict)  # use_bias, kernel_init, bias_init, dtype, name

    def conv(self, **changes: Any) -> Conv:
        """A ``Conv`` with these arguments, some replaced by ``changes``."""
        args = {
            "features": self.features, "kernel_size": self.kernel_size, "strides": self.strides,
            "padding": self.padding, "kernel_dilation": self.kernel_dilation,
            "feature_group_count": self.feature_group_count, **self.common,
        }
        return Conv(**{**args, **changes})


CONV_TYPES = Registry("conv type")


@CONV_TYPES.register("standard")
def _standard(spec: ConvSpec) -> nn.Module:
    """``Conv`` as asked."""
    return spec.conv()


def conv_module(kind: str) -> ModuleDef:
    """A constructor with ``nn.Conv``'s call signature building convolutions of ``kind`` (one of ``CONV_TYPES``).

    ``conv = conv_module(kind)``; ``conv(features, kernel_size, strides=1, padding="SAME", kernel_dilation=1,
    feature_group_count=1, use_bias=True, kernel_init=..., bias_init=..., dtype=None, name=None)`` returns a module
    applied as ``module(x)`` to ``(batch, *spatial, channels)``, whose output has the shape ``nn.Conv``'s would
    have for the same arguments. As in ``nn.Conv``, an int ``kernel_size`` is a 1D kernel.

    Kinds:
      standard: ``Conv``.

    A 1×1 kernel (every axis 1) is a plain ``Conv`` in every kind: it has no spatial extent to dilate, deform,
    separate or transform.

    Raises:
      ConfigError: unknown ``kind``.
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
        kernel_size = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
        ndim = len(kernel_size)
        spec = ConvSpec(
            features=features,
            kernel_size=spatial_tuple(kernel_size, ndim, "kernel_size"),
            strides=spatial_tuple(strides, ndim, "strides"),
            padding=padding,
            kernel_dilation=spatial_tuple(kernel_dilation, ndim, "kernel_dilation"),
            feature_group_count=feature_group_count,
            common={"use_bias": use_bias, "kernel_init": kernel_init, "bias_init": bias_init, "dtype": dtype,
                    "name": name},
        )
        if all(k == 1 for k in spec.kernel_size):
            return _standard(spec)
        return build(spec)

    conv.__name__ = conv.__qualname__ = f"{kind}_conv"
    return conv


__all__ = ["CONV_METHODS", "CONV_TYPES", "DEFAULT_KERNEL_INIT", "FFT_CROSSOVER_KERNEL_SIZE", "Conv", "ConvSpec",
           "ModuleDef", "conv_module"]
