"""The training state: step, parameters, optimizer state and the model's mutable collections (BatchNorm)."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """``flax`` TrainState plus ``model_state``: every non-parameter collection (e.g. ``batch_stats``)."""

    model_state: flax.core.FrozenDict[str, Any] | dict[str, Any]


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, input_shape: tuple[int, ...], seed: int
) -> TrainState:
    """Initialize parameters from ``seed`` on a dummy batch of ``input_shape`` (batch axis included)."""
    variables = model.init(jax.random.PRNGKey(seed), jnp.zeros(input_shape, jnp.float32), train=False)
    params = variables.pop("params") if isinstance(variables, dict) else variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, model_state=model_state)


def abstract_train_state(
    model: nn.Module, tx: optax.GradientTransformation, input_shape: tuple[int, ...], seed: int
) -> TrainState:
    """Shapes and dtypes of the state without computing it (for restoring checkpoints)."""
    return jax.eval_shape(lambda: create_train_state(model, tx, input_shape, seed))
