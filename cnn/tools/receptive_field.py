"""Receptive field, jump and MACs of each stage of a zoo model, computed and measured.

``python -m cnn.tools.receptive_field resnet50 [--size N]`` prints, per stage (the modules of ``model.layer_chain()``),
for the centre output unit of that stage on an ``N×N`` input:

* analytic: ``cnn.ops.receptive_field`` of the model's chain of convolutions and poolings along its longest path
  (residual branches and 1×1 convolutions do not widen it): the field size ``r``, the jump ``j`` and the input
  rows ``first..last`` the unit sees, clipped to the image;
* measured: ``cnn.ops.empirical_receptive_field``, the rows where the gradient of the unit's first channel w.r.t.
  the input is non-zero, with every kernel set to the positive constant ``1 / fan_in``, biases 0 and BatchNorm in
  eval mode at mean 0 and variance 1 (so the activations stay positive and nothing cancels or is cut by a ReLU);
  max pooling, whose gradient reaches one input per window, is measured as sum pooling of the same geometry;
* MACs: the multiply-accumulates of the modules from the previous stage's end to this one (``cnn.tools.macs``);
  the last row, ``head``, holds the rest.

BatchNorm and ReLU can only remove input pixels from a unit's gradient support, so measured ⊆ analytic in general;
with the weights above the two agree. Squeeze-and-excitation (EfficientNet) pools over the whole input: the measured
field of every stage after the first such block is the whole image, and the analytic one is that of the
convolutions alone.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core

from cnn.models import MODELS, create
from cnn.ops import ReceptiveField, empirical_receptive_field, receptive_field
from cnn.ops.receptive_field import AxisExtent
from cnn.tools.macs import macs_by_module, positive_int

__all__ = ["StageField", "analytic_fields", "constant_variables", "measured_fields", "stage_fields", "stage_macs"]

MAX_DEFAULT_SIZE = 512


class StageField(NamedTuple):
    """One stage: its module, analytic field, the centre unit's analytic and measured rows, and its MACs."""

    stage: str
    field: ReceptiveField
    unit: int
    analytic: tuple[int, int]
    measured: AxisExtent
    macs: int


def analytic_fields(model: nn.Module) -> list[tuple[str, ReceptiveField]]:
    """``(module name, receptive field after it)`` along ``model.layer_chain()``."""
    names, layers, ends = [], [], []
    for name, stage_layers in model.layer_chain():
        layers += stage_layers
        names.append(name)
        ends.append(len(layers) - 1)
    fields = receptive_field(layers)
    return [(name, fields[end]) for name, end in zip(names, ends, strict=True)]


def constant_variables(shapes) -> dict:
    """Variables of the given shapes set for measuring fields: kernels ``1 / fan_in`` (so a unit's value stays
    near 1), BatchNorm scales and running variances 1, everything else (biases, running means) 0."""

    def value(path, leaf):
        name = getattr(path[-1], "key", None)
        if name == "kernel":
            return jnp.full(leaf.shape, 1 / math.prod(leaf.shape[:-1]), leaf.dtype)
        return jnp.full(leaf.shape, 1 if name in ("scale", "var") else 0, leaf.dtype)

    return jax.tree_util.tree_map_with_path(value, shapes)


