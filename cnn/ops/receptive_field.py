"""Receptive fields of chains of convolution and pooling layers (Goodfellow et al., Deep Learning, sec. 9.2).

The receptive field of a unit is the set of input pixels it depends on. In a deep net the units of deeper
layers interact indirectly with a larger portion of the input (Goodfellow fig. 9.4). For one spatial axis,
a chain of layers ``l = 1..L`` with kernel ``k_l``, stride ``s_l``, dilation ``d_l`` and low padding ``p_l``
has, after layer ``l``,

    k_eff_l = d_l (k_l - 1) + 1                                   (extent of the dilated kernel)
    j_l     = j_{l-1} s_l                                         (jump: input distance between
                                                                   adjacent output units)
    r_l     = r_{l-1} + (k_eff_l - 1) j_{l-1}                     (receptive field size)
    start_l = start_{l-1} + ((k_eff_l - 1) / 2 - p_l) j_{l-1}     (input coordinate of the center of the
                                                                   first output unit's field)

from ``j_0 = 1, r_0 = 1, start_0 = 0`` (input pixel ``i`` has coordinate ``i``). Output unit ``u`` of layer
``l`` then sees input coordinates ``start_l + u j_l -/+ (r_l - 1) / 2``, clipped to the input where the
field reaches into the padding. A pooling layer is a layer like any other (its window is the kernel).

Axes are independent: for a 2D or 3D net apply ``receptive_field`` to each axis's chain of scalars.
In nets with branches (residual or inception blocks) the receptive field is that of the longest path.
``empirical_receptive_field`` measures the same from the gradient of one output unit w.r.t. the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["AxisExtent", "Layer", "ReceptiveField", "empirical_receptive_field", "receptive_field"]


@dataclass(frozen=True)
class Layer:
    """One conv or pooling layer along one axis; ``padding``: the low-side padding, or ``(low, high)``."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: int | tuple[int, int] = 0

    def __post_init__(self):
        for name, minimum in (("kernel", 1), ("stride", 1), ("dilation", 1)):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"Layer {name} must be an int >= {minimum}, got {value!r}")
        pads = self.padding if isinstance(self.padding, tuple) else (self.padding, 0)
        if len(pads) != 2 or any(not isinstance(p, int | np.integer) or isinstance(p, bool) or p < 0 for p in pads):
            raise ValueError(f"Layer padding must be an int >= 0 or a (low, high) pair, got {self.padding!r}")

    @property
    def low_padding(self) -> int:
        return self.padding[0] if isinstance(self.padding, tuple) else self.padding


class ReceptiveField(NamedTuple):
    """Receptive field after a layer: ``size`` r, ``jump`` j and ``start`` (center of unit 0's field)."""

    size: int
    jump: int
    start: float

    def bounds(self, index: int, input_size: int | None = None) -> tuple[float, float]:
        """``(first, last)`` input coordinates seen by output unit ``index``, clipped to ``[0, input_size)``.

        Clipping removes the padding; a field can still end before ``input_size - 1`` where a layer's
        windows do not reach the end of its input (pixels dropped by the floor in the output size).
        """
        center = self.start + index * self.jump
        first, last = center - (self.size - 1) / 2, center + (self.size - 1) / 2
        if input_size is not None:
            first, last = max(first, 0), min(last, input_size - 1)
        return first, last


class AxisExtent(NamedTuple):
    """Input indices ``first..last`` (inclusive) that an output unit depends on along one axis."""

    first: int
    last: int
    size: int


def _as_layer(layer) -> Layer:
    if isinstance(layer, Layer):
        return layer
    if isinstance(layer, tuple | list) and 1 <= len(layer) <= 4:
        return Layer(*layer)
    raise ValueError(f"each layer must be a Layer or a tuple (kernel, stride=1, dilation=1, padding=0), got {layer!r}")


def receptive_field(layers: Sequence[Layer | tuple]) -> list[ReceptiveField]:
    """Receptive field size, jump and start after every layer of a chain along one axis.

    ``layers``: ``Layer`` objects or tuples ``(kernel, stride=1, dilation=1, padding=0)``. Returns one
    ``ReceptiveField(size, jump, start)`` per layer from the recurrences of the module docstring.
    """
    size, jump, start = 1, 1, 0.0
    fields = []
    for layer in map(_as_layer, layers):
        k_eff = layer.dilation * (layer.kernel - 1) + 1
        start += ((k_eff - 1) / 2 - layer.low_padding) * jump
        size += (k_eff - 1) * jump
        jump *= layer.stride
        fields.append(ReceptiveField(size, jump, start))
    return fields


def empirical_receptive_field(
    f: Callable, input_shape: Sequence[int], output_index: Sequence[int]
) -> tuple[AxisExtent, ...]:
    """Receptive field of one output unit measured from the support of its input gradient:

        support = { m : d f(x)[output_index] / d x[m] != 0 }   at x = ones(input_shape),

    projected on each spatial axis of the ``(batch, *spatial, channels)`` input; returns per spatial axis
    ``AxisExtent(first, last, size = last - first + 1)``. The gradient must not cancel or vanish inside the
    field, so measure models with positive weights and average (not max) pooling: the geometry is the
    same. A dilated field may have holes; ``size`` is its extent. Pass a jitted ``f`` for speed.
    """
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) < 3:
        raise ValueError(f"input_shape must be (batch, *spatial, channels), got {input_shape}")
    out_shape = jax.eval_shape(f, jax.ShapeDtypeStruct(input_shape, jnp.float32)).shape
    output_index = tuple(int(i) for i in output_index)
    if len(output_index) != len(out_shape) or any(not 0 <= i < n for i, n in zip(output_index, out_shape, strict=True)):
        raise ValueError(f"output_index {output_index} is not an index into f's output of shape {out_shape}")
    grad = jax.grad(lambda x: f(x)[output_index])(jnp.ones(input_shape, jnp.float32))
    support = np.asarray(grad) != 0
    if not support.any():
        raise ValueError(f"output unit {output_index} has a zero gradient w.r.t. the whole input")
    extents = []
    for axis in range(1, len(input_shape) - 1):
        hit = np.flatnonzero(support.any(axis=tuple(a for a in range(support.ndim) if a != axis)))
        extents.append(AxisExtent(int(hit[0]), int(hit[-1]), int(hit[-1] - hit[0] + 1)))
    return tuple(extents)
