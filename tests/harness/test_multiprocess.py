"""Several processes for real: two train.py processes on loopback (gloo CPU collectives), two fake CPU devices each,
against one process with four fake devices on the same global batch, and that one against a single device.

The two runs compute the same thing on the same 4-device mesh; only where the gradient and BatchNorm sums are
reduced differs (inside one XLA process, or across processes through gloo), and float32 addition in another order
rounds differently in the last bits (measured: equal to the bit, or one float32 ulp apart after 12 steps). So
train loss and gradient norm are compared with the tolerance of the 4-devices-vs-1 test (rtol 2e-5), eval loss
with rtol 1e-5, parameters with rtol 1e-4 / atol 1e-5, and the eval accuracy, a count of 360 predictions that
such rounding does not flip, exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from cnn.errors import ConfigError
from cnn.train import distributed
from tests.harness.conftest import ROOT, cli_env, restore_params, train_args

# Without warm-up and at a higher learning rate, 12 steps move test accuracy well off chance (23% here), so the
# eval comparisons below are not between two constant predictors.
LEARN = ("--config.schedule.warmup_epochs=0", "--config.optimizer.learning_rate=0.2")
TWO_DEVICES = "--xla_force_host_platform_device_count=2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_flags(port: int, count: int, index: int, prefix: str = "--config.distributed.") -> list[str]:
    return [f"{prefix}coordinator_address=127.0.0.1:{port}", f"{prefix}num_processes={count}",
            f"{prefix}process_id={index}"]


def run_together(commands: list[tuple[list[str], dict[str, str]]], logs: Path,
                 timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Start every ``(arguments, environment)`` at once (outputs to files: no pipe can fill up) and wait for all;
    once one fails, the others get 30 s to fail with it before they are killed (a dead peer leaves them waiting)."""
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for index, (command, env) in enumerate(commands):
        with open(logs / f"{index}.out", "w") as out, open(logs / f"{index}.err", "w") as err:
            processes.append(subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=out, stderr=err))
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        if any(p.returncode not in (None, 0) for p in processes):
            deadline = min(deadline, time.monotonic() + 30)
        time.sleep(0.05)
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait()
    return [subprocess.CompletedProcess(command, p.returncode, (logs / f"{i}.out").read_text(),
                                        (logs / f"{i}.err").read_text())
            for i, ((command, _), p) in enumerate(zip(commands, processes, strict=True))]


def two_processes(tfds_dir: str, workdirs: tuple[Path, Path]) -> list[tuple[list[str], dict[str, str]]]:
    """The two train.py commands of one run on loopback, two fake CPU devices each."""
    port, env = free_port(), cli_env(tfds_dir, XLA_FLAGS=TWO_DEVICES)
    return [(["train.py", *train_args(workdir, *LEARN, *process_flags(port, 2, index))], env)
            for index, workdir in enumerate(workdirs)]


def assert_all_exit_zero(results: list[subprocess.CompletedProcess]) -> None:
    for index, result in enumerate(results):
        assert result.returncode == 0, f"process {index} exited {result.returncode}:\n{result.stderr[-3000:]}"


