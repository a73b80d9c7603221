"""How a validated convolution is computed: channels-last ``lax.conv_general_dilated``, except on CPU.

On CPU, float32 convolutions without input dilation or cropping run on oneDNN (``cnn/ops/_onednn.py``: the library
behind PyTorch's CPU convolutions, as XLA custom calls: up to 15x faster than XLA's own per pass, training steps
1.06-3x, ``benchmarks/conv_paths.py``) where it is built; the rest, or everything where it is not, as follows.

XLA:CPU's grouped convolution (``feature_group_count > 1``) is slow, its kernel gradient by orders of magnitude.
There grouped convolutions are rewritten: as a sum of shifted, strided slices times per-group weights when groups
have few channels (depthwise included; the kernel gradient summed over chunks of the batch that fit in cache),
else as one dense convolution with a block-diagonal kernel. Dense convolutions with a strided 1×1 kernel, or whose
kernel covers the whole padded input (one output position, LeNet-5's C5), are one matrix product of patches and the
flattened kernel (im2col), whose gradients are matrix products too, and so is a transposed convolution whose stride
equals its kernel (U-Net's up-convolution: each input entry writes its own block of the output). With few input
channels (LeNet-5's C3) the input gradient of a stride-1 convolution is one matrix product and shifted sums; a
one-channel input into few channels (LeNet-5's C1) is shifted slices forward. Dense 3D convolutions, which XLA:CPU
runs far slower than 2D ones (their strided input gradients by up to 200×), are 2D convolutions: depth folded into
the batch and its taps into the channels, or, for a kernel that spans depth alone, height and width flattened into
one axis (those two reshapings in ``cnn/ops/_reshaped_convs.py``, the slices and im2col in
``cnn/ops/_slice_convs.py``).
The rewrites are tested equal to ``lax`` (values and gradients) in ``tests/ops/test_lowering.py``.
``CNN_CONV_LOWERING`` in the environment (read at import: ``auto``, ``onednn``, ``xla`` for the rewrites alone,
``lax`` for none) or ``set_conv_lowering`` chooses.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
from jax import lax

from cnn.ops import _onednn
from cnn.ops._reshaped_convs import (
    _block_transpose_conv,
    _depth_folded_conv,
    _depth_only_conv,
    _dimension_numbers,
    _is_block_transpose,
    _is_depth_only,
)
from cnn.ops._slice_convs import (
    _im2col_conv,
    _shifted_slice_conv,
    _slice_conv_chunked_kernel_gradient,
    _tangent,
)
from cnn.ops.args import output_size

# XLA:CPU's grouped convolution (feature_group_count > 1) is slow, its kernel gradient catastrophically so.
# Measured on 8x32x32x256 inputs, 3x3 kernels; ms for forward / input gradient / kernel gradient:
#   groups (channels in -> out per group)  lax                 shifted slices       block-diagonal dense
#   256 (1 -> 1, depthwise)                47 / 148 / 524      3 / 9 / 44           (256x the FLOPs)
#   256 (1 -> 2)                           47 / 119 s fwd+bwd  8 / 26 / 74
#   256 (1 -> 8)                                               168 / 268 / 427 [1]  1028 / 1995 / 4980
#   128 (2 -> 2)                           89 / 175 / 24720    15 / 42 / 102        37 / 103 / 356
#   64 (4 -> 4)                            73 / 147 / 10951    22 / 88 / 180        124 / 236 / 775
#   32 (8 -> 8)                            114 / 216 / 15328   164 / 9064 / 15301   154 / 312 / 714
#   2 (128 -> 128)                         190 / 282 / 400                          36 / 88 / 207
# [1] 5334 with a cotangent independent of the output: the slices' gradient degrades with many channels.
# Hence on CPU: shifted slices for depthwise (any channel multiplier) and for groups with at most this many
# input and output channels; otherwise the block-diagonal dense kernel, groups times the FLOPs yet faster.
# Measured again by `python benchmarks/ops.py --sections grouped` (BENCHMARKS.md, "The two other constants").
_SHIFTED_SLICE_MAX_CHANNELS = 4

# A dense convolution of a one-channel input into few channels (LeNet-5's C1: 256x32x32x1 -> 6, 5x5) is a short sum of
# shifted slices times weights, 4-20x faster forward than lax's (lax 14-27 ms, slices 4-6 ms under load; 3x3 -> 6:
# 19 vs 0.9 ms; -> 16 or 20 channels still 1.5-2x faster; -> 32 or 64 channels 2-5x slower). Its kernel gradient as
# slices is slow (138 ms against lax's 5): the gradients stay lax's (the custom JVP below). LeNet-5's step with it,
# against without (`benchmarks/vs_torch.py`-style steps in one process, interleaved, idle): 1.23-1.26x faster.
_SINGLE_CHANNEL_MAX_OUTPUTS = 16

# The input gradient of a stride-1 convolution of few input channels (LeNet-5's C3: 256x14x14x6 -> 16, 5x5) as one
# matrix product per tap and shifted sums: the input gradient alone 2.3-2.7 ms against lax's 6.2-6.6 on an idle
# machine; C3's whole gradient (input and kernel) through the custom JVP 13.5 ms against lax's 14.8.
_TAPS_INPUT_GRADIENT_MAX_CHANNELS = 8

# Dense convolutions as one matrix product (im2col) where XLA:CPU's Eigen convolution is slow: the kernel gradient of
# strided 1×1 convolutions (ResNet projection shortcuts) and the input gradient when the kernel covers the whole
# input (one output position). ms for forward / input gradient / kernel gradient, lax -> im2col, measured by
# `python benchmarks/conv_paths.py` on 2 shared cores (load average 5-12; same process, alternating):
#   128x32x32x64 -> 128, 1x1 /2 (ResNet-18 projection)  15 / 31 / 55    ->  10 / 25 / 16   (dw 3.4x)
#   128x16x16x128 -> 256, 1x1 /2                         6.7 / 7.6 / 19  ->  6.8 / 7.5 / 8.5 (dw 2.2x)
#   256x5x5x16 -> 120, 5x5 valid (LeNet-5 C5)            0.45 / 10 / 0.47 -> 0.46 / 1.4 / 0.61 (dx 7.5x)
# Not rewritten, lax as fast or faster: 1×1 at stride 1 (ResNet-50's, 0.5-1.7x: noise around even), 3×3 layers
# with 64-512 channels at stride 1 or 2 (im2col 1.3-3x slower: the patches are 9x the input), LeNet-5's C1 and C3
# as im2col, the 3-channel stem. In whole training steps these im2col rewrites are within the noise (CIFAR ResNet-18
# 1.00-1.15x, LeNet-5 0.95-1.09x, ResNet-50 at 64x64 0.995x). Strided 3x3 layers as stride-1 convolutions over the
# space-to-depth input (16/9 the work, no zero-inserting gradient): the input gradient of 128x32x32x64 -> 128 /2
# 95 -> 68 ms, every other pass and shape 1.1-2.4x slower (ResNet-18's three /2 layers, idle): not rewritten.
_LOWERINGS = ("auto", "onednn", "xla", "lax")
_LOWERING = os.environ.get("CNN_CONV_LOWERING", "auto")
if _LOWERING not in _LOWERINGS:
    raise ValueError(f"CNN_CONV_LOWERING must be one of {_LOWERINGS}, got {_LOWERING!r}")


def _lax_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int = 1,
    lhs_dilation: tuple[int, ...] | None = None,
) -> jax.Array:
    """Channels-last ``lax.conv_general_dilated``."""
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=stride,
        padding=pads,
        lhs_dilation=lhs_dilation or (1,) * len(stride),
        rhs_dilation=dilation,
        dimension_numbers=_dimension_numbers(len(stride)),
        feature_group_count=groups,
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv_with_own_passes(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    forward_by_slices: bool,
    input_gradient_by_taps: bool,
) -> jax.Array:
    """A dense convolution whose forward pass and input gradient are each ``lax``'s or a rewrite: the forward as
    shifted slices (``_shifted_slice_conv`` with one group; a one-channel input into few channels,
    ``_SINGLE_CHANNEL_MAX_OUTPUTS``), the input gradient as one matrix product and a shifted sum per tap (few input
    channels at stride 1, ``_TAPS_INPUT_GRADIENT_MAX_CHANNELS``).

    The JVP is linear in each tangent, and reverse mode transposes it: the kernel's part is ``lax``'s convolution
    (its transpose, ``lax``'s kernel gradient); the input's part is ``lax``'s or ``_im2col_conv``, whose transpose
    is ``dx_pad[n, q, c] = sum_k sum_o dy[n, q - k·d, o] · w[k, c, o]``: one product ``dy · w^T`` over all taps,
    each tap's slice padded back to its place (the transpose of a slice) and summed. Forward mode works as well.
    """
    return _own_forward(x, kernel, stride, pads, dilation, forward_by_slices)


def _own_forward(x, kernel, stride, pads, dilation, forward_by_slices):
    if forward_by_slices:
        return _shifted_slice_conv(x, kernel, stride, pads, dilation, 1, (1,) * len(stride))
    return _lax_conv(x, kernel, stride, pads, dilation)


def _own_passes_jvp(stride, pads, dilation, forward_by_slices, input_gradient_by_taps, primals, tangents):
    (x, kernel), (x_dot, kernel_dot) = primals, tangents
    out = _own_forward(x, kernel, stride, pads, dilation, forward_by_slices)
    input_part = _im2col_conv if input_gradient_by_taps else _lax_conv
    return out, _tangent(out, (x_dot, lambda x_dot: input_part(x_dot, kernel, stride, pads, dilation)),
                         (kernel_dot, lambda kernel_dot: _lax_conv(x, kernel_dot, stride, pads, dilation)))


_conv_with_own_passes.defjvp(_own_passes_jvp, symbolic_zeros=True)


def _block_diagonal(kernel: jax.Array, groups: int) -> jax.Array:
    """The dense ``(*K, C_in, C_out)`` kernel equivalent to a grouped one: group ``g``'s block on the diagonal.

    ``dense[k, g·C_g + c, h·O_g + j] = w[k, c, h·O_g + j]`` if ``g == h`` else 0.
    """
    ndim = kernel.ndim - 2
    kernel_size, (in_per_group, out_channels) = kernel.shape[:ndim], kernel.shape[ndim:]
    blocks = kernel.reshape(*kernel_size, in_per_group, groups, out_channels // groups)  # [k, c, h, j]
    dense = jnp.einsum("...chj,gh->...gchj", blocks, jnp.eye(groups, dtype=kernel.dtype))
    return dense.reshape(*kernel_size, groups * in_per_group, out_channels)


# Jitted (with hashable static arguments) so that an eager call compiles one fused program instead of
# dispatching the many small operations of the shifted-slice and block-diagonal lowerings one by one.
# The rewrite switch is a static argument: jit's trace caches would otherwise keep the choice of the first trace.
@functools.partial(
    jax.jit, static_argnames=("stride", "pads", "dilation", "groups", "lhs_dilation", "lowering")
)
def _lowered_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int,
    lhs_dilation: tuple[int, ...],
    lowering: str,
) -> jax.Array:
    """Channels-last ``lax.conv_general_dilated`` on validated arguments, lowered to what is fast here.

    On oneDNN or rewritten on CPU only (``lowering``, see ``set_conv_lowering``): on GPU cuDNN has dedicated
    grouped, depthwise and 1×1 kernels, so there the fused convolution stays.
    """
    if lowering != "lax" and jax.default_backend() == "cpu":
        if lowering == "onednn" and _on_onednn(x, kernel, pads, lhs_dilation):
            return _onednn.conv(x, kernel, stride, pads, dilation, groups)
        if groups > 1:
            in_per_group, out_per_group = kernel.shape[-2], kernel.shape[-1] // groups
            if in_per_group == 1 or max(in_per_group, out_per_group) <= _SHIFTED_SLICE_MAX_CHANNELS:
                return _slice_conv_chunked_kernel_gradient(x, kernel, stride, pads, dilation, groups, lhs_dilation)
            kernel, groups = _block_diagonal(kernel, groups), 1
        if _is_block_transpose(kernel, stride, pads, dilation, lhs_dilation):
            return _block_transpose_conv(x, kernel)
        if _is_one_matmul(x, kernel, stride, pads, dilation, lhs_dilation):
            return _im2col_conv(x, kernel, stride, pads, dilation)
        if len(stride) == 3:
            if _is_depth_only(kernel, stride, pads, lhs_dilation):
                return _depth_only_conv(x, kernel, stride, pads, dilation, lhs_dilation)
            return _depth_folded_conv(x, kernel, stride, pads, dilation, lhs_dilation)
        in_channels, out_channels = kernel.shape[-2:]
        forward_by_slices = in_channels == 1 and out_channels <= _SINGLE_CHANNEL_MAX_OUTPUTS and max(lhs_dilation) == 1
        input_gradient_by_taps = (
            1 < in_channels <= _TAPS_INPUT_GRADIENT_MAX_CHANNELS
            and max(stride) == 1
            and max(lhs_dilation) == 1
            and min(min(pad) for pad in pads) >= 0
            and math.prod(kernel.shape[:-2]) > 1
        )
        if forward_by_slices or input_gradient_by_taps:
            return _conv_with_own_passes(x, kernel, stride, pads, dilation, forward_by_slices, input_gradient_by_taps)
    return _lax_conv(x, kernel, stride, pads, dilation, groups, lhs_dilation)


def _conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int,
    lhs_dilation: tuple[int, ...],
) -> jax.Array:
    """``_lowered_conv`` with the lowering as set now (``set_conv_lowering``)."""
    lowering = _LOWERING
    if lowering == "auto":
        on_onednn = jax.default_backend() == "cpu" and _onednn.available()
        lowering = "onednn" if on_onednn else "xla"
    elif lowering == "onednn" and not _onednn.available():  # asked for by CNN_CONV_LOWERING, checked on first use
        raise RuntimeError("CNN_CONV_LOWERING=onednn, but oneDNN's convolutions are not built here (see the log)")
    return _lowered_conv(x, kernel, stride, pads, dilation, groups, lhs_dilation, lowering=lowering)


def _on_onednn(
    x: jax.Array, kernel: jax.Array, pads: tuple[tuple[int, int], ...], lhs_dilation: tuple[int, ...]
) -> bool:
    """Whether oneDNN computes this convolution: float32, no input dilation, no cropping."""
    return (
        x.dtype == kernel.dtype == jnp.float32
        and max(lhs_dilation) == 1
        and min(min(pad) for pad in pads) >= 0
    )


def _is_one_matmul(
    x: jax.Array,
    kernel: jax.Array,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    lhs_dilation: tuple[int, ...],
) -> bool:
    """Whether ``_im2col_conv`` pays here: a strided 1×1 kernel, or a single output position (the table above)."""
    if any(l != 1 for l in lhs_dilation):
        return False
    kernel_size = kernel.shape[:-2]
    out_spatial = output_size(x.shape[1:-1], kernel_size, stride, dilation, pads)
    return math.prod(out_spatial) == 1 or (math.prod(kernel_size) == 1 and max(stride) > 1)


def set_conv_lowering(lowering: str) -> None:
    """How CPU convolutions traced from now on are computed: ``"auto"`` (the default: ``"onednn"`` where it is built,
    else ``"xla"``), ``"onednn"`` (oneDNN's convolutions where they apply, the XLA rewrites
    elsewhere), ``"xla"`` (the XLA rewrites) or ``"lax"`` (``lax.conv_general_dilated`` for everything), e.g. to
    compare them in one process (``benchmarks/conv_paths.py``). ``CNN_CONV_LOWERING`` in the environment sets it at
    import."""
    if lowering not in _LOWERINGS:
        raise ValueError(f"lowering must be one of {_LOWERINGS}, got {lowering!r}")
    if lowering == "onednn" and not _onednn.available():
        raise RuntimeError("oneDNN's convolutions are not built here (see the log for why)")
    global _LOWERING
    _LOWERING = lowering