def _eval_with_sum_pooling(jaxpr, consts, *args):
    """Evaluate ``jaxpr`` with every ``reduce_window_max`` (max pooling) replaced by the window sum."""
    env = {}

    def read(var):
        return var.val if isinstance(var, jex_core.Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if eqn.primitive.name == "reduce_window_max":
            p = eqn.params
            window = (p["window_dimensions"], p["window_strides"], p["padding"], p["base_dilation"],
                      p["window_dilation"])
            outvals = [lax.reduce_window(invals[0], np.zeros((), invals[0].dtype), lax.add, *window)]
        elif eqn.primitive.name in ("jit", "pjit", "custom_jvp_call"):
            # custom_jvp_call: cnn.ops.max_pool's reduce_window with its own JVP (differentiated here as a sum)
            inner = eqn.params["jaxpr" if eqn.primitive.name != "custom_jvp_call" else "call_jaxpr"]
            outvals = _eval_with_sum_pooling(inner.jaxpr, inner.consts, *invals)
        else:
            outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outvals = outvals if eqn.primitive.multiple_results else [outvals]
        env.update(zip(eqn.outvars, outvals, strict=True))
    return [read(v) for v in jaxpr.outvars]


def measured_fields(
    model: nn.Module, input_shape: Sequence[int], stages: Sequence[str]
) -> list[tuple[int, AxisExtent]]:
    """Per stage, the centre unit ``u`` (its output position ``(u, u)``) and the height extent of the gradient
    support of its first channel (see the module docstring).

    ``stages``: names of top-level modules whose ``__call__`` output is the stage's; ``input_shape``
    ``(1, height, width, channels)``.
    """
    input_shape = tuple(input_shape)
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    wanted = {(name,) for name in stages}

    def stage_outputs(x):
        _, state = model.apply(
            constant_variables(shapes), x, train=False, mutable=["intermediates"],
            capture_intermediates=lambda module, method: method == "__call__" and module.scope.path in wanted,
        )
        return [state["intermediates"][name]["__call__"][0] for name in stages]

    closed = jax.make_jaxpr(stage_outputs)(x)
    units = [(out.shape[1] - 1) // 2 for out in jax.eval_shape(stage_outputs, x)]

    @jax.jit
    def centre_units(x):
        outputs = _eval_with_sum_pooling(closed.jaxpr, closed.consts, x)
        return jnp.stack([out[0, u, u, 0] for out, u in zip(outputs, units, strict=True)])

    return [(u, empirical_receptive_field(centre_units, input_shape, (k,))[0]) for k, u in enumerate(units)]


def stage_macs(model: nn.Module, input_shape: Sequence[int], stages: Sequence[str]) -> list[int]:
    """MACs per stage (modules from the previous stage's end up to and including this one), then the rest."""
    totals, current = [], 0
    remaining = list(stages)
    for module, macs in macs_by_module(model, input_shape).items():
        current += macs
        if remaining and module == remaining[0]:
            totals.append(current)
            current = 0
            remaining.pop(0)
    if remaining:
        raise ValueError(f"stages {remaining} are not modules of the model's forward pass")
    return [*totals, current]


def stage_fields(model: nn.Module, size: int, channels: int = 3) -> tuple[list[StageField], int]:
    """Every stage of ``model`` on a ``size×size×channels`` input, and the MACs after the last stage."""
    input_shape = (1, size, size, channels)
    analytic = analytic_fields(model)
    stages = [name for name, _ in analytic]
    measured = measured_fields(model, input_shape, stages)
    *macs, head_macs = stage_macs(model, input_shape, stages)
    rows = []
    for (name, field), (unit, extent), stage_mac in zip(analytic, measured, macs, strict=True):
        first, last = field.bounds(unit, size)
        rows.append(StageField(name, field, unit, (round(first), round(last)), extent, stage_mac))
    return rows, head_macs


def default_size(model: nn.Module) -> int:
    """The smallest multiple of the final jump that holds the largest analytic field, at most 512."""
    fields = [field for _, field in analytic_fields(model)]
    jump = fields[-1].jump
    return min(MAX_DEFAULT_SIZE, -(-max(f.size for f in fields) // jump) * jump)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cnn.tools.receptive_field", description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=MODELS.names(), metavar="MODEL", help="a registered model with layer_chain()")
    parser.add_argument("--size", type=positive_int, help="input height and width (default: fits the largest "
                        f"field, at most {MAX_DEFAULT_SIZE})")
    parser.add_argument("--channels", type=positive_int, default=3, help="input channels (default 3)")
    args = parser.parse_args(argv)
    model = create(args.model, num_classes=1000)
    if not hasattr(model, "layer_chain"):
        parser.error(f"model {args.model!r} does not describe its layer chain")
    size = args.size or default_size(model)
    try:
        rows, head_macs = stage_fields(model, size, args.channels)
    except ValueError as error:  # e.g. an input below the model's minimum size
        parser.error(str(error))
    print(f"{args.model} on {size}×{size}×{args.channels}: centre unit of each stage, rows first..last of the input")
    print(f"{'stage':<16}{'r':>6}{'jump':>6}{'unit':>6}{'analytic':>14}{'measured':>14}{'MACs':>16}")
    for row in rows:
        analytic, measured = f"{row.analytic[0]}..{row.analytic[1]}", f"{row.measured.first}..{row.measured.last}"
        print(f"{row.stage:<16}{row.field.size:>6}{row.field.jump:>6}{row.unit:>6}{analytic:>14}{measured:>14}"
              f"{row.macs:>16,}")
    print(f"{'head':<16}{'':>46}{head_macs:>16,}")
    total = sum(row.macs for row in rows) + head_macs
    print(f"{'total':<16}{'':>46}{total:>16,}")


if __name__ == "__main__":
    main()
