"""Mixed precision (``config.dtype``): float32 storage, low-precision compute, the float16 loss scale.

References: the scale's update rule traced by hand; the dtypes XLA is asked to compute in (the step's jaxpr); the
float32 run of the same steps; the checkpoint's own metadata.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from cnn.data import DatasetSpec, TrainStream, make_source
from cnn.errors import ConfigError
from cnn.models import create
from cnn.tasks import make_task
from cnn.train.checkpoint import Checkpoints
from cnn.train.config import validate
from cnn.train.experiment import Durations, Experiment
from cnn.train.loop import train_and_evaluate
from cnn.train.precision import LossScale, all_finite, policy_of
from cnn.train.state import abstract_train_state
from cnn.train.steps import eval_step, train_step
from configs.default import get_config
from tests.harness.conftest import ROOT, cli_env, train_args
from tests.harness.test_reliability import assert_trees_equal

LOW_PRECISION = ["bfloat16", "float16"]

TASK = make_task(get_config("runlocal"), DatasetSpec(num_classes=10, image_shape=(8, 8, 1)))  # plain classification


def test_loss_scale_update_rule_by_hand():
    scale = LossScale.create(initial=8.0, period=3)
    update = jax.jit(lambda s, finite: s.update(finite))
    #          finite:  T  T  T   T   F  T  F  F  F  F
    expected_scale = [8, 8, 16, 16, 8, 8, 4, 2, 1, 1]  # doubles after 3 finite steps; halves, but not below 1
    expected_count = [1, 2, 0, 1, 0, 1, 0, 0, 0, 0]
    for finite, want_scale, want_count in zip([1, 1, 1, 1, 0, 1, 0, 0, 0, 0], expected_scale, expected_count,
                                              strict=True):
        scale = update(scale, jnp.asarray(bool(finite)))
        assert (float(scale.scale), int(scale.good_steps)) == (want_scale, want_count)
    assert scale.scale.dtype == jnp.float32 and scale.good_steps.dtype == jnp.int32


def test_scaling_and_unscaling_and_the_finite_check():
    scale = LossScale.create(initial=1024.0)
    assert float(scale.scale_loss(jnp.float32(0.5))) == 512.0
    np.testing.assert_array_equal(scale.unscale({"w": jnp.array([1024.0, -3072.0])})["w"], [1.0, -3.0])
    grads = {"a": jnp.ones(3), "b": {"c": jnp.zeros((2, 2))}}
    assert bool(all_finite(grads))
    for bad in (jnp.inf, -jnp.inf, jnp.nan):
        assert not bool(all_finite({**grads, "b": {"c": jnp.zeros((2, 2)).at[1, 0].set(bad)}}))
        assert not bool(all_finite({**grads, "h": jnp.zeros(5, jnp.bfloat16).at[4].set(bad)}))
    assert bool(all_finite({**grads, "step": jnp.int32(2**31 - 1), "big": jnp.full(3, 3e38, jnp.float32)[:1]}))
    assert not bool(all_finite({"a": jnp.full(2, 3e38), "b": jnp.full(1, -3e38)}))  # an overflowing sum, as documented


def test_policy_casts_floats_only():
    policy = policy_of("bfloat16")
    cast = policy.cast_to_compute({"x": jnp.ones(2), "label": jnp.ones(2, jnp.int32)})
    assert (cast["x"].dtype, cast["label"].dtype) == (jnp.bfloat16, jnp.int32)
    assert policy.cast_to_output(cast["x"]).dtype == jnp.float32
    assert [policy_of(name).loss_scaling for name in ("float32", "bfloat16", "float16")] == [False, False, True]


@pytest.mark.parametrize("dtype", ["float64", "half", "fp16"])
def test_bad_dtype_names_the_key(dtype):
    config = get_config()
    config.dtype = dtype
    with pytest.raises(ConfigError, match=r"config.dtype must be one of \['float32', 'bfloat16', 'float16'\]"):
        validate(config)


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in it (jit, scan, custom derivatives)."""
    for equation in jaxpr.eqns:
        yield equation
        for param in equation.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("accum", [1, 2])
