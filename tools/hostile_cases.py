"""The cases of ``tools/hostile_inputs.py``: issue 15's classes of bad or hostile input, each a command line, a
snippet of Python calling an operator, or a small scripted run (signals, concurrent runs, a kill), with the setup
that damages its directory first (a file where a directory should be, a corrupted checkpoint, a stale lock, a
read-only or full disk)."""


from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RUNLOCAL = "--config=configs/default.py:runlocal"
OUTCOMES = ("one line", "recovered", "traceback", "exit 0", "other")


@dataclass
class Case:
    kind: str  # the class of input
    name: str
    argv: list[str] = field(default_factory=list)  # a CLI (run with python); {d}: the case's directory
    code: str = ""  # or Python code, run in a fresh interpreter (operators called from Python)
    setup: Callable[[Path], None] | None = None  # writes the case's files into its directory
    recovers: str = ""  # exit 0 with this on stderr is the documented recovery
    run: Callable[[Case, Path, dict], tuple[int, str]] | None = None  # a scenario of several processes
    needs_run: bool = False  # starts from a copy of the shared trained run, in {d}/run


# --- setups ---------------------------------------------------------------------------------------------------

def _file(name: str, content: bytes = b"not a directory") -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(content)


def _npz(**arrays) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        rng = np.random.default_rng(0)
        base = {"train_images": rng.integers(0, 255, (80, 8, 8, 1), np.uint8), "train_labels": np.arange(80) % 4,
                "test_images": rng.integers(0, 255, (12, 8, 8, 1), np.uint8), "test_labels": np.arange(12) % 4}
        base.update(arrays)
        np.savez(d / "data.npz", **{k: v for k, v in base.items() if v is not None})

    return write


def _folder(classes: dict[str, list[str]], damage: str = "") -> Callable[[Path], None]:
    """``classes``: split -> class names, two 10x12 PNGs each; ``damage``: a file to truncate."""
    from PIL import Image

    def write(d: Path) -> None:
        for split, names in classes.items():
            for label in names:
                (d / "images" / split / label).mkdir(parents=True)
                for i in range(2):
                    image = Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8))
                    image.save(d / "images" / split / label / f"{i}.png")
        if damage:
            path = d / "images" / damage
            path.write_bytes(path.read_bytes()[:30])

    return write


def _edit_config(**changes) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        config = json.loads((d / "run" / "config.json").read_text())
        for dotted, value in changes.items():
            *parents, key = dotted.split("__")
            target = config
            for parent in parents:
                target = target[parent]
            target[key] = value
        (d / "run" / "config.json").write_text(json.dumps(config))

    return edit


def _flip_data_file(d: Path) -> None:
    """16 bytes of the newest checkpoint's largest data file inverted (what the issue's corruption did)."""
    step = max(int(p.name) for p in (d / "run" / "checkpoints").iterdir() if p.name.isdigit())
    files = [p for p in (d / "run" / "checkpoints" / str(step)).rglob("*") if p.is_file() and p.parent.name == "d"]
    path = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(255 - b for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


def _truncate_metadata(d: Path) -> None:
    step = max(int(p.name) for p in (d / "run" / "checkpoints").iterdir() if p.name.isdigit())
    path = d / "run" / "checkpoints" / str(step) / "_CHECKPOINT_METADATA"
    path.write_bytes(path.read_bytes()[:20])


def _stale_lock(d: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (d / "run" / ".train.lock").write_text(f"{dead.pid} {os.uname().nodename}\n")


def make_read_only(d: Path) -> None:
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)


def _tiny_disk(d: Path) -> None:
    (d / "disk").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(d / "disk")], check=True)


# --- scenarios of several processes --------------------------------------------------------------------------------

def _wait_for(path: Path, timeout: float = 240) -> None:
    end = time.time() + timeout
    while not path.exists() and time.time() < end:
        time.sleep(0.2)


