"""ACS convolution (Yang et al. 2021, "Reinforcing Transfer Learning for 3D Medical Images with ACS Convolutions"):
a 2D kernel applied to a volume, its output channels split in three groups, one per anatomical view.

With a 2D kernel ``w`` of shape ``(k_a, k_b, C, O)`` and the output channels split ``O = O_A + O_C + O_S``, the
volume ``x[n, d, h, w, c]`` is correlated by three 3D kernels that are zero except on one plane:

    axial     (channels 0 .. O_A)          W_A[0, a, b, c, o] = w[a, b, c, o]     (the kernel lies in h, w)
    coronal   (the next O_C channels)      W_C[a, 0, b, c, o] = w[a, b, c, o]     (in d, w)
    sagittal  (the last O_S channels)      W_S[a, b, 0, c, o] = w[a, b, c, o]     (in d, h)

    y = concat(correlate(x, W_A), correlate(x, W_C), correlate(x, W_S))   along channels

Padding, stride and dilation are those of the cubic ``k × k × k`` convolution the ACS one replaces: the one-tap axis
of each view sits at the kernel's centre tap ``(k - 1) // 2`` (the paper's ``k // 2`` padding on odd kernels), so
``y`` has that convolution's shape. The split is the paper's: ``O // 3`` each, the remainder to the first views.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cnn.ops.args import (
    IntOrSeq,
    Padding,
    as_tuple,
    check_input,
    effective_kernel_size,
    float_array,
    output_size,
    resolve_padding,
)
from cnn.ops.conv import correlate

VIEWS = ("axial", "coronal", "sagittal")
VIEW_AXES = (0, 1, 2)  # the spatial axis (d, h, w) on which each view's kernel has one tap


def acs_split(out_channels: int) -> tuple[int, int, int]:
    """Output channels of the axial, coronal and sagittal views: ``O // 3`` each, the remainder to the first."""
    third, rest = divmod(out_channels, 3)
    return tuple(third + (i < rest) for i in range(3))


def acs_conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    stride: IntOrSeq = 1,
    padding: Padding = "VALID",
    dilation: IntOrSeq = 1,
) -> jax.Array:
    """ACS convolution of a volume ``x`` ``(batch, d, h, w, in_channels)`` by a square 2D ``kernel``
    ``(k, k, in_channels, out_channels)``; ``stride``, ``padding`` and ``dilation`` as for a ``k × k × k``
    ``correlate`` (``cnn.ops.args`` forms), whose output shape ``y`` has."""
    x, kernel = float_array(x, "x"), float_array(kernel, "kernel")
    check_input(x, 3)
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[2] != x.shape[-1]:
        raise ValueError(f"kernel must be (k, k, {x.shape[-1]}, out_channels) for x of shape {x.shape}, "
                         f"got {kernel.shape}")
    k = kernel.shape[0]
    stride, dilation = as_tuple(stride, 3, "stride"), as_tuple(dilation, 3, "dilation")
    cube = (k,) * 3
    pads = resolve_padding(padding, x.shape[1:-1], cube, stride, dilation)
    output_size(x.shape[1:-1], cube, stride, dilation, pads)  # raises if the cubic kernel does not fit
    outputs, start = [], 0
    for axis, width in zip(VIEW_AXES, acs_split(kernel.shape[-1]), strict=True):
        # The one tap reads what the centre tap of the cube would: shift the padding on that axis accordingly
        # (negative values crop, which lax.pad allows).
        centre = (k - 1) // 2 * dilation[axis]
        (low, high), extent = pads[axis], effective_kernel_size(cube, dilation)[axis]
        config = [(0, 0, 0)] * x.ndim
        config[axis + 1] = (low - centre, high - (extent - 1 - centre), 0)
        view_x = lax.pad(x, jnp.zeros((), x.dtype), config)
        view_pads = [(0, 0) if a == axis else pads[a] for a in range(3)]
        view_kernel = jnp.expand_dims(kernel[..., start : start + width], axis)
        outputs.append(correlate(view_x, view_kernel, stride=stride, padding=view_pads, dilation=dilation))
        start += width
    return jnp.concatenate(outputs, axis=-1)
