"""Convolution layers over ``cnn.ops.correlate``, ``fft_conv`` and ``conv_transpose`` (Deep Learning, ch. 9).

``Conv`` is a drop-in for ``flax.linen.Conv`` (same field names and defaults, channels last) computing

    y[n, i, o] = sum_k sum_{c < C_g} x_pad[n, i·s + k·d, g(o)·C_g + c] · w[k, c, o] + b[o]

with the kernel ``w`` of shape ``(*kernel_size, in_channels // feature_group_count, features)`` and ``x_pad`` the
input padded by ``padding`` with the ``boundary`` values (see ``cnn.ops.correlate``).

``ConvTranspose`` applies the adjoint of such a correlation, ``x = M^T y`` (see ``cnn.ops.conv_transpose``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn import ops
from cnn.errors import ConfigError
from cnn.layers._common import Initializer, check_positive_int, geometry, promoted_params
from cnn.ops.args import IntOrSeq, Padding, as_tuple, check_input, pad_boundary, resolve_padding

# He et al. 2015 for ReLU networks: variance 2 / fan_in, fan_in = prod(kernel_size) · in_channels / groups.
# torchvision's ResNet uses fan_out instead: nn.initializers.variance_scaling(2.0, "fan_out", "normal").
DEFAULT_KERNEL_INIT: Initializer = nn.initializers.he_normal()

CONV_METHODS = ("xla", "fft", "auto")

# method="auto" switches to fft_conv (stride 1, dilation 1, groups 1) when the kernel's geometric-mean size
# prod(kernel_size) ** (1 / ndim) is at least this, per number of spatial axes: the forward+backward crossover (what
# training pays) of BENCHMARKS.md "fft_conv vs correlate" (benchmarks/ops.py, 2 CPU cores, Eigen convs, SAME):
# 1D 8x4096x16->16 from k = 47, 2D 8x64x64x16->16 from k = 9 (forward alone: 95 and 13; idle machine,
# docs/figures/ops_benchmark.json), 3D 2x16x16x16x32->32 from k = 4 (forward alone: 5; a loaded machine,
# docs/figures/fft_crossover_3d.json). tests/layers/test_conv.py checks these against those files.
FFT_CROSSOVER_KERNEL_SIZE = {1: 47, 2: 9, 3: 4}


class Conv(nn.Module):
    """Convolution (cross-correlation) with stride, dilation, groups, any padding form and boundary.

    Attributes:
      features: output channels.
      kernel_size: an int (the same on every spatial axis of the input; ``nn.Conv`` reads an int as a 1D kernel)
        or one int per spatial axis.
      strides, kernel_dilation: an int or one per spatial axis.
      padding: ``"VALID" | "SAME" | "FULL" | int | [(low, high), ...]`` (``cnn.ops.args``).
      feature_group_count: groups ``G``; the kernel is ``(*kernel_size, in_channels // G, features)``.
      kernel_init: He normal over fan_in by default (``DEFAULT_KERNEL_INIT``); a field so models choose theirs.
      boundary: the values outside the input: ``"zeros" | "reflect" | "replicate" | "circular"``.
      method: ``"xla"`` (``ops.correlate``), ``"fft"`` (``ops.fft_conv``; needs stride 1, dilation 1 and groups 1)
        or ``"auto"`` (FFT where it can and the kernel is at least ``FFT_CROSSOVER_KERNEL_SIZE[ndim]``, else xla).
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
        """Whether this layer computes by FFT on inputs with ``ndim`` spatial axes."""
        if self.method not in CONV_METHODS:
            raise ConfigError(f"method must be one of {list(CONV_METHODS)}, got {self.method!r}")
        fft_able = (
            as_tuple(self.strides, ndim, "strides") == (1,) * ndim
            and as_tuple(self.kernel_dilation, ndim, "kernel_dilation") == (1,) * ndim
            and self.feature_group_count == 1
        )
        if self.method == "fft" and not fft_able:
            raise ValueError(
                f"method='fft' needs strides 1, kernel_dilation 1 and feature_group_count 1, got strides="
                f"{self.strides!r}, kernel_dilation={self.kernel_dilation!r}, "
                f"feature_group_count={self.feature_group_count!r}"
            )
        if self.method == "auto":
            kernel_size = as_tuple(self.kernel_size, ndim, "kernel_size")
            return fft_able and math.prod(kernel_size) >= FFT_CROSSOVER_KERNEL_SIZE[ndim] ** ndim
        return self.method == "fft"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_positive_int(self.features, "features")
        ndim = x.ndim - 2
        check_input(x, ndim)
        kernel_size, strides, dilation = geometry(self, ndim)
        groups = self.feature_group_count
        if not isinstance(groups, int) or groups < 1 or x.shape[-1] % groups:
            raise ValueError(f"feature_group_count must be a positive int dividing the {x.shape[-1]} input channels, "
                             f"got {groups!r}")
        fft = self.uses_fft(ndim)
        x, kernel, bias = promoted_params(
            self, x, (self.features,), kernel=(self.kernel_init, (*kernel_size, x.shape[-1] // groups, self.features))
        )
        if fft:
            padding = self.padding
            if self.boundary != "zeros":  # fft_conv pads with zeros: pad with the boundary values first
                pads = resolve_padding(padding, x.shape[1:-1], kernel_size, strides, dilation)
                x, padding = pad_boundary(x, pads, self.boundary), "VALID"
            y = ops.fft_conv(x, kernel, padding=padding)
        else:
            y = ops.correlate(
                x, kernel, stride=strides, padding=self.padding, dilation=dilation, groups=groups,
                boundary=self.boundary,
            )
        return y if bias is None else y + bias


class ConvTranspose(nn.Module):
    """Transposed convolution: the adjoint of a correlation, ``x = M^T y`` (``ops.conv_transpose``),

        out[n, p, o] = sum over (i, k, c) with i·s + k·d - low = p of y[n, i, c] · w[k, o, c]  + b[o]

    Kernel convention: ``w`` of shape ``(*kernel_size, features, in_channels)`` is the kernel of the correlation
    ``features -> in_channels`` whose adjoint this layer is (so ``correlate(out, w)`` maps back to ``y``'s shape);
    ``ops.conv_transpose(y, w)`` with ``y``'s ``in_channels`` as that correlation's output channels.

    Output size per axis: ``n·s`` for ``"SAME"`` (as ``nn.ConvTranspose``: the input whose SAME correlation has
    ``n`` outputs), otherwise the smallest input the correlation maps to ``n`` outputs,
    ``(n - 1)·s + k_eff - low - high`` (``(n - 1)·s + k_eff`` for ``"VALID"``, as ``nn.ConvTranspose``).

    ``kernel_init``: He normal over this layer's fan-in ``prod(kernel_size) · in_channels``, which is the kernel's
    last axis, i.e. ``variance_scaling``'s ``fan_out`` for this layout.
    """

    features: int
    kernel_size: IntOrSeq
    strides: IntOrSeq = 1
    padding: Padding = "SAME"
    kernel_dilation: IntOrSeq = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        check_positive_int(self.features, "features")
        kernel_size, strides, dilation = geometry(self, y.ndim - 2)
        y, kernel, bias = promoted_params(
            self, y, (self.features,), kernel=(self.kernel_init, (*kernel_size, self.features, y.shape[-1]))
        )
        input_shape = None
        if isinstance(self.padding, str) and self.padding.upper() == "SAME":
            input_shape = (y.shape[0], *(n * s for n, s in zip(y.shape[1:-1], strides, strict=True)), self.features)
        x = ops.conv_transpose(
            y, kernel, stride=strides, padding=self.padding, dilation=dilation, input_shape=input_shape
        )
        return x if bias is None else x + bias
