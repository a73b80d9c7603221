"""``cnn.layers.BatchNorm`` against flax's ``nn.BatchNorm`` (an independent implementation of the same formula) and a
numpy transcription of it: values, running statistics, gradients, dtypes, and what reverse mode keeps."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

from cnn.layers import BatchNorm
from tests.reference import assert_close


def both(**kwargs):
    return BatchNorm(**kwargs), nn.BatchNorm(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"momentum": 0.9, "epsilon": 1e-5},
    {"momentum": 0.99, "epsilon": 1e-3},  # EfficientNet's (TF)
    {"momentum": 0.9, "epsilon": 1e-5, "use_scale": False, "use_bias": False},  # U-Net's
])
@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (3, 2, 4, 4, 5), (6, 7)])
def test_equals_flax_batch_norm(kwargs, shape):
    """Same variables, outputs and running statistics in training and evaluation, same gradients (input, scale,
    bias); and the training output is numpy's (x − mean) / sqrt(var + ε) · γ + β over all axes but the last."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(2.0, 3.0, size=shape), jnp.float32)
    ours, theirs = both(**kwargs)
    variables = theirs.init(jax.random.PRNGKey(0), x, use_running_average=False)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(0), x, use_running_average=False)) == jax.tree.map(
        jnp.shape, variables)
    if "params" in variables:  # not the initial values: the affine part is exercised
        variables = {**variables, "params": {"scale": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32),
                                             "bias": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)}}
    (y, stats), (y_ref, stats_ref) = (
        m.apply(variables, x, use_running_average=False, mutable=["batch_stats"]) for m in (ours, theirs))
    assert_close(y, y_ref, rtol=1e-4)
    for got, want in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_ref), strict=True):
        assert_close(got, want)
    x64 = np.asarray(x, np.float64).reshape(-1, shape[-1])
    params = variables.get("params", {})
    gamma, beta = (np.asarray(params.get(k, d), np.float64) for k, d in (("scale", 1.0), ("bias", 0.0)))
    expected = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + kwargs["epsilon"]) * gamma + beta
    np.testing.assert_allclose(np.asarray(y).reshape(-1, shape[-1]), expected, rtol=1e-4, atol=1e-4)
    evaluated = [m.apply({**variables, **stats}, x, use_running_average=True) for m in (ours, theirs)]
    assert_close(*evaluated, rtol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)

    def grads(module):
        def loss(params, x):
            return jnp.vdot(module.apply({**variables, "params": params}, x, use_running_average=False,
                                         mutable=["batch_stats"])[0], cotangent)
        return jax.grad(loss, argnums=(0, 1))(params, x)

    for got, want in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(theirs)), strict=True):
        assert_close(got, want, rtol=1e-3)


def test_low_precision_input_keeps_float32_statistics():
    """A bfloat16 input (parameters cast too, as the mixed-precision policy does): float32 statistics, a bfloat16
    output, as flax's."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 4, 4, 3)), jnp.bfloat16)
    ours, theirs = both(momentum=0.9)
    variables = theirs.init(jax.random.PRNGKey(0), x, use_running_average=False)
    variables = {**variables, "params": jax.tree.map(lambda p: p.astype(jnp.bfloat16), variables["params"])}
    (y, stats), (y_ref, _stats_ref) = (
        m.apply(variables, x, use_running_average=False, mutable=["batch_stats"]) for m in (ours, theirs))
    assert y.dtype == y_ref.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves(stats)} == {jnp.dtype(jnp.float32)}
    assert_close(y.astype(jnp.float32), y_ref.astype(jnp.float32), rtol=2e-2)


def activation_sized_residuals(module, x) -> int:
    """How many arrays of ``x``'s size reverse mode keeps for the backward pass (``print_saved_residuals``)."""
    variables = module.init(jax.random.PRNGKey(0), x, use_running_average=False)

    def f(x):
        return module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])[0]

    printed = io.StringIO()
    with redirect_stdout(printed):
        print_saved_residuals(f, x)
    return sum(f"[{','.join(map(str, x.shape))}]" in line for line in printed.getvalue().splitlines())


def test_reverse_mode_keeps_only_the_input():
    """The point of the affine form: the backward pass keeps ``x`` and not also ``x − μ`` (flax keeps both)."""
    x = jnp.ones((4, 6, 6, 8))
    assert activation_sized_residuals(BatchNorm(), x) == 1
    assert activation_sized_residuals(nn.BatchNorm(), x) == 2
