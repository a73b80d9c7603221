"""A run's plan: the one place where a config becomes decisions.

:func:`plan_training` and :func:`plan_evaluation` turn a config (and a workdir) into a :class:`Plan`: the data
source and its splits, the task (``cnn.tasks``), the durations (steps per epoch, total steps, eval, checkpoint and
log intervals), the train stream, the eval batches, the checkpoints, the early-stopping rule
(``cnn.train.early_stopping``), the test split evaluated after training, and the :class:`Experiment`. The training loop
then only iterates, and evaluation restores without a schedule.

The :class:`Experiment` holds what the config builds for the devices: the model, the optimizer, the device mesh and
the compiled train and eval steps. With ``config.task.eval_tile_size`` set (a segmentation network whose output is
smaller than its input, the valid U-Net) evaluation predicts each image by overlap-tile inference
(``cnn.models.tiling``: mirrored borders, input tiles of that size, their output tiles stitched into a map the size
of the image) and then computes the task's sums on the stitched logits; the model is initialized on one tile. This
runs in one process (the tiles are cut on the host).

Data parallel over every device through a ``jax.sharding.Mesh`` with one axis, ``data``: batches are sharded along
it (a task whose batch is one graph replicates it), parameters and optimizer state replicated. ``jit`` inserts the
gradient all-reduce, and BatchNorm statistics are computed over the global batch, so N devices compute what one
device would on the same batch. With ``optimizer.grad_accum_steps = k`` each of the k microbatches is sharded the
same way (``cnn.train.steps``). The step computes in ``config.dtype`` (``cnn.train.precision``); the state it
updates is float32.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnn.data import BatchRandom, DatasetSpec, build_preprocess, make_source
from cnn.errors import ConfigError
from cnn.models import create
from cnn.models.tiling import overlap_tile_predict
from cnn.tasks import Accumulator, Task, make_task
from cnn.train.checkpoint import Checkpoints, init_from, open_checkpoints
from cnn.train.config import model_overrides, steps_of, validate
from cnn.train.early_stopping import EarlyStopping
from cnn.train.optim import make_optimizer, make_schedule
from cnn.train.precision import LossScale, policy_of
from cnn.train.state import TrainState, abstract_train_state, create_train_state
from cnn.train.steps import eval_step, outputs_eval_step, predict_step, train_step


@dataclasses.dataclass(frozen=True)
class Durations:
    """How long a run trains and how often it evaluates, checkpoints and logs, in steps."""

    steps_per_epoch: int
    total_steps: int
    eval_every: int
    checkpoint_every: int
    log_every: int

    @classmethod
    def of(cls, config: ml_collections.ConfigDict, steps_per_epoch: int) -> Durations:
        return cls(steps_per_epoch, steps_of(config, "num", steps_per_epoch),
                   steps_of(config, "eval_every", steps_per_epoch),
                   steps_of(config, "checkpoint_every", steps_per_epoch), config.log_every_steps)


class Experiment:
    """The model, optimizer, mesh and compiled steps of ``config`` for a dataset of ``spec``. Without
    ``durations`` it can restore and evaluate but not train (no schedule: the optimizer state's structure does not
    depend on it)."""

    def __init__(self, config: ml_collections.ConfigDict, spec: DatasetSpec, durations: Durations | None = None,
                 task: Task | None = None):
        validate(config)
        self.config, self.spec, self.durations = config, spec, durations
        self.task: Task = task or make_task(config, spec)
        if config.checkpoint.best_metric and config.checkpoint.best_metric not in self.task.metrics:
            raise ConfigError(f"config.checkpoint.best_metric={config.checkpoint.best_metric!r} is not a metric of "
                              f"task {self.task.name!r} on this dataset; choose from {sorted(self.task.metrics)} "
                              "(or '' for none)")
        self.train_preprocess = build_preprocess(config.dataset.train_preprocess, spec)
        self.eval_preprocess = build_preprocess(config.dataset.eval_preprocess, spec)
        self.model = create(config.model.name, num_classes=spec.num_classes, **model_overrides(config))
        self.eval_model = self.task.eval_model(self.model)  # the same variables; a detector's is fully convolutional
        graph_task = self.task.data_kind == "graph"
        if getattr(self.model, "takes_graph", False) != graph_task:
            raise ConfigError(f"model {config.model.name!r} takes {'a graph' if not graph_task else 'image batches'}, "
                              f"but task {self.task.name!r} on dataset {config.dataset.name!r} gives it "
                              f"{'a graph' if graph_task else 'image batches'}; choose a "
                              f"{'graph ' if graph_task else ''}model for it (config.model.name)")
        if durations is None:
            self.schedule = optax.constant_schedule(config.optimizer.learning_rate)
        else:
            self.schedule = make_schedule(config, durations.total_steps, durations.steps_per_epoch)
        self.tx = make_optimizer(config, self.schedule)
        self.policy = policy_of(config.dtype)
        # The model sees preprocessed examples, whose shape the ops may change (pad, crop, resize).
        sample = self.task.sample_batch()
        if self.task.preprocessed:
            sample = self.eval_preprocess.batch(sample, BatchRandom((config.seed, 0), 1))
        self.sample_input = self.task.sample_input(sample)
        self.eval_tile_size = config.task.get("eval_tile_size")
        if self.eval_tile_size:
            if jax.process_count() > 1:
                raise ConfigError("config.task.eval_tile_size: overlap-tile evaluation runs in one process; unset it "
                                  f"for this {jax.process_count()}-process run")
            shape = self.sample_input.shape
            self.sample_input = np.zeros((1, *(self.eval_tile_size,) * (len(shape) - 2), shape[-1]), np.float32)

        self.mesh = Mesh(np.asarray(jax.devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        devices = self.mesh.size
        accum = config.optimizer.grad_accum_steps
        if self.task.shard_batch:
            if config.batch_size % devices:
                raise ConfigError(f"config.batch_size={config.batch_size} must be divisible by the {devices} devices")
            if (config.batch_size // accum) % devices:
                raise ConfigError(f"config.batch_size={config.batch_size} / config.optimizer.grad_accum_steps={accum} "
                                  f"= {config.batch_size // accum} examples per microbatch must be divisible by the "
                                  f"{devices} devices")
            self.eval_batch_size = -(-config.eval_batch_size // devices) * devices
            self.data_sharding = NamedSharding(self.mesh, P("data"))
        else:
            if accum != 1:
                raise ConfigError(f"config.optimizer.grad_accum_steps={accum}: task {self.task.name!r} trains on one "
                                  "whole batch (a graph) that cannot be split into microbatches; set it to 1")
            self.eval_batch_size = config.eval_batch_size
            self.data_sharding = self.replicated
        self.microbatch_sharding = NamedSharding(self.mesh, P(None, "data"))  # (k, B/k, ...): k unsharded
        # A loop over microbatches is 60x slower on XLA:CPU (see cnn.train.steps); a field, so benchmarks can set it.
        self.unroll_microbatches = jax.default_backend() == "cpu"

    def _loss_scale(self) -> LossScale | None:
        return LossScale.create() if self.policy.loss_scaling else None

    def init_state(self) -> TrainState:
        # One compiled program: initializing op by op compiles dozens of small ones (seconds at every launch).
        create = functools.partial(create_train_state, self.model, self.tx, self.sample_input, self.config.seed)
        state = jax.jit(create, out_shardings=self.replicated)(self._loss_scale())
        return init_from(state, self.config.init_from) if self.config.get("init_from") else state

    def abstract_state(self) -> TrainState:
        return jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=self.replicated),
            abstract_train_state(self.model, self.tx, self.sample_input, self.config.seed, self._loss_scale()),
        )

    @functools.cached_property
    def train_step(self):
        """``(state, batch, key) -> (state, metrics)``, compiled; state buffers donated off CPU."""
        if self.durations is None:
            raise RuntimeError("an Experiment built without durations (for evaluation) cannot train")
        step = functools.partial(
            train_step, schedule=self.schedule, task=self.task, policy=self.policy,
            grad_accum_steps=self.config.optimizer.grad_accum_steps, microbatch_sharding=self.microbatch_sharding,
            unroll_microbatches=self.unroll_microbatches,
        )
        donate = (0,) if jax.default_backend() != "cpu" else ()
        return jax.jit(
            step,
            in_shardings=(self.replicated, self.data_sharding, self.replicated),
            out_shardings=(self.replicated, self.replicated),
            donate_argnums=donate,
        )

    @functools.cached_property
    def eval_step(self):
        """``(state, batch) -> (sums, examples)``; by overlap-tile inference with ``config.task.eval_tile_size``."""
        if not self.eval_tile_size:
            step = functools.partial(eval_step, task=self.task, policy=self.policy, apply_fn=self.eval_model.apply)
            return jax.jit(step, in_shardings=(self.replicated, self.data_sharding),
                           out_shardings=(self.replicated, self.data_sharding))
        predict = jax.jit(functools.partial(predict_step, policy=self.policy))
        after = jax.jit(functools.partial(outputs_eval_step, task=self.task))

        def tiled(state, batch):
            images = np.asarray(self.task.model_input(batch))
            logits = overlap_tile_predict(lambda tiles: predict(state, tiles), images, self.eval_tile_size,
                                          batch_size=self.eval_batch_size)
            return after(logits, batch)

        return tiled

    def to_device(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Assemble the global batch from every process's local part (a replicated batch: every process's copy)."""
        if not self.task.shard_batch:
            return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.replicated, x, x.shape),
                                local_batch)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.data_sharding, x), local_batch)

    def eval_batches(self, split: Any) -> Iterator[dict[str, np.ndarray]]:
        return self.task.eval_batches(split, self.eval_preprocess, self.eval_batch_size, jax.process_index(),
                                      jax.process_count())

    def evaluate(self, state: TrainState, split: Any, keep_examples: bool = False,
                 keep_first: int = 0) -> tuple[dict, Accumulator]:
        """The task's metrics over the whole split (the padding of the last batch masked out), and the totals
        they came from (per-example outputs too, in split order, when ``keep_examples`` or the task needs them)."""
        totals = Accumulator(keep_examples or self.task.needs_examples, keep_first)
        for batch in self.eval_batches(split):
            sums, examples = self.eval_step(state, self.to_device(batch))
            totals.add(jax.device_get(sums), _to_host(examples) if totals.wants_examples else None)
        return self.task.result(totals), totals


