"""The trainer survives what real runs meet: SIGKILL, NaN, corrupt checkpoints, bad input (several devices:
test_multiprocess.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.harness.conftest import ROOT, cli_env, restore_params, run_cli_batch, train_args

LONG_STEPS = 160  # the kill lands after the step-20 checkpoint, far from the end
LONG_RUN = (f"--config.num_steps={LONG_STEPS}", "--config.checkpoint_every_steps=20", "--config.eval_every_steps=80",
            "--config.log_every_steps=10")


def assert_trees_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def train_records(workdir: Path) -> list[dict]:
    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    return [r for r in records if r["split"] == "train"]


def test_sigkill_then_rerun_resumes_bitwise(tmp_path, tfds_dir, train):
    reference = tmp_path / "uninterrupted"
    train(reference, *LONG_RUN)

    killed = tmp_path / "killed"
    command = [sys.executable, str(ROOT / "train.py"), *train_args(killed, *LONG_RUN)]
    process = subprocess.Popen(command, cwd=ROOT, env=cli_env(tfds_dir), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "20").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "checkpoints" / str(LONG_STEPS)).exists()

    resumed = train(killed, *LONG_RUN)
    assert "resumed from the checkpoint at step" in resumed.stderr
    assert_trees_equal(restore_params(reference, LONG_STEPS), restore_params(killed, LONG_STEPS))
    # The data order resumed exactly: every logged training loss is the same, and none is logged twice.
    steps = [r["step"] for r in train_records(killed)]
    assert steps == sorted(set(steps)) == list(range(10, LONG_STEPS + 1, 10))
    for a, b in zip(train_records(reference), train_records(killed), strict=True):
        assert (a["step"], a["loss"], a["accuracy"], a["grad_norm"]) == (b["step"], b["loss"], b["accuracy"],
                                                                          b["grad_norm"])


def test_nan_loss_stops_and_keeps_last_finite_checkpoint(trained_copy, train):
    tmp_path = trained_copy
    before = restore_params(tmp_path, 12)
    result = train(tmp_path, "--config.num_steps=24", "--config.optimizer.learning_rate=inf",
                   "--allow_config_change", check=False)
    assert result.returncode == 2
    # Step 13's loss is finite, but its update (learning rate inf) is not: training stops there.
    assert "error: the gradients, updates or parameters are not finite (loss" in result.stderr
    assert "at step 13; training stopped" in result.stderr
    assert "Traceback" not in result.stderr
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert max(kept) == 12
    assert_trees_equal(before, restore_params(tmp_path, 12))


@pytest.mark.parametrize("part", ["", "default"])  # the whole step (metadata too), or only its arrays
def test_corrupt_latest_checkpoint_falls_back_to_previous(trained_copy, train, part):
    tmp_path = trained_copy
    for root, _, files in os.walk(tmp_path / "checkpoints" / "12" / part):
        for name in files:
            path = Path(root) / name
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = train(tmp_path, "--config.num_steps=16", "--allow_config_change")
    assert "checkpoint at step 12 is unreadable" in result.stderr
    assert "resumed from the checkpoint at step 8" in result.stderr
    assert (tmp_path / "checkpoints" / "16").exists()
    assert len(list((tmp_path / "checkpoints").glob("12.unreadable-*"))) == 1  # kept for inspection


BAD_CONFIGS = [
    (("--config.optimizer.learnin_rate=0.1",), "no such config key 'learnin_rate'"),
    (("--config.model.name=foo",), "unknown model 'foo'; choose from ['alexnet', 'c3d', 'chebnet_k2'"),
    (("--config.optimizer.name=foo",), "unknown optimizer 'foo'; choose from"),
    (("--config.schedule.name=foo",), "unknown schedule 'foo'; choose from"),
    (("--config.dataset.name=foo",), "unknown dataset 'foo'; choose from ['adrenal_mnist3d', 'adrenal_mnist3d_"),
    (("--config.batch_size=0",), "config.batch_size must be positive"),
    (("--config.batch_size=abc",), "--config.batch_size=abc"),
    (("--config.model.widht=3",), "no such config key 'widht'"),
    (("--config.distributed.num_processes=2",), "or none of them"),  # the rules: test_multiprocess.py
]
MISSING_CONFIG_FILE = ("--config=configs/nope.py",)


@pytest.fixture(scope="module")
def bad_config_runs(tmp_path_factory, tfds_dir) -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    """train.py's entry point on every bad command line below, in one process (its start-up paid once)."""
    root = tmp_path_factory.mktemp("bad_config")
    lines = [train_args(root / "run", *overrides) for overrides, _ in BAD_CONFIGS]
    lines.append([*MISSING_CONFIG_FILE, f"--workdir={root / 'run'}"])
    results = run_cli_batch("cnn.train.__main__", lines, cli_env(tfds_dir), root)
    return dict(zip([overrides for overrides, _ in BAD_CONFIGS] + [MISSING_CONFIG_FILE], results, strict=True))


@pytest.mark.parametrize(("overrides", "expected"), BAD_CONFIGS)
def test_bad_config_is_one_line_error(bad_config_runs, overrides, expected):
    result = bad_config_runs[overrides]
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_one_line_error(bad_config_runs):
    result = bad_config_runs[MISSING_CONFIG_FILE]
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr


def test_rerun_of_finished_run_trains_nothing(trained_copy, train):
    tmp_path = trained_copy
    shutil.copy(tmp_path / "metrics.jsonl", tmp_path / "before.jsonl")
    result = train(tmp_path)
    assert "resumed from the checkpoint at step 12" in result.stderr
    assert (tmp_path / "metrics.jsonl").read_text() == (tmp_path / "before.jsonl").read_text()


def test_tensorboard_events_hold_train_and_eval_scalars(trained_run):
    import tensorflow as tf

    tags = set()
    for path in (trained_run / "tb").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    assert {"train/loss", "train/accuracy", "train/learning_rate", "train/grad_norm", "train/examples_per_second",
            "eval/accuracy", "eval/loss"} <= tags


@pytest.mark.slow  # two short training runs, stopped
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_with_one_line_naming_the_step(tmp_path, tfds_dir, signum):
    workdir = tmp_path / "run"
    process = subprocess.Popen(  # env --default-signal: SIGINT as at a terminal (a background shell ignores it)
        ["env", "--default-signal=INT", sys.executable, str(ROOT / "train.py"),
         *train_args(workdir, "--config.num_steps=100000", "--config.checkpoint_every_steps=4")],
        cwd=ROOT, env=cli_env(tfds_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (workdir / "checkpoints" / "4").exists() and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    last = stderr.strip().splitlines()[-1]
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert re.fullmatch(r"error: interrupted at step \d+; rerun the same command to resume from the checkpoint at "
                        r"step \d+", last), last
    assert not (workdir / ".train.lock").exists()