def records(workdir: Path, split: str) -> list[dict]:
    with open(workdir / "metrics.jsonl") as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tfds_dir):
    """The 12-step runlocal run on two processes x two devices, on one process x four devices and on one device
    (at the same time: each fills the others' waits)."""
    root = tmp_path_factory.mktemp("multiprocess")
    four = (["train.py", *train_args(root / "four", *LEARN)],
            cli_env(tfds_dir, XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    one = (["train.py", *train_args(root / "one", *LEARN)], cli_env(tfds_dir))
    results = run_together([*two_processes(tfds_dir, (root / "two", root / "two")), four, one], root / "logs")
    assert_all_exit_zero(results)
    return {"root": root, "two": root / "two", "four": root / "four", "one": root / "one", "processes": results[:2],
            "four_devices": results[2], "one_device": results[3]}


def test_four_devices_match_one_device_and_the_resolved_config_is_written(runs):
    assert "on 1 cpu device" in runs["one_device"].stderr and "on 4 cpu devices" in runs["four_devices"].stderr
    config = json.loads((runs["one"] / "config.json").read_text())
    assert config["optimizer"]["learning_rate"] == 0.2 and config["num_steps"] == 12  # LEARN, over the variant's
    assert config["model"]["name"] == "small_cnn"
    for a, b in zip(records(runs["one"], "train"), records(runs["four"], "train"), strict=True):
        np.testing.assert_allclose([a["loss"], a["grad_norm"]], [b["loss"], b["grad_norm"]], rtol=2e-5)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
                 restore_params(runs["one"], 12), restore_params(runs["four"], 12))


def test_two_processes_match_one_process_with_four_devices(runs):
    two, four = runs["two"], runs["four"]
    assert "on 4 cpu devices (2 process(es))" in runs["processes"][0].stderr
    train_two, train_four = records(two, "train"), records(four, "train")
    assert [r["step"] for r in train_two] == [r["step"] for r in train_four] == [2, 4, 6, 8, 10, 12]
    for a, b in zip(train_two, train_four, strict=True):
        np.testing.assert_allclose([a["loss"], a["grad_norm"]], [b["loss"], b["grad_norm"]], rtol=2e-5)
        assert a["learning_rate"] == b["learning_rate"]
    eval_two, eval_four = records(two, "eval"), records(four, "eval")
    assert [r["step"] for r in eval_two] == [r["step"] for r in eval_four] == [6, 12]
    for a, b in zip(eval_two, eval_four, strict=True):
        assert a["accuracy"] == b["accuracy"]
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    assert eval_two[-1]["accuracy"] > 0.15  # off chance (0.10): the comparison above means something
    # The checkpoint written by two processes restores in this single process, equal to the 4-device one.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
                 restore_params(two, 12), restore_params(four, 12))


def test_only_process_zero_writes(runs):
    two = runs["two"]
    primary, other = runs["processes"]
    steps = [(r["step"], r["split"]) for r in map(json.loads, (two / "metrics.jsonl").read_text().splitlines())]
    assert len(steps) == len(set(steps)) == 8  # one writer: no record twice
    assert len(list((two / "tb").iterdir())) == 1
    assert json.loads((two / "config.json").read_text())["distributed"]["num_processes"] == 2
    assert "final eval: accuracy" in primary.stdout and "step 12: eval accuracy" in primary.stdout
    assert "train:" in primary.stderr  # the progress bar
    for ours in ("training on", "train:", "eval accuracy", "resumed", "final eval"):  # gloo and orbax log too
        assert ours not in other.stdout + other.stderr


def test_two_process_checkpoint_evaluates_on_one_process(runs, tmp_path, evaluate):
    workdir = tmp_path / "run"
    shutil.copytree(runs["two"], workdir)
    result = evaluate(f"--workdir={workdir}")
    report = json.loads((workdir / "eval_12.json").read_text())
    trained = records(runs["two"], "eval")[-1]
    assert report["accuracy"] == trained["accuracy"] and report["count"] == 360
    np.testing.assert_allclose(report["loss"], trained["loss"], rtol=1e-5)
    assert f"test accuracy {trained['accuracy']:.4f}, loss " in result.stdout and "(step 12)" in result.stdout


def test_two_processes_resume_from_checkpoint(runs, tfds_dir):
    workdir = runs["root"] / "resumed"
    shutil.copytree(runs["two"], workdir)
    shutil.rmtree(workdir / "checkpoints" / "12")  # as if killed between the checkpoints at 8 and 12
    results = run_together(two_processes(tfds_dir, (workdir, workdir)), runs["root"] / "logs-resumed")
    assert_all_exit_zero(results)
    assert "resumed from the checkpoint at step 8" in results[0].stderr
    assert "resumed" not in results[1].stderr
    uninterrupted = records(runs["two"], "train") + records(runs["two"], "eval")
    resumed = records(workdir, "train") + records(workdir, "eval")
    assert [(r["step"], r["split"]) for r in resumed] == [(r["step"], r["split"]) for r in uninterrupted]
    for a, b in zip(resumed, uninterrupted, strict=True):  # same processes, same order of sums: same numbers
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                 restore_params(workdir, 12), restore_params(runs["two"], 12))