def _to_host(tree: Any) -> Any:
    """Every process gets the whole of each (sharded) array."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


@dataclasses.dataclass
class Plan:
    """Everything a run needs, decided from its config (see the module docstring)."""

    config: ml_collections.ConfigDict
    experiment: Experiment
    checkpoints: Checkpoints
    eval_split: Any
    eval_split_name: str
    durations: Durations | None = None
    train_stream: Any = None
    early_stopping: EarlyStopping | None = None  # the rule that may end training at an evaluation
    test_split: Any = None  # config.dataset.test_split, evaluated once on the final state

    @property
    def task(self) -> Task:
        return self.experiment.task


def plan_training(config: ml_collections.ConfigDict, workdir: str) -> Plan:
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    source = make_source(config.dataset)
    train_split = source.load(config.dataset.train_split)
    eval_split = source.load(config.dataset.eval_split)
    test_name = config.dataset.get("test_split")
    test_split = source.load(test_name) if test_name else None
    task = make_task(config, source.spec)
    for name, split in ((config.dataset.train_split, train_split), (config.dataset.eval_split, eval_split),
                        (test_name, test_split)):
        if split is not None:
            task.check_split(split, name)
    durations = Durations.of(config, task.steps_per_epoch(train_split, config.batch_size))
    exp = Experiment(config, source.spec, durations, task)
    stream = task.train_stream(train_split, exp.train_preprocess, config.batch_size, config.seed,
                                   jax.process_index(), jax.process_count())
    task.check_batch(stream.batch(0))
    return Plan(config, exp, open_checkpoints(config, workdir), eval_split, config.dataset.eval_split, durations,
                stream, EarlyStopping.of(config, task.metrics), test_split)


def plan_evaluation(config: ml_collections.ConfigDict, workdir: str, split: str | None = None) -> Plan:
    """A restore-only plan: the model and the eval split, no schedule, the checkpoints read-only."""
    validate(config)
    split = split or config.dataset.eval_split
    source = make_source(config.dataset)
    data = source.load(split)
    exp = Experiment(config, source.spec)
    exp.task.check_split(data, split)
    return Plan(config, exp, open_checkpoints(config, workdir, read_only=True), data, split)
