"""Gradient accumulation (``config.optimizer.grad_accum_steps``) against plain ``jax.grad`` references.

The references are written out here: the mean cross-entropy of the whole batch through ``log_softmax``, and, for
BatchNorm, the microbatches applied one after the other by hand, with the running statistics passed along.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn.data import DatasetSpec
from cnn.errors import ConfigError
from cnn.models import create
from cnn.tasks import make_task
from cnn.train.config import validate
from cnn.train.state import TrainState, create_train_state
from cnn.train.steps import train_step
from configs.default import get_config
from tests.harness.conftest import ROOT

LEARNING_RATE = 0.1
TIGHT = {"rtol": 1e-5, "atol": 1e-6}  # float32 sums of the same terms in another order

TASK = make_task(get_config("runlocal"), DatasetSpec(num_classes=10, image_shape=(8, 8, 1)))  # plain classification


def reference_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def momentum_sgd() -> optax.GradientTransformation:
    """On the first step the momentum trace is the gradient itself: the step's gradient can be read back."""
    return optax.sgd(LEARNING_RATE, momentum=0.9)


def one_step(state, batch, k: int, key=None, unroll: bool = False):
    step = functools.partial(train_step, schedule=optax.constant_schedule(LEARNING_RATE), task=TASK,
                             grad_accum_steps=k, unroll_microbatches=unroll)
    return jax.jit(step)(state, batch, jax.random.PRNGKey(0) if key is None else key)


def trace_of(state):
    return optax.tree_utils.tree_get(state.opt_state, "trace")


def assert_trees_close(actual, expected, **tolerance):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), **tolerance), actual, expected)


