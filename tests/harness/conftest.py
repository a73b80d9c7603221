"""Shared fixtures: a TFDS data dir with the digits prepared once, and a runner for the CLIs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tfds")
    from cnn.data import make_source

    make_source({"name": "digits", "data_dir": str(path)}).prepare()  # once for every test
    return str(path)


def cli_env(tfds_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(TFDS_DATA_DIR=tfds_dir, PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(script: str, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def run_cli_batch(module: str, arguments: list[list[str]], env: dict[str, str],
                  scratch: Path) -> list[subprocess.CompletedProcess]:
    """Each argument list through ``module.run()`` (e.g. ``cnn.train.__main__``, what train.py runs), all in one
    process (tests/harness/cli_batch.py): one start-up for many command lines that end before training."""
    scratch.mkdir(parents=True, exist_ok=True)
    args_file, out_file = scratch / "arguments.json", scratch / "results.json"
    args_file.write_text(json.dumps(arguments))
    run = subprocess.run([sys.executable, "-m", "tests.harness.cli_batch", module, str(out_file), str(args_file)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise AssertionError(f"tests.harness.cli_batch exited {run.returncode}:\n{run.stderr[-3000:]}")
    return [subprocess.CompletedProcess([module, *args], r["returncode"], r["stdout"], r["stderr"])
            for args, r in zip(arguments, json.loads(out_file.read_text()), strict=True)]


def train_args(workdir: Path, *overrides: str) -> list[str]:
    return ["--config=configs/default.py:runlocal", f"--workdir={workdir}", *overrides]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tfds_dir) -> Path:
    """One finished runlocal run (checkpoints at 8 and 12; eval batch 7, so the last eval batch is partial)."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    run_cli("train.py", *train_args(workdir, "--config.eval_batch_size=7"), env=cli_env(tfds_dir))
    return workdir


@pytest.fixture
def trained_copy(trained_run, tmp_path) -> Path:
    """A private copy of :func:`trained_run` that a test may modify."""
    target = tmp_path / "run"
    shutil.copytree(trained_run, target)
    return target


@pytest.fixture
def train(tfds_dir):
    """``train(workdir, *overrides, check=True, **env)`` runs train.py with the runlocal config."""

    def run(workdir: Path, *overrides: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return run_cli("train.py", *train_args(workdir, *overrides), env=cli_env(tfds_dir, **env), check=check)

    return run


@pytest.fixture
def evaluate(tfds_dir):
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_cli("eval.py", *args, env=cli_env(tfds_dir), check=check)

    return run


def restore_params(workdir: Path, step: int):
    """Parameters and model state of a checkpoint, read with orbax directly (no model needed)."""
    import jax
    import orbax.checkpoint as ocp

    path = Path(workdir) / "checkpoints" / str(step) / "default"
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        metadata = getattr(metadata, "item_metadata", metadata)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata.tree
                              if hasattr(metadata, "tree") else metadata)
        tree = checkpointer.restore(path, target)
    return {"params": tree["params"], "model_state": tree["model_state"], "opt_state": tree["opt_state"]}
