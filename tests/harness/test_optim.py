"""Optimizers, weight decay and schedules of ``cnn/train/optim.py`` against their formulas written out in numpy.

Each optimizer runs a few steps on fixed gradients through ``make_optimizer`` and ``optax.apply_updates`` (what the
trainer does); the reference is the textbook update rule as a float64 loop, with the learning rate ``lr(t)`` of a
schedule that changes every step, so that a rule reading the wrong step shows.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cnn.errors import ConfigError
from cnn.layers import Conv, ConvTranspose, DeformableConv, LocallyConnected, SeparableConv, TiledConv, WeightedPool
from cnn.train.optim import make_optimizer, make_schedule

STEPS = 4
B1, B2, EPS, MOMENTUM = 0.8, 0.95, 1e-3, 0.7


def lr(t: int) -> float:
    """The schedule the optimizers get: a different learning rate at every step ``t = 0, 1, ...``."""
    return 0.1 / (1 + t)


def _config(optimizer: str = "sgd", weight_decay: float = 0.0, grad_clip_norm: float = 0.0, **schedule):
    return ml_collections.ConfigDict({
        "optimizer": {"name": optimizer, "learning_rate": 0.5, "momentum": MOMENTUM, "b1": B1, "b2": B2, "eps": EPS,
                      "weight_decay": weight_decay, "grad_clip_norm": grad_clip_norm},
        "schedule": {"name": "constant", "warmup_steps": 0, "warmup_epochs": 0.0, "end_factor": 0.0,
                     "boundaries": (0.5, 0.75), "decay_factor": 0.1, **schedule},
    })


def _problem():
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=(2,))}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(STEPS)]
    return params, grads


def _run(config) -> list[dict[str, np.ndarray]]:
    """Parameters after each of ``STEPS`` updates through the project's optimizer."""
    params, grads = _problem()
    tx = make_optimizer(config, lambda count: 0.1 / (1 + count))
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)
    state, history = tx.init(params), []
    for g in grads:
        updates, state = tx.update(jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), g), state, params)
        params = optax.apply_updates(params, updates)
        history.append(jax.tree.map(np.asarray, params))
    return history


def _reference(rule, weight_decay: float = 0.0, clip: float = 0.0, decoupled: bool = False):
    """Parameters after each step of ``rule(name, g, t, state) -> direction`` (``p -= lr(t) · direction``).

    Clipping scales the whole gradient by ``min(1, clip / ||g||)``; coupled L2 decay adds ``wd · p`` to the kernel's
    gradient before the rule, decoupled decay adds ``wd · p`` to the kernel's direction after it. Biases are never
    decayed.
    """
    params, grads = _problem()
    state: dict = {}
    history = []
    for t, g in enumerate(grads):
        if clip:
            norm = math.sqrt(sum(float(np.sum(v**2)) for v in g.values()))
            g = {k: v * min(1.0, clip / norm) for k, v in g.items()}
        new = {}
        for name, p in params.items():
            grad = g[name] + (weight_decay * p if name == "kernel" and not decoupled else 0)
            direction = rule(name, grad, t, state)
            if name == "kernel" and decoupled:
                direction = direction + weight_decay * p
            new[name] = p - lr(t) * direction
        params = new
        history.append(params)
    return history


def sgd(name, g, t, state):
    return g


def momentum(name, g, t, state):
    """Heavy ball: ``v <- μ v + g``, step along ``v``."""
    state[name] = MOMENTUM * state.get(name, 0) + g
    return state[name]


def nesterov(name, g, t, state):
    """Nesterov in the Sutskever form: ``v <- μ v + g``, step along ``g + μ v``."""
    state[name] = MOMENTUM * state.get(name, 0) + g
    return g + MOMENTUM * state[name]


def adam(name, g, t, state):
    """Kingma & Ba: moments ``m <- β1 m + (1 - β1) g``, ``v <- β2 v + (1 - β2) g²``, bias-corrected at step t + 1."""
    m, v = state.get(name, (0, 0))
    m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g**2
    state[name] = (m, v)
    m_hat, v_hat = m / (1 - B1 ** (t + 1)), v / (1 - B2 ** (t + 1))
    return m_hat / (np.sqrt(v_hat) + EPS)


