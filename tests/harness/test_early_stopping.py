"""Early stopping (``cnn/train/early_stopping.py``): the rule against a loop of Kipf & Welling's formula, the history a
resumed run recovers from metrics.jsonl, bad settings, and a run on Cora that stops, resumes and stops at the same
step with the same parameters as an uninterrupted one."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from cnn.errors import ConfigError
from cnn.train.early_stopping import EarlyStopping

from .conftest import ROOT, restore_params

SHARED = ROOT.parent / "shared" / "data"
METRICS = {"accuracy": "max", "loss": "min"}


def _config(metric: str = "loss", window=10, mode: str = "min") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"early_stopping": {"metric": metric, "window": window, "mode": mode}})


def kipf_stop(values: list[float], window: int) -> int | None:
    """The first evaluation t (1-based) with ``window`` earlier ones whose mean it exceeds, by explicit sums."""
    for t in range(window + 1, len(values) + 1):
        total = 0.0
        for s in range(t - window, t):
            total += values[s - 1]
        if values[t - 1] > total / window:
            return t
    return None


def _stop(stopper: EarlyStopping, values: list[float]) -> int | None:
    for t, value in enumerate(values, start=1):
        if stopper.update(value):
            return t
    return None


@pytest.mark.parametrize("window", [1, 3, 10])
def test_the_rule_stops_where_the_formula_does(window):
    rng = np.random.default_rng(window)
    stops = set()
    for _ in range(200):  # noisy decreasing losses: a validation loss that levels off
        values = list(np.exp(-np.arange(60) / rng.uniform(5, 40)) + rng.normal(0, rng.uniform(0, 0.02), 60))
        expected = kipf_stop(values, window)
        stops.add(expected)
        assert _stop(EarlyStopping.of(_config(window=window), METRICS), values) == expected
        # mode "max" on the negated values is the same decision (an accuracy that stops rising)
        assert _stop(EarlyStopping.of(_config("accuracy", window, "max"), METRICS), [-v for v in values]) == expected
    assert len(stops) > 5 and None in stops  # the sequences stop at many evaluations, and some never


def test_a_resumed_rule_reads_the_eval_records_up_to_the_restored_step():
    records = [{"step": s, "split": split, "loss": 10.0 - s} for s in range(1, 9) for split in ("train", "eval")]
    records.append({"step": 9, "split": "eval", "loss": 0.0})  # past the restored step: written again on resume
    stopper = EarlyStopping.of(_config(window=3), METRICS)
    stopper.restore(records, step=6)
    assert stopper.history == [9.0, 8.0, 7.0, 6.0, 5.0, 4.0]
    assert not stopper.stopped and not stopper.update(3.0) and stopper.update(4.1)  # 4.1 > mean(5, 4, 3)


@pytest.mark.parametrize(("config", "message"), [
    (_config("top5_accuracy"), r"early_stopping.metric='top5_accuracy' is not an eval metric of this task; choose "
                               r"from \['accuracy', 'loss'\]"),
    (_config(window=0), r"early_stopping.window must be a positive integer \(evaluations\), got 0"),
    (_config(window=2.5), r"early_stopping.window must be a positive integer \(evaluations\), got 2.5"),
    (_config(mode="minimize"), r"early_stopping.mode must be one of \['min', 'max'\], got 'minimize'"),
])
def test_bad_settings_are_one_line(config, message):
    with pytest.raises(ConfigError, match=message):
        EarlyStopping.of(config, METRICS)


def test_off_by_default():
    from cnn.config_defaults import base_config

    assert EarlyStopping.of(base_config("digits", "lenet5"), METRICS) is None


@pytest.mark.skipif(not (SHARED / "planetoid").is_dir(), reason="needs ../shared/data/planetoid")
def test_a_run_resumed_after_a_kill_stops_at_the_same_step_with_the_same_state(tmp_path, tfds_dir):
    """Cora with a rule that stops soon (mode "max" on the loss: as soon as the falling loss is below the mean of the
    previous 6). The interrupted run ends at step 4, before the rule can act; its rerun must recover the 4 evaluations
    from metrics.jsonl to stop where the uninterrupted run does (with an empty history it would stop 4 steps later)."""
    from cnn.train.config import load_config_file
    from cnn.train.loop import train_and_evaluate
    from cnn.train.metrics import read_metrics

    def config(steps: int) -> ml_collections.ConfigDict:
        c = load_config_file(str(ROOT / "configs" / "planetoid.py:cora"))
        c.dataset.data_dir = tfds_dir
        c.update({"num_steps": steps, "checkpoint_every_steps": 4, "log_every_steps": 4})
        c.early_stopping.update({"metric": "loss", "window": 6, "mode": "max"})
        return c

    def records(workdir, split):
        return [r for r in read_metrics(workdir) if r["split"] == split]

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_and_evaluate(config(40), str(whole))
    stop = records(whole, "eval")[-1]["step"]
    assert 7 <= stop < 11  # the history before step 4 decides
    train_and_evaluate(config(4), str(resumed))  # "killed" after the checkpoint at step 4
    train_and_evaluate(config(40), str(resumed), allow_config_change=True)  # num_steps 4 -> 40: the rest of the run
    assert records(resumed, "eval") == records(whole, "eval")
    assert records(resumed, "test")[-1] == records(whole, "test")[-1]  # the test nodes, on the state it stopped at
    assert records(whole, "test")[0]["step"] == stop
    got, want = restore_params(resumed, stop), restore_params(whole, stop)
    np.testing.assert_array_equal(got["params"]["conv1"]["kernel"], want["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(got["params"]["conv2"]["kernel"], want["params"]["conv2"]["kernel"])
    train_and_evaluate(config(40), str(whole))  # a rerun of the stopped run trains no further
    assert records(whole, "eval")[-1]["step"] == stop and len(records(whole, "test")) == 1
