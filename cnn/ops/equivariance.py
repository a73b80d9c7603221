"""Equivariance of an operator to a transformation of its input (Goodfellow et al., Deep Learning, sec. 9.2).

A function ``f`` is equivariant to a transformation ``T`` if transforming the input transforms the output
the same way, ``f(T x) = T f(x)``. Convolution (with a circular boundary, so that shifts wrap around) is
equivariant to translation; it is not naturally equivariant to other transformations such as rotations
or changes in scale. We measure the relative violation

    e(f, x, T) = || f(T x) - T f(x) || / || f(x) ||        (Frobenius norms over the whole batch)

for transformations acting on ``(batch, *spatial, channels)`` arrays: ``shift`` (a circular translation),
``rotate90`` (a quarter turn of the first two spatial axes) and ``rescale`` (a zoom about the center).
``f`` must keep the spatial shape (stride 1, "SAME" size) for ``T f(x)`` to be comparable with ``f(T x)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from cnn.ops.args import IntOrSeq, check_input, float_array

__all__ = ["equivariance_error", "rescale", "rotate90", "shift"]

Transform = Callable[[jax.Array], jax.Array]


def equivariance_error(f: Callable[[jax.Array], jax.Array], x, transform: Transform) -> jax.Array:
    """``|| f(T x) - T f(x) || / || f(x) ||`` with ``T = transform``; 0 iff ``f`` commutes with ``T`` at x.

    A ValueError if ``f(x) = 0``.
    """
    x = float_array(x, "x")
    fx = f(x)
    norm = jnp.linalg.norm(fx.ravel())
    if float(norm) == 0:
        raise ValueError("f(x) is zero: the relative equivariance error is undefined")
    return jnp.linalg.norm((f(transform(x)) - transform(fx)).ravel()) / norm


def shift(offsets: IntOrSeq) -> Transform:
    """Circular translation ``(T x)[b, i, c] = x[b, (i - offsets) mod n, c]`` (``jnp.roll`` of the spatial
    axes). ``offsets``: an int (the same on every spatial axis) or one int per spatial axis; any sign."""

    def transform(x):
        x = float_array(x, "x")
        ndim = x.ndim - 2
        check_input(x, ndim)
        per_axis = (offsets,) * ndim if isinstance(offsets, int) else tuple(offsets)
        if len(per_axis) != ndim:
            raise ValueError(f"shift offsets {offsets!r} need one entry per spatial axis of x {x.shape}")
        return jnp.roll(x, per_axis, axis=tuple(range(1, ndim + 1)))

    return transform


def rotate90(k: int = 1) -> Transform:
    """Rotation by ``k`` quarter turns in the plane of the first two spatial axes (``jnp.rot90``), as
    applied to an image; for a square image the shape is kept."""
    if not isinstance(k, int):
        raise ValueError(f"k must be an int number of quarter turns, got {k!r}")

    def transform(x):
        x = float_array(x, "x")
        if x.ndim < 4:
            raise ValueError(f"rotate90 needs at least 2 spatial axes, got x of shape {tuple(x.shape)}")
        return jnp.rot90(x, k, axes=(1, 2))

    return transform


def rescale(factor: float, method: str = "linear") -> Transform:
    """Zoom by ``factor`` about the center of the spatial axes, keeping their size:

        (T x)(u) = x(c + (u - c) / factor),   c the center, u continuous pixel coordinates,

    resampled by ``jax.image.scale_and_translate`` (``method="linear"``: (bi/tri)linear interpolation;
    also "cubic", "lanczos3", ...; antialiased when shrinking). ``factor > 1`` magnifies (the border is
    cropped), ``factor < 1`` shrinks (the border is filled with zeros).
    """
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")

    def transform(x):
        x = float_array(x, "x")
        ndim = x.ndim - 2
        check_input(x, ndim)
        spatial = x.shape[1:-1]
        scale = jnp.full((ndim,), factor, jnp.float32)
        # scale_and_translate maps input coordinate u to u * scale + translation; fix the center n / 2.
        translation = jnp.asarray([(1 - factor) * n / 2 for n in spatial], jnp.float32)
        return jax.image.scale_and_translate(x, x.shape, tuple(range(1, ndim + 1)), scale, translation, method=method)

    return transform
