"""The sweep's Optuna study: its storage and heartbeats, the grid queue, stale trials, parameter sets.

- **Storage**: an SQLAlchemy URL (SQLite in the sweep workdir by default; PostgreSQL for several machines) opened
  with Optuna's heartbeat: each running trial's sweep process records a heartbeat every ``heartbeat_seconds``; a
  RUNNING trial without one for ``GRACE_HEARTBEATS`` intervals belongs to a dead process.
- **Grid**: its points are queued once, as WAITING trials, by the process that creates the study. ``study.ask()``
  takes a WAITING trial by switching it to RUNNING under a row lock (``SELECT ... FOR UPDATE`` on PostgreSQL), so
  each point goes to exactly one worker even across machines; Optuna's ``GridSampler`` instead lets concurrent
  workers pick the same point (its docstring says so).
- **Stale trials**: :meth:`SweepStudy.recover_stale` marks them FAIL (Optuna's ``fail_stale_trials``) and queues
  each again as a retry with the same parameters and trial directory, so it resumes from its own checkpoint.
- **Interrupted trials** are marked FAIL and queued again at once by the runner; one whose process died between the
  two (a second Ctrl-C) is queued by the next run of the sweep (:meth:`SweepStudy.requeue_interrupted`).
- **Parameter sets**: a trial and its retries are one parameter set (one row of the summary), identified by the
  number of its first trial.
- **Random and TPE search** draw trial *n*'s parameters from a sampler seeded with (seed, n): reproducible, and
  distinct between machines and between a sweep and its rerun (one seed in every process would draw the same
  parameters in each).
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from cnn.errors import UserError
from cnn.sweep.definition import Sweep

GRACE_HEARTBEATS = 3  # missed heartbeats after which a RUNNING trial is taken for dead
TRIAL_DIR = "trial_dir"  # user attr: the trial's workdir, relative to the sweep workdir (kept by retries)
RUNNER = "runner"  # user attr: "host:pid" of the sweep process running this attempt (set once it started)
RETRY_OF = "retry_of"  # system attr: number of the first trial of the parameter set
INTERRUPTED = "interrupted"  # user attr: the attempt was stopped, not failed; set before it is marked FAIL
FIXED_PARAMS = "fixed_params"  # system attr: Optuna's own key for the parameters of a queued trial
DESCRIPTION = "sweep"  # study user attr: the definition and overrides, set once the grid is queued

# The sweep drives trials with ask/tell and its own heartbeat thread, and uses the heartbeat API on purpose.
warnings.filterwarnings("ignore", r".*(fail_stale_trials|heartbeat_interval|heartbeat_stale_trial_callback)",
                        ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class ParameterSet:
    """A trial and its retries (stale or interrupted attempts queued again), oldest first."""

    attempts: list[FrozenTrial]

    @property
    def number(self) -> int:
        return self.attempts[0].number

    @property
    def latest(self) -> FrozenTrial:
        return self.attempts[-1]

    @property
    def state(self) -> TrialState:
        return self.latest.state

    @property
    def params(self) -> dict[str, Any]:
        return {**self.latest.system_attrs.get(FIXED_PARAMS, {}), **self.latest.params}


@dataclass
class Progress:
    waiting: int  # queued trials: grid points not started yet, retries
    running: list[FrozenTrial]
    started: int  # parameter sets that ran or run now


class SweepStudy:
    """One sweep's study and the storage it lives in (one per sweep process, shared by its worker threads)."""

    def __init__(self, storage_url: str, study_name: str, sweep: Sweep, heartbeat_seconds: int = 10):
        self.sweep = sweep
        self.heartbeat_seconds = heartbeat_seconds
        self.grace_seconds = GRACE_HEARTBEATS * heartbeat_seconds
        self.storage = _open_storage(storage_url, heartbeat_seconds, self.grace_seconds, retry)
        self.storage_url, self.study_name = storage_url, study_name
        self.study: optuna.Study | None = None
        self.study_id: int | None = None

    def create_or_join(self, description: dict[str, Any]) -> None:
        """Create the study and queue the grid, or join the existing study after checking it is the same sweep."""
        sampler = _sampler(self.sweep)
        description = json.loads(json.dumps(description))  # as it reads back from the storage
        try:
            self.study = optuna.create_study(storage=self.storage, study_name=self.study_name, sampler=sampler,
                                             direction=self.sweep.direction)
        except DuplicatedStudyError:
            self.study = optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=sampler)
            self._check_description(description)
        self.study_id = self.storage.get_study_id_from_name(self.study_name)
        if self.sweep.is_grid:
            self._queue_grid()
        self.requeue_interrupted()
        self.study.set_user_attr(DESCRIPTION, description)  # last: joining processes wait for it

    def open_existing(self) -> None:
        """Open the study to read it (``--summarize_only``)."""
        try:
            self.study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError as error:
            raise UserError(f"no sweep {self.study_name!r} in {self.storage_url} yet (run the sweep first)") from error
        self.study_id = self.storage.get_study_id_from_name(self.study_name)

    def _check_description(self, description: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.grace_seconds
        while DESCRIPTION not in self.study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.5)  # the creating process is still queuing the grid
        stored = self.study.user_attrs.get(DESCRIPTION)
        if stored is not None and stored != description:
            raise UserError(f"study {self.study_name!r} in {self.storage_url} holds another sweep: {stored}; "
                            "give another --study_name or --workdir to start a new one")

    def _queue_grid(self) -> None:
        """Queue the grid points (the first ``num_trials``) that have no trial yet; idempotent."""
        present = {_point_key(s.params) for s in self.parameter_sets()}
        for point in self.sweep.grid_points():
            if _point_key(point) not in present:
                self.study.enqueue_trial(point)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def recover_stale(self) -> None:
        """Fail RUNNING trials of dead sweep processes and queue each again with its parameters and workdir.

        Optuna's stale check skips trials that never recorded a heartbeat; a process killed between taking a trial
        and its first heartbeat leaves one: found here by its missing ``runner`` attribute.
        """
        optuna.storages.fail_stale_trials(self.study)
        limit = datetime.now() - timedelta(seconds=self.grace_seconds)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if RUNNER not in trial.user_attrs and trial.datetime_start is not None and trial.datetime_start < limit:
                self.fail_and_retry(trial.number)

    def requeue_interrupted(self) -> None:
        """Queue again each parameter set whose last attempt was interrupted and has no retry yet."""
        for parameter_set in self.parameter_sets():
            latest = parameter_set.latest
            if latest.state == TrialState.FAIL and latest.user_attrs.get(INTERRUPTED):
                retry(self.study, latest)

    def fail_and_retry(self, number: int) -> None:
        """Mark trial ``number`` FAIL (unless it finished meanwhile) and queue it again."""
        trial_id = self.trial_id(number)
        try:
            if not self.storage.set_trial_state_values(trial_id, TrialState.FAIL):
                return
        except UpdateFinishedTrialError:
            return
        retry(self.study, self.storage.get_trial(trial_id))

    def parameter_sets(self) -> list[ParameterSet]:
        sets: dict[int, ParameterSet] = {}
        for trial in self.study.get_trials(deepcopy=False):
            origin = trial.system_attrs.get(RETRY_OF, trial.number)
            sets.setdefault(origin, ParameterSet([])).attempts.append(trial)
        return [sets[number] for number in sorted(sets)]

    def progress(self) -> Progress:
        trials = self.study.get_trials(deepcopy=False)
        started = {t.system_attrs.get(RETRY_OF, t.number) for t in trials if t.state != TrialState.WAITING}
        return Progress(waiting=sum(t.state == TrialState.WAITING for t in trials),
                        running=[t for t in trials if t.state == TrialState.RUNNING], started=len(started))


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial`` (just marked FAIL: stale or interrupted) again, with its parameters and trial directory."""
    params = {**trial.system_attrs.get(FIXED_PARAMS, {}), **trial.params}
    user_attrs = {TRIAL_DIR: trial.user_attrs[TRIAL_DIR]} if TRIAL_DIR in trial.user_attrs else {}
    origin = trial.system_attrs.get(RETRY_OF, trial.number)
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=user_attrs,
                                              system_attrs={FIXED_PARAMS: params, RETRY_OF: origin}))


def default_storage(workdir: str) -> str:
    return f"sqlite:///{os.path.join(os.path.abspath(workdir), 'sweep.db')}"


def _open_storage(url: str, heartbeat_seconds: int, grace_seconds: int,
                  on_stale: Callable[[optuna.Study, FrozenTrial], None]) -> optuna.storages.RDBStorage:
    # SQLite: wait for the database lock instead of failing after 5 s while other threads write.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_seconds,
                                          grace_period=grace_seconds, heartbeat_stale_trial_callback=on_stale)
    except Exception as error:  # a bad URL, a missing database driver, an unreachable server
        cause = error
        while cause.__cause__ or cause.__context__:  # Optuna's ImportError hides which driver is missing
            cause = cause.__cause__ or cause.__context__
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"--storage={url}: cannot open it ({type(cause).__name__}: {message})") from error


def _point_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Delegates trial *n* to ``make(seed_n)``, a fresh sampler seeded from (seed, n).

    TPE reads the study's history on every draw, so a fresh instance per trial loses nothing; only its random
    start-up draws change with the seed.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._samplers: dict[int, optuna.samplers.BaseSampler] = {}
        self._lock = threading.Lock()

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        with self._lock:
            if trial.number not in self._samplers:
                seed = int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0])
                self._samplers[trial.number] = self._make(seed)
            return self._samplers[trial.number]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        with self._lock:
            self._samplers.pop(trial.number, None)


def _sampler(sweep: Sweep) -> optuna.samplers.BaseSampler:
    if sweep.sampler == "tpe":
        return TrialSeededSampler(lambda seed: optuna.samplers.TPESampler(seed=seed), sweep.seed)
    return TrialSeededSampler(lambda seed: optuna.samplers.RandomSampler(seed=seed), sweep.seed)  # grid: unused
