"""Discrete convolution, its transpose and its matrix (Goodfellow et al., Deep Learning, secs. 9.1, 9.5).

Channels last: an input ``x`` is ``(N, *S, C_in)``, a kernel ``w`` is ``(*K, C_in / G, C_out)`` for ``G``
groups. Spatial indices ``i``, ``k``, ``p`` below are multi-indices (one entry per spatial axis, 1 to 3 axes);
products such as ``i·s + k·d`` are taken axis by axis.

Cross-correlation, what deep learning calls "convolution", with stride ``s``, dilation ``d`` and groups ``G``:

    out[n, i, o] = sum_k sum_{c < C_g} x_pad[n, i·s + k·d, g(o)·C_g + c] · w[k, c, o]

where ``C_g = C_in / G`` is the number of input channels of a group, ``g(o) = o // (C_out / G)`` is the group
of output channel ``o``, and ``x_pad`` is ``x`` padded by ``(low, high)`` per axis with the values assumed
outside the domain (the ``boundary``). Per axis the output has ``floor((n + low + high - k_eff) / s) + 1``
entries, ``k_eff = d·(K - 1) + 1`` being the extent of the dilated kernel.

True convolution flips the kernel over its spatial axes, ``w[k] -> w[K - 1 - k]``:

    out[n, i, o] = sum_k sum_{c < C_g} x_pad[n, i·s + (K - 1 - k)·d, g(o)·C_g + c] · w[k, c, o]

The map ``x -> correlate(x, w)`` is linear; its matrix ``M`` (``conv_matrix``) has one row per output entry
``(i, o)`` holding the kernel placed at input positions ``p = i·s + k·d - low``, and the transposed
convolution (``conv_transpose``) applies ``M^T``: the adjoint, which scatters each output back through the
kernel, ``x[n, p, g(o)·C_g + c] += y[n, i, o] · w[k, c, o]``, and is the gradient of correlate w.r.t. ``x``.

Lowering: every function here validates its arguments, then calls ``cnn.ops._lowering._conv`` (channels-last
``lax.conv_general_dilated``, with grouped convolutions rewritten on CPU where XLA's are slow).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnn.ops._lowering import _conv
from cnn.ops.args import (
    BOUNDARY_MODES,
    IntOrSeq,
    Padding,
    as_tuple,
    check_input,
    check_kernel,
    effective_kernel_size,
    float_array,
    output_size,
    pad_boundary,
    resolve_padding,
)


def _as_arrays(x, kernel, x_name: str = "x") -> tuple[jax.Array, jax.Array]:
    """Both operands as floating-point arrays of their common dtype (``lax`` convolutions need equal dtypes)."""
    x, kernel = float_array(x, x_name), float_array(kernel, "kernel")
    dtype = jnp.result_type(x, kernel)
    return x.astype(dtype), kernel.astype(dtype)


def _flip(kernel: jax.Array) -> jax.Array:
    """The kernel reversed over its spatial axes, ``w[k] -> w[K - 1 - k]``."""
    return jnp.flip(kernel, axis=tuple(range(kernel.ndim - 2)))


def correlate(
    x: jax.Array,
    kernel: jax.Array,
    *,
    stride: IntOrSeq = 1,
    padding: Padding = "VALID",
    dilation: IntOrSeq = 1,
    groups: int = 1,
    boundary: str = "zeros",
) -> jax.Array:
    """Cross-correlation (the deep-learning "convolution"), 1 to 3 spatial axes, channels last.

        out[n, i, o] = sum_k sum_{c < C_g} x_pad[n, i·s + k·d, g(o)·C_g + c] · w[k, c, o]

    with ``C_g = C_in / groups`` input channels per group, ``g(o) = o // (C_out / groups)`` the group of
    output channel ``o``, and ``x_pad`` the input padded by ``padding`` with the ``boundary`` values.

    Args:
      x: ``(batch, *spatial, in_channels)``.
      kernel: ``(*kernel_spatial, in_channels // groups, out_channels)``.
      stride: ``s``, an int or one per spatial axis.
      padding: ``"VALID" | "SAME" | "FULL" | int | [(low, high), ...]`` (see ``cnn.ops.args``).
      dilation: ``d``, the spacing between kernel taps, an int or one per spatial axis.
      groups: ``G``; ``groups == in_channels`` is a depthwise convolution (``out = m · in`` gives a channel
        multiplier ``m``).
      boundary: the values outside the domain: ``"zeros"``, ``"reflect"`` (mirror without repeating the edge),
        ``"replicate"`` (repeat the edge) or ``"circular"`` (periodic).

    Returns:
      ``(batch, *out_spatial, out_channels)`` with ``out = floor((n + low + high - k_eff) / s) + 1`` per axis.
    """
    x, kernel = _as_arrays(x, kernel)
    ndim = check_kernel(x, kernel, groups)
    if boundary not in BOUNDARY_MODES:
        raise ValueError(f"boundary must be one of {list(BOUNDARY_MODES)}, got {boundary!r}")
    stride = as_tuple(stride, ndim, "stride")
    dilation = as_tuple(dilation, ndim, "dilation")
    in_spatial, kernel_size = x.shape[1:-1], kernel.shape[:-2]
    pads = resolve_padding(padding, in_spatial, kernel_size, stride, dilation)
    output_size(in_spatial, kernel_size, stride, dilation, pads)  # raises if the kernel does not fit
    if boundary != "zeros":
        # lax only pads with zeros: materialise the other boundaries, then correlate without padding.
        x, pads = pad_boundary(x, pads, boundary), [(0, 0)] * ndim
    return _conv(x, kernel, stride, tuple(pads), dilation, groups, (1,) * ndim)


def convolve(
    x: jax.Array,
    kernel: jax.Array,
    *,
    stride: IntOrSeq = 1,
    padding: Padding = "VALID",
    dilation: IntOrSeq = 1,
    groups: int = 1,
    boundary: str = "zeros",
) -> jax.Array:
    """True convolution: ``correlate`` with the kernel flipped over its spatial axes.

        out[n, i, o] = sum_k sum_{c < C_g} x_pad[n, i·s + (K - 1 - k)·d, g(o)·C_g + c] · w[k, c, o]

    With stride 1 and no padding this is ``(x * w)[i + K - 1]`` of the textbook ``(x * w)[j] = sum_k
    x[j - k] w[k]`` (scipy's ``convolve(mode="valid")``). Arguments and output shape as in ``correlate``.
    """
    return correlate(
        x,
        _flip(float_array(kernel, "kernel")),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        boundary=boundary,
    )


def _smallest_input_size(
    padding: Padding,
    out_spatial: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """The smallest input spatial size whose correlation has ``out_spatial`` entries per axis.

    ``"SAME"`` gives ``ceil(n / s)`` outputs, so ``n = (out - 1)·s + 1``; every other form has padding
    independent of ``n`` and ``out = floor((n + low + high - k_eff) / s) + 1``, so
    ``n = (out - 1)·s + k_eff - low - high`` (at least 1).
    """
    if isinstance(padding, str) and padding.upper() == "SAME":
        return tuple((o - 1) * s + 1 for o, s in zip(out_spatial, stride, strict=True))
    # Padding other than SAME does not depend on the input size: resolve it at any size.
    pads = resolve_padding(padding, out_spatial, kernel_size, stride, dilation)
    k_eff = effective_kernel_size(kernel_size, dilation)
    return tuple(
        max((o - 1) * s + k - lo - hi, 1) for o, s, k, (lo, hi) in zip(out_spatial, stride, k_eff, pads, strict=True)
    )


@functools.partial(jax.jit, static_argnames="groups")
def _transposed_kernel(kernel: jax.Array, groups: int) -> jax.Array:
    """The kernel of the adjoint: flipped spatially, input and output channels swapped within each group.

    ``w[k, c, g·O_g + j]`` of shape ``(*K, C_g, G·O_g)`` becomes ``w_T[K - 1 - k, j, g·C_g + c]`` of shape
    ``(*K, O_g, G·C_g)``, so that group ``g`` of ``y`` maps back to group ``g`` of ``x``.
    """
    ndim = kernel.ndim - 2
    kernel_size, (in_per_group, out_channels) = kernel.shape[:ndim], kernel.shape[ndim:]
    blocks = kernel.reshape(*kernel_size, in_per_group, groups, out_channels // groups)  # [k, c, g, j]
    blocks = jnp.moveaxis(blocks, ndim, ndim + 2)  # [k, g, j, c]
    blocks = jnp.moveaxis(blocks, ndim, ndim + 1)  # [k, j, g, c]
    return _flip(blocks.reshape(*kernel_size, out_channels // groups, groups * in_per_group))


def conv_transpose(
    y: jax.Array,
    kernel: jax.Array,
    *,
    stride: IntOrSeq = 1,
    padding: Padding = "VALID",
    dilation: IntOrSeq = 1,
    groups: int = 1,
    input_shape: Sequence[int] | None = None,
) -> jax.Array:
    """Transposed convolution: the adjoint of ``correlate`` with the same kernel and arguments.

        x[n, p, g(o)·C_g + c] = sum over (i, k, o) with i·s + k·d - low = p of y[n, i, o] · w[k, c, o]

    so that ``<correlate(x, w), y> = <x, conv_transpose(y, w)>`` for all ``x`` and ``y``; it is also the
    gradient of ``correlate`` with respect to its input. Computed as the correlation of ``y`` dilated by the
    stride (``s - 1`` zeros between entries) with the transposed kernel (``_transposed_kernel``), padded by
    ``k_eff - 1 - low`` below and ``n + low - (out - 1)·s - 1`` above (negative values crop).

    Args:
      y: ``(batch, *out_spatial, out_channels)``, an output of ``correlate``.
      kernel: ``(*kernel_spatial, in_channels // groups, out_channels)``, as given to ``correlate``.
      stride, padding, dilation, groups: as given to ``correlate`` (zero boundary).
      input_shape: the full shape ``(batch, *spatial, in_channels)`` of the input of ``correlate``. With
        ``stride > 1`` several input sizes give the same output size; the default is the smallest of them,
        ``(out - 1)·s + 1`` for ``"SAME"`` and ``(out - 1)·s + k_eff - low - high`` otherwise, i.e. no input
        entry is left unread by the kernel on the high side.

    Returns:
      ``(batch, *spatial, in_channels)``.
    """
    y, kernel = _as_arrays(y, kernel, "y")
    if kernel.ndim < 3:
        raise ValueError(
            f"kernel must have shape (*kernel_spatial, in_channels // groups, out_channels), got {tuple(kernel.shape)}"
        )
    ndim = kernel.ndim - 2
    check_input(y, ndim, "y")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    out_channels = kernel.shape[-1]
    if y.shape[-1] != out_channels:
        raise ValueError(
            f"channel mismatch: y has {y.shape[-1]} channels, kernel {tuple(kernel.shape)} has "
            f"{out_channels} output channels"
        )
    if out_channels % groups:
        raise ValueError(f"groups={groups} must divide out_channels={out_channels}")
    stride = as_tuple(stride, ndim, "stride")
    dilation = as_tuple(dilation, ndim, "dilation")
    out_spatial, kernel_size = y.shape[1:-1], kernel.shape[:-2]
    batch, in_channels = y.shape[0], kernel.shape[-2] * groups
    if input_shape is None:
        in_spatial = _smallest_input_size(padding, out_spatial, kernel_size, stride, dilation)
    else:
        input_shape = tuple(int(v) for v in input_shape)
        if len(input_shape) != ndim + 2 or (input_shape[0], input_shape[-1]) != (batch, in_channels):
            raise ValueError(
                f"input_shape must be (batch={batch}, {ndim} spatial sizes, in_channels={in_channels}) "
                f"for y {tuple(y.shape)} and kernel {tuple(kernel.shape)} with groups={groups}, "
                f"got {input_shape}"
            )
        in_spatial = input_shape[1:-1]
    pads = resolve_padding(padding, in_spatial, kernel_size, stride, dilation)
    implied = output_size(in_spatial, kernel_size, stride, dilation, pads)
    if implied != tuple(out_spatial):
        raise ValueError(
            f"y has spatial shape {tuple(out_spatial)}, but correlate of an input of spatial shape "
            f"{tuple(in_spatial)} gives {implied}"
        )
    k_eff = effective_kernel_size(kernel_size, dilation)
    adjoint_pads = [
        (k - 1 - lo, n + lo - (o - 1) * s - 1)
        for k, (lo, _), n, o, s in zip(k_eff, pads, in_spatial, out_spatial, stride, strict=True)
    ]
    return _conv(y, _transposed_kernel(kernel, groups), (1,) * ndim, tuple(adjoint_pads), dilation, groups, stride)


def conv_matrix(
    kernel: jax.Array,
    input_shape: Sequence[int],
    *,
    stride: IntOrSeq = 1,
    padding: Padding = "VALID",
    dilation: IntOrSeq = 1,
) -> jax.Array:
    """The dense matrix ``M`` of ``x -> correlate(x, w)`` on inputs of shape ``input_shape`` (zero boundary).

    ``M @ x.ravel() == correlate(x[None], w, ...).ravel()`` with both sides flattened in C order, so the row
    of output entry ``(i, o)`` is ``i·C_out + o`` (``i`` raveled) and the column of input entry ``(p, c)``
    is ``p·C_in + c``. Each row is the kernel placed at one output position:

        M[(i, o), (p, c)] = w[k, c, o]   if p = i·s + k·d - low for some kernel offset k (and 0 <= p < n),
                            0            otherwise.

    In 1D with one channel and stride 1, ``M[i, p] = w[p - i + low]`` depends only on ``p - i``: ``M`` is
    Toeplitz (constant along each diagonal), a band of width ``k_eff``. In 2D it is doubly block Toeplitz
    (Toeplitz blocks arranged in a Toeplitz pattern), in 3D one level deeper; channels turn every entry into a
    ``C_out x C_in`` block. Stride keeps every ``s``-th row. Built by scattering the kernel entries at those
    index positions.

    Args:
      kernel: ``(*kernel_spatial, in_channels, out_channels)`` (no groups).
      input_shape: ``(*spatial, in_channels)`` of one input, without the batch axis.
      stride, padding, dilation: as in ``correlate``.

    Returns:
      ``(prod(out_spatial) · out_channels, prod(spatial) · in_channels)``.
    """
    kernel = float_array(kernel, "kernel")
    ndim = kernel.ndim - 2
    if ndim not in (1, 2, 3):
        raise ValueError(
            "kernel must have shape (*kernel_spatial, in_channels, out_channels) with 1, 2 or 3 spatial "
            f"axes, got {tuple(kernel.shape)}"
        )
    input_shape = tuple(int(v) for v in input_shape)
    kernel_size, (in_channels, out_channels) = kernel.shape[:ndim], kernel.shape[ndim:]
    if len(input_shape) != ndim + 1 or input_shape[-1] != in_channels:
        raise ValueError(
            f"input_shape must be ({ndim} spatial sizes, in_channels={in_channels}) for kernel "
            f"{tuple(kernel.shape)}, got {input_shape}"
        )
    in_spatial = input_shape[:-1]
    stride = as_tuple(stride, ndim, "stride")
    dilation = as_tuple(dilation, ndim, "dilation")
    pads = resolve_padding(padding, in_spatial, kernel_size, stride, dilation)
    out_spatial = output_size(in_spatial, kernel_size, stride, dilation, pads)

    # Index arithmetic on the host: input position p = i·s + k·d - low of every (output position i, offset k).
    out_positions = np.indices(out_spatial).reshape(ndim, -1).T  # (P, ndim), C order
    offsets = np.indices(kernel_size).reshape(ndim, -1).T  # (Q, ndim)
    low = np.array([lo for lo, _ in pads])
    positions = out_positions[:, None] * np.array(stride) + offsets[None] * np.array(dilation) - low
    inside = np.all((positions >= 0) & (positions < np.array(in_spatial)), axis=-1)  # (P, Q)
    row_pos, offset = np.nonzero(inside)
    col_pos = np.ravel_multi_index(tuple(positions[row_pos, offset].T), in_spatial)
    # Each (i, k) pair contributes the C_out x C_in block w[k]^T.
    rows = row_pos[:, None, None] * out_channels + np.arange(out_channels)[None, :, None]
    cols = col_pos[:, None, None] * in_channels + np.arange(in_channels)[None, None, :]
    blocks = jnp.swapaxes(kernel.reshape(-1, in_channels, out_channels), 1, 2)[offset]
    shape = (out_positions.shape[0] * out_channels, int(np.prod(in_spatial)) * in_channels)
    return jnp.zeros(shape, kernel.dtype).at[rows, cols].set(blocks)
