"""Optimizers and learning-rate schedules by name (``config.optimizer.name``, ``config.schedule.name``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import ml_collections
import optax

from cnn.errors import ConfigError
from cnn.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")

OPTIMIZERS.register("sgd", lambda lr, c: optax.sgd(lr))
OPTIMIZERS.register("momentum", lambda lr, c: optax.sgd(lr, momentum=c.momentum))
OPTIMIZERS.register("nesterov", lambda lr, c: optax.sgd(lr, momentum=c.momentum, nesterov=True))
OPTIMIZERS.register("adam", lambda lr, c: optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps))
OPTIMIZERS.register(
    "adamw", lambda lr, c: optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay,
                                       mask=decay_mask_of(c))
)


# Parameters by what they are, the last key of their path (every layer of cnn/layers, flax's Dense and norms): the
# weights that multiply an input are decayed; biases and normalization scales are not (Goodfellow et al. 7.1). Not by
# shape: the biases of LocallyConnected (*out_spatial, features) and TiledConv (*tile, features) have several axes.
DECAYED_PARAMS = frozenset({"kernel", "depthwise", "pointwise", "weights"})
UNDECAYED_PARAMS = frozenset({"bias", "scale"})


def decay_mask(params, paths: Sequence[str] = ()):
    """True for the parameters weight decay applies to (``DECAYED_PARAMS``); a ConfigError for an unknown name.

    ``paths`` (``config.optimizer.weight_decay_paths``) narrows it to the weights under these path prefixes, matched
    at a ``/`` boundary of the parameter path (``"conv1"`` is ``conv1/kernel``, not ``conv10/kernel``): Kipf &
    Welling decay the first layer only. Empty: every weight. A prefix that names no weight is a ConfigError.
    """
    unused = set(paths)

    def decayed(path, _) -> bool:
        name = getattr(path[-1], "key", None)
        if name in DECAYED_PARAMS:
            if not paths:
                return True
            text = _path_text(path)
            chosen = {prefix for prefix in paths if text == prefix or text.startswith(prefix.rstrip("/") + "/")}
            unused.difference_update(chosen)
            return bool(chosen)
        if name in UNDECAYED_PARAMS:
            return False
        raise ConfigError(
            f"weight decay: parameter {jax.tree_util.keystr(path)} is neither a weight {sorted(DECAYED_PARAMS)} nor "
            f"a bias or scale {sorted(UNDECAYED_PARAMS)}; name it so, or add its name to cnn/train/optim.py"
        )

    mask = jax.tree_util.tree_map_with_path(decayed, params)
    if unused:
        raise ConfigError(f"config.optimizer.weight_decay_paths: {sorted(unused)} name no weight of the model; its "
                          f"weights are {_weight_paths(params)}")
    return mask


def _path_text(path) -> str:
    return "/".join(str(getattr(key, "key", key)) for key in path)


def _weight_paths(params) -> list[str]:
    paths = [_path_text(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return [path for path in paths if path.rsplit("/", 1)[-1] in DECAYED_PARAMS][:8]


def decay_mask_of(c: ml_collections.ConfigDict):
    """The decay mask ``config.optimizer`` (``c``) asks for: every weight, or those under ``weight_decay_paths``."""
    paths = c.get("weight_decay_paths") or ()
    if isinstance(paths, str):
        raise ConfigError("config.optimizer.weight_decay_paths must be a tuple of parameter path prefixes like "
                          f"('conv1',), got the string {paths!r}")
    return functools.partial(decay_mask, paths=tuple(paths))


def _warmup_then(schedule: optax.Schedule, peak: float, warmup_steps: int) -> optax.Schedule:
    if warmup_steps <= 0:
        return schedule
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, schedule], [warmup_steps])


@SCHEDULES.register("constant")
def _constant(peak: float, total_steps: int, warmup_steps: int, c) -> optax.Schedule:
    return _warmup_then(optax.constant_schedule(peak), peak, warmup_steps)


@SCHEDULES.register("cosine")
def _cosine(peak: float, total_steps: int, warmup_steps: int, c) -> optax.Schedule:
    decay = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1), alpha=c.end_factor)
    return _warmup_then(decay, peak, warmup_steps)


@SCHEDULES.register("warmup")
def _warmup(peak: float, total_steps: int, warmup_steps: int, c) -> optax.Schedule:
    """Linear warmup to the peak, then linear decay to ``end_factor * peak``."""
    decay = optax.linear_schedule(peak, peak * c.end_factor, max(total_steps - warmup_steps, 1))
    return _warmup_then(decay, peak, warmup_steps)


@SCHEDULES.register("step")
def _step(peak: float, total_steps: int, warmup_steps: int, c) -> optax.Schedule:
    """Multiply by ``decay_factor`` at each boundary, given as fractions of training."""
    boundaries: dict[int, float] = {}
    for fraction in c.boundaries:  # boundaries that round to one step multiply there, so none is lost
        step = int(fraction * total_steps) - warmup_steps
        boundaries[step] = boundaries.get(step, 1.0) * c.decay_factor
    return _warmup_then(optax.piecewise_constant_schedule(peak, boundaries), peak, warmup_steps)


def make_schedule(config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    warmup = config.schedule.warmup_steps or int(config.schedule.warmup_epochs * steps_per_epoch)
    return SCHEDULES.get(config.schedule.name)(config.optimizer.learning_rate, total_steps, warmup, config.schedule)


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Optional clipping, coupled (L2) weight decay for the non-decoupled optimizers, then the update rule."""
    c = config.optimizer
    parts = []
    if c.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(c.grad_clip_norm))
    if c.weight_decay > 0 and c.name != "adamw":
        parts.append(optax.add_decayed_weights(c.weight_decay, mask=decay_mask_of(c)))
    parts.append(OPTIMIZERS.get(c.name)(schedule, c))
    return optax.chain(*parts)
