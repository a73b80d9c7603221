"""Checks on an experiment config, durations in steps or epochs, and the ``config.json`` of a run."""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import ml_collections

from cnn.data import DATASETS
from cnn.errors import ConfigError, UserError
from cnn.models import MODELS
from cnn.tasks import TASKS
from cnn.train.optim import OPTIMIZERS, SCHEDULES
from cnn.train.precision import policy_of
from cnn.train.workdir import read_config_json

CONFIG_FILE = "config.json"


def steps_of(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int) -> int:
    """The duration ``<name>_steps`` when set (it wins), else ``<name>_epochs``, in steps (cnn/config_defaults.py)."""
    steps, epochs = config.get(f"{name}_steps"), config.get(f"{name}_epochs")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"config.{name}_steps must be a positive integer (or None: use {name}_epochs), "
                              f"got {steps!r}")
        return steps
    if epochs is None:
        raise ConfigError(f"set config.{name}_steps or config.{name}_epochs (both are None)")
    if isinstance(epochs, bool) or not isinstance(epochs, int | float) or not epochs > 0:
        raise ConfigError(f"config.{name}_epochs must be a positive number, got {epochs!r}")
    return max(1, round(epochs * steps_per_epoch))


def validate(config: ml_collections.ConfigDict) -> None:
    """Fail early, with the key named, on values the trainer would only trip over later."""
    DATASETS.get(config.dataset.name)
    TASKS.get(config.task.name)
    for key in ("train_preprocess", "eval_preprocess"):
        if not isinstance(config.dataset.get(key), str):
            raise ConfigError(f"config.dataset.{key} must be a preprocessing string like 'decode|normalize'")
    MODELS.get(config.model.name)
    OPTIMIZERS.get(config.optimizer.name)
    SCHEDULES.get(config.schedule.name)
    positive = {"batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size,
                "optimizer.learning_rate": config.optimizer.learning_rate,
                "log_every_steps": config.log_every_steps, "checkpoint.max_to_keep": config.checkpoint.max_to_keep}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"config.{key} must be positive, got {value!r}")
    if not 0 <= config.label_smoothing < 1:
        raise ConfigError(f"config.label_smoothing must be in [0, 1), got {config.label_smoothing!r}")
    if config.optimizer.weight_decay < 0:
        raise ConfigError(f"config.optimizer.weight_decay must be >= 0, got {config.optimizer.weight_decay!r}")
    if config.checkpoint.best_mode not in ("max", "min"):
        raise ConfigError(f"config.checkpoint.best_mode must be 'max' or 'min', got {config.checkpoint.best_mode!r}")
    policy_of(config.dtype)
    accum = config.optimizer.grad_accum_steps
    if isinstance(accum, bool) or not isinstance(accum, int) or accum < 1:
        raise ConfigError(f"config.optimizer.grad_accum_steps must be a positive integer, got {accum!r}")
    if config.batch_size % accum:
        raise ConfigError(f"config.batch_size={config.batch_size} must be divisible by "
                          f"config.optimizer.grad_accum_steps={accum} (the number of microbatches per step)")
    _check_ranges(config)


def _in(key: str, value, low: float, high: float, closed: str = "[)", integer: bool = False) -> None:
    """``value`` (of ``config.<key>``) in the interval from ``low`` to ``high``, ``closed`` saying which ends are."""
    number = isinstance(value, int) if integer else isinstance(value, int | float)
    ok = number and not isinstance(value, bool) and (low <= value if closed[0] == "[" else low < value) and (
        value <= high if closed[1] == "]" else value < high)
    if not ok:
        what = "an integer" if integer else "a number"
        raise ConfigError(f"config.{key} must be {what} in {closed[0]}{low}, {high}{closed[1]}, got {value!r}")


def _check_ranges(config: ml_collections.ConfigDict) -> None:
    """Every numeric key in its range, at start: an out-of-range value would train for minutes to a wrong result."""
    inf = float("inf")
    _in("seed", config.seed, 0, 2**32, integer=True)
    opt, schedule = config.optimizer, config.schedule
    _in("optimizer.grad_clip_norm", opt.grad_clip_norm, 0, inf)
    for key in ("momentum", "b1", "b2"):
        _in(f"optimizer.{key}", opt[key], 0, 1)
    _in("optimizer.eps", opt.eps, 0, inf, "()")
    _in("schedule.warmup_steps", schedule.warmup_steps, 0, inf, integer=True)
    _in("schedule.warmup_epochs", schedule.warmup_epochs, 0, inf)
    _in("schedule.end_factor", schedule.end_factor, 0, inf)
    _in("schedule.decay_factor", schedule.decay_factor, 0, inf, "()")
    boundaries = tuple(schedule.boundaries)
    for boundary in boundaries:
        _in("schedule.boundaries", boundary, 0, 1, "()")
    if list(boundaries) != sorted(set(boundaries)):
        raise ConfigError(f"config.schedule.boundaries must be increasing fractions of training, got {boundaries!r}")
    model = config.model
    if "dropout_rate" in model:
        _in("model.dropout_rate", model.dropout_rate, 0, 1)
    for key in ("width", "depth"):
        if key in model:
            _in(f"model.{key}", model[key], 1, inf, integer=True)
    size = tuple(config.dataset.image_size)
    if not size or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
        raise ConfigError(f"config.dataset.image_size must be positive integers, got {size!r}")
    data_dir = config.dataset.data_dir
    if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ConfigError(f"config.dataset.data_dir={data_dir} is a file, not a directory")


def model_overrides(config: ml_collections.ConfigDict) -> dict:
    """Every key of ``config.model`` but ``name`` is a field of the model."""
    return {k: v for k, v in config.model.to_dict().items() if k != "name"}


def load_config_module(spec: str) -> tuple[ModuleType, str | None]:
    """``path[:arg]`` (as ``--config`` takes it) -> the config file as a module, and ``arg`` (None if absent)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"cnn_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module, arg or None


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``path[:arg]`` (as ``--config`` takes it) -> ``get_config(arg)`` of that file."""
    module, arg = load_config_module(spec)
    return module.get_config(arg)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json(indent=2, sort_keys=True))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(f"--workdir={workdir}: no {CONFIG_FILE} there (is it the workdir of a training run?)")
    return ml_collections.ConfigDict(read_config_json(path))
