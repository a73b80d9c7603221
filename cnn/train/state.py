"""The training state: step, parameters, optimizer state, the model's mutable collections (BatchNorm) and, for
float16, the dynamic loss scale (``cnn.train.precision``). Everything in it is float32 whatever the compute dtype."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from cnn.train.precision import LossScale


class TrainState(train_state.TrainState):
    """``flax`` TrainState plus ``model_state``: every non-parameter collection (e.g. ``batch_stats``), and
    ``loss_scale``: the float16 loss scale (None otherwise: no leaves, so float32 checkpoints keep their layout)."""

    model_state: flax.core.FrozenDict[str, Any] | dict[str, Any]
    loss_scale: LossScale | None = None


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    sample_input: tuple[int, ...] | Any,
    seed: int,
    loss_scale: LossScale | None = None,
) -> TrainState:
    """Initialize float32 parameters from ``seed`` on ``sample_input``: example inputs of the model, or the shape
    of an image batch (batch axis included) to initialize on zeros of."""
    if isinstance(sample_input, tuple) and all(isinstance(n, int) for n in sample_input):
        sample_input = jnp.zeros(sample_input, jnp.float32)
    variables = model.init(jax.random.PRNGKey(seed), sample_input, train=False)
    params = variables.pop("params") if isinstance(variables, dict) else variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, model_state=model_state,
                             loss_scale=loss_scale)


def abstract_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    sample_input: tuple[int, ...] | Any,
    seed: int,
    loss_scale: LossScale | None = None,
) -> TrainState:
    """Shapes and dtypes of the state without computing it (for restoring checkpoints)."""
    return jax.eval_shape(lambda: create_train_state(model, tx, sample_input, seed, loss_scale))