def _start(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as err:  # SIGINT as at a terminal (a background shell starts its children ignoring it)
        return subprocess.Popen(["env", "--default-signal=INT", PYTHON, *argv], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)


def _long_run(d: Path) -> list[str]:
    return ["train.py", RUNLOCAL, f"--workdir={d}/w", "--config.num_steps=4000", "--config.checkpoint_every_steps=5",
            "--config.eval_every_steps=4000"]


def _second_train_on_a_busy_workdir(case: Case, d: Path, env: dict) -> tuple[int, str]:
    first = _start(_long_run(d), env, d / "first.log")
    _wait_for(d / "w" / "checkpoints" / "5")
    second = subprocess.run([PYTHON, *_long_run(d)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    first.kill()
    first.wait()
    return second.returncode, second.stderr


def _signal_during_training(signum: int) -> Callable[[Case, Path, dict], tuple[int, str]]:
    def run(case: Case, d: Path, env: dict) -> tuple[int, str]:
        process = _start(_long_run(d), env, d / "run.log")
        _wait_for(d / "w" / "checkpoints" / "5")
        process.send_signal(signum)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return process.returncode, (d / "run.log").read_text()

    return run


def _kill_then_rerun(case: Case, d: Path, env: dict) -> tuple[int, str]:
    argv = ["train.py", RUNLOCAL, f"--workdir={d}/w", "--config.num_steps=40", "--config.checkpoint_every_steps=5",
            "--config.eval_every_steps=40"]
    process = _start(argv, env, d / "killed.log")
    _wait_for(d / "w" / "checkpoints" / "10")
    process.kill()
    process.wait()
    rerun = subprocess.run([PYTHON, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return rerun.returncode, rerun.stderr


# --- the cases -------------------------------------------------------------------------------------------------

def _train(*overrides: str, workdir: str = "{d}/w") -> list[str]:
    return ["train.py", RUNLOCAL, f"--workdir={workdir}", *overrides]


def _op(call: str) -> str:
    return f"import numpy as np, jax.numpy as jnp\nfrom cnn import ops\nprint(ops.{call})"


CASES = [
    # config flags
    Case("config flags", "dropout_rate=1.5", _train("--config.model.dropout_rate=1.5")),
    Case("config flags", "dropout_rate=1.0", _train("--config.model.dropout_rate=1.0")),
    Case("config flags", "grad_clip_norm=-1", _train("--config.optimizer.grad_clip_norm=-1")),
    Case("config flags", "step boundaries (2.0, -1.0)",
         _train("--config.schedule.name=step", "--config.schedule.boundaries=(2.0, -1.0)")),
    Case("config flags", "best_metric=bogus", _train("--config.checkpoint.best_metric=bogus")),
    Case("config flags", "model.width=0", _train("--config.model.width=0")),
    Case("config flags", "seed=-1", _train("--config.seed=-1")),
    Case("config flags", "unknown key", _train("--config.optimizer.learnig_rate=0.1")),
    Case("config flags", "batch_size=abc", _train("--config.batch_size=abc")),
    Case("config flags", "missing config file", ["train.py", "--config=configs/nope.py", "--workdir={d}/w"]),
    Case("config flags", "unknown variant", ["train.py", "--config=configs/default.py:bogus", "--workdir={d}/w"]),
    Case("config flags", "unknown optimizer", _train("--config.optimizer.name=sgdx")),
    Case("config flags", "unknown model", _train("--config.model.name=resnet_nope")),
    Case("config flags", "dtype=float8", _train("--config.dtype=float8")),
    Case("config flags", "num_steps=0", _train("--config.num_steps=0")),
    Case("config flags", "learning_rate=nan", _train("--config.optimizer.learning_rate=nan")),
    # workdirs
    Case("workdirs", "workdir is a file", _train(workdir="{d}/f"), setup=_file("f")),
    Case("workdirs", "workdir under a file", _train(workdir="{d}/f/run"), setup=_file("f")),
    Case("workdirs", "read-only workdir", _train(workdir="{d}/ro/run"), setup=make_read_only),
    Case("workdirs", "data_dir is a file", _train("--config.dataset.data_dir={d}/f"), setup=_file("f")),
    Case("workdirs", "stale lock of a killed run", _train(workdir="{d}/run"), setup=_stale_lock, needs_run=True,
         recovers="taking over the stale lock"),
    Case("workdirs", "resume with a changed learning rate", _train("--config.optimizer.learning_rate=0.5",
                                                                   workdir="{d}/run"), needs_run=True),
    Case("workdirs", "resume with num_steps below the checkpoint", _train("--config.num_steps=4", workdir="{d}/run"),
         needs_run=True),
    # eval
    Case("eval", "missing workdir", ["eval.py", "--workdir={d}/nope"]),
    Case("eval", "--all with --step", ["eval.py", "--workdir={d}/run", "--all", "--step=4"], needs_run=True),
    Case("eval", "a step that is not kept", ["eval.py", "--workdir={d}/run", "--step=5"], needs_run=True),
    Case("eval", "--step=abc", ["eval.py", "--workdir={d}/run", "--step=abc"], needs_run=True),
    Case("eval", "--step=best without a best metric", ["eval.py", "--workdir={d}/run", "--step=best"],
         setup=_edit_config(checkpoint__best_metric=""), needs_run=True),
    Case("eval", "unknown split", ["eval.py", "--workdir={d}/run", "--split=bogus"], needs_run=True),
    Case("eval", "workdir without config.json", ["eval.py", "--workdir={d}"]),
    Case("eval", "config.json that is not JSON", ["eval.py", "--workdir={d}/run"],
         setup=lambda d: (d / "run" / "config.json").write_text("{not json"), needs_run=True),
    Case("eval", "config.json with another model width", ["eval.py", "--workdir={d}/run"],
         setup=_edit_config(model__width=16), needs_run=True),
    # data preparation
    Case("data preparation", "unknown dataset", ["-m", "cnn.data.prepare", "nope"]),
    Case("data preparation", "manual_dir missing", ["-m", "cnn.data.prepare", "mnist", "--manual_dir={d}/nope",
                                                    "--data_dir={d}/tfds"]),
    Case("data preparation", "manual_dir empty", ["-m", "cnn.data.prepare", "mnist", "--manual_dir={d}",
                                                  "--data_dir={d}/tfds"]),
    Case("data preparation", "data_dir is a file", ["-m", "cnn.data.prepare", "mnist",
                                                    "--manual_dir=../shared/data/mnist", "--data_dir={d}/f"],
         setup=_file("f")),
    # image folders
    Case("image folders", "truncated PNG",
         _train("--config.dataset.name=image_folder", "--config.dataset.path={d}/images",
                "--config.dataset.image_size=(8, 8)"),
         setup=_folder({"train": ["a", "b"], "test": ["a", "b"]}, damage="train/b/1.png")),
    Case("image folders", "test class absent from train",
         _train("--config.dataset.name=image_folder", "--config.dataset.path={d}/images"),
         setup=_folder({"train": ["a", "b"], "test": ["a", "c"]})),
    Case("image folders", "missing folder", _train("--config.dataset.name=image_folder",
                                                   "--config.dataset.path={d}/nope")),
    Case("image folders", "image_size=(0, 0)",
         _train("--config.dataset.name=image_folder", "--config.dataset.path={d}/images",
                "--config.dataset.image_size=(0, 0)"), setup=_folder({"train": ["a", "b"], "test": ["a", "b"]})),
    # numpy sources
    Case("numpy sources", "test labels >= num_classes",
         _train("--config.dataset.name=numpy", "--config.dataset.path={d}/data.npz"),
         setup=_npz(test_labels=np.arange(12) % 4 + 3)),
    Case("numpy sources", "negative train labels",
         _train("--config.dataset.name=numpy", "--config.dataset.path={d}/data.npz"),
         setup=_npz(train_labels=np.arange(80) % 4 - 1)),
    Case("numpy sources", "float labels",
         _train("--config.dataset.name=numpy", "--config.dataset.path={d}/data.npz"),
         setup=_npz(train_labels=(np.arange(80) % 4) + 0.5)),
    Case("numpy sources", "no test split", _train("--config.dataset.name=numpy", "--config.dataset.path={d}/data.npz"),
         setup=_npz(test_images=None, test_labels=None)),
    Case("numpy sources", "not an npz", _train("--config.dataset.name=numpy", "--config.dataset.path={d}/f"),
         setup=_file("f")),
    Case("numpy sources", "images and labels of different lengths",
         _train("--config.dataset.name=numpy", "--config.dataset.path={d}/data.npz"),
         setup=_npz(test_labels=np.arange(5) % 4)),
    # corrupted checkpoints
    Case("corrupted checkpoints", "flipped bytes, eval", ["eval.py", "--workdir={d}/run"], setup=_flip_data_file,
         needs_run=True),
    Case("corrupted checkpoints", "truncated metadata, eval", ["eval.py", "--workdir={d}/run"],
         setup=_truncate_metadata, needs_run=True),
    Case("corrupted checkpoints", "flipped bytes, train resumes", _train(workdir="{d}/run"),
         setup=_flip_data_file, needs_run=True, recovers="falling back to the previous one"),
    # sweeps
    Case("sweeps", "storage in a missing directory", ["sweep.py", RUNLOCAL, "--workdir={d}/s",
                                                      "--storage=sqlite:///{d}/nope/s.db"]),
    Case("sweeps", "read-only storage", ["sweep.py", RUNLOCAL, "--workdir={d}/s", "--storage=sqlite:///{d}/ro/s.db"],
         setup=make_read_only),
    Case("sweeps", "--parallel=0", ["sweep.py", RUNLOCAL, "--workdir={d}/s", "--parallel=0"]),
    Case("sweeps", "config without get_sweep", ["sweep.py", "--config=configs/mnist_lenet5.py", "--workdir={d}/s"]),
    Case("sweeps", "--summarize_only before any trial", ["sweep.py", RUNLOCAL, "--workdir={d}/s", "--summarize_only"]),
    Case("sweeps", "workdir is a file", ["sweep.py", RUNLOCAL, "--workdir={d}/f"], setup=_file("f")),
    # a full disk
    Case("a full disk", "workdir on a 96 KiB file system", _train(workdir="{d}/disk/run"), setup=_tiny_disk),
    # concurrent runs, signals
    Case("concurrent runs", "second train.py on a busy workdir", run=_second_train_on_a_busy_workdir),
    Case("signals", "SIGINT during training", run=_signal_during_training(signal.SIGINT)),
    Case("signals", "SIGTERM during training", run=_signal_during_training(signal.SIGTERM)),
    Case("signals", "SIGKILL, then rerun", run=_kill_then_rerun, recovers="resumed from the checkpoint at step"),
    # operators called from Python
    Case("operators", "fft_conv on int32", code=_op("fft_conv(np.ones((1, 8, 8, 1), np.int32), "
                                                   "np.ones((3, 3, 1, 1), np.int32))")),
    Case("operators", "correlate on uint8", code=_op("correlate(np.full((1, 8, 8, 1), 200, np.uint8), "
                                                    "np.full((3, 3, 1, 1), 3, np.uint8))")),
    Case("operators", "kernel larger than the input",
         code=_op("correlate(jnp.ones((1, 2, 2, 1)), jnp.ones((3, 3, 1, 1)))")),
    Case("operators", "channels that do not match",
         code=_op("correlate(jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 3, 1)))")),
    Case("operators", "stride 0", code=_op("correlate(jnp.ones((1, 8, 8, 1)), jnp.ones((3, 3, 1, 1)), stride=0)")),
    Case("operators", "negative dilation",
         code=_op("correlate(jnp.ones((1, 8, 8, 1)), jnp.ones((3, 3, 1, 1)), dilation=-1)")),
    Case("operators", "groups not dividing the channels",
         code=_op("correlate(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 1, 4)), groups=2)")),
    Case("operators", "max_pool window 0", code=_op("max_pool(jnp.ones((1, 8, 8, 1)), 0)")),
    Case("operators", "max_pool on a 2D array", code=_op("max_pool(jnp.ones((8, 8)), 2)")),
    Case("operators", "unknown padding", code=_op("correlate(jnp.ones((1, 8, 8, 1)), jnp.ones((3, 3, 1, 1)), "
                                                  "padding='HALF')")),
]


# --- running and classifying -----------------------------------------------------------------------------------
