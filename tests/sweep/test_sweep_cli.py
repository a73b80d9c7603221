"""sweep.py end to end: real train.py trials of the runlocal config (a few seconds each, mostly start-up)."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from cnn.tasks import metric_directions
from tests.harness.conftest import ROOT, cli_env
from tests.sweep.conftest import sweep_command

# Failing points: learning rate 1e9 makes the loss non-finite at the first check; an unknown optimizer fails before
# training. train.py exits 2 with one error line in both cases.
LEARNING_RATES, OPTIMIZERS = [0.05, 1e9], ["momentum", "no_such_optimizer"]
WIDTHS = [4, 8]


def records(trial_dir: Path) -> list[dict]:
    with open(trial_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def final_eval(trial_dir: Path) -> dict | None:
    evals = [r for r in records(trial_dir) if r["split"] == "eval"] if (trial_dir / "metrics.jsonl").exists() else []
    return evals[-1] if evals else None


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_grid_runs_every_point_once_and_records_failures(tmp_path, sweep_config, run_sweep):
    config = sweep_config({"metric": "accuracy", "direction": "maximize",
                           "grid": {"optimizer.learning_rate": LEARNING_RATES, "optimizer.name": OPTIMIZERS}})
    workdir = tmp_path / "sweep"
    result = run_sweep(config, workdir, "--parallel=2")
    assert result.returncode == 3, result.stderr[-3000:]  # the exit status counts the failed trials
    assert "error: 3 of 4 trials failed" in result.stderr

    points = []
    for trial_dir in (workdir / "trials").iterdir():
        [command] = [line for line in (trial_dir / "train.log").read_text().splitlines() if line.startswith("$ ")]
        flags = dict(arg.split("=", 1) for arg in command.split() if arg.startswith("--config."))
        points.append((float(flags["--config.optimizer.learning_rate"]), flags["--config.optimizer.name"]))
        if (trial_dir / "config.json").exists():  # train.py's own record of the values it trained with
            resolved = json.loads((trial_dir / "config.json").read_text())["optimizer"]
            assert (resolved["learning_rate"], resolved["name"]) == points[-1]
    assert sorted(points) == sorted(itertools.product(LEARNING_RATES, OPTIMIZERS))  # each point run once

    rows = read_csv(workdir / "summary.csv")
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "FAIL", "FAIL"]
    best = rows[0]
    final = final_eval(workdir / best["workdir"])
    # the metrics a definition may name: the task's (top-5 and ROC AUC are not reported for 10 classes)
    assert set(final) - {"step", "split"} == set(metric_directions("classification")) - {"top5_accuracy", "roc_auc"}
    assert (float(best["accuracy"]), float(best["loss"]), final["step"]) == (final["accuracy"], final["loss"], 12)
    assert (float(best["optimizer.learning_rate"]), best["optimizer.name"]) == (0.05, "momentum")
    errors = {(float(r["optimizer.learning_rate"]), r["optimizer.name"]): r["error"] for r in rows[1:]}
    assert "not finite" in errors[(1e9, "momentum")] and " at step " in errors[(1e9, "momentum")]  # the NaN guard
    for learning_rate in LEARNING_RATES:
        assert errors[(learning_rate, "no_such_optimizer")].startswith("unknown optimizer 'no_such_optimizer'")
    for row in rows[1:]:
        log = (workdir / row["workdir"] / "train.log").read_text()
        assert row["accuracy"] == "" and f"error: {row['error']}" in log
    assert (workdir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (workdir / "summary.md").read_text()
    assert "4 parameter sets, 1 complete, 3 fail" in markdown and markdown.count("| FAIL |") == 3

    csv_before = (workdir / "summary.csv").read_text()
    (workdir / "summary.csv").unlink()
    summarized = run_sweep(config, workdir, "--summarize_only")
    assert summarized.returncode == 3 and (workdir / "summary.csv").read_text() == csv_before


def test_killed_sweep_resumes_without_rerunning_or_double_counting(tmp_path, sweep_config, run_sweep, tfds_dir):
    config = sweep_config({"metric": "loss", "direction": "minimize", "grid": {"model.width": WIDTHS}})
    workdir = tmp_path / "sweep"
    longer = ["--config.num_steps=200", "--config.checkpoint_every_steps=20", "--config.eval_every_steps=100",
              "--config.log_every_steps=10"]
    process = subprocess.Popen(sweep_command(config, workdir, "--parallel=1", *longer), cwd=ROOT,
                               env=cli_env(tfds_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # its own process group: the sweep and its trials
    finished, partial, deadline = [], [], time.time() + 300
    while not (finished and partial) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
        trial_dirs = list((workdir / "trials").glob("*")) if (workdir / "trials").exists() else []
        finished = [d for d in trial_dirs if (final_eval(d) or {}).get("step") == 200]
        partial = [d for d in trial_dirs if d not in finished and (d / "checkpoints").exists()
                   and any(p.name.isdigit() for p in (d / "checkpoints").iterdir())]
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the sweep ended before it could be killed"
    assert finished and partial
    finished_metrics = (finished[0] / "metrics.jsonl").read_bytes()
    assert not (partial[0] / "checkpoints" / "200").exists()

    result = run_sweep(config, workdir, "--parallel=2", *longer)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (finished[0] / "metrics.jsonl").read_bytes() == finished_metrics  # not run again
    assert "resumed from the checkpoint at step" in (partial[0] / "train.log").read_text()
    assert final_eval(partial[0])["step"] == 200
    steps = [r["step"] for r in records(partial[0]) if r["split"] == "train"]
    assert steps == list(range(10, 201, 10))  # nothing logged twice across the kill

    rows = read_csv(workdir / "summary.csv")
    assert sorted(int(r["model.width"]) for r in rows) == WIDTHS  # each grid point once
    assert all(r["state"] == "COMPLETE" for r in rows)
    assert {r["workdir"]: int(r["attempts"]) for r in rows} == {f"trials/{finished[0].name}": 1,
                                                                 f"trials/{partial[0].name}": 2}
    assert float(rows[0]["loss"]) <= float(rows[1]["loss"])


def test_bad_input_is_one_error_line(tmp_path, sweep_config, run_sweep):
    no_sweep = run_sweep(str(ROOT / "configs" / "mnist_lenet5.py"), tmp_path / "a")
    bad_metric = run_sweep(sweep_config({"metric": "f1", "direction": "maximize", "grid": {"model.width": [4]}}),
                           tmp_path / "b")
    swept_and_overridden = run_sweep(f"{ROOT / 'configs' / 'default.py'}:runlocal", tmp_path / "c",
                                     "--config.model.width=16")
    for result, message in [(no_sweep, "defines no get_sweep()"), (bad_metric, "get_sweep()['metric']"),
                            (swept_and_overridden, "--config.model.width is swept")]:
        assert result.returncode == 2
        assert result.stderr.strip().startswith("error: ") and message in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "c" / "trials").exists()
