"""Multiply-accumulates (MACs) of a model's convolutions and dense layers, counted on the jaxpr of ``model.apply``.

For every ``conv_general_dilated`` (output ``y``, kernel ``w`` with ``O`` output channels)

    MACs = |y| · |w| / O = |y| · prod(kernel spatial) · in_channels / groups

(the taps of a dilated kernel, not its extent; an input-dilated, i.e. transposed, convolution counts the zeros XLA
multiplies), and for every ``dot_general`` (output ``y``, contracting dimensions ``K`` of the left operand)

    MACs = |y| · prod_{k in K} lhs.shape[k].

``cnn.ops`` computes every convolution in a jitted ``_lowered_conv(x, kernel, ...)`` which, on CPU, lowers grouped
convolutions to sums of shifted slices or to one dense convolution with a block-diagonal kernel, and a few dense ones
to one matrix product (``cnn/ops/_lowering.py``); such a call counts as the convolution it computes, by the same
formula, whatever its lowering.

Nested jaxprs (``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``, ...) are walked; a ``scan`` body counts
``length`` times, a ``cond`` its most expensive branch; a ``while`` body, whose trip count is unknown, once.
Everything else (BatchNorm, activations, pooling, FFTs, elementwise products) counts zero, as in torchvision's
published "GFLOPS", which are these MACs of convolutions and linear layers.

``python -m cnn.tools.macs resnet50 [--size 224] [--num-classes 1000]`` prints parameters and MACs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from cnn.models import MODELS, create

__all__ = ["count_macs", "count_params", "macs_by_module"]


# Jitted functions of cnn.ops computing a channels-last convolution ``f(x, kernel, ...)``, however lowered.
CONV_JITS = ("_lowered_conv",)


def _is_conv_jit(eqn) -> bool:
    """A call of a CONV_JITS function: ``x`` and ``kernel`` ``(*spatial, in // groups, out)`` give ``(..., out)``."""
    if eqn.primitive.name not in ("jit", "pjit") or eqn.params.get("name") not in CONV_JITS or len(eqn.invars) < 2:
        return False
    x, kernel, out = eqn.invars[0].aval, eqn.invars[1].aval, eqn.outvars[0].aval
    return x.ndim == kernel.ndim == out.ndim and kernel.shape[-1] == out.shape[-1]


def _conv_macs(eqn) -> int:
    out, kernel = eqn.outvars[0].aval, eqn.invars[1].aval
    if eqn.primitive.name == "conv_general_dilated":
        out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    else:  # a CONV_JITS call
        out_feature_dim = kernel.ndim - 1
    return math.prod(out.shape) * math.prod(kernel.shape) // kernel.shape[out_feature_dim]


def _dot_macs(eqn) -> int:
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.shape[d] for d in lhs_contracting)


def _sub_jaxprs(value):
    """The jaxprs inside one equation parameter (a jaxpr, a closed jaxpr, or a tuple of them)."""
    if isinstance(value, jex_core.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jex_core.Jaxpr):
        return [value]
    if isinstance(value, tuple | list):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def _walk(jaxpr, scope: str, totals: dict[str, int], multiplier: int = 1) -> None:
    """Add the MACs of ``jaxpr``'s equations to ``totals`` under their module scope (flax's name stack)."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        where = "/".join(s for s in (scope, str(eqn.source_info.name_stack)) if s)
        if name == "conv_general_dilated" or _is_conv_jit(eqn):
            totals[where] = totals.get(where, 0) + multiplier * _conv_macs(eqn)
        elif name == "dot_general":
            totals[where] = totals.get(where, 0) + multiplier * _dot_macs(eqn)
        elif name == "cond":
            branches = []
            for branch in eqn.params["branches"]:
                branch_totals: dict[str, int] = {}
                _walk(branch.jaxpr, where, branch_totals, multiplier)
                branches.append(branch_totals)
            for key, value in max(branches, key=lambda t: sum(t.values())).items():
                totals[key] = totals.get(key, 0) + value
        else:
            repeat = eqn.params["length"] if name == "scan" else 1
            for value in eqn.params.values():
                for sub in _sub_jaxprs(value):
                    _walk(sub, where, totals, multiplier * repeat)


def macs_by_module(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """MACs of ``model.apply(variables, zeros(input_shape), train=False)`` per top-level submodule, in the order
    the forward pass first reaches them (``""`` for operations of the model itself)."""
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) < 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (batch, *spatial, channels) of positive sizes, got {input_shape}")
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
    totals: dict[str, int] = {}
    _walk(closed.jaxpr, "", totals)
    by_module: dict[str, int] = {}
    for scope, macs in totals.items():
        # flax's name stack: the model's class, then module names; a method other than __call__ adds "Class.method"
        parts = [part for part in scope.split("/")[1:] if "." not in part]
        key = parts[0] if parts else ""
        by_module[key] = by_module.get(key, 0) + macs
    return by_module


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of the convolutions and dense layers of one forward pass (eval mode) on an input of
    ``input_shape`` ``(batch, *spatial, channels)``."""
    return sum(macs_by_module(model, input_shape).values())


def count_params(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Number of parameters (the ``params`` collection; BatchNorm statistics are not parameters)."""
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cnn.tools.macs", description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=MODELS.names(), metavar="MODEL", help="a registered model name")
    parser.add_argument("--size", type=positive_int, default=224, help="input height and width (default 224)")
    parser.add_argument("--channels", type=positive_int, default=3, help="input channels (default 3)")
    parser.add_argument("--num-classes", type=positive_int, default=1000)
    args = parser.parse_args(argv)
    model = create(args.model, num_classes=args.num_classes)
    shape = (1, args.size, args.size, args.channels)
    try:
        params, macs = count_params(model, shape), count_macs(model, shape)
    except ValueError as error:  # e.g. an input below the model's minimum size
        parser.error(str(error))
    print(f"{args.model} at {args.size}×{args.size}×{args.channels}, {args.num_classes} classes: "
          f"{params:,} parameters, {macs:,} MACs ({macs / 1e9:.3f} G)")


if __name__ == "__main__":
    main()
