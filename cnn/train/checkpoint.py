"""Checkpoints through orbax ``CheckpointManager``.

Keeps the latest ``max_to_keep`` checkpoints plus the best one by an evaluation metric. Saves are asynchronous
and atomic (orbax writes a temporary directory and renames it when complete), so a kill mid-save leaves the
previous checkpoint whole. Restoring the latest checkpoint falls back to older ones, with a warning, when the
newest is unreadable; a checkpoint whose shapes do not match the model is an error, not a fallback.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from cnn.errors import UserError
from cnn.train.distributed import barrier, check_shared_directory, is_primary

log = logging.getLogger(__name__)


class CheckpointMismatchError(UserError):
    """The checkpoint was written for another model or optimizer than the config describes."""


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path): tuple(
        leaf.shape) for path, leaf in leaves if hasattr(leaf, "shape")}


class Checkpoints:
    """The checkpoints of one run, in ``directory`` (``<workdir>/checkpoints``)."""

    def __init__(
        self,
        directory: str,
        *,
        max_to_keep: int = 3,
        best_metric: str | None = "accuracy",
        best_mode: str = "max",
        read_only: bool = False,
    ):
        keep: list = [policies.LatestN(max_to_keep)]
        best_fn = (lambda metrics: metrics[best_metric]) if best_metric else None
        if best_fn:
            keep.append(policies.BestN(get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
                                       keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn,  # for best_step(); which checkpoints stay is the preservation policy's decision
            best_mode=best_mode,
            preservation_policy=policies.AnyPreservationPolicy(keep),
            cleanup_tmp_directories=not read_only,
            create=not read_only,
        )
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        if not read_only:
            check_shared_directory(self.directory)
        self._set_aside_unreadable_metadata()
        barrier("checkpoints-set-aside")  # every process opens the directory as process 0 left it
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def save(self, step: int, state, metrics: dict[str, float] | None = None) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

    def restore(self, step: int, abstract_state):
        """Restore ``step`` into the structure, shapes and shardings of ``abstract_state``."""
        self._check_shapes(step, abstract_state)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def restore_latest(self, abstract_state):
        """``(state, step)`` from the newest readable checkpoint, or ``(None, 0)`` when there is none."""
        for step in reversed(self.steps()):
            try:
                return self.restore(step, abstract_state), step
            except CheckpointMismatchError:
                raise
            except Exception as error:  # any read failure means: try the previous one
                aside = self._move_aside(step)
                log.warning("checkpoint at step %d is unreadable (%s); moved to %s, falling back to the previous "
                            "one", step, str(error).splitlines()[0][:200], aside)
        return None, 0

    def _set_aside_unreadable_metadata(self) -> None:
        """Orbax reads every step's metadata (with its metrics) when it opens the directory and fails on a corrupt
        one; such a step is moved aside first (or, read-only, reported)."""
        if not os.path.isdir(self.directory):
            return
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name, "_CHECKPOINT_METADATA")
            if not (name.isdigit() and os.path.exists(path)):
                continue
            try:
                with open(path) as f:
                    json.load(f)
            except (OSError, ValueError) as error:
                if self.read_only:
                    raise UserError(f"checkpoint {os.path.dirname(path)} is unreadable ({error})") from None
                aside = self._move_aside(int(name), reload=False)
                log.warning("checkpoint at step %s is unreadable (%s); moved to %s", name, error, aside)

    def _move_aside(self, step: int, reload: bool = True) -> str:
        """Rename an unreadable checkpoint (kept for inspection) so the step can be saved again."""
        source = os.path.join(self.directory, str(step))
        target = f"{source}.unreadable-{int(time.time())}"
        if is_primary():
            os.replace(source, target)
        if reload:
            barrier(f"checkpoint-{step}-set-aside")
            self.manager.reload()
        return target

    def _check_shapes(self, step: int, abstract_state) -> None:
        try:
            stored = _shapes(self.manager.item_metadata(step))
        except Exception:  # unreadable metadata is reported by the restore itself
            return
        expected = _shapes(abstract_state)
        for name, shape in expected.items():
            if name in stored and stored[name] != shape:
                raise CheckpointMismatchError(
                    f"checkpoint at step {step} in {self.directory} does not match the config: {name} has shape "
                    f"{stored[name]} there, {shape} in the model built from the config"
                )
        missing = sorted(set(expected) ^ set(stored))
        if stored and missing:
            raise CheckpointMismatchError(
                f"checkpoint at step {step} in {self.directory} does not match the config: parameters "
                f"{missing[:3]} are in only one of them"
            )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def open_checkpoints(config: ml_collections.ConfigDict, workdir: str, read_only: bool = False) -> Checkpoints:
    """The checkpoints of the run in ``workdir``, kept as ``config.checkpoint`` says."""
    return Checkpoints(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=config.checkpoint.max_to_keep,
        best_metric=config.checkpoint.best_metric or None,
        best_mode=config.checkpoint.best_mode,
        read_only=read_only,
    )



def merge_pretrained(state, params: dict, model_state: dict, source: str):
    """``state`` with every parameter and model-state array (BatchNorm statistics) of ``params``/``model_state``
    whose path and shape agree; the others (a head for another class count) keep their initialization and are
    logged by name. A pretrained model that shares no array with ``state`` is an error naming ``source``."""
    kept, fresh = [], []

    def take(path, leaf, pretrained):
        node = pretrained
        for key in path:
            node = node.get(getattr(key, "key", None)) if isinstance(node, dict) else None
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        if node is None or tuple(node.shape) != tuple(leaf.shape):
            fresh.append(name)
            return leaf
        kept.append(name)
        return jax.device_put(jax.numpy.asarray(node, leaf.dtype), leaf.sharding)

    params = jax.tree_util.tree_map_with_path(lambda p, leaf: take(p, leaf, params), state.params)
    model_state = jax.tree_util.tree_map_with_path(lambda p, leaf: take(p, leaf, model_state), state.model_state)
    if not kept:
        raise UserError(f"{source}: none of its arrays fits the model the config builds (another model?)")
    if fresh and is_primary():
        log.warning("initialized from %s except %s (not there, or another shape): trained from scratch", source,
                    ", ".join(fresh))
    return state.replace(params=params, model_state=model_state)


def init_from(state, workdir: str):
    """``state`` started from the newest checkpoint of the run (or imported weights) in ``workdir``
    (``config.init_from``): its parameters and model state where they fit (:func:`merge_pretrained`), not its step
    or optimizer state."""
    steps = sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit()) \
        if os.path.isdir(os.path.join(workdir, "checkpoints")) else []
    if not steps:
        raise UserError(f"config.init_from={workdir!r}: no checkpoint in {workdir}/checkpoints")
    path = os.path.join(os.path.abspath(workdir), "checkpoints", str(steps[-1]), "default")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    with ocp.StandardCheckpointer() as checkpointer:  # as stored, whatever model it was written for
        metadata = checkpointer.metadata(path)
        metadata = getattr(metadata, "item_metadata", metadata)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              getattr(metadata, "tree", metadata))
        stored = checkpointer.restore(path, target)
    return merge_pretrained(state, stored["params"], stored.get("model_state") or {}, f"{workdir} (step {steps[-1]})")