def random_state(model: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> TrainState:
    """Parameters drawn by numpy, at the shapes of the model's own: for comparing two computations they serve as
    well, and nothing is compiled (the model's initializers run op by op, each op compiled, seconds on CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: create_train_state(model, momentum_sgd(), input_shape, seed=0))
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(scale=0.2, size=s.shape), s.dtype), shapes.params)
    model_state = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes.model_state)  # positive variances
    return TrainState.create(apply_fn=model.apply, params=params, tx=momentum_sgd(), model_state=model_state)


def random_batch(n: int, shape: tuple[int, ...], seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.normal(size=(n, *shape)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, size=n), jnp.int32)}


@pytest.fixture(scope="module")
def lenet_case():
    """LeNet-5 (no BatchNorm, no dropout), a batch of 16, and the full-batch loss and gradient by ``jax.grad``."""
    model = create("lenet5", num_classes=10)
    batch = random_batch(16, (32, 32, 1))
    state = random_state(model, (1, 32, 32, 1))

    def loss(params):
        return reference_loss(model.apply({"params": params}, batch["image"]), batch["label"])

    value, grads = jax.jit(jax.value_and_grad(loss))(state.params)
    return state, batch, value, grads


@pytest.mark.parametrize(("k", "unroll"), [(1, False), (2, False), (4, False), (4, True)])
def test_accumulated_step_equals_the_full_batch_step(lenet_case, k, unroll):
    state, batch, loss, grads = lenet_case
    new_state, metrics = one_step(state, batch, k, unroll=unroll)
    assert_trees_close(trace_of(new_state), grads, **TIGHT)
    expected_params = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, state.params, grads)
    assert_trees_close(new_state.params, expected_params, **TIGHT)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    norm = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-5)
    assert int(new_state.step) == 1


def test_batchnorm_microbatches_normalize_over_themselves_and_thread_running_stats():
    model = create("small_cnn", num_classes=10, width=4)
    batch, k = random_batch(8, (8, 8, 1), seed=1), 2
    state = random_state(model, (1, 8, 8, 1))
    # By hand: microbatch j holds examples j, j + k, ...; each sees the running statistics the previous one left.
    def loss(params, stats, images, labels):
        logits, updates = model.apply({"params": params, "batch_stats": stats}, images, train=True,
                                      mutable=["batch_stats"])
        return reference_loss(logits, labels), updates["batch_stats"]

    microbatch_grad = jax.jit(jax.grad(loss, has_aux=True))
    stats, grads = state.model_state["batch_stats"], []
    for j in range(k):
        grad, stats = microbatch_grad(state.params, stats, batch["image"][j::k], batch["label"][j::k])
        grads.append(grad)
    new_state, _ = one_step(state, batch, k)
    assert_trees_close(new_state.model_state["batch_stats"], stats, **TIGHT)
    assert_trees_close(trace_of(new_state), jax.tree.map(lambda *g: sum(g) / k, *grads), **TIGHT)


class DropoutProbe(nn.Module):
    """Dropout on an all-ones input, then a zero-initialized dense layer: the gradient of the kernel's row i is
    ``kept_i / (1 - rate) · (softmax - onehot)``, so it shows which inputs each microbatch's mask kept."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Dropout(0.5, deterministic=not train)(x.reshape(len(x), -1))
        return nn.Dense(10, kernel_init=nn.initializers.zeros, use_bias=False)(x)


def test_each_microbatch_draws_its_own_dropout_mask():
    features, k = 256, 2
    state = create_train_state(DropoutProbe(), momentum_sgd(), (1, features), seed=0)
    batch = {"image": jnp.ones((k, features)), "label": jnp.zeros((k,), jnp.int32)}  # two identical microbatches
    row_scale = np.abs(np.asarray(trace_of(one_step(state, batch, k)[0])["Dense_0"]["kernel"][:, 0]))
    # Uniform softmax: each microbatch contributes 2 · 0.9 = 1.8 to a kept row; the mean over the two is 0, 0.9
    # (kept by one mask only) or 1.8 (by both). Equal masks would leave no row at 0.9.
    levels = np.round(row_scale / 0.9).astype(int)
    np.testing.assert_allclose(row_scale, 0.9 * levels, rtol=1e-5)
    assert set(levels.tolist()) == {0, 1, 2}


@pytest.mark.parametrize(
    ("accum", "batch_size", "message"),
    [
        (0, 64, "config.optimizer.grad_accum_steps must be a positive integer, got 0"),
        (-2, 64, "config.optimizer.grad_accum_steps must be a positive integer, got -2"),
        (3, 64, "config.batch_size=64 must be divisible by config.optimizer.grad_accum_steps=3"),
    ],
)
def test_bad_grad_accum_steps_name_the_keys(accum, batch_size, message):
    config = get_config()
    config.optimizer.grad_accum_steps, config.batch_size = accum, batch_size
    with pytest.raises(ConfigError, match=message):
        validate(config)


# Runs with 4 fake CPU devices: the accumulated step of small_cnn (BatchNorm and dropout) on 4 devices, unrolled (as
# the Experiment compiles it on CPU) and as a loop (as elsewhere), against the loop on one device; the collectives
# in the compiled programs; and a microbatch that does not split over the devices.
FOUR_DEVICE_SCRIPT = """
import functools, json, re
import jax, numpy as np
from cnn.data import DatasetSpec
from cnn.data import DatasetSpec
from cnn.errors import ConfigError
from cnn.train.experiment import Durations, Experiment
from cnn.train.steps import train_step
from configs.default import get_config
from tests.harness.test_grad_accum import random_state

config = get_config("runlocal")  # small_cnn: BatchNorm and dropout
config.batch_size, config.optimizer.grad_accum_steps = 16, 4
spec = DatasetSpec(num_classes=10, image_shape=(8, 8, 1))
rng = np.random.default_rng(0)
batch = {"image": rng.normal(size=(16, 8, 8, 1)).astype(np.float32), "label": rng.integers(0, 10, 16).astype(np.int32)}
key = jax.random.PRNGKey(0)
state = random_state(Experiment(config, spec, Durations.of(config, 10)).model, (1, 8, 8, 1))
pick = lambda s: jax.tree.map(np.asarray, {"params": s.params, "stats": s.model_state})
report, single = {"devices": jax.device_count()}, None
for unroll in (True, False):
    exp = Experiment(config, spec, Durations.of(config, 10))
    exp.unroll_microbatches = unroll
    compiled = exp.train_step.lower(state, exp.to_device(batch), key).compile()
    sharded = compiled(state, exp.to_device(batch), jax.device_put(key, exp.replicated))[0]
    if single is None:
        plain = functools.partial(train_step, schedule=exp.schedule, task=exp.task, grad_accum_steps=4)
        single = jax.jit(plain)(*jax.device_put((state, batch, key), jax.devices()[0]))[0]
    diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b) / (1e-5 + np.abs(b)))), pick(sharded), pick(single))
    report[f"unroll={unroll}"] = {
        "worst": max(jax.tree.leaves(diff)),
        "replicated": all(x.sharding.is_fully_replicated for x in jax.tree.leaves(sharded)),
        "collectives": sorted(set(re.findall(r"all-gather|all-to-all|all-reduce|reduce-scatter", compiled.as_text()))),
    }
config.batch_size = 8
try:
    Experiment(config, spec, Durations.of(config, 10))
except ConfigError as e:
    report["error"] = str(e)
print(json.dumps(report))
"""


def test_four_devices_split_each_microbatch_like_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run([sys.executable, "-c", FOUR_DEVICE_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    for unroll in (True, False):
        compiled = report[f"unroll={unroll}"]
        assert compiled["worst"] < 1e-4  # BatchNorm over each 4-example microbatch, spread over devices or not
        assert compiled["replicated"]
        # Each device splits its own slice: gradients and BatchNorm moments are all-reduced, nothing is gathered.
        assert compiled["collectives"] == ["all-reduce"]
    assert report["error"] == ("config.batch_size=8 / config.optimizer.grad_accum_steps=4 = 2 examples per "
                               "microbatch must be divisible by the 4 devices")
