"""Checkpoint integrity, the NaN guard, the workdir lock, a changed config on resume, range checks at start."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from cnn.data import DatasetSpec
from cnn.errors import ConfigError, NonFiniteLossError, UserError
from cnn.tasks import make_task
from cnn.train.checkpoint import Checkpoints, NonFiniteStateError
from cnn.train.config import save_config, validate
from cnn.train.loop import _mean_and_check
from cnn.train.state import TrainState
from cnn.train.steps import train_step
from cnn.train.workdir import WorkdirLock, check_resume_config, make_workdir
from configs.default import get_config
from tests.harness.conftest import ROOT


def _tree(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"params": {"kernel": jax.numpy.asarray(rng.normal(size=(64, 64)).astype(np.float32)),
                       "bias": jax.numpy.asarray(rng.normal(size=(64,)).astype(np.float32))},
            "step": jax.numpy.asarray(seed, dtype=np.int32)}


def _abstract(tree) -> dict:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("integrity") / "checkpoints"
    checkpoints = Checkpoints(str(directory), best_metric=None)
    for step in (1, 2):
        checkpoints.save(step, _tree(step))
    checkpoints.wait()
    checkpoints.close()
    return directory


def _data_files(directory: Path) -> list[Path]:
    """The files holding the arrays' bytes (the OCDBT data files, in folders named d)."""
    files = (directory / "2").rglob("*")
    return sorted(p.relative_to(directory) for p in files if p.is_file() and p.parent.name == "d")


def test_every_flipped_data_file_falls_back_to_the_previous_checkpoint(two_checkpoints, tmp_path):
    files = _data_files(two_checkpoints)
    assert len(files) >= 3
    fell_back = 0
    for i, name in enumerate(files):
        copy = tmp_path / str(i)
        shutil.copytree(two_checkpoints, copy)
        path = copy / name
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
        path.write_bytes(bytes(data))
        checkpoints = Checkpoints(str(copy), best_metric=None)
        try:
            state, step = checkpoints.restore_latest(_abstract(_tree(0)))
        finally:
            checkpoints.close()
        # Either the flipped bytes were not read (step 2 restores exactly what was saved) or step 2 was moved
        # aside and step 1 restored: never a silently different array.
        assert step == 2 or list(copy.glob("2.unreadable-*")), name
        jax.tree.map(np.testing.assert_array_equal, state, _tree(step))
        fell_back += step == 1
    assert fell_back >= 1


def test_a_non_finite_state_is_never_saved(tmp_path):
    checkpoints = Checkpoints(str(tmp_path), best_metric=None)
    tree = _tree(3)
    tree["params"]["bias"] = tree["params"]["bias"].at[5].set(np.nan)
    with pytest.raises(NonFiniteStateError, match="params/bias is not finite at step 3"):
        checkpoints.save(3, tree)
    checkpoints.close()
    assert not (tmp_path / "3").exists()


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def test_a_step_whose_update_overflows_stops_training_though_its_loss_is_finite():
    task = make_task(get_config("runlocal"), DatasetSpec(num_classes=10, image_shape=(4, 4, 1)))
    model, tx = _Linear(), optax.sgd(1e38)  # an update of 1e38 * gradient overflows float32
    state = TrainState.create(apply_fn=model.apply, tx=tx, model_state={},
                              params=model.init(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 1), np.float32))["params"])
    batch = {"image": np.full((8, 4, 4, 1), 100.0, np.float32), "label": np.arange(8, dtype=np.int32)}
    step = jax.jit(functools.partial(train_step, schedule=optax.constant_schedule(1e38), task=task))
    new_state, metrics = step(state, batch, jax.random.PRNGKey(0))
    assert np.isfinite(metrics["loss"]) and not np.isfinite(np.asarray(new_state.params["Dense_0"]["kernel"])).all()
    with pytest.raises(NonFiniteLossError, match=r"^the gradients, updates or parameters are not finite \(loss "
                                                 r"[0-9.]+, grad_norm [0-9.e+]+\) at step 5; training stopped"):
        _mean_and_check([(5, metrics)])


