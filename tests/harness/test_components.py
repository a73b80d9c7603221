"""Harness parts in process, each against an independent reference (formulas, scikit-learn's own loader)."""

from __future__ import annotations

import errno
import math
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cnn.data import ArraySplit, DatasetSpec, TrainStream, build_preprocess, eval_batches, make_source
from cnn.errors import ConfigError
from cnn.registry import Registry
from cnn.tasks.classification import cross_entropy
from cnn.train.config import steps_of
from cnn.train.optim import make_optimizer, make_schedule
from configs.default import get_config


def test_registry_unknown_name_lists_choices():
    registry = Registry("widget")
    registry.register("b", object)
    registry.register("a", object)
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; choose from \['a', 'b'\]"):
        registry.get("c")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", object)


def _sorted_rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rows = np.concatenate([images.reshape(len(labels), -1).astype(np.int64), labels[:, None]], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def test_digits_splits_equal_scikit_learn_loader(tfds_dir):
    from sklearn.datasets import load_digits

    digits = load_digits()  # the reference: scikit-learn's own loader; train = first 1,437 in file order
    for name, part in (("train", slice(0, 1437)), ("test", slice(1437, None))):
        split = make_source({"name": "digits", "data_dir": tfds_dir}).load(name)  # TFDS stores examples in hash order
        assert split.images.shape[1:] == (8, 8, 1) and split.images.dtype == np.uint8
        np.testing.assert_array_equal(_sorted_rows(split.images, split.labels),
                                      _sorted_rows(digits.images[part], digits.target[part]))


def _split(n: int) -> ArraySplit:
    return ArraySplit(images=np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1), labels=np.arange(n, dtype=np.int32))


_identity = build_preprocess("", DatasetSpec(10, (1, 1, 1)))  # no op: the examples as stored


def test_train_stream_epochs_are_permutations_and_steps_are_pure():
    stream = TrainStream(_split(50), _identity, global_batch=8, seed=3)
    assert stream.steps_per_epoch == 6
    for epoch in range(3):
        seen = np.concatenate([stream.indices(epoch * 6 + k) for k in range(6)])
        assert len(set(seen.tolist())) == 48  # no example twice within an epoch
    fresh = TrainStream(_split(50), _identity, global_batch=8, seed=3)
    from_iterator = list(fresh.iterate(10, 14))
    for step, batch in zip(range(10, 14), from_iterator, strict=True):
        np.testing.assert_array_equal(batch["label"], stream.batch(step)["label"])
    other_seed = TrainStream(_split(50), _identity, global_batch=8, seed=4)
    assert not np.array_equal(other_seed.indices(0), stream.indices(0))


def test_a_batch_that_cannot_be_made_raises_in_the_training_loop_instead_of_hanging():
    class Broken:
        def batch(self, batch, rand):
            raise ValueError("image 3 is corrupt")

    stream = TrainStream(_split(50), Broken(), global_batch=8, seed=0)
    with pytest.raises(ValueError, match="image 3 is corrupt"):
        list(stream.iterate(0, 3))


def test_processes_split_each_global_batch():
    whole = TrainStream(_split(40), _identity, global_batch=8, seed=0)
    parts = [TrainStream(_split(40), _identity, global_batch=8, seed=0, process_index=i, process_count=4)
             for i in range(4)]
    for step in range(7):
        np.testing.assert_array_equal(np.concatenate([p.indices(step) for p in parts]), whole.indices(step))


def test_eval_batches_count_each_example_once():
    batches = list(eval_batches(_split(23), _identity, global_batch=5))
    labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(labels, np.arange(23))
    assert sum(b["mask"].sum() for b in batches) == 23 and all(len(b["label"]) == 5 for b in batches)


def test_cross_entropy_with_label_smoothing_matches_formula():
    rng = np.random.default_rng(0)
    logits, labels, eps = rng.normal(size=(6, 5)), rng.integers(0, 5, size=6), 0.2
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.full((6, 5), eps / 5)
    targets[np.arange(6), labels] += 1 - eps
    expected = -(targets * log_p).sum(-1)
    np.testing.assert_allclose(cross_entropy(jnp.asarray(logits), jnp.asarray(labels), eps), expected, rtol=1e-5)


def _config(**schedule) -> ml_collections.ConfigDict:
    config = get_config()
    config.schedule.update(schedule)
    return config


def test_cosine_schedule_with_warmup_matches_formula():
    config = _config(name="cosine", warmup_steps=10)
    schedule, peak = make_schedule(config, total_steps=110, steps_per_epoch=10), config.optimizer.learning_rate
    assert float(schedule(5)) == pytest.approx(peak * 5 / 10)
    for t in (10, 35, 60, 109):
        expected = peak * 0.5 * (1 + math.cos(math.pi * (t - 10) / 100))
        assert float(schedule(t)) == pytest.approx(expected, rel=1e-5, abs=1e-6 * peak)


