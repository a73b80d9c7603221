"""Mixed precision: the compute-dtype policy (``config.dtype``) and dynamic loss scaling for float16.

**Policy.** Parameters are stored, updated and checkpointed in float32. Inside a step they are cast to the compute
dtype together with the images, so every convolution, dense layer and activation runs in that dtype; the logits
are cast back to float32 before the loss. The cast is differentiable, so the gradients arrive in float32, the
dtype of the parameters. Flax's ``BatchNorm`` reduces its batch mean and variance in float32 whatever its input
(``force_float32_reductions``), so the running statistics in ``batch_stats`` stay float32 too; only its output is
cast back to the compute dtype.

**Loss scaling.** float16 has 5 exponent bits: magnitudes below 2**-24 flush to zero, so small gradients vanish
in the backward pass. The loss is multiplied by a scale ``S`` before differentiation, which shifts every
backpropagated value up by ``S``, and the float32 gradients are divided by ``S`` afterwards:

    g = grad(S · loss) / S

Too large an ``S`` overflows (inf, or nan from inf - inf), so ``S`` is adapted, starting at ``INITIAL_SCALE``:

    gradients all finite:  n ← n + 1;  if n = period:  S ← 2·S, n ← 0          (apply the update)
    any non-finite:        S ← max(S / 2, 1), n ← 0                             (skip the update)

``n`` counts finite steps since the scale last changed. bfloat16 has float32's 8 exponent bits and needs no scale.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from cnn.errors import ConfigError

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Start high (PyTorch's GradScaler starts at 2**16): a scale that is too large costs one skipped step per
# halving, so the right scale is found in a few steps, while one that is too small loses small gradients silently.
INITIAL_SCALE = 2.0**15
# Finite steps before the scale doubles, as in PyTorch's GradScaler and NVIDIA's apex: each doubling probes for
# headroom and may cost one skipped step, negligible once per 2000; a halving is recovered from within an epoch.
GROWTH_INTERVAL = 2000


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which dtype a step computes in; float32 storage is implied."""

    compute_dtype: Any = jnp.float32

    @property
    def loss_scaling(self) -> bool:
        """float16 needs a dynamic loss scale; float32 and bfloat16 do not."""
        return jnp.dtype(self.compute_dtype) == jnp.float16

    def cast_to_compute(self, tree: Any) -> Any:
        """Every floating-point leaf in the compute dtype (integer leaves, e.g. labels, untouched)."""
        return jax.tree.map(lambda x: x.astype(self.compute_dtype) if _is_float(x) else x, tree)

    @staticmethod
    def cast_to_output(x: jax.Array) -> jax.Array:
        """Logits back to float32, so the softmax and the loss are computed in full precision."""
        return x.astype(jnp.float32)


def policy_of(dtype: str) -> Policy:
    """The policy of ``config.dtype``."""
    if dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"config.dtype must be one of {list(COMPUTE_DTYPES)}, got {dtype!r}")
    return Policy(COMPUTE_DTYPES[dtype])


def all_finite(tree: Any) -> jax.Array:
    """A scalar bool: whether every element of every floating-point leaf is finite.

    Read as one float32 sum of all of them: a NaN or an infinity makes it NaN or infinite. So does a sum beyond
    float32's range (about 3.4e38: elements near 1e31 in a tree of 1e7), a state as broken. One read of each leaf,
    at memory speed; ``isfinite`` then ``all`` took two passes in XLA:CPU (2.2x as long over 4 x 33M values).
    """
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    return jnp.isfinite(sum((jnp.sum(leaf, dtype=jnp.float32) for leaf in leaves), jnp.float32(0)))


class LossScale(struct.PyTreeNode):
    """Dynamic loss scale, part of the train state (so checkpointed and restored with it); see the module doc."""

    scale: jax.Array  # float32 scalar S
    good_steps: jax.Array  # int32 scalar n: finite steps since the scale last changed
    period: int = struct.field(pytree_node=False, default=GROWTH_INTERVAL)

    @classmethod
    def create(cls, initial: float = INITIAL_SCALE, period: int = GROWTH_INTERVAL) -> LossScale:
        return cls(scale=jnp.asarray(initial, jnp.float32), good_steps=jnp.zeros((), jnp.int32), period=period)

    def scale_loss(self, loss: jax.Array) -> jax.Array:
        return loss * self.scale

    def unscale(self, grads: Any) -> Any:
        return jax.tree.map(lambda g: g / self.scale.astype(g.dtype), grads)

    def update(self, finite: jax.Array) -> LossScale:
        """The scale after a step whose unscaled gradients were ``finite`` (a scalar bool)."""
        good_steps = jnp.where(finite, self.good_steps + 1, 0)
        grow = good_steps >= self.period
        scale = jnp.where(finite, jnp.where(grow, 2 * self.scale, self.scale), jnp.maximum(self.scale / 2, 1.0))
        return self.replace(scale=scale, good_steps=jnp.where(grow, 0, good_steps).astype(jnp.int32))
