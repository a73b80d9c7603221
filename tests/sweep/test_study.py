"""The study on SQLite, without training: grid queue, reopening, dead and interrupted trials queued again, seeded
samplers, summary order."""

from __future__ import annotations

import copy
import statistics
import sys

import optuna
import pytest
from optuna.trial import TrialState

from cnn.errors import ConfigError, UserError
from cnn.sweep import runner
from cnn.sweep.definition import parse_sweep
from cnn.sweep.study import INTERRUPTED, RETRY_OF, TRIAL_DIR, SweepStudy, default_storage
from cnn.sweep.summary import metric_statistics, summary_rows, write_summary
from cnn.train.config import load_config_file
from tests.harness.conftest import ROOT

GRID = {"metric": "accuracy", "direction": "maximize",
        "grid": {"optimizer.learning_rate": [0.01, 0.1], "model.width": [4, 8]}}
RATES = {"metric": "accuracy", "direction": "maximize", "grid": {"optimizer.learning_rate": [0.01, 0.1]}}
# In place of train.py: at rate 0.1 it fails (a NaN); at 0.01 its first run is stopped by Ctrl-C, seen through the
# CLI's own handling (train.py's), and its second run writes an eval record.
FAKE_TRAIN = f"""
import json, os, sys
sys.path.insert(0, {str(ROOT)!r})
from cnn.cli import run_cli
trial_dir, rate = sys.argv[1], float(sys.argv[2])
marker = os.path.join(trial_dir, "ran_once")
if rate == 0.1:
    print("error: loss is nan at step 3; training stopped (the last checkpoint is intact)")
    sys.exit(2)
if not os.path.exists(marker):
    open(marker, "w").close()
    def main(argv):
        raise KeyboardInterrupt
    sys.exit(run_cli(main))
with open(os.path.join(trial_dir, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({{"step": 10, "split": "eval", "accuracy": 0.75, "loss": 0.5}}) + "\\n")
"""
SPACE = {"metric": "loss", "direction": "minimize", "num_trials": 4, "sampler": "tpe",
         "space": {"optimizer.learning_rate": ("log_uniform", 1e-3, 1.0), "model.width": ("int", 4, 64)}}


@pytest.fixture(scope="module")
def config():
    return load_config_file(f"{ROOT / 'configs' / 'default.py'}:runlocal")


def open_study(workdir, raw: dict, config, num_trials: int | None = None) -> SweepStudy:
    workdir.mkdir(parents=True, exist_ok=True)
    sweep_study = SweepStudy(default_storage(str(workdir)), "test", parse_sweep(raw, config, num_trials),
                             heartbeat_seconds=1)
    sweep_study.create_or_join({"sweep": sweep_study.sweep.identity(), "overrides": {}})
    return sweep_study


def test_grid_is_queued_once_and_grows(tmp_path, config):
    first = open_study(tmp_path, GRID, config, num_trials=2)
    assert [t.state for t in first.study.get_trials()] == [TrialState.WAITING] * 2
    open_study(tmp_path, GRID, config, num_trials=2)  # a rerun, or a second machine: nothing queued twice
    grown = open_study(tmp_path, GRID, config)
    params = [tuple(s.params.values()) for s in grown.parameter_sets()]
    assert sorted(params) == [(0.01, 4), (0.01, 8), (0.1, 4), (0.1, 8)]
    assert grown.progress().waiting == 4 and grown.progress().started == 0


def test_another_sweep_in_the_same_study_is_refused(tmp_path, config):
    open_study(tmp_path, GRID, config)
    other = {**GRID, "grid": {"optimizer.learning_rate": [0.5], "model.width": [4]}}
    with pytest.raises(UserError, match="holds another sweep"):
        open_study(tmp_path, other, config)


def test_trial_taken_by_a_process_that_died_before_its_first_heartbeat_is_queued_again(tmp_path, config):
    sweep_study = open_study(tmp_path, GRID, config)
    trial = sweep_study.study.ask(sweep_study.sweep.distributions)  # RUNNING, never started: no runner attr
    trial.set_user_attr(TRIAL_DIR, "trials/0000_x")
    sweep_study.recover_stale()
    assert sweep_study.study.get_trials()[trial.number].state == TrialState.RUNNING  # not past the grace period
    sweep_study.grace_seconds = 0
    sweep_study.recover_stale()
    trials = sweep_study.study.get_trials()
    assert trials[trial.number].state == TrialState.FAIL
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.system_attrs[RETRY_OF] == trial.number
    assert retry.user_attrs[TRIAL_DIR] == "trials/0000_x"
    [parameter_set] = [s for s in sweep_study.parameter_sets() if s.number == trial.number]
    assert len(parameter_set.attempts) == 2 and parameter_set.state == TrialState.WAITING
    assert parameter_set.params == trial.params
    taken = {t.number: t.params for t in (sweep_study.study.ask(sweep_study.sweep.distributions) for _ in range(4))}
    assert taken[retry.number] == trial.params and sweep_study.progress().waiting == 0


def test_a_trial_interrupted_before_the_sweep_saw_the_signal_runs_again(tmp_path, config, monkeypatch):
    """Ctrl-C reaches train.py too; when it ends before the sweep's own stop is set (never set here), its exit status
    says it was interrupted: queued again and run, while a trial that failed for a reason of its own stays FAIL."""
    sweep_study = open_study(tmp_path, RATES, config)
    monkeypatch.setattr(runner, "train_command", lambda spec, trial_dir, overrides, params: [
        sys.executable, "-c", FAKE_TRAIN, trial_dir, str(params["optimizer.learning_rate"])])
    runner.SweepRunner(sweep_study, str(tmp_path), "unused", {}).run(parallel=1)
    sets = {s.params["optimizer.learning_rate"]: s for s in sweep_study.parameter_sets()}
    interrupted, failed = sets[0.01], sets[0.1]
    assert [t.state for t in interrupted.attempts] == [TrialState.FAIL, TrialState.COMPLETE]
    assert interrupted.attempts[0].user_attrs["error"] == "interrupted; queued again"
    assert interrupted.latest.value == 0.75
    assert [t.state for t in failed.attempts] == [TrialState.FAIL]
    assert failed.latest.user_attrs["error"].startswith("loss is nan at step 3; training stopped")


