"""Checks on an experiment config, durations in steps or epochs, and the ``config.json`` of a run."""

from __future__ import annotations

import importlib.util
import json
import os
from types import ModuleType

import ml_collections
from ml_collections import config_dict

from cnn.data import DATASETS
from cnn.errors import ConfigError, UserError
from cnn.models import MODELS
from cnn.tasks import TASKS
from cnn.train.optim import OPTIMIZERS, SCHEDULES
from cnn.train.precision import policy_of

CONFIG_FILE = "config.json"


def base_config(dataset: str, model: str) -> ml_collections.ConfigDict:
    """Every key the trainer reads, at defaults; an experiment file changes what differs from them."""
    from cnn.data.sources import dataset_config

    return ml_collections.ConfigDict({
        "seed": 0,
        "dataset": dataset_config(dataset),
        "task": {"name": "classification",  # cnn.tasks: what a batch holds, the loss, the metrics, the report
                 "ignore_label": config_dict.placeholder(int)},  # segmentation: a label never learned nor counted
        "model": {"name": model},  # every other key here is a field of the model
        "optimizer": {"name": "momentum", "learning_rate": 0.1, "momentum": 0.9, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
                      "weight_decay": 5e-4, "grad_clip_norm": 0.0,
                      "grad_accum_steps": 1},  # microbatches per step: the same update in 1/k of the activations
        "schedule": {"name": "cosine", "warmup_steps": 0, "warmup_epochs": 0.0, "end_factor": 0.0,
                     "boundaries": (0.5, 0.75),  # the "step" schedule, as fractions of training
                     "decay_factor": 0.1},
        "batch_size": 128,
        "eval_batch_size": 512,
        "label_smoothing": 0.0,
        "dtype": "float32",  # compute dtype; parameters and BatchNorm statistics stay float32
        # Durations: set either *_steps or *_epochs.
        "num_steps": 0, "num_epochs": 10.0,
        "eval_every_steps": 0, "eval_every_epochs": 1.0,
        "checkpoint_every_steps": 0, "checkpoint_every_epochs": 1.0,
        "log_every_steps": 50,
        "checkpoint": {"max_to_keep": 2, "best_metric": "accuracy", "best_mode": "max"},
        # Many hosts: jax.distributed.initialize() arguments (unset: single process, or JAX's own detection).
        "distributed": {"coordinator_address": config_dict.placeholder(str),
                        "num_processes": config_dict.placeholder(int),
                        "process_id": config_dict.placeholder(int),
                        "initialization_timeout": 300},  # seconds to wait for every process to join
    })


def runlocal(config: ml_collections.ConfigDict, steps: int = 12) -> ml_collections.ConfigDict:
    """The tiny variant the tests use: ``steps`` steps, evaluated and checkpointed along the way."""
    config.update({"num_epochs": 0.0, "num_steps": steps, "eval_every_epochs": 0.0, "eval_every_steps": steps // 2,
                   "checkpoint_every_epochs": 0.0, "checkpoint_every_steps": max(steps // 3, 1),
                   "log_every_steps": max(steps // 6, 1)})
    return config


def steps_of(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int) -> int:
    """A duration given as ``<name>_steps`` or ``<name>_epochs`` (exactly one of them positive), in steps."""
    steps, epochs = config.get(f"{name}_steps") or 0, config.get(f"{name}_epochs") or 0
    if (steps > 0) == (epochs > 0):
        raise ConfigError(f"set exactly one of {name}_steps and {name}_epochs to a positive value "
                          f"(got {name}_steps={steps}, {name}_epochs={epochs})")
    return int(steps) if steps > 0 else max(1, round(epochs * steps_per_epoch))


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
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))