def test_steps_compute_in_the_compute_dtype_and_keep_float32_state(dtype, accum):
    policy = policy_of(dtype)
    model = create("small_cnn", num_classes=10, width=4)
    loss_scale = LossScale.create() if policy.loss_scaling else None
    state = abstract_train_state(model, optax.sgd(0.1), (1, 8, 8, 1), seed=0, loss_scale=loss_scale)  # shapes only
    batch = {"image": jnp.ones((4, 8, 8, 1)), "label": jnp.zeros(4, jnp.int32), "mask": jnp.ones(4)}
    step = functools.partial(train_step, schedule=optax.constant_schedule(0.1), task=TASK, policy=policy,
                             grad_accum_steps=accum)
    jaxpr = jax.make_jaxpr(step)(state, batch, jax.random.PRNGKey(0))
    products = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name in ("conv_general_dilated", "dot_general")]
    assert len(products) >= 3 * 4 + 2  # forward, input and weight gradients of the 4 convolutions; the dense layer
    assert {str(v.aval.dtype) for e in products for v in (*e.invars, *e.outvars)} == {dtype}
    evaluate = functools.partial(eval_step, task=TASK, policy=policy)
    eval_products = [e for e in _equations(jax.make_jaxpr(evaluate)(state, batch).jaxpr)
                     if e.primitive.name in ("conv_general_dilated", "dot_general")]
    assert len(eval_products) == 5 and {str(v.aval.dtype) for e in eval_products for v in e.invars} == {dtype}
    new_state = jax.eval_shape(step, state, batch, jax.random.PRNGKey(0))[0]
    assert {leaf.dtype for leaf in jax.tree.leaves((new_state.params, new_state.model_state))} == {
        jnp.dtype(jnp.float32)}


@pytest.fixture(scope="module")
def experiment(tfds_dir):
    """``experiment(dtype) -> (Experiment, TrainStream)``: runlocal on digits, built and compiled once per dtype."""

    @functools.cache
    def build(dtype: str) -> tuple[Experiment, TrainStream]:
        config = get_config("runlocal")
        config.dataset.data_dir, config.dtype = tfds_dir, dtype
        source = make_source(config.dataset)
        exp = Experiment(config, source.spec, Durations.of(config, steps_per_epoch=22))
        return exp, TrainStream(source.load("train"), exp.train_preprocess, config.batch_size, config.seed)

    return build


def _train(exp: Experiment, stream: TrainStream, steps: int = 12):
    state, key, losses = exp.init_state(), jax.random.PRNGKey(exp.config.seed), []
    for step in range(steps):
        state, metrics = exp.train_step(state, exp.to_device(stream.batch(step)), key)
        losses.append(float(metrics["loss"]))
    return state, np.asarray(losses), metrics


def _float_leaves(tree) -> list[jax.Array]:
    return [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]


# float16 trains through the CLI in CI too (test_float16_cli_run_and_a_bad_dtype); its run beside float32: -m slow.
@pytest.mark.parametrize("dtype", ["bfloat16", pytest.param("float16", marks=pytest.mark.slow)])
def test_low_precision_training_tracks_float32_on_digits(experiment, dtype):
    reference, reference_losses, _ = _train(*experiment("float32"))
    state, losses, metrics = _train(*experiment(dtype))
    # 8 significant bits (bfloat16) give about 2-3 decimal digits: the losses agree to that, step by step.
    np.testing.assert_allclose(losses, reference_losses, atol=0.01)
    assert {leaf.dtype for leaf in _float_leaves(state)} == {jnp.dtype(jnp.float32)}
    # Running statistics reduced in float32 from low-precision activations: close to the float32 run's.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0.05, atol=0.01),
                 state.model_state["batch_stats"], reference.model_state["batch_stats"])
    if dtype == "float16":
        assert (float(metrics["loss_scale"]), float(metrics["skipped"])) == (2.0**15, 0.0)
        assert int(state.loss_scale.good_steps) == 12


