"""The runner: ``parallel`` worker threads, each taking a trial, running it as a train.py subprocess, telling the
result, until the sweep has nothing left to run.

A worker takes a queued trial (a grid point, a retry) or, in a search, samples a new one while fewer than
``num_trials`` parameter sets have started. With nothing to take but trials RUNNING elsewhere, it waits: they
finish, or their process is dead and they come back queued after the grace period (GRACE_HEARTBEATS heartbeats).
While a trial runs, its worker records a heartbeat. Interrupted (Ctrl-C, SIGTERM), the runner stops its train.py
processes and queues their trials again at once, so a rerun resumes them without waiting. A train.py that ends
interrupted (``Outcome.interrupted``: Ctrl-C reached it first, or a signal sent to it alone) is queued again too;
only a trial that failed for a reason of its own (a NaN, a config error, a bug) stays FAIL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from cnn.sweep.study import INTERRUPTED, RETRY_OF, RUNNER, TRIAL_DIR, SweepStudy
from cnn.sweep.trial import Outcome, run_trial, train_command, trial_dir_name, value_of


class SweepInterrupted(Exception):
    """The sweep was stopped by a signal; its running trials are queued again."""


class Heartbeat:
    """Records a trial's heartbeat now and then every ``interval`` seconds, until the block ends."""

    def __init__(self, sweep_study: SweepStudy, trial_id: int):
        self.storage, self.trial_id, self.interval = sweep_study.storage, trial_id, sweep_study.heartbeat_seconds
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as error:  # a database hiccup: the next beat may get through, within the grace period
                print(f"sweep: heartbeat of trial id {self.trial_id} failed: {error}", file=sys.stderr)


class SweepRunner:
    def __init__(self, sweep_study: SweepStudy, workdir: str, config_spec: str, overrides: dict[str, Any],
                 on_trial_end: Callable[[], None] = lambda: None):
        self.sweep_study, self.sweep = sweep_study, sweep_study.sweep
        self.workdir, self.config_spec, self.overrides = workdir, config_spec, overrides
        self.on_trial_end = on_trial_end
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._claim_lock = threading.Lock()  # one ask at a time in this process (SQLite has no row locks)
        self._mine: set[int] = set()  # numbers of the trials this process runs now
        self._processes: dict[int, subprocess.Popen] = {}
        self._processes_lock = threading.Lock()
        self._errors: list[BaseException] = []

    def run(self, parallel: int) -> None:
        workers = [threading.Thread(target=self._work, name=f"sweep-worker-{i}", daemon=True) for i in range(parallel)]
        for worker in workers:
            worker.start()
        try:
            while any(worker.is_alive() for worker in workers):
                for worker in workers:
                    worker.join(timeout=0.2)
        except KeyboardInterrupt:
            self._stop.set()
            self._terminate_all()
            for worker in workers:
                worker.join()
            raise SweepInterrupted() from None
        if self._errors:
            raise self._errors[0]

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                trial = self._take()
                if trial is None:
                    return
                self._run(trial)
        except BaseException as error:  # reported by run() in the main thread
            self._errors.append(error)
            self._stop.set()
            self._terminate_all()

    def _take(self) -> optuna.Trial | None:
        """A trial to run (now RUNNING and ours), or None when the sweep has nothing left to run."""
        announced: set[int] = set()
        while not self._stop.is_set():
            with self._claim_lock:
                self.sweep_study.recover_stale()
                progress = self.sweep_study.progress()
                if progress.waiting or (not self.sweep.is_grid and progress.started < self.sweep.num_trials):
                    trial = self.sweep_study.study.ask(self.sweep.distributions)
                    self._mine.add(trial.number)
                    return trial
                elsewhere = {t.number for t in progress.running} - self._mine
                if not elsewhere:  # what still runs, runs here: its worker finishes it
                    return None
            if elsewhere - announced:
                print(f"sweep: waiting for trial(s) {sorted(elsewhere - announced)}, RUNNING in another process; a "
                      f"dead process's trials are queued again after {self.sweep_study.grace_seconds} s without "
                      "heartbeat", file=sys.stderr)
                announced |= elsewhere
            self._stop.wait(self.sweep_study.heartbeat_seconds)
        return None

    def _run(self, trial: optuna.Trial) -> None:
        try:
            self._attempt(trial)
        finally:
            with self._claim_lock:
                self._mine.discard(trial.number)
        self.on_trial_end()

    def _attempt(self, trial: optuna.Trial) -> None:
        trial_id = self.sweep_study.trial_id(trial.number)
        frozen = self.sweep_study.storage.get_trial(trial_id)
        origin = frozen.system_attrs.get(RETRY_OF, trial.number)
        trial_dir = frozen.user_attrs.get(TRIAL_DIR) or os.path.join("trials", trial_dir_name(origin, trial.params))
        with Heartbeat(self.sweep_study, trial_id):
            try:
                trial.set_user_attr(RUNNER, self.runner_id)
                trial.set_user_attr(TRIAL_DIR, trial_dir)
            except UpdateFinishedTrialError:
                return  # taken for dead in the meantime: its retry runs it
            attempt = "" if origin == trial.number else f", retry of trial {origin}"
            print(f"sweep: trial {trial.number}{attempt}: {trial.params} -> {trial_dir}", file=sys.stderr)
            command = train_command(self.config_spec, os.path.join(self.workdir, trial_dir), self.overrides,
                                    trial.params)
            header = f"trial {trial.number}{attempt} on {self.runner_id}"
            outcome = run_trial(command, os.path.join(self.workdir, trial_dir), header, self._stop,
                                lambda process: self._track(trial.number, process))
            self._untrack(trial.number)
            self._tell(trial, outcome)

    def _tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        study = self.sweep_study.study
        try:
            trial.set_user_attr("launched_at", outcome.launched_at)
            trial.set_user_attr("wall_seconds", outcome.wall_seconds)
            # Ctrl-C reaches train.py too, which can end before this process has seen the signal: the exit
            # status says it was interrupted, whether or not the stop is set yet.
            if outcome.returncode != 0 and (self._stop.is_set() or outcome.interrupted):
                trial.set_user_attr("error", "interrupted; queued again")
                trial.set_user_attr(INTERRUPTED, True)  # before the FAIL: a rerun queues it if the retry is not
                self.sweep_study.fail_and_retry(trial.number)
                print(f"sweep: trial {trial.number} interrupted; queued again", file=sys.stderr)
                return
            value, error = value_of(outcome, self.sweep.metric)
            if outcome.eval_metrics is not None:
                trial.set_user_attr("eval", outcome.eval_metrics)
            if error is not None:
                trial.set_user_attr("error", error)
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                print(f"sweep: trial {trial.number} FAILED: {error}", file=sys.stderr)
            else:
                study.tell(trial, value, skip_if_finished=True)
                print(f"sweep: trial {trial.number} done: {self.sweep.metric} {value:.4f} "
                      f"({outcome.wall_seconds:.1f} s)", file=sys.stderr)
        except UpdateFinishedTrialError:
            print(f"sweep: trial {trial.number} was taken for dead while it ran; its retry reports it",
                  file=sys.stderr)

    def _track(self, number: int, process: subprocess.Popen) -> None:
        with self._processes_lock:
            self._processes[number] = process
        if self._stop.is_set():
            process.terminate()

    def _untrack(self, number: int) -> None:
        with self._processes_lock:
            self._processes.pop(number, None)

    def _terminate_all(self) -> None:
        with self._processes_lock:
            processes = list(self._processes.values())
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
