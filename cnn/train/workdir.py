"""A run's workdir: created writable, locked while a run trains in it, and its config compared on resume.

**Lock.** ``<workdir>/.train.lock`` holds ``pid host`` of the run using it, and that run holds an exclusive ``flock`` on
it. The kernel drops the ``flock`` when the process dies, however it dies: the file a killed run leaves behind is
then a stale lock, taken over (with a note) by the next run. Two runs on one workdir would interleave their metrics
and delete each other's checkpoints, so the second one stops with ``<workdir> is in use by pid N on <host>``.
(``flock`` is per host: on a network file system shared by hosts, use distinct workdirs.)

**Resume.** A rerun resumes from the checkpoints; a config that differs from the run's ``config.json`` in a key
that changes what is trained (the model, the data, the optimizer, the schedule, the length) is refused with the
list of differences, unless the user says ``--allow_config_change``. Keys that only change how the run is watched
or fed (intervals of eval, checkpoints and logs, the eval batch size, data locations, processes), keys that only
one of the two configs has (a newer version of the code added or removed them) and ``<name>_epochs`` durations
overridden by an unchanged ``<name>_steps`` are allowed and listed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys

import ml_collections

from cnn.errors import ConfigError, UserError

LOCK_FILE = ".train.lock"  # not the sweep's trial lock (.lock), which the trial's train.py inherits
MISSING = "(absent)"
# Keys (or prefixes of keys) whose change does not change what a run computes.
HARMLESS = ("eval_every_steps", "eval_every_epochs", "checkpoint_every_steps", "checkpoint_every_epochs",
            "log_every_steps", "eval_batch_size", "checkpoint.max_to_keep", "distributed.", "dataset.data_dir",
            "dataset.manual_dir", "dataset.download", "dataset.num_workers", "dataset.streaming")


def make_workdir(workdir: str, create: bool = True) -> None:
    """Create ``workdir`` (or, ``create=False``, require it) and check that it can be written; a path that is a file,
    is missing or cannot be written is a one-line error. Light (no JAX), so the CLIs call it first."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir} is a file, not a directory")
    if not create and not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir}: no such directory")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write-test-{os.getpid()}")  # one per process: several may start here
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise UserError(f"--workdir={workdir}: cannot write there ({error.strerror or error})") from None


class WorkdirLock:
    """``with WorkdirLock(workdir):`` holds the workdir's lock (module docstring)."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self.fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid, host, *_ = [*os.read(fd, 1024).decode(errors="replace").split(), "?", "?"]
                os.close(fd)
                raise UserError(f"{self.workdir} is in use by pid {pid} on {host} (another train.py); wait for it "
                                "to finish or use another --workdir") from None
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)  # the holder removed this file as we locked it: lock the current one
        stale = os.read(fd, 1024).decode(errors="replace").split()
        if stale:
            pid, host, *_ = [*stale, "?", "?"]
            print(f"{self.workdir}: taking over the stale lock of pid {pid} on {host} (no longer running)",
                  file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.remove(self.path)  # a lock file left behind then means a run that was killed
            os.close(self.fd)  # and this releases the flock
            self.fd = None


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_config_json(path: str) -> dict:
    """A run's ``config.json``; one that does not parse (truncated, edited by hand) is a one-line error."""
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as error:
            raise UserError(f"{path} is not a config written by train.py ({error})") from None


def config_changes(config: ml_collections.ConfigDict, saved_path: str) -> list[tuple[str, object, object]]:
    """``(key, saved value, new value)`` of every key that differs from the run's saved config (JSON values)."""
    saved = _flatten(read_config_json(saved_path))
    new = _flatten(json.loads(config.to_json()))

    def moot(key: str) -> bool:  # a <name>_epochs duration is ignored while <name>_steps is set (and unchanged)
        steps = key.removesuffix("_epochs") + "_steps"
        return key.endswith("_epochs") and new.get(steps) is not None and saved.get(steps) == new.get(steps)

    return [(key, saved.get(key, MISSING), new.get(key, MISSING)) for key in sorted(saved.keys() | new.keys())
            if saved.get(key, MISSING) != new.get(key, MISSING) and not moot(key)]


def check_resume_config(config: ml_collections.ConfigDict, workdir: str, allow_change: bool) -> None:
    """On resume: refuse a changed config unless ``allow_change``, or only harmless keys changed (module docstring)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return
    changes = config_changes(config, path)
    # A key only one of them has came or went with a new version of the code, at its default.
    meaningful = [c for c in changes if not c[0].startswith(HARMLESS) and MISSING not in c[1:]]
    listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
    if meaningful and not allow_change:
        keys = ", ".join(key for key, _, _ in meaningful)
        raise ConfigError(f"the config differs from {path} of the run being resumed in {keys} ({listed}); pass "
                          "--allow_config_change to resume with it anyway, or use a new --workdir")
    if changes:
        print(f"resuming with a changed config: {listed}", file=sys.stderr)
