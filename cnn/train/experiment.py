"""What a config builds: the model, optimizer, device mesh and the compiled train and eval steps.

Data parallel over every device through a ``jax.sharding.Mesh`` with one axis, ``data``: batches are sharded
along it, parameters and optimizer state replicated. ``jit`` inserts the gradient all-reduce, and BatchNorm
statistics are computed over the global batch, so N devices compute what one device would on the same batch.
With ``optimizer.grad_accum_steps = k`` each of the k microbatches is sharded the same way (``cnn.train.steps``).
The step computes in ``config.dtype`` (``cnn.train.precision``); the state it updates is float32.
"""

from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnn.data import ArraySplit, BatchRandom, DatasetSpec, build_preprocess, eval_batches
from cnn.errors import ConfigError
from cnn.models import create
from cnn.train.config import model_overrides, steps_of, validate
from cnn.train.optim import make_optimizer, make_schedule
from cnn.train.precision import LossScale, policy_of
from cnn.train.state import TrainState, abstract_train_state, create_train_state
from cnn.train.steps import eval_step, train_step


class Experiment:
    def __init__(self, config: ml_collections.ConfigDict, spec: DatasetSpec, steps_per_epoch: int):
        validate(config)
        self.config, self.spec = config, spec
        self.train_preprocess = build_preprocess(config.dataset.train_preprocess, spec)
        self.eval_preprocess = build_preprocess(config.dataset.eval_preprocess, spec)
        self.model = create(config.model.name, num_classes=self.spec.num_classes, **model_overrides(config))
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_of(config, "num", steps_per_epoch)
        self.schedule = make_schedule(config, self.total_steps, steps_per_epoch)
        self.tx = make_optimizer(config, self.schedule)
        self.policy = policy_of(config.dtype)
        # The model sees preprocessed images, whose shape the ops may change (pad, crop, resize).
        sample = np.zeros((1, *self.spec.image_shape), np.uint8)
        self.input_shape = self.eval_preprocess(sample, BatchRandom((config.seed, 0), 1)).shape

        self.mesh = Mesh(np.asarray(jax.devices()), ("data",))
        devices = self.mesh.size
        if config.batch_size % devices:
            raise ConfigError(f"config.batch_size={config.batch_size} must be divisible by the {devices} devices")
        accum = config.optimizer.grad_accum_steps
        if (config.batch_size // accum) % devices:
            raise ConfigError(f"config.batch_size={config.batch_size} / config.optimizer.grad_accum_steps={accum} = "
                              f"{config.batch_size // accum} examples per microbatch must be divisible by the "
                              f"{devices} devices")
        self.eval_batch_size = -(-config.eval_batch_size // devices) * devices
        self.data_sharding = NamedSharding(self.mesh, P("data"))
        self.microbatch_sharding = NamedSharding(self.mesh, P(None, "data"))  # (k, B/k, ...): k unsharded
        # A loop over microbatches is 60x slower on XLA:CPU (see cnn.train.steps); a field, so benchmarks can set it.
        self.unroll_microbatches = jax.default_backend() == "cpu"
        self.replicated = NamedSharding(self.mesh, P())

    def _loss_scale(self) -> LossScale | None:
        return LossScale.create() if self.policy.loss_scaling else None

    def init_state(self) -> TrainState:
        # One compiled program: initializing op by op compiles dozens of small ones (seconds at every launch).
        create = functools.partial(create_train_state, self.model, self.tx, self.input_shape, self.config.seed)
        return jax.jit(create, out_shardings=self.replicated)(self._loss_scale())

    def abstract_state(self) -> TrainState:
        return jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=self.replicated),
            abstract_train_state(self.model, self.tx, self.input_shape, self.config.seed, self._loss_scale()),
        )

    @functools.cached_property
    def train_step(self):
        """``(state, batch, key) -> (state, metrics)``, compiled; state buffers donated off CPU."""
        step = functools.partial(
            train_step, schedule=self.schedule, label_smoothing=self.config.label_smoothing, policy=self.policy,
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
        step = functools.partial(eval_step, num_classes=self.spec.num_classes, policy=self.policy)
        return jax.jit(step, in_shardings=(self.replicated, self.data_sharding), out_shardings=self.replicated)

    def to_device(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Assemble the global batch from every process's local part."""
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.data_sharding, x), local_batch)

    def evaluate(self, state: TrainState, split: ArraySplit) -> dict:
        """Exact metrics over the whole split (padding of the last batch masked out)."""
        totals = None
        batches = eval_batches(split, self.eval_preprocess, self.eval_batch_size, jax.process_index(),
                               jax.process_count())
        for batch in batches:
            sums = self.eval_step(state, self.to_device(batch))
            totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
        totals = jax.device_get(totals)
        count = round(float(totals["count"]))
        return {
            "accuracy": float(totals["correct"]) / count,
            "loss": float(totals["loss_sum"]) / count,
            "count": count,
            "confusion": np.rint(totals["confusion"]).astype(np.int64),
        }