def test_a_rerun_queues_an_interrupted_trial_left_without_retry(tmp_path, config):
    """A sweep process killed between marking an interrupted trial FAIL and queuing its retry (a second Ctrl-C)
    leaves it so; the next run of the sweep queues it, once. A real failure is left as it is."""
    sweep_study = open_study(tmp_path, RATES, config)
    for trial_dir, attrs in (("trials/0000_a", {INTERRUPTED: True}), ("trials/0001_b", {"error": "loss is nan"})):
        trial = sweep_study.study.ask(sweep_study.sweep.distributions)
        trial.set_user_attr(TRIAL_DIR, trial_dir)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        sweep_study.study.tell(trial, state=TrialState.FAIL)
    for _ in range(2):  # two reruns: one retry
        sweep_study = open_study(tmp_path, RATES, config)
    sets = sweep_study.parameter_sets()
    assert [len(s.attempts) for s in sets] == [2, 1]
    assert sets[0].state == TrialState.WAITING and sets[1].state == TrialState.FAIL
    assert sets[0].latest.user_attrs[TRIAL_DIR] == "trials/0000_a" and sets[0].latest.system_attrs[RETRY_OF] == 0
    assert sets[0].params == sets[0].attempts[0].params


def test_search_draws_depend_on_seed_and_trial_number(tmp_path, config):
    def draws(workdir, raw) -> list[dict]:
        sweep_study = open_study(workdir, raw, config)
        trials = [sweep_study.study.ask(sweep_study.sweep.distributions) for _ in range(3)]
        return [t.params for t in trials]

    first, again = draws(tmp_path / "a", SPACE), draws(tmp_path / "b", SPACE)
    assert first == again
    assert len({str(p) for p in first}) == 3
    assert draws(tmp_path / "c", {**SPACE, "seed": 1}) != first


def test_summary_order_best_first_failed_last(tmp_path, config):
    sweep_study = open_study(tmp_path, {**SPACE, "space": {"model.width": ("int", 4, 64)}}, config)
    distributions = sweep_study.sweep.distributions
    for width, state, loss in [(4, TrialState.COMPLETE, 0.5), (8, TrialState.FAIL, None),
                               (16, TrialState.COMPLETE, 0.2), (32, TrialState.RUNNING, None),
                               (64, TrialState.COMPLETE, 0.9)]:
        sweep_study.study.add_trial(optuna.trial.create_trial(
            state=state, value=loss, params={"model.width": width}, distributions=distributions,
            user_attrs={"eval": {"loss": loss, "accuracy": 1 - loss}} if loss else {"error": "boom"}))
    rows = summary_rows(sweep_study.parameter_sets(), sweep_study.sweep)
    assert [row["model.width"] for row in rows] == [16, 4, 64, 32, 8]  # loss is minimized
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3 + ["RUNNING", "FAIL"]
    assert rows[-1]["error"] == "boom" and rows[0]["accuracy"] == pytest.approx(0.8)


def test_a_sweep_over_seeds_summarizes_the_test_metrics_as_mean_and_sd(tmp_path, config):
    """``test_accuracy`` exists when the config has a test split; summary.md gives each metric's mean and sample
    standard deviation over the complete trials (checked with the statistics module), failed ones left out."""
    seeds = {"metric": "test_accuracy", "direction": "maximize", "grid": {"seed": [0, 1, 2, 3]}}
    with pytest.raises(ConfigError, match=r"one of \['accuracy', .*\]; got 'test_accuracy' \(test_<metric> needs "
                                          r"config.dataset.test_split\)"):
        parse_sweep(seeds, config)
    with_test = copy.deepcopy(config)
    with_test.dataset.test_split = "test"
    sweep_study = open_study(tmp_path, seeds, with_test)
    distributions = sweep_study.sweep.distributions
    accuracies = [0.81, 0.83, None, 0.8]
    for seed, accuracy in enumerate(accuracies):
        evaluation = {"accuracy": 0.7 + seed / 100, "loss": 1.0, "test_accuracy": accuracy,
                      "test_loss": 0.9 - seed / 10}
        sweep_study.study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE if accuracy else TrialState.FAIL, value=accuracy, params={"seed": seed},
            distributions=distributions, user_attrs={"eval": evaluation} if accuracy else {"error": "boom"}))
    rows = write_summary(sweep_study.parameter_sets(), sweep_study.sweep, str(tmp_path), "seeds")
    done = [0, 1, 3]
    expected = {"test_accuracy": [accuracies[s] for s in done], "accuracy": [0.7 + s / 100 for s in done],
                "test_loss": [0.9 - s / 10 for s in done], "loss": [1.0] * 3}
    got = metric_statistics(rows, sweep_study.sweep)
    assert list(got) == ["test_accuracy", "accuracy", "loss", "test_loss"]
    for name, values in expected.items():
        assert got[name] == pytest.approx((statistics.mean(values), statistics.stdev(values)), abs=1e-12), name
    text = (tmp_path / "summary.md").read_text()
    assert "Mean ± sd over the 3 complete trials" in text
    assert f"| test_accuracy | {statistics.mean(expected['test_accuracy']):.4f} | " \
           f"{statistics.stdev(expected['test_accuracy']):.4f} |" in text
