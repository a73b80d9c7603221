"""One trial: a ``train.py`` run in its own workdir, its output in ``train.log``, its result read back from
``metrics.jsonl``.

The trial's workdir holds a lock file (``.lock``) locked by the sweep process and inherited by ``train.py``: a
``train.py`` that outlives a killed sweep keeps it locked, so the retry of its trial waits for it to exit instead
of writing the same checkpoints at the same time.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cnn.cli import INTERNAL_ERROR, INTERRUPTED_STATUS
from cnn.train.metrics import read_metrics

LOG_FILE = "train.log"
LOCK_FILE = ".lock"
# How a train.py that was stopped, not failed, ends: Ctrl-C caught (130), or killed by SIGINT (before its handler was
# in place), SIGTERM or SIGHUP. SIGKILL is left out: the kernel's out-of-memory killer sends it too.
INTERRUPTED_STATUSES = frozenset({INTERRUPTED_STATUS, -signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP})


@dataclass
class Outcome:
    returncode: int
    # The last eval record of metrics.jsonl when train.py succeeded, and its last test record's as test_<metric>.
    eval_metrics: dict[str, float] | None
    error: str | None
    launched_at: float  # unix time
    wall_seconds: float

    @property
    def interrupted(self) -> bool:
        """train.py was stopped (Ctrl-C, a signal), whoever stopped it: the trial is to run again, not a failure."""
        return self.returncode in INTERRUPTED_STATUSES


def override_flag(key: str, value: Any) -> str:
    """``--config.key=value`` as train.py's config flags parse it back to ``value``."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)  # the shortest string that reads back as the same float
    else:
        text = str(value)
    return f"--config.{key}={text}"


def train_command(config_spec: str, trial_dir: str, overrides: dict[str, Any], params: dict[str, Any]) -> list[str]:
    flags = [override_flag(key, value) for key, value in {**overrides, **params}.items()]
    return [sys.executable, "-m", "cnn.train", f"--config={config_spec}", f"--workdir={trial_dir}", *flags]


def trial_dir_name(number: int, params: dict[str, Any]) -> str:
    """``0003_learning_rate=0.1_width=16``: the parameter set's number, then its values (readable, unique)."""
    parts = [f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in params.items()]
    name = re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join([f"{number:04d}", *parts]))
    return name[:120]


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_trial(command: list[str], trial_dir: str, header: str, stop: threading.Event,
              started: Callable[[subprocess.Popen], None]) -> Outcome:
    """Run ``command`` in ``trial_dir`` (appending to its log) and read its result; ``started`` is told the process
    so that it can be stopped."""
    os.makedirs(trial_dir, exist_ok=True)
    lock_fd = os.open(os.path.join(trial_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with open(os.path.join(trial_dir, LOG_FILE), "a") as log:
            if not _lock(lock_fd, stop, log):
                return Outcome(-signal.SIGTERM, None, "stopped while waiting for the trial's lock", time.time(), 0.0)
            log.write(f"=== {datetime.now().isoformat(timespec='seconds')} {header}\n$ {' '.join(command)}\n")
            log.flush()
            start_offset = log.tell()
            launched_at, start = time.time(), time.perf_counter()
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       pass_fds=(lock_fd,), env={**os.environ, "PYTHONUNBUFFERED": "1"})
            started(process)
            returncode = process.wait()
            wall = time.perf_counter() - start
    finally:
        os.close(lock_fd)
    if returncode != 0:
        return Outcome(returncode, None, _error_of(trial_dir, start_offset, returncode), launched_at, wall)
    written = read_metrics(trial_dir)
    records = [r for r in written if r.get("split") == "eval"]
    if not records:
        return Outcome(returncode, None, "train.py exited 0 but wrote no eval record to metrics.jsonl", launched_at,
                       wall)
    final = {k: v for k, v in records[-1].items() if k != "split"}
    tests = [r for r in written if r.get("split") == "test"]
    if tests:  # config.dataset.test_split: the final state on the test split, as test_<metric>
        final.update({f"test_{k}": v for k, v in tests[-1].items() if k not in ("split", "step")})
    return Outcome(returncode, final, None, launched_at, wall)


def value_of(outcome: Outcome, metric: str) -> tuple[float | None, str | None]:
    """The trial's value of ``metric``, or why it has none."""
    if outcome.error is not None:
        return None, outcome.error
    value = outcome.eval_metrics.get(metric)
    if value is None or not math.isfinite(value):
        return None, f"final eval {metric} is {value}"
    return value, None


def _lock(fd: int, stop: threading.Event, log) -> bool:
    """Take the trial's lock, waiting while a train.py left by a killed sweep holds it; False if stopped."""
    waiting = False
    while not stop.is_set():
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not waiting:
                log.write("=== waiting for the process that holds this trial's lock (a train.py of a killed sweep?)\n")
                log.flush()
                waiting = True
            stop.wait(1.0)
    return False


def _error_of(trial_dir: str, offset: int, returncode: int) -> str:
    """The ``error:`` (user error) or ``internal error`` (a bug) line train.py printed last in this attempt, else the
    exit status and the last line (a traceback's last line can be JAX's note on the frames it removed)."""
    with open(os.path.join(trial_dir, LOG_FILE), errors="replace") as f:
        f.seek(offset)
        lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error: ", INTERNAL_ERROR))]
    if errors:
        return errors[-1].removeprefix("error: ")
    status = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exited with status {returncode}"
    return f"train.py {status}" + (f": {lines[-1]}" if lines else "")