def test_float16_overflow_skips_the_update_and_halves_the_scale(experiment):
    exp, stream = experiment("float16")
    key, batch = jax.random.PRNGKey(0), exp.to_device(stream.batch(0))
    # The injected overflow: a scale of 2**100 makes the backpropagated float16 values infinite.
    state = exp.init_state().replace(loss_scale=LossScale.create(initial=2.0**100))
    skipped, metrics = exp.train_step(state, batch, key)
    assert_trees_equal((skipped.params, _float_leaves(skipped.opt_state), skipped.model_state),
                       (state.params, _float_leaves(state.opt_state), state.model_state))
    assert (int(skipped.step), float(skipped.loss_scale.scale), int(skipped.loss_scale.good_steps)) == (1, 2.0**99, 0)
    assert float(metrics["skipped"]) == 1.0 and float(metrics["loss_scale"]) == 2.0**100
    assert np.isfinite(float(metrics["loss"]))  # only the gradients overflowed: the loop goes on
    # The optimizer's step count advanced with the step: the learning rate of step 1 is schedule(1).
    assert int(optax.tree_utils.tree_get(skipped.opt_state, "count")) == 1
    applied, metrics = exp.train_step(skipped.replace(loss_scale=LossScale.create()), batch, key)
    assert float(metrics["skipped"]) == 0.0 and int(applied.loss_scale.good_steps) == 1
    assert not np.array_equal(applied.params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"])


def test_float16_loss_scale_is_checkpointed_and_resumes_exactly(experiment, tmp_path):
    exp, stream = experiment("float16")
    key, batch = jax.random.PRNGKey(0), exp.to_device(stream.batch(5))
    state = exp.init_state().replace(loss_scale=LossScale(scale=jnp.float32(1024.0), good_steps=jnp.int32(7)))
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"), best_metric=None)
    checkpoints.save(5, state)
    checkpoints.wait()
    restored, step = checkpoints.restore_latest(exp.abstract_state())
    checkpoints.close()
    assert step == 5 and (float(restored.loss_scale.scale), int(restored.loss_scale.good_steps)) == (1024.0, 7)
    assert_trees_equal(exp.train_step(restored, batch, key), exp.train_step(state, batch, key))


def _checkpoint_dtypes(workdir: Path, step: int) -> dict[str, str]:
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(workdir / "checkpoints" / str(step) / "default")
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): str(leaf.dtype) for path, leaf in leaves}


def _assert_float32_checkpoint(workdir: Path, step: int) -> dict[str, str]:
    dtypes = _checkpoint_dtypes(workdir, step)
    stored = {key: kind for key, kind in dtypes.items() if "'params'" in key or "'batch_stats'" in key}
    assert stored and set(stored.values()) == {"float32"}
    return dtypes


def test_bfloat16_run_with_accumulation_checkpoints_float32(tmp_path, tfds_dir):
    config = get_config("runlocal")  # in process: what train.py adds, flag parsing, is the float16 test's
    config.dataset.data_dir, config.dtype, config.optimizer.grad_accum_steps = tfds_dir, "bfloat16", 2
    final = train_and_evaluate(config, str(tmp_path))
    assert final["count"] == 360 and np.isfinite(final["loss"])
    _assert_float32_checkpoint(tmp_path, 12)


def test_float16_cli_run_and_a_bad_dtype(tmp_path, tfds_dir):
    runs = {"float16": "--config.dtype=float16", "bad": "--config.dtype=float64"}
    processes = {name: subprocess.Popen([sys.executable, str(ROOT / "train.py"), *train_args(tmp_path / name, flag)],
                                        cwd=ROOT, env=cli_env(tfds_dir), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for name, flag in runs.items()}  # at once: the bad one fails before JAX starts
    stderr = {name: process.communicate(timeout=300)[1] for name, process in processes.items()}
    assert {name: process.returncode for name, process in processes.items()} == {"float16": 0, "bad": 2}, stderr

    dtypes = _assert_float32_checkpoint(tmp_path / "float16", 12)
    assert (dtypes["['loss_scale']['scale']"], dtypes["['loss_scale']['good_steps']"]) == ("float32", "int32")
    records = [json.loads(line) for line in (tmp_path / "float16" / "metrics.jsonl").read_text().splitlines()]
    assert {(r["loss_scale"], r["skipped"]) for r in records if r["split"] == "train"} == {(2.0**15, 0.0)}

    errors = [line for line in stderr["bad"].splitlines() if line.startswith("error:")]
    assert "Traceback" not in stderr["bad"]
    assert errors == ["error: config.dtype must be one of ['float32', 'bfloat16', 'float16'], got 'float64'"]
