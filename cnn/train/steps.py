"""One training step and one evaluation step, pure functions jit-compiled by the loop.

**Precision** (``cnn.train.precision``): both steps cast the float32 parameters and the images to the policy's
compute dtype and the logits back to float32; with float16 the training step scales the loss, unscales the
gradients, and skips the update when any gradient is not finite: parameters, optimizer moments and BatchNorm
statistics stay as they were. ``step`` and the optimizer's step counts still advance, so the batch, the dropout
key and the learning rate of step k stay those of step k (the skipped step's batch is not seen again).

**Gradient accumulation** (``grad_accum_steps = k``): the global batch of B examples is split into k microbatches
of B/k, microbatch j holding examples j, j + k, j + 2k, … . Since every device holds a contiguous slice of the
batch, each microbatch then takes the same number of examples from every device's own slice: the split moves no
data between devices, and each microbatch stays sharded over all of them. ``jax.lax.scan`` runs the microbatches
in order, so only one microbatch's activations are alive at a time, sums their gradients and applies one update
with their mean: for a model without BatchNorm, the update of the whole batch (the loss is a mean over examples,
and the microbatches are equal in size). With BatchNorm, each microbatch is normalized by its own statistics (as
if the batch were B/k), and the running statistics are updated once per microbatch, in order, threaded through
the scan. Dropout draws a different key for each microbatch; metrics are means over the microbatches.

On XLA:CPU a convolution's weight gradient inside a loop body misses the layout rewrite that sends it to the fast
convolution kernel (jax-ml/jax#12868): a k = 4 step of small_cnn took 60x as long as k = 1. The Experiment
therefore unrolls the scan on CPU (``unroll_microbatches``), where memory is rarely the limit and XLA's schedule
then keeps most microbatches' activations anyway; elsewhere it stays a loop.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Sharding

from cnn.tasks import Task
from cnn.train.precision import Policy, all_finite
from cnn.train.state import TrainState

FULL_PRECISION = Policy()
NONFINITE = "nonfinite"  # a metric: 1.0 when the step's gradients, updates or new state are not all finite


def _apply(state: TrainState, params, model_state, inputs, policy: Policy, *, train: bool, rng=None):
    """Forward pass in the compute dtype; returns float32 outputs and, when training, the updated mutable
    collections (BatchNorm keeps them float32)."""
    variables = {"params": policy.cast_to_compute(params), **model_state}
    mutable = list(model_state) if train and model_state else False
    rngs = {"dropout": rng} if rng is not None else None
    out = state.apply_fn(variables, policy.cast_to_compute(inputs), train=train, rngs=rngs, mutable=mutable)
    logits, model_state = out if mutable else (out, model_state)
    return policy.cast_to_output(logits), model_state


def _split_microbatches(batch: dict[str, jax.Array], k: int, sharding: Sharding | None) -> dict[str, jax.Array]:
    """``(B, ...) -> (k, B/k, ...)``, microbatch j = examples j, j + k, …: each device's slice splits locally."""

    def split(x):
        x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
        return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)

    return jax.tree.map(split, batch)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    base_key: jax.Array,
    *,
    schedule: optax.Schedule,
    task: Task,
    policy: Policy = FULL_PRECISION,
    grad_accum_steps: int = 1,
    microbatch_sharding: Sharding | None = None,
    unroll_microbatches: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on one global batch, of ``task``'s loss; the dropout key is ``fold_in(base_key, step)``
    so a resume replays it. ``microbatch_sharding`` places the ``(k, B/k, ...)`` microbatches (the batch axis over the
    devices); ``None`` leaves it to the compiler. ``unroll_microbatches`` compiles the k microbatches as straight
    code instead of a loop: the same arithmetic in the same order, faster on XLA:CPU, without the memory saving."""
    rng = jax.random.fold_in(base_key, state.step)
    loss_scale = state.loss_scale

    def gradients(model_state, microbatch, key):
        """Gradients of the (scaled) mean loss of one microbatch, the updated model state, and its metrics."""

        def loss_fn(params):
            outputs, new_model_state = _apply(state, params, model_state, task.model_input(microbatch), policy,
                                              train=True, rng=key)
            loss, metrics = task.loss(outputs, microbatch)
            scaled = loss if loss_scale is None else loss_scale.scale_loss(loss)
            return scaled, (new_model_state, metrics)

        grads, (new_model_state, metrics) = jax.grad(loss_fn, has_aux=True)(state.params)
        return grads, new_model_state, metrics

    if grad_accum_steps == 1:
        grads, model_state, metrics = gradients(state.model_state, batch, rng)
    else:

        def accumulate(carry, microbatch_and_key):
            grad_sum, model_state = carry
            grads, model_state, metrics = gradients(model_state, *microbatch_and_key)
            return (jax.tree.map(jnp.add, grad_sum, grads), model_state), metrics

        microbatches = _split_microbatches(batch, grad_accum_steps, microbatch_sharding)
        keys = jax.random.split(rng, grad_accum_steps)
        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (grad_sum, model_state), metrics = jax.lax.scan(accumulate, (zeros, state.model_state), (microbatches, keys),
                                                        unroll=unroll_microbatches)
        grads = jax.tree.map(lambda g: g / grad_accum_steps, grad_sum)
        metrics = jax.tree.map(jnp.mean, metrics)

    if loss_scale is not None:
        grads = loss_scale.unscale(grads)
    updated = state.apply_gradients(grads=grads, model_state=model_state)
    metrics.update(grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
    if loss_scale is None:
        # The loss alone does not show a broken state: XLA:CPU computed finite logits from all-NaN parameters.
        # The gradients are read through their norm (not finite if one of them is not), not once more.
        metrics[NONFINITE] = _nonfinite((metrics["grad_norm"], updated.params, updated.opt_state,
                                         updated.model_state))
        return updated, metrics
    finite = jnp.isfinite(metrics["grad_norm"])  # all_finite(grads), read through their norm

    def keep_unless_finite(new, old):
        # Integer leaves are the optimizer's step counts (its schedule, Adam's bias correction): they advance with
        # ``step``, so the learning rate stays schedule(step). Parameters, moments and statistics stay as they were.
        return new if jnp.issubdtype(new.dtype, jnp.integer) else jnp.where(finite, new, old)

    params, opt_state, model_state = jax.tree.map(
        keep_unless_finite,
        (updated.params, updated.opt_state, updated.model_state), (state.params, state.opt_state, state.model_state),
    )
    # "loss_scale" is the scale this step used; "skipped" averages, over a logging interval, to the skipped fraction.
    metrics.update(loss_scale=loss_scale.scale, skipped=1.0 - finite.astype(jnp.float32))
    new_state = updated.replace(params=params, opt_state=opt_state, model_state=model_state,
                                loss_scale=loss_scale.update(finite))
    metrics[NONFINITE] = _nonfinite((params, opt_state, model_state))  # a skipped gradient is not a broken state
    return new_state, metrics


def _nonfinite(tree) -> jax.Array:
    """1.0 when a float leaf of ``tree`` holds a NaN or Inf (``all_finite``), else 0.0."""
    return 1.0 - all_finite(tree).astype(jnp.float32)


def predict_step(state: TrainState, inputs: jax.Array, *, policy: Policy = FULL_PRECISION) -> jax.Array:
    """The model's outputs on ``inputs`` (inference mode)."""
    return _apply(state, state.params, state.model_state, inputs, policy, train=False)[0]


def outputs_eval_step(outputs: jax.Array, batch: dict[str, jax.Array], *,
                      task: Task) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """``eval_step`` after the model: the sums and per-example outputs of given ``outputs``."""
    return task.eval_sums(outputs, batch), task.eval_examples(outputs, batch)


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, task: Task, policy: Policy = FULL_PRECISION,
              apply_fn: Callable | None = None) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """``task``'s sums over the real examples of a (possibly padded) batch, and its per-example outputs;
    ``apply_fn`` (default the state's): the network evaluation runs, on the same variables (``Task.eval_model``)."""
    if apply_fn is not None:
        state = state.replace(apply_fn=apply_fn)
    return outputs_eval_step(predict_step(state, task.model_input(batch), policy=policy), batch, task=task)