def test_unreachable_coordinator_is_one_line_error(tmp_path, train):
    port = free_port()  # nothing listens there
    result = train(tmp_path / "run", *process_flags(port, 2, 1), "--config.distributed.initialization_timeout=2",
                   check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert errors == [f"error: process 1 of 2 could not join the run within 2 s (config.distributed."
                      f"initialization_timeout): nothing answers at 127.0.0.1:{port}: is process 0 running there, "
                      f"and reachable from this host?"], result.stderr[-2000:]
    # Ours, at 2 s: JAX's own deadline (12 s) aborts from C++ with a stack trace.
    assert "Traceback" not in result.stderr and "Check failure" not in result.stderr


@pytest.mark.slow
def test_workdir_that_processes_do_not_share_is_an_error(tmp_path, tfds_dir):
    results = run_together(two_processes(tfds_dir, (tmp_path / "a", tmp_path / "b")), tmp_path / "logs")
    for result in results:
        assert result.returncode == 2, result.stderr[-2000:]
        assert "must be one directory that every process sees (a shared file system): process(es) [1]" in \
            result.stderr


@pytest.mark.slow
def test_eval_on_two_processes(runs, tfds_dir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(runs["two"], workdir)
    port = free_port()
    env = cli_env(tfds_dir, XLA_FLAGS=TWO_DEVICES)
    results = run_together([(["eval.py", f"--workdir={workdir}", *process_flags(port, 2, index, prefix="--")], env)
                            for index in range(2)], tmp_path / "logs")
    assert_all_exit_zero(results)
    trained = records(runs["two"], "eval")[-1]
    summary = [line for line in results[0].stdout.splitlines() if line.startswith("test accuracy")]
    assert summary and f"accuracy {trained['accuracy']:.4f}," in summary[-1] and summary[-1].endswith("(step 12)")
    assert "test accuracy" not in results[1].stdout
    assert json.loads((workdir / "eval_12.json").read_text())["accuracy"] == trained["accuracy"]


@pytest.mark.slow
def test_slurm_launch_is_detected(runs, tfds_dir):
    """Two tasks of a SLURM step on this host (the variables srun sets), no config.distributed keys: JAX finds the
    coordinator (the step's first node, port from JAX_COORDINATOR_PORT), count and id itself."""
    workdir, port = runs["root"] / "slurm", free_port()
    slurm = {"SLURM_JOB_ID": "42", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
             "SLURM_STEP_NUM_NODES": "1", "JAX_COORDINATOR_PORT": str(port)}
    results = run_together([(["train.py", *train_args(workdir, *LEARN)],
                             cli_env(tfds_dir, XLA_FLAGS=TWO_DEVICES, SLURM_PROCID=str(index),
                                     SLURM_LOCALID=str(index), **slurm)) for index in range(2)],
                           runs["root"] / "logs-slurm")
    assert_all_exit_zero(results)
    assert "on 4 cpu devices (2 process(es))" in results[0].stderr
    for a, b in zip(records(workdir, "eval"), records(runs["four"], "eval"), strict=True):
        assert a["accuracy"] == b["accuracy"]
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)


# Settings, checked in this process: validate() raises before anything reaches JAX.
GOOD = {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1, "initialization_timeout": 300}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"process_id": None}, "set all of config.distributed.coordinator_address, config.distributed.num_processes, "
                               "config.distributed.process_id or none of them (missing: "
                               "config.distributed.process_id)"),
        ({"coordinator_address": None, "num_processes": None}, "missing: config.distributed.coordinator_address, "
                                                               "config.distributed.num_processes"),
        ({"coordinator_address": "10.0.0.1"}, "config.distributed.coordinator_address must be 'host:port'"),
        ({"coordinator_address": "10.0.0.1:99999"}, "(port 1-65535) of process 0, got '10.0.0.1:99999'"),
        ({"coordinator_address": "http://host:80"}, "got 'http://host:80'"),
        ({"num_processes": 0, "process_id": 0}, "config.distributed.num_processes must be a positive integer, got 0"),
        ({"process_id": 2}, "config.distributed.process_id must be in [0, num_processes=2), got 2"),
        ({"process_id": -1}, "config.distributed.process_id must be in [0, num_processes=2), got -1"),
        ({"initialization_timeout": 0}, "config.distributed.initialization_timeout must be a positive number"),
    ],
)
def test_bad_distributed_settings_name_the_key(changes, expected):
    with pytest.raises(ConfigError) as error:
        distributed.validate({**GOOD, **changes})
    assert expected in str(error.value)