def test_a_locked_workdir_is_refused_and_a_stale_lock_taken_over(tmp_path, capfd):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cnn.train.workdir import WorkdirLock; "
         f"lock = WorkdirLock({str(tmp_path)!r}).__enter__(); print('locked', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(UserError, match=rf"^{tmp_path} is in use by pid {holder.pid} on {socket.gethostname()} "):
            WorkdirLock(str(tmp_path)).__enter__()
    finally:
        holder.kill()  # as SIGKILL would: the lock file stays behind
        holder.wait()
    assert (tmp_path / ".train.lock").exists()
    with WorkdirLock(str(tmp_path)):
        assert (tmp_path / ".train.lock").read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    assert f"taking over the stale lock of pid {holder.pid} on {socket.gethostname()}" in capfd.readouterr().err
    assert not (tmp_path / ".train.lock").exists()


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"^--workdir=.*/file is a file, not a directory$"):
        make_workdir(str(tmp_path / "file"))
    with pytest.raises(UserError, match=r"^--workdir=.*/file/run: cannot write there \(Not a directory\)$"):
        make_workdir(str(tmp_path / "file" / "run"))


def test_resume_with_a_changed_config_lists_the_differences(tmp_path, capfd):
    config = get_config("runlocal")
    save_config(config, str(tmp_path))
    config.optimizer.learning_rate, config.num_steps, config.eval_every_steps = 0.2, 8, 3
    with pytest.raises(ConfigError, match=r"differs from .*config.json of the run being resumed in num_steps, "
                                          r"optimizer.learning_rate \(eval_every_steps: 6 -> 3; num_steps: 12 -> 8; "
                                          r"optimizer.learning_rate: 0.05 -> 0.2\); pass --allow_config_change"):
        check_resume_config(config, str(tmp_path), allow_change=False)
    check_resume_config(config, str(tmp_path), allow_change=True)
    assert "resuming with a changed config: eval_every_steps: 6 -> 3; num_steps" in capfd.readouterr().err
    config.optimizer.learning_rate, config.num_steps = 0.05, 12  # only harmless keys differ now:
    config.num_epochs = 99.0  # overridden by num_steps
    with config.unlocked():
        config.dataset.new_key = 1  # a key an older version of the code did not write
    check_resume_config(config, str(tmp_path), allow_change=False)
    assert ("resuming with a changed config: dataset.new_key: '(absent)' -> 1; eval_every_steps: 6 -> 3\n"
            in capfd.readouterr().err)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model.dropout_rate", 1.5, r"config.model.dropout_rate must be a number in \[0, 1\), got 1.5"),
    ("model.dropout_rate", 1.0, r"config.model.dropout_rate must be a number in \[0, 1\), got 1.0"),
    ("optimizer.grad_clip_norm", -1.0, r"config.optimizer.grad_clip_norm must be a number in \[0, inf\), got -1.0"),
    ("schedule.boundaries", (2.0, -1.0), r"config.schedule.boundaries must be a number in \(0, 1\), got 2.0"),
    ("schedule.boundaries", (0.75, 0.5), r"config.schedule.boundaries must be increasing .*, got \(0.75, 0.5\)"),
    ("model.width", 0, r"config.model.width must be an integer in \[1, inf\), got 0"),
    ("model.width", -4, r"config.model.width must be an integer in \[1, inf\), got -4"),
    ("seed", -1, r"config.seed must be an integer in \[0, 4294967296\), got -1"),
    ("dataset.image_size", (0, 0), r"config.dataset.image_size must be positive integers, got \(0, 0\)"),
    ("optimizer.momentum", 1.0, r"config.optimizer.momentum must be a number in \[0, 1\), got 1.0"),
    ("schedule.warmup_steps", -3, r"config.schedule.warmup_steps must be an integer in \[0, inf\), got -3"),
])
def test_out_of_range_config_values_fail_at_start(key, value, message):
    config = get_config("runlocal")
    config.model.dropout_rate = 0.0
    validate(config)  # the defaults pass
    parent, _, name = key.rpartition(".")
    (config[parent] if parent else config)[name] = value
    with pytest.raises(ConfigError, match=f"^{message}$"):
        validate(config)


