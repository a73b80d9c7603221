"""What ``sweep.py`` does: check the sweep, open its study, run the workers, write the summary, report."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

import ml_collections

from cnn.errors import UserError
from cnn.sweep.definition import load_sweep, parse_sweep
from cnn.sweep.runner import SweepInterrupted, SweepRunner
from cnn.sweep.study import SweepStudy, default_storage
from cnn.sweep.summary import write_summary
from cnn.train.workdir import make_workdir


@dataclass
class SweepOptions:
    config_spec: str  # path[:arg], as --config took it
    config: ml_collections.ConfigDict  # with the command line's overrides applied
    overrides: dict[str, Any]  # --config.key=value of the command line, applied to every trial
    workdir: str
    parallel: int = 1
    storage: str | None = None  # default: SQLite in the workdir
    study_name: str | None = None  # default: the workdir's name
    num_trials: int | None = None
    heartbeat_seconds: int = 10


def run_sweep(options: SweepOptions, summarize_only: bool = False) -> int:
    """Run (or only summarize) the sweep; the exit status is the number of failed parameter sets (at most 100)."""
    if options.parallel < 1:
        raise UserError(f"--parallel must be at least 1, got {options.parallel}")
    if options.heartbeat_seconds < 1:
        raise UserError(f"--heartbeat_seconds must be at least 1, got {options.heartbeat_seconds}")
    sweep = parse_sweep(load_sweep(options.config_spec), options.config, options.num_trials,
                        overridden=tuple(options.overrides))
    storage = options.storage or default_storage(options.workdir)
    name = options.study_name or os.path.basename(os.path.normpath(os.path.abspath(options.workdir)))
    if summarize_only:
        if options.storage is None and not os.path.isfile(os.path.join(options.workdir, "sweep.db")):
            raise UserError(f"--workdir={options.workdir}: no sweep.db there (run the sweep first)")
        sweep_study = SweepStudy(storage, name, sweep, options.heartbeat_seconds)
        sweep_study.open_existing()
        return _report(sweep_study, options.workdir, name)

    make_workdir(options.workdir)
    lock = _lock_sqlite(storage)
    try:
        sweep_study = SweepStudy(storage, name, sweep, options.heartbeat_seconds)
        sweep_study.create_or_join({"sweep": sweep.identity(), "overrides": options.overrides})
        summary_lock = threading.Lock()

        def summarize() -> None:
            with summary_lock:
                write_summary(sweep_study.parameter_sets(), sweep, options.workdir, name)

        runner = SweepRunner(sweep_study, options.workdir, options.config_spec, options.overrides, summarize)
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
        try:
            runner.run(options.parallel)
        except SweepInterrupted:
            summarize()
            print("error: interrupted; the running trials are queued again: rerun the same command to resume them",
                  file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
        return _report(sweep_study, options.workdir, name)
    finally:
        if lock is not None:
            os.close(lock)


def _report(sweep_study: SweepStudy, workdir: str, name: str) -> int:
    sweep = sweep_study.sweep
    rows = write_summary(sweep_study.parameter_sets(), sweep, workdir, name)
    counts = {state: sum(row["state"] == state for row in rows) for state in ("COMPLETE", "RUNNING", "WAITING",
                                                                               "FAIL")}
    line = f"sweep {name}: {len(rows)} parameter sets: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()
                                                                       if n)
    complete = [row for row in rows if row["state"] == "COMPLETE"]
    if complete:
        best = complete[0]
        line += (f"; best {sweep.metric} {best[sweep.metric]:.4f} (trial {best['trial']}: "
                 + ", ".join(f"{key}={best[key]}" for key in sweep.keys) + ")")
    print(line)
    print(f"summary: {os.path.join(workdir, 'summary.md')}")
    if counts["FAIL"]:
        print(f"error: {counts['FAIL']} of {len(rows)} trials failed (their errors: summary.md)", file=sys.stderr)
    return min(counts["FAIL"], 100)


def _lock_sqlite(storage: str) -> int | None:
    """One process per SQLite sweep: SQLite has no row locks, so two processes could take the same queued trial."""
    prefix = "sqlite:///"
    if not storage.startswith(prefix) or storage == prefix:
        return None
    path = storage[len(prefix):] + ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # a missing or read-only directory
        raise UserError(f"--storage={storage}: cannot write {path} ({error.strerror or error})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"another sweep process is using {storage}; SQLite hands trials safely to the threads of one "
                        "process only: use --parallel=N, or a PostgreSQL --storage for several processes or "
                        "machines") from None
    return fd