@pytest.mark.parametrize(
    ("config", "rule", "reference_kwargs"),
    [
        (_config("sgd"), sgd, {}),
        (_config("momentum"), momentum, {}),
        (_config("nesterov"), nesterov, {}),
        (_config("adam"), adam, {}),
        (_config("adamw", weight_decay=0.3), adam, {"weight_decay": 0.3, "decoupled": True}),
        (_config("momentum", weight_decay=0.3), momentum, {"weight_decay": 0.3}),
        (_config("adam", weight_decay=0.3), adam, {"weight_decay": 0.3}),
        (_config("sgd", grad_clip_norm=0.5), sgd, {"clip": 0.5}),
        (_config("momentum", weight_decay=0.3, grad_clip_norm=0.5), momentum, {"weight_decay": 0.3, "clip": 0.5}),
    ],
    ids=["sgd", "momentum", "nesterov", "adam", "adamw", "momentum+l2", "adam+l2", "sgd+clip", "momentum+l2+clip"],
)
def test_update_follows_the_formula(config, rule, reference_kwargs):
    expected = _reference(rule, **reference_kwargs)
    for step, (got, want) in enumerate(zip(_run(config), expected, strict=True)):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=1e-6, err_msg=f"{name} at step {step}")


def test_clipping_leaves_small_gradients_alone():
    """A clip norm above every gradient's norm is no clipping: plain SGD."""
    expected = _reference(sgd)
    for got, want in zip(_run(_config("sgd", grad_clip_norm=100.0)), expected, strict=True):
        np.testing.assert_allclose(got["kernel"], want["kernel"], rtol=2e-5)


def _schedule_values(steps: int, total: int, steps_per_epoch: int = 10, **schedule) -> np.ndarray:
    config = _config(**schedule)
    fn = make_schedule(config, total_steps=total, steps_per_epoch=steps_per_epoch)
    return np.array([float(fn(t)) for t in range(steps)])


PEAK, TOTAL, WARMUP = 0.5, 40, 8


def _warmup(t: int) -> float:
    """Linear warmup from 0 at step 0 to the peak at step ``WARMUP``."""
    return PEAK * t / WARMUP


def test_constant_schedule():
    np.testing.assert_allclose(_schedule_values(TOTAL + 5, TOTAL), PEAK)
    expected = [_warmup(t) if t < WARMUP else PEAK for t in range(TOTAL + 5)]
    np.testing.assert_allclose(_schedule_values(TOTAL + 5, TOTAL, warmup_steps=WARMUP), expected, rtol=1e-6)


