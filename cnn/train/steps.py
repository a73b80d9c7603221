"""One training step and one evaluation step, pure functions jit-compiled by the loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from cnn.train.state import TrainState


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float = 0.0) -> jnp.ndarray:
    """Per-example cross-entropy against one-hot labels smoothed towards uniform by ``label_smoothing``."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def _apply(state: TrainState, params, images, *, train: bool, rng=None):
    """Forward pass; returns logits and, when training, the updated mutable collections."""
    variables = {"params": params, **state.model_state}
    mutable = list(state.model_state) if train and state.model_state else False
    rngs = {"dropout": rng} if rng is not None else None
    out = state.apply_fn(variables, images, train=train, rngs=rngs, mutable=mutable)
    return out if mutable else (out, state.model_state)


def train_step(state: TrainState, batch, base_key, *, schedule, label_smoothing: float):
    """SGD step on one global batch; the dropout key is ``fold_in(base_key, step)`` so a resume replays it."""
    rng = jax.random.fold_in(base_key, state.step)

    def loss_fn(params):
        logits, model_state = _apply(state, params, batch["image"], train=True, rng=rng)
        loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
        return loss, (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, model_state=model_state)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "grad_norm": optax.global_norm(grads),
        "learning_rate": schedule(state.step),
    }
    return new_state, metrics


def eval_step(state: TrainState, batch, *, num_classes: int):
    """Sums over the real examples of a (possibly padded) batch: loss, correct count, count, confusion matrix."""
    logits, _ = _apply(state, state.params, batch["image"], train=False)
    mask = batch["mask"]
    predictions = jnp.argmax(logits, -1)
    confusion = jnp.zeros((num_classes, num_classes), jnp.float32).at[batch["label"], predictions].add(mask)
    return {
        "loss_sum": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
        "correct": jnp.sum((predictions == batch["label"]) * mask),
        "count": jnp.sum(mask),
        "confusion": confusion,
    }
