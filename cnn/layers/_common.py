"""Plumbing shared by the convolution layers: argument checks, the kernel geometry as tuples, parameter creation."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from cnn.ops.args import as_tuple

Initializer = Callable[..., jax.Array]


def check_positive_int(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def geometry(module: nn.Module, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``module.kernel_size``, ``module.strides`` and ``module.kernel_dilation``, each as ``ndim`` ints."""
    return (
        as_tuple(module.kernel_size, ndim, "kernel_size"),
        as_tuple(module.strides, ndim, "strides"),
        as_tuple(module.kernel_dilation, ndim, "kernel_dilation"),
    )


def promoted_params(
    module: nn.Module, x: jax.Array, bias_shape: tuple[int, ...], /, **kernels: tuple[Initializer, tuple[int, ...]]
) -> tuple[jax.Array | None, ...]:
    """``(x, *kernels, bias)`` of ``module``, promoted together to ``module.dtype`` (``nn.dtypes.promote_dtype``).

    Each ``name=(init, shape)`` of ``kernels`` becomes the parameter ``name`` in ``module.param_dtype``, in the order
    given; then ``bias`` of ``bias_shape`` from ``module.bias_init`` if ``module.use_bias``, else ``None``.
    """
    arrays = [module.param(name, init, shape, module.param_dtype) for name, (init, shape) in kernels.items()]
    bias = module.param("bias", module.bias_init, bias_shape, module.param_dtype) if module.use_bias else None
    return nn.dtypes.promote_dtype(x, *arrays, bias, dtype=module.dtype)
