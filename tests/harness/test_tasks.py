"""Every task through train.py and eval.py with its runlocal config, and its metrics recomputed from
``predictions_<step>.npz`` by independent code: scikit-learn's accuracy and confusion matrix (segmentation: in
test_segmentation_runs.py, on its learned run, per-class IoU and Dice by numpy bincount). The same numbers come out
on 4 devices (node classification here; the sums of every task are merged the same way, and tests/tasks checks them
at two batch sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix

from tests.harness.conftest import ROOT, cli_env, run_cli

SHARED = ROOT.parent / "shared" / "data"
FOUR_DEVICES = "--xla_force_host_platform_device_count=4"


def eval_json(workdir: Path, step: int) -> dict:
    return json.loads((workdir / f"eval_{step}.json").read_text())


def test_classification_predictions_agree_with_the_report(trained_copy, evaluate):
    evaluate(f"--workdir={trained_copy}", "--step=12", "--save_predictions")
    report = eval_json(trained_copy, 12)
    with np.load(trained_copy / "predictions_12.npz") as saved:
        logits, labels = saved["logits"], saved["label"]
    assert logits.shape == (360, 10) and report["task"] == "classification"
    predicted = logits.argmax(-1)
    assert report["accuracy"] == accuracy_score(labels, predicted)
    np.testing.assert_array_equal(report["confusion"], confusion_matrix(labels, predicted, labels=range(10)))


@pytest.mark.skipif(not (SHARED / "planetoid").is_dir(), reason="needs ../shared/data/planetoid")
def test_node_classification_trains_on_cora_and_counts_the_test_nodes(tmp_path, tfds_dir):
    workdir = tmp_path / "cora"
    env = cli_env(tfds_dir)
    train = run_cli("train.py", "--config=configs/planetoid.py:runlocal", f"--workdir={workdir}", env=env)
    assert "(500 examples)" in train.stdout  # the validation nodes
    run_cli("eval.py", f"--workdir={workdir}", "--split=test", "--save_predictions", env=env)
    report = eval_json(workdir, 10)
    with np.load(workdir / "predictions_10.npz") as saved:
        logits, labels = saved["logits"], saved["label"]
    assert logits.shape == (1000, 7) and report["count"] == 1000 and report["split"] == "test"
    assert report["accuracy"] == accuracy_score(labels, logits.argmax(-1))
    (workdir / "eval_10.json").unlink()
    run_cli("eval.py", f"--workdir={workdir}", "--split=test", env=cli_env(tfds_dir, XLA_FLAGS=FOUR_DEVICES))
    assert eval_json(workdir, 10)["confusion"] == report["confusion"]


def test_a_task_for_another_kind_of_dataset_is_one_line(tmp_path, train):
    result = train(tmp_path / "run", "--config.task.name=segmentation", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "task 'segmentation' learns from dense datasets, but dataset 'digits' holds image data" in result.stderr
