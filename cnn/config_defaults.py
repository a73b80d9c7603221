"""What every config file starts from: the base config, the ``runlocal`` variant and the ``path:arg`` variant check.

This module imports only ml_collections (and ``cnn/__init__.py``, which is empty), so that loading a config file, as
``train.py``, ``sweep.py`` and the tests do, does not start JAX, TensorFlow or the dataset code.

Durations come in pairs, one in steps and one in epochs: ``num_steps``/``num_epochs`` (how long to train),
``eval_every_steps``/``eval_every_epochs`` and ``checkpoint_every_steps``/``checkpoint_every_epochs``. An unset value
is None. The rule: **when the ``_steps`` one is set, it wins** and the ``_epochs`` one is ignored. So
``--config.num_steps=500`` on an epoch-based config trains 500 steps without ``--config.num_epochs`` being cleared.
The length of training has no default (a config file sets one of the pair); evaluation and checkpoints default to
once an epoch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
from ml_collections import config_dict

RUNLOCAL = "runlocal"


def dataset_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """``config.dataset`` with every key a source reads, so each can be set from the command line."""
    config = ml_collections.ConfigDict({
        "name": name,
        "data_dir": config_dict.placeholder(str),  # default: $TFDS_DATA_DIR or ~/tensorflow_datasets
        "manual_dir": config_dict.placeholder(str),  # local files to build a TFDS dataset from, no network
        "download": False,  # let TFDS download when the dataset is not prepared and no manual_dir is given
        "mock_examples": 0,  # > 0: that many random examples from tfds.testing.mock_data (runlocal configs)
        "streaming": config_dict.placeholder(bool),  # read examples on demand; unset: when a split exceeds 8 GiB
        "num_workers": 0,  # threads decoding a streamed batch (0: one per core, at most 32)
        "path": config_dict.placeholder(str),  # image_folder and numpy sources
        "image_size": (32, 32),  # image_folder: every image is resized to this
        "channels": 3,  # image_folder: 3 (RGB) or 1 (grayscale)
        "weight_map": False,  # isbi2012_em: carry U-Net's loss weight map with every slice (cnn/data/isbi.py)
        "clip_length": 8192,  # fsdd: samples per training clip (cnn/data/fsdd.py); evaluation sees whole clips
        # digit_canvases (cnn/data/canvas.py): how many canvases per split, digits per canvas, their sizes;
        # moving_digits (cnn/data/moving_digits.py): frames per clip
        "generator": {"train_examples": 2000, "test_examples": 500, "num_digits": (2, 3), "scale": (1.0, 1.5),
                      "seed": 0, "frames": 10},
        "train_split": "train",
        "eval_split": "test",
        "test_split": config_dict.placeholder(str),  # evaluated once, on the final state, after training
        "train_preprocess": "decode|normalize",
        "eval_preprocess": "decode|normalize",
    })
    config.update(overrides)
    return config


def base_config(dataset: str, model: str) -> ml_collections.ConfigDict:
    """Every key the trainer reads, at defaults; an experiment file changes what differs from them."""
    return ml_collections.ConfigDict({
        "seed": 0,
        "init_from": config_dict.placeholder(str),  # a workdir (a run, or cnn.tools.import_weights) to start from
        "dataset": dataset_config(dataset),
        "task": {"name": "classification",  # cnn.tasks: what a batch holds, the loss, the metrics, the report
                 "ignore_label": config_dict.placeholder(int),  # segmentation: a label never learned nor counted
                 "loss": "cross_entropy",  # segmentation: "cross_entropy" (per pixel) or "dice" (soft Dice)
                 "rand_error": False,  # segmentation: also the ISBI adapted Rand error (needs every prediction)
                 # segmentation: evaluate by overlap-tile inference with input tiles of this size (cnn/models/tiling.py)
                 "eval_tile_size": config_dict.placeholder(int)},
        "model": {"name": model},  # every other key here is a field of the model
        "optimizer": {"name": "momentum", "learning_rate": 0.1, "momentum": 0.9, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
                      "weight_decay": 5e-4, "grad_clip_norm": 0.0,
                      "weight_decay_paths": (),  # decay only the weights under these path prefixes; (): every one
                      "grad_accum_steps": 1},  # microbatches per step: the same update in 1/k of the activations
        "schedule": {"name": "cosine", "warmup_steps": 0, "warmup_epochs": 0.0, "end_factor": 0.0,
                     "boundaries": (0.5, 0.75),  # the "step" schedule, as fractions of training
                     "decay_factor": 0.1},
        "batch_size": 128,
        "eval_batch_size": 512,
        "label_smoothing": 0.0,
        "dtype": "float32",  # compute dtype; parameters and BatchNorm statistics stay float32
        # Durations (module docstring): the _steps one wins when set; a config file sets num_steps or num_epochs.
        "num_steps": config_dict.placeholder(int), "num_epochs": config_dict.placeholder(float),
        "eval_every_steps": config_dict.placeholder(int), "eval_every_epochs": 1.0,
        "checkpoint_every_steps": config_dict.placeholder(int), "checkpoint_every_epochs": 1.0,
        "log_every_steps": 50,
        "checkpoint": {"max_to_keep": 2, "best_metric": "accuracy", "best_mode": "max"},
        # Stop when the eval metric is worse than the mean of its previous `window` evaluations (Kipf & Welling);
        # "" is off. cnn/train/early_stopping.py.
        "early_stopping": {"metric": "", "window": 10, "mode": "min"},
        # Many hosts: jax.distributed.initialize() arguments (unset: single process, or JAX's own detection).
        "distributed": {"coordinator_address": config_dict.placeholder(str),
                        "num_processes": config_dict.placeholder(int),
                        "process_id": config_dict.placeholder(int),
                        "initialization_timeout": 300},  # seconds to wait for every process to join
    })


def runlocal(config: ml_collections.ConfigDict, steps: int = 12) -> ml_collections.ConfigDict:
    """The tiny variant the tests use: ``steps`` steps, evaluated and checkpointed along the way."""
    config.update({"num_steps": steps, "eval_every_steps": steps // 2, "checkpoint_every_steps": max(steps // 3, 1),
                   "log_every_steps": max(steps // 6, 1)})
    return config


def variant_options(arg: str | None, config_file: str, choices: Sequence[str] = (RUNLOCAL,)) -> set[str]:
    """The options of ``--config=path:arg``: ``arg`` split at commas (``56,runlocal``), each one of ``choices``.

    Anything else is a ``ValueError`` naming the config file, which the command-line tools print as one line.
    """
    options = [part.strip() for part in (arg or "").split(",") if part.strip()]
    if any(option not in choices for option in options):
        name = os.path.join(os.path.basename(os.path.dirname(config_file)), os.path.basename(config_file))
        raise ValueError(f"{name}: unknown variant {arg!r}; choose from {list(choices)} (several: joined by commas)")
    return set(options)