def test_step_schedule_decays_at_fractions():
    config = _config(name="step", warmup_steps=0, warmup_epochs=0.0, boundaries=(0.5, 0.75), decay_factor=0.1)
    schedule, peak = make_schedule(config, total_steps=100, steps_per_epoch=10), config.optimizer.learning_rate
    assert [float(schedule(t)) for t in (49, 50, 74, 75)] == pytest.approx([peak, peak * 0.1, peak * 0.1, peak * 0.01])


def test_step_schedule_keeps_boundaries_that_round_to_one_step():
    config = _config(name="step", warmup_steps=0, warmup_epochs=0.0, boundaries=(0.5, 0.75), decay_factor=0.1)
    schedule, peak = make_schedule(config, total_steps=2, steps_per_epoch=1), config.optimizer.learning_rate
    assert float(schedule(1)) == pytest.approx(peak * 0.01)  # both decays land on step 1


def test_weight_decay_applies_to_kernels_not_biases():
    config = get_config()
    config.optimizer.update(name="sgd", learning_rate=0.5, weight_decay=0.1)
    tx = make_optimizer(config, lambda step: 0.5)
    params = {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3,))}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.5 * 0.1 * np.ones((3, 3)))
    np.testing.assert_array_equal(updates["bias"], 0.0)


def test_durations_steps_win_over_epochs():
    config = ml_collections.ConfigDict({"num_steps": None, "num_epochs": 2.5})
    assert steps_of(config, "num", steps_per_epoch=22) == 55  # 2.5 epochs of 22 steps
    config.num_steps = 7
    assert steps_of(config, "num", steps_per_epoch=22) == 7  # both set: the steps win
    config.num_steps = config.num_epochs = None
    with pytest.raises(ConfigError, match=r"set config\.num_steps or config\.num_epochs"):
        steps_of(config, "num", steps_per_epoch=22)
    config.num_steps = 0  # the old "0 means unset" would silently fall back to epochs
    with pytest.raises(ConfigError, match=r"config\.num_steps must be a positive integer"):
        steps_of(config, "num", steps_per_epoch=22)


@pytest.mark.parametrize(("flag", "expected"), [
    (None, {"num": 30 * 23, "eval_every": 5 * 23}),  # the file's epochs (1,437 train digits / 64 = 23 steps)
    ("--config.num_steps=40", {"num": 40, "eval_every": 5 * 23}),
    ("--config.eval_every_steps=10", {"num": 30 * 23, "eval_every": 10}),
])
def test_a_step_duration_on_the_command_line_overrides_an_epoch_based_config(flag, expected):
    """As train.py parses ``--config``: one flag changes the unit, no ``--config.num_epochs`` to clear."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["train", "--config=configs/default.py", *([flag] if flag else [])]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True, sys_argv=argv)
    flag_values(argv)
    config = flag_values.config
    assert {name: steps_of(config, name, steps_per_epoch=23) for name in expected} == expected


def test_loading_every_config_file_imports_only_ml_collections():
    """Config files stay light: loading each one (every variant) starts no JAX, TensorFlow, model or dataset code."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    specs = ["default.py", "default.py:runlocal", "mnist_lenet5.py", "mnist_lenet5.py:runlocal", "ablation_conv.py",
             "ablation_conv.py:runlocal", "cifar10_resnet.py:56,runlocal", "imagenet_resnet50.py:runlocal",
             "digits_segmentation.py:runlocal", "digits_segmentation.py:tiny", "digits_segmentation.py:ci",
             "planetoid.py:runlocal", "planetoid.py:citeseer,chebnet_k3,runlocal",
             "mnist_detect.py", "mnist_detect.py:runlocal", "isbi_unet.py", "isbi_unet.py:cpu", "isbi_unet.py:runlocal",
             "finetune_folder.py", "finetune_folder.py:runlocal", "fsdd.py", "fsdd.py:log_mel,speaker,speed,runlocal",
             "adrenal3d.py", "adrenal3d.py:64,acs,runlocal", "mnist1d_cnn.py", "mnist1d_cnn.py:runlocal",
             "moving_digits.py", "moving_digits.py:r2plus1d,runlocal"]
    assert {spec.partition(":")[0] for spec in specs} == {p.name for p in (root / "configs").glob("*.py")}
    code = ("import importlib.util, sys\n"
            "for spec in sys.argv[1:]:\n"
            "    path, _, arg = spec.partition(':')\n"
            "    loader = importlib.util.spec_from_file_location(path, 'configs/' + path)\n"
            "    module = importlib.util.module_from_spec(loader)\n"
            "    loader.loader.exec_module(module)\n"
            "    module.get_config(arg or None)\n"
            "print(' '.join(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code, *specs], cwd=root, capture_output=True, text=True, timeout=60,
                            check=True)
    loaded = set(result.stdout.split())
    assert "ml_collections" in loaded and "cnn.config_defaults" in loaded  # the probe saw the imports
    heavy = {"jax", "numpy", "optax", "flax", "tensorflow", "tensorflow_datasets", "cnn.models", "cnn.data",
             "cnn.train", "cnn.layers"}
    assert loaded & heavy == set()


