"""eval.py: exact counts against a one-batch numpy evaluation, output files, one-line errors."""

from __future__ import annotations

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from cnn.data import make_source
from cnn.models import create
from tests.harness.conftest import restore_params


def test_eval_counts_exactly_with_a_partial_last_batch(trained_copy, evaluate, tfds_dir):
    tmp_path = trained_copy  # trained with eval batch 7: 360 = 51 * 7 + 3, the last batch is partial
    result = evaluate(f"--workdir={tmp_path}", "--step=12")
    report = json.loads((tmp_path / "eval_12.json").read_text())
    assert (tmp_path / "confusion_12.png").stat().st_size > 1000

    # Reference: the whole test split in one forward pass, outside the harness.
    source = make_source({"name": "digits", "data_dir": tfds_dir})
    test = source.load("test")
    spec = source.spec
    standardized = ((test.images / 16.0 - spec.mean[0]) / spec.std[0]).astype(np.float32)
    model = create("small_cnn", num_classes=10, width=8, dropout_rate=0.1)
    state = restore_params(tmp_path, 12)
    logits = model.apply({"params": state["params"], **state["model_state"]},
                         jnp.asarray(standardized), train=False)
    predictions = np.argmax(np.asarray(logits), -1)
    assert report["count"] == 360
    assert report["accuracy"] == np.mean(predictions == test.labels)
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (test.labels, predictions), 1)
    np.testing.assert_array_equal(report["confusion"], confusion)
    assert f"{report['accuracy']:.4f}" in result.stdout


def test_eval_all_and_unknown_step(trained_copy, evaluate):
    tmp_path = trained_copy
    result = evaluate(f"--workdir={tmp_path}", "--all")
    steps = sorted(int(p.stem.split("_")[1]) for p in tmp_path.glob("eval_*.json"))
    assert steps == [8, 12] and "test accuracy" in result.stdout
    missing = evaluate(f"--workdir={tmp_path}", "--step=5", check=False)
    assert missing.returncode == 2 and "--step=5: no checkpoint at that step; available: [8, 12]" in missing.stderr


def test_eval_errors_are_one_line(trained_copy, evaluate):
    tmp_path = trained_copy
    absent = evaluate(f"--workdir={tmp_path / 'absent'}", check=False)
    assert absent.returncode == 2 and "no such directory" in absent.stderr

    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "checkpoints").mkdir()
    empty = evaluate(f"--workdir={tmp_path}", check=False)
    assert empty.returncode == 2 and "no checkpoints" in empty.stderr and "Traceback" not in empty.stderr


def test_checkpoint_that_does_not_match_config_is_one_line_error(trained_copy, evaluate):
    tmp_path = trained_copy
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["width"] = 16
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = evaluate(f"--workdir={tmp_path}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not match the config" in result.stderr


def test_eval_step_best_evaluates_the_checkpoint_with_the_best_metric(trained_copy, evaluate):
    # runlocal evaluates at steps 6 and 12 and checkpoints at 4, 8 and 12, so only step 12 holds a metric. Step 8 gets
    # a better accuracy, where orbax keeps it (<step>/metrics/metrics), so that the best is not the latest.
    planted = trained_copy / "checkpoints" / "8" / "metrics"
    shutil.copytree(trained_copy / "checkpoints" / "12" / "metrics", planted)
    recorded = json.loads((planted / "metrics").read_text())
    (planted / "metrics").write_text(json.dumps({**recorded, "accuracy": recorded["accuracy"] + 0.5}))
    result = evaluate(f"--workdir={trained_copy}", "--step=best")
    assert result.stdout.strip().endswith("(step 8)")
    assert (trained_copy / "eval_8.json").exists() and not (trained_copy / "eval_12.json").exists()


def test_eval_step_best_without_a_best_metric_is_one_line(trained_copy):
    from cnn.errors import UserError
    from cnn.train.evaluate import evaluate_checkpoints, parse_step

    config = json.loads((trained_copy / "config.json").read_text())
    config["checkpoint"]["best_metric"] = ""
    (trained_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"--step=best: the run in .* has no checkpoint.best_metric"):
        evaluate_checkpoints(str(trained_copy), step=parse_step("best"))
    assert parse_step("12") == 12
    with pytest.raises(UserError, match=r"--step=last: expected a step number or 'best'"):
        parse_step("last")


def test_conflicting_step_flags_are_refused():
    from cnn.errors import UserError
    from cnn.train.evaluate import select_steps

    with pytest.raises(UserError, match=r"^--all and --step=4 contradict each other: give one of them$"):
        select_steps([4, 8], 4, all_steps=True)
    with pytest.raises(UserError, match=r"^--step=best: no kept checkpoint has a value of the best metric"):
        select_steps([4, 8], "best", all_steps=False, best=None)
    assert select_steps([4, 8, 12], "best", all_steps=False, best=8) == [8]