@pytest.mark.parametrize("settings", [GOOD, {**GOOD, "coordinator_address": "[::1]:8476", "process_id": 0},
                                      {**GOOD, "coordinator_address": "node-7.cluster_a:80"}])
def test_good_distributed_settings(settings):
    assert distributed.validate(settings) is True
    assert distributed.validate({"initialization_timeout": 300}) is False  # none set: JAX's detection


@pytest.fixture
def plain_environment(monkeypatch):
    """No variable of a cluster launch that JAX detects, whatever the machine running the tests sets."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "OMPI_", "TPU_", "JAX_COORDINATOR")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(distributed, "_on_cloud_tpu_vm", lambda: False)


SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[001-002]", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
         "SLURM_STEP_NUM_NODES": "2"}
OMPI = {"OMPI_MCA_orte_hnp_uri": "1234.0;tcp://10.0.0.1:5678", "OMPI_COMM_WORLD_RANK": "1",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({**SLURM, "SLURM_NTASKS": "4"}, "SLURM"),
        ({**SLURM, "SLURM_NTASKS": "1"}, None),  # one task: a single machine
        ({k: v for k, v in SLURM.items() if k != "SLURM_STEP_NODELIST"} | {"SLURM_NTASKS": "4"}, None),  # salloc
        ({**OMPI, "OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI"),
        ({**OMPI, "OMPI_COMM_WORLD_SIZE": "1"}, None),
        ({"TPU_WORKER_HOSTNAMES": "t1k-0,t1k-1", "TPU_WORKER_ID": "1"}, "TPU slice (GKE)"),
        ({"TPU_WORKER_HOSTNAMES": "t1k-0", "TPU_WORKER_ID": "0"}, None),
        ({}, None),
    ],
)
def test_detected_cluster_agrees_with_jax(plain_environment, monkeypatch, environ, expected):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert distributed.detected_cluster() == expected
    # Reference: JAX's own cluster classes (what jax.distributed.initialize() would use) on the same environment.
    from jax._src import clusters

    for kind, cluster in (("SLURM", clusters.SlurmCluster), ("Open MPI", clusters.OmpiCluster)):
        if expected == kind:
            assert cluster.is_env_present() and cluster.get_process_count() > 1 and cluster.get_process_id() == 1
        elif expected is None and cluster.is_env_present():
            assert cluster.get_process_count() == 1


def test_jax_coordinator_address_without_a_cluster_is_an_error(plain_environment, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    with pytest.raises(ConfigError, match="JAX_COORDINATOR_ADDRESS is set but no SLURM, Open MPI or TPU launch"):
        distributed.initialize({"initialization_timeout": 300})


def test_single_machine_is_left_alone(plain_environment):
    assert distributed.initialize({"initialization_timeout": 300}) is False
    assert not jax.distributed.is_initialized()