def test_cpu_flag_appended_only_for_checked_jaxlib(monkeypatch):
    from cnn import platform

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.delenv("CNN_YNN_CONV", raising=False)
    monkeypatch.setenv("CNN_KEEP_FREED_MEMORY", "0")  # malloc's setting is for a whole process: not the test worker's
    monkeypatch.setattr(platform.importlib.metadata, "version", lambda name: "0.10.2")
    assert platform.configure_xla_cpu()
    assert platform.os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {platform.CPU_CONV_FLAG}"
    assert platform.configure_xla_cpu()  # idempotent: not appended twice
    assert platform.os.environ["XLA_FLAGS"].count("ynn_fusion_type") == 1

    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(platform.importlib.metadata, "version", lambda name: "9.9.9")
    assert not platform.configure_xla_cpu() and platform.os.environ["XLA_FLAGS"] == ""


_REFAULTS = """
import ctypes, resource, threading
from cnn.platform import keep_freed_memory
print(keep_freed_memory())
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]

def twice():  # in a new thread, as XLA:CPU allocates an execution's temporaries
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(200_000_000)
        ctypes.memset(block, 1, 200_000_000)  # every page written
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        libc.free(block)
    print(faults)  # those of the second block

thread = threading.Thread(target=twice)
thread.start()
thread.join()
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize("keep", [True, False])
def test_freed_memory_is_reused_without_page_faults(keep, tmp_path):
    env = {**os.environ, "CNN_KEEP_FREED_MEMORY": "1" if keep else "0"}
    result = subprocess.run([sys.executable, "-c", _REFAULTS], capture_output=True, text=True, env=env, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    applied, faults = result.stdout.split()
    assert applied == str(keep)
    pages = 200e6 / resource.getpagesize()
    # the kernel's count: glibc's default maps the second block afresh, faulting in every page again
    assert int(faults) < 0.01 * pages if keep else int(faults) > 0.9 * pages


def test_load_config_file_with_variant():
    from cnn.errors import UserError
    from cnn.train.config import load_config_file

    assert load_config_file("configs/default.py:runlocal").num_steps == 12
    assert load_config_file("configs/default.py").num_epochs == 30
    with pytest.raises(UserError, match="does not exist"):
        load_config_file("configs/nope.py")


def test_checkpoints_keep_latest_and_best(tmp_path):
    from cnn.train.checkpoint import Checkpoints

    checkpoints = Checkpoints(str(tmp_path), max_to_keep=2, best_metric="accuracy", best_mode="max")
    accuracy = {1: 0.5, 2: 0.9, 3: 0.6, 4: 0.7, 5: 0.65}
    for step, value in accuracy.items():
        checkpoints.save(step, {"w": jnp.full((2,), float(step))}, metrics={"accuracy": value})
    checkpoints.wait()
    assert checkpoints.steps() == [2, 4, 5]  # the two latest, and the best by accuracy
    assert checkpoints.best_step() == 2
    restored = checkpoints.restore(2, {"w": jax.ShapeDtypeStruct((2,), jnp.float32)})
    np.testing.assert_array_equal(restored["w"], [2.0, 2.0])
    checkpoints.close()


@pytest.mark.parametrize(("raised", "status", "last_line"), [
    (ConfigError("config.batch_size must be positive, got 0"), 2, "error: config.batch_size must be positive, got 0"),
    (KeyError("params"), 70, "internal error (a bug, please report): KeyError: 'params'"),
    (OSError(errno.ENOSPC, "No space left on device", "/w/metrics.jsonl"), 2, "error: cannot write /w/metrics.jsonl "
     "(No space left on device): free space (or make it writable) and rerun the same command to resume"),
    (OSError(errno.ENOENT, "No such file or directory", "/w/x"), 70,
     "internal error (a bug, please report): FileNotFoundError: [Errno 2] No such file or directory: '/w/x'"),
    (RuntimeError("shapes differ\n(details)"), 70,
     "internal error (a bug, please report): RuntimeError: shapes differ"),
])
def test_cli_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys, raised, status, last_line):
    from cnn.cli import run_cli

    def main(argv: list[str]) -> int:
        raise raised

    monkeypatch.setattr("sys.argv", ["prog"])
    assert run_cli(main) == status
    stderr = capsys.readouterr().err.strip().splitlines()
    assert stderr[-1] == last_line
    if status == 2:
        assert len(stderr) == 1  # no traceback for the user's mistakes
    else:
        assert stderr[0] == "Traceback (most recent call last):"
        assert any(line.startswith(f"{type(raised).__name__}: ") for line in stderr[:-1])  # the exception itself


def test_train_help_exits_0():
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--config" in result.stdout and "--workdir" in result.stdout