def test_warmup_epochs_count_in_steps_per_epoch():
    """``warmup_epochs = 0.5`` at 16 steps per epoch is a warmup of 8 steps."""
    expected = [_warmup(t) if t < WARMUP else PEAK for t in range(TOTAL)]
    got = _schedule_values(TOTAL, TOTAL, steps_per_epoch=16, warmup_epochs=0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("end_factor", [0.0, 0.1])
def test_cosine_schedule(end_factor):
    """After warmup: ``peak · (a + (1 - a) · (1 + cos(π (t - w) / (T - w))) / 2)``, ``a`` the end factor."""
    def cosine(t):
        progress = min(t - WARMUP, TOTAL - WARMUP) / (TOTAL - WARMUP)
        return PEAK * (end_factor + (1 - end_factor) * 0.5 * (1 + math.cos(math.pi * progress)))

    expected = [_warmup(t) if t < WARMUP else cosine(t) for t in range(TOTAL + 5)]
    got = _schedule_values(TOTAL + 5, TOTAL, name="cosine", warmup_steps=WARMUP, end_factor=end_factor)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_warmup_schedule_decays_linearly_to_the_end_factor():
    """After warmup: linear from the peak to ``end_factor · peak`` at the last step, constant beyond."""
    def decay(t):
        return PEAK + (0.1 * PEAK - PEAK) * min(t - WARMUP, TOTAL - WARMUP) / (TOTAL - WARMUP)

    expected = [_warmup(t) if t < WARMUP else decay(t) for t in range(TOTAL + 5)]
    got = _schedule_values(TOTAL + 5, TOTAL, name="warmup", warmup_steps=WARMUP, end_factor=0.1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_step_schedule_with_warmup_decays_at_fractions_of_all_steps():
    """Boundaries are fractions of the whole run (warmup included): ×0.1 from step 20 and again from step 30."""
    expected = [_warmup(t) if t < WARMUP else PEAK * 0.1 ** ((t >= 20) + (t >= 30)) for t in range(TOTAL + 5)]
    got = _schedule_values(TOTAL + 5, TOTAL, name="step", warmup_steps=WARMUP, boundaries=(0.5, 0.75))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


class EveryLayer(nn.Module):
    """One of every parametrized layer of ``cnn.layers``, and the flax layers the zoo uses (Dense, BatchNorm)."""

    @nn.compact
    def __call__(self, x):
        x = Conv(4, 3, name="conv")(x)
        x = nn.BatchNorm(use_running_average=False, name="norm")(x)
        x = DeformableConv(4, 3, name="deformable")(x)
        x = SeparableConv(4, 3, name="separable")(x)
        x = LocallyConnected(4, 3, name="local")(x)
        x = TiledConv(4, 3, tile=2, name="tiled")(x)
        x = WeightedPool(3, padding="SAME", learned=True, name="pool")(x)
        x = ConvTranspose(4, 3, name="transpose")(x)
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


# Written out by hand from the layers' docstrings: the weights that multiply inputs are decayed.
DECAYED = {
    ("conv", "kernel"), ("deformable", "kernel"), ("deformable", "offset_conv", "kernel"),
    ("separable", "depthwise"), ("separable", "pointwise"), ("local", "kernel"), ("tiled", "kernel"),
    ("pool", "weights"), ("transpose", "kernel"), ("head", "kernel"),
}
NOT_DECAYED = {
    ("conv", "bias"), ("norm", "scale"), ("norm", "bias"), ("deformable", "bias"),
    ("deformable", "offset_conv", "bias"), ("separable", "bias"), ("local", "bias"), ("tiled", "bias"),
    ("transpose", "bias"), ("head", "bias"),
}


def _every_layer_params() -> dict:
    shapes = jax.eval_shape(EveryLayer().init, jax.random.key(0), jnp.ones((1, 6, 6, 2)))["params"]
    return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes)


def _paths(tree) -> dict[tuple[str, ...], jax.Array]:
    return {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_reaches_exactly_the_weights_of_every_layer(name):
    """With zero gradients SGD's update is ``-lr · wd · p`` where decayed, AdamW's too (its Adam part is 0), else 0."""
    params = _every_layer_params()
    assert set(_paths(params)) == DECAYED | NOT_DECAYED
    assert _paths(params)[("local", "bias")].ndim == 3  # (6, 6, 4): a bias of more than one axis
    tx = make_optimizer(_config(name, weight_decay=0.1), lambda count: 0.5)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    for path, update in _paths(updates).items():
        np.testing.assert_allclose(update, -0.05 if path in DECAYED else 0.0, atol=1e-7, err_msg=str(path))


def test_parameter_of_unknown_role_is_refused():
    params = {"layer": {"kernel": jnp.ones((2, 2)), "alpha": jnp.ones((3,))}}
    tx = make_optimizer(_config("sgd", weight_decay=0.1), lambda count: 0.5)
    with pytest.raises(ConfigError, match=r"\['layer'\]\['alpha'\]"):
        tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)


def _layers_run(config) -> dict[str, dict[str, np.ndarray]]:
    """The parameters after ``STEPS`` updates of three layers that start equal and get equal gradients: ``conv1``,
    ``conv10`` (whose name starts like ``conv1``'s) and ``conv2``."""
    params, grads = _problem()
    names = ("conv1", "conv10", "conv2")
    tree = {name: jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params) for name in names}
    tx = make_optimizer(config, lambda count: 0.1 / (1 + count))
    state = tx.init(tree)
    for g in grads:
        g = {name: jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), g) for name in names}
        updates, state = tx.update(g, state, tree)
        tree = optax.apply_updates(tree, updates)
    return jax.tree.map(np.asarray, tree)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_weight_decay_paths_decay_the_first_layer_only(optimizer):
    """Kipf & Welling's decay of ``conv1`` only: its kernel follows the decayed formula, ``conv10``'s and
    ``conv2``'s the undecayed one (the prefix matches whole path components), biases never decay."""
    config = _config(optimizer, weight_decay=0.3)
    config.optimizer.weight_decay_paths = ("conv1",)
    got = _layers_run(config)
    decayed = _reference(adam, weight_decay=0.3, decoupled=optimizer == "adamw")[-1]
    plain = _reference(adam)[-1]
    np.testing.assert_allclose(got["conv1"]["kernel"], decayed["kernel"], rtol=2e-5, atol=1e-6)
    for name in ("conv10", "conv2"):
        np.testing.assert_allclose(got[name]["kernel"], plain["kernel"], rtol=2e-5, atol=1e-6, err_msg=name)
    for name in ("conv1", "conv10", "conv2"):
        np.testing.assert_allclose(got[name]["bias"], plain["bias"], rtol=2e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(decayed["kernel"], plain["kernel"], rtol=1e-3)  # the decay shows at this size


@pytest.mark.parametrize(("paths", "message"), [
    (("conv3",), r"weight_decay_paths: \['conv3'\] name no weight of the model; its weights are \['conv1/kernel'"),
    ("conv1", r"weight_decay_paths must be a tuple of parameter path prefixes like \('conv1',\), got the string"),
])
def test_weight_decay_paths_that_name_nothing_are_refused(paths, message):
    config = _config("adam", weight_decay=0.3)
    config.optimizer.weight_decay_paths = paths
    with pytest.raises(ConfigError, match=message):
        _layers_run(config)
