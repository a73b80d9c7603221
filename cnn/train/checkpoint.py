"""Checkpoints through orbax ``CheckpointManager``.

Keeps the latest ``max_to_keep`` checkpoints plus the best one by an evaluation metric. Saves are asynchronous
and atomic (orbax writes a temporary directory and renames it when complete), so a kill mid-save leaves the
previous checkpoint whole. Restoring the latest checkpoint falls back to older ones, with a warning, when the
newest is unreadable; a checkpoint whose shapes do not match the model is an error, not a fallback.

**Integrity.** Orbax restores flipped bytes in most of its data files without an error. So every save records
the SHA-256 digest of every array (in the step's metadata, written atomically with it) and a restore recomputes
them: a mismatch makes the checkpoint unreadable (moved aside, the previous one restored). A save also refuses a
state with a non-finite value: nothing non-finite is ever written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from cnn.errors import UserError
from cnn.train.distributed import barrier, check_shared_directory, is_primary

log = logging.getLogger(__name__)


class CheckpointMismatchError(UserError):
    """The checkpoint was written for another model or optimizer than the config describes."""


class CorruptCheckpointError(UserError):
    """A restored array does not have the digest recorded when it was saved."""


class NonFiniteStateError(UserError):
    """The state to save holds a NaN or Inf: it is not written."""


WRITE_FAILURES = ("No space left on device", "Disk quota exceeded", "Read-only file system")
DIGESTS = "sha256"  # the key of the digests in a step's custom metadata


def _name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_name(path): tuple(leaf.shape) for path, leaf in leaves if hasattr(leaf, "shape")}


def _host_arrays(tree) -> dict[str, np.ndarray]:
    """Every array leaf on the host, by name. The state is replicated: each process's first shard is all of it."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_name(path): np.asarray(leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf)
            for path, leaf in leaves}


def digests(tree) -> dict[str, str]:
    """SHA-256 of each array's dtype, shape and bytes, by name."""
    return {name: hashlib.sha256(f"{a.dtype}{a.shape}".encode() + np.ascontiguousarray(a).tobytes()).hexdigest()
            for name, a in _host_arrays(tree).items()}


class _QuietReportedFailures(logging.Filter):
    """Orbax logs a failed background write (a full disk) with its traceback from each of its threads, dozens of
    lines, and a Ctrl-C that lands while it waits for a save with another; the save reports the first as one line
    (``Checkpoints._write_error``), the training loop the second, so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        error = record.exc_info[1] if record.exc_info else None
        text = record.getMessage() + str(error or "")
        return not (isinstance(error, KeyboardInterrupt) or any(reason in text for reason in WRITE_FAILURES))


def _ignore_callbacks_into_closed_loops() -> None:
    """After a failed restore, TensorStore completes the reads still in flight into the event loop orbax has
    closed: each one printed ``RuntimeError: Event loop is closed`` as an unraisable exception (thousands of lines
    for two bad checkpoints in a row). Those are dropped; any other unraisable exception is reported as before."""
    default = sys.unraisablehook
    if getattr(default, "ignores_closed_loops", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            default(unraisable)

    hook.ignores_closed_loops = True
    sys.unraisablehook = hook


def _check_finite(step: int, tree) -> None:
    for name, array in _host_arrays(tree).items():
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            raise NonFiniteStateError(f"{name} is not finite at step {step}; the checkpoint is not saved and "
                                      "training stopped (the last checkpoint is intact)")


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
            if not any(isinstance(f, _QuietReportedFailures) for f in logging.getLogger("absl").filters):
                logging.getLogger("absl").addFilter(_QuietReportedFailures())  # orbax logs through absl
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
        """Save ``state`` (asynchronously) with the digest of each array; a non-finite state is refused."""
        _check_finite(step, state)
        try:
            self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True,
                              custom_metadata={DIGESTS: digests(state)})
        except (OSError, ValueError) as error:  # raised here or by the previous save, finished in the background
            raise self._write_error(step, error) from None

    def restore(self, step: int, abstract_state):
        """Restore ``step`` into the structure, shapes and shardings of ``abstract_state``, and check that every
        array has the digest recorded at save time (checkpoints saved without digests are not checked)."""
        self._check_shapes(step, abstract_state)
        try:
            state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        except Exception:
            if os.path.exists(os.path.join(self.directory, str(step))):
                raise
            self.manager.reload()
            raise UserError(f"checkpoint at step {step} in {self.directory} was deleted while being read (by the run "
                            f"training there?); kept now: {self.steps()}") from None
        recorded = (self.manager.metadata(step).custom_metadata or {}).get(DIGESTS)
        if recorded:
            bad = sorted(name for name, digest in digests(state).items() if recorded.get(name) != digest)
            if bad:
                raise CorruptCheckpointError(f"checkpoint at step {step} in {self.directory} is corrupt: {len(bad)} "
                                             f"array(s) differ from the digest recorded at save time ({bad[0]}, ...)")
        return state

    def restore_latest(self, abstract_state):
        """``(state, step)`` from the newest readable checkpoint, or ``(None, 0)`` when there is none."""
        _ignore_callbacks_into_closed_loops()
        steps = self.steps()
        for step in reversed(steps):
            try:
                return self.restore(step, abstract_state), step
            except CheckpointMismatchError:
                raise
            except Exception as error:  # any read failure means: try the previous one
                aside = self._move_aside(step)
                log.warning("checkpoint at step %d is unreadable (%s); moved to %s, falling back to the previous "
                            "one", step, str(error).splitlines()[0][:200], aside)
        if steps:  # every one was unreadable
            log.warning("no readable checkpoint is left in %s: training starts again from step 0", self.directory)
        return None, 0

    def newest_readable_step(self, abstract_state, below: int) -> int | None:
        """The newest step before ``below`` that restores and passes its digest check (read-only: eval.py)."""
        for step in reversed([s for s in self.steps() if s < below]):
            try:
                self.restore(step, abstract_state)
                return step
            except Exception:  # any failure: that one is not good either
                continue
        return None

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
                if self.read_only:  # orbax opens no step of the directory while this one is there
                    others = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit() and n != name)
                    raise UserError(f"checkpoint {os.path.dirname(path)} is unreadable ({error}); move it out of "
                                    f"{self.directory} to read the others {others} (train.py does so itself)") from None
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
        try:
            self.manager.wait_until_finished()
        except (OSError, ValueError) as error:
            raise self._write_error(None, error) from None

    def _write_error(self, step: int | None, error: Exception) -> Exception:
        """A full or read-only disk as one line; anything else as it is. TensorStore reports a full disk as
        ``ValueError: RESOURCE_EXHAUSTED: ... No space left on device``."""
        reason = next((r for r in WRITE_FAILURES if r in str(error) or getattr(error, "strerror", None) == r), None)
        if reason is None:
            return error
        which = f"the checkpoint at step {step}" if step is not None else "a checkpoint"
        return UserError(f"cannot write {which} in {self.directory} ({reason}); the earlier checkpoints are intact: "
                         "rerun to resume once the disk has room")

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