def test_a_data_dir_that_is_a_file_fails_at_start(tmp_path):
    config = get_config("runlocal")
    config.dataset.data_dir = str(tmp_path / "file")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"config.dataset.data_dir=.*/file is a file, not a directory"):
        validate(config)


def _tensorboard_points(directory: Path) -> list[tuple[str, int, float]]:
    """Every scalar of every event file, read as TFRecords of Event protos (length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    points = []
    for path in sorted(directory.iterdir()):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            length = int.from_bytes(data[offset:offset + 8], "little")
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            points += [(value.tag, event.step, value.simple_value) for value in event.summary.value]
    return sorted(points)


def test_tensorboard_agrees_with_metrics_jsonl_after_a_resume(tmp_path):
    from cnn.train.metrics import MetricWriter, read_metrics

    writer = MetricWriter(str(tmp_path))
    for step in (10, 20, 30):  # the run is killed after step 30; its checkpoint is at step 20
        writer.write(step, "train", {"loss": 1.0 / step})
    writer.close()
    writer = MetricWriter(str(tmp_path), resume_step=20)
    writer.write(30, "train", {"loss": 0.5})  # step 30 again, differently (say, after a changed config)
    writer.close()
    expected = sorted((f"{r['split']}/loss", r["step"], np.float32(r["loss"])) for r in read_metrics(str(tmp_path)))
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [10, 20, 30]
    assert _tensorboard_points(tmp_path / "tb") == expected


@pytest.mark.parametrize("damage", ["truncated", "not an image"])
def test_a_corrupt_png_in_an_image_folder_names_the_file(tmp_path, damage):
    from cnn.data import make_source
    from tests.data.test_sources import write_image_folder

    write_image_folder(tmp_path, per_class=2)
    bad = tmp_path / "test" / "dog" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40] if damage == "truncated" else b"hello")
    source = make_source({"name": "image_folder", "path": str(tmp_path), "image_size": (8, 8), "channels": 3})
    with pytest.raises(UserError, match=rf"^{bad}: not a readable image \("):
        source.load("test")


def test_a_sweep_storage_in_a_missing_directory_is_one_line(tmp_path):
    from cnn.sweep.command import _lock_sqlite

    with pytest.raises(UserError, match=r"^--storage=sqlite:///.*/missing/s.db: cannot write .*/missing/s.db.lock "
                                        r"\(No such file or directory\)$"):
        _lock_sqlite(f"sqlite:///{tmp_path}/missing/s.db")


def test_a_full_disk_while_checkpointing_is_one_line(tmp_path, monkeypatch):
    import errno

    checkpoints = Checkpoints(str(tmp_path), best_metric=None)

    def full(*args, **kwargs):  # what TensorStore raised when a tmpfs of 300 KiB filled up
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "w/0.0" in OCDBT database at local file "...": Failed to '
                         f"write 91318 bytes to file 4: {os.strerror(errno.ENOSPC)} [os_error_code='28']")

    monkeypatch.setattr(checkpoints.manager, "save", full)
    with pytest.raises(UserError, match=r"^cannot write the checkpoint at step 4 in .* \(No space left on device\); "
                                        r"the earlier checkpoints are intact"):
        checkpoints.save(4, _tree(4))
    checkpoints.close()


def test_an_image_folder_class_absent_from_train_is_named(tmp_path):
    from cnn.data import make_source
    from tests.data.test_sources import write_image_folder

    write_image_folder(tmp_path, per_class=2)
    shutil.copytree(tmp_path / "test" / "dog", tmp_path / "test" / "bird")
    source = make_source({"name": "image_folder", "path": str(tmp_path), "image_size": (8, 8), "channels": 3})
    with pytest.raises(UserError, match=r"/test: class folder\(s\) \['bird'\] are not classes of .* \(its 2 classes: "
                                        r"\['cat', 'dog'\]\)$"):
        source.load("test")


def test_eval_names_a_corrupt_checkpoint_and_the_newest_good_one(trained_copy, evaluate):
    largest = max((p for p in (trained_copy / "checkpoints" / "12").rglob("*") if p.parent.name == "d"),
                  key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = bytes(b ^ 0xFF for b in data[len(data) // 2:len(data) // 2 + 16])
    largest.write_bytes(bytes(data))
    result = evaluate(f"--workdir={trained_copy}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: checkpoint at step 12 is unreadable (")
    assert result.stderr.strip().endswith("; the newest good one is step 8 (--step=8)")


def test_a_step_deleted_while_eval_reads_it_is_one_line(two_checkpoints, tmp_path):
    shutil.copytree(two_checkpoints, tmp_path / "c")
    checkpoints = Checkpoints(str(tmp_path / "c"), best_metric=None, read_only=True)
    shutil.rmtree(tmp_path / "c" / "2")  # the training run's LatestN policy removed it after eval listed it
    try:
        with pytest.raises(UserError, match=r"^checkpoint at step 2 in .* was deleted while being read \(by the run "
                                            r"training there\?\); kept now: \[1\]$"):
            checkpoints.restore(2, _abstract(_tree(0)))
    finally:
        checkpoints.close()


def test_two_corrupt_checkpoints_in_a_row_start_afresh(two_checkpoints, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(two_checkpoints, copy)
    for step in ("1", "2"):
        for path in (copy / step).rglob("*"):
            if path.parent.name == "d":
                path.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))
    checkpoints = Checkpoints(str(copy), best_metric=None)
    try:
        assert checkpoints.restore_latest(_abstract(_tree(0))) == (None, 0)
    finally:
        checkpoints.close()
    assert len(list(copy.glob("*.unreadable-*"))) == 2


def test_a_config_json_that_does_not_parse_is_one_line(tmp_path):
    from cnn.train.config import load_config

    (tmp_path / "config.json").write_text('{"seed": 0, "mod')  # truncated
    with pytest.raises(UserError, match=r"^.*/config.json is not a config written by train.py \(Unterminated"):
        load_config(str(tmp_path))
    with pytest.raises(UserError, match=r"config.json is not a config written by train.py"):
        check_resume_config(get_config("runlocal"), str(tmp_path), allow_change=False)


def test_eval_names_the_steps_it_could_read_past_an_unreadable_metadata_file(two_checkpoints, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(two_checkpoints, directory)
    metadata = directory / "2" / "_CHECKPOINT_METADATA"
    metadata.write_bytes(metadata.read_bytes()[:20])
    with pytest.raises(UserError, match=rf"^checkpoint {directory}/2 is unreadable \(.*\); move it out of "
                                        rf"{directory} to read the others \[1\] \(train.py does so itself\)$"):
        Checkpoints(str(directory), best_metric=None, read_only=True)


def test_orbax_logs_of_a_full_disk_or_ctrl_c_are_dropped_and_other_logs_kept():
    import logging

    from cnn.train.checkpoint import _QuietReportedFailures

    full = ValueError('RESOURCE_EXHAUSTED: Error writing local file "c/4/_sharding": No space left on device')

    def record(path: str, level: int, error: Exception | None) -> logging.LogRecord:
        return logging.LogRecord("absl", level, path, 1, "save failed", None, (type(error), error, None) if error
                                 else None)

    quiet = _QuietReportedFailures()
    assert not quiet.filter(record("/venv/orbax/checkpoint/future.py", logging.ERROR, full))
    assert not quiet.filter(record("/venv/orbax/checkpoint/checkpoint_manager.py", logging.ERROR, KeyboardInterrupt()))
    assert quiet.filter(record("/venv/orbax/checkpoint/future.py", logging.ERROR, ValueError("other")))
    assert quiet.filter(record("/venv/orbax/checkpoint/future.py", logging.WARNING, None))
    assert quiet.filter(record("/work/cnn/train/loop.py", logging.ERROR, full))
