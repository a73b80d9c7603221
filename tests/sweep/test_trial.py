"""One trial's process, with small Python commands in place of train.py: its lock, its log, its result."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time

from cnn.sweep.trial import LOCK_FILE, LOG_FILE, run_trial, value_of


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run(command: list[str], trial_dir, stop: threading.Event | None = None):
    return run_trial(command, str(trial_dir), "test", stop or threading.Event(), lambda process: None)


def write_eval(trial_dir, accuracy: float) -> str:
    record = {"step": 12, "split": "eval", "accuracy": accuracy, "loss": 0.5}
    return f"open({str(trial_dir / 'metrics.jsonl')!r}, 'w').write({json.dumps(record)!r} + '\\n')"


def test_result_is_the_last_eval_record(tmp_path):
    outcome = run(python(write_eval(tmp_path, 0.75)), tmp_path)
    assert (outcome.returncode, outcome.error) == (0, None)
    assert outcome.eval_metrics == {"step": 12, "accuracy": 0.75, "loss": 0.5}
    assert value_of(outcome, "accuracy") == (0.75, None)
    assert value_of(run(python(write_eval(tmp_path, float("nan"))), tmp_path), "accuracy") == \
        (None, "final eval accuracy is nan")


def test_the_test_record_gives_test_metrics(tmp_path):
    """With config.dataset.test_split train.py ends with a test record: the trial reports it as test_<metric>."""
    records = [{"step": 12, "split": "eval", "accuracy": 0.7, "loss": 0.5},
               {"step": 12, "split": "test", "accuracy": 0.8, "loss": 0.4}]
    text = "".join(json.dumps(r) + "\n" for r in records)
    outcome = run(python(f"open({str(tmp_path / 'metrics.jsonl')!r}, 'w').write({text!r})"), tmp_path)
    assert outcome.eval_metrics == {"step": 12, "accuracy": 0.7, "loss": 0.5, "test_accuracy": 0.8, "test_loss": 0.4}
    assert value_of(outcome, "test_accuracy") == (0.8, None)


def test_errors_are_train_py_error_line_or_exit_status(tmp_path):
    failed = run(python("import sys; print('error: bad value', file=sys.stderr); sys.exit(2)"), tmp_path / "a")
    assert (failed.returncode, failed.error) == (2, "bad value")
    killed = run(python("import os, signal; print('step 3'); os.kill(os.getpid(), signal.SIGKILL)"), tmp_path / "b")
    assert killed.error == "train.py killed by SIGKILL: step 3"
    # A retry's log is appended to: only this attempt's error line counts.
    again = run(python("import sys; sys.exit(1)"), tmp_path / "a")
    assert again.error == "train.py exited with status 1"
    assert (tmp_path / "a" / LOG_FILE).read_text().count("=== ") == 2


BUG = """
import sys
import jax.numpy as jnp
from cnn.cli import run_cli


def main(argv):
    print("step 3")
    return int((jnp.ones((2, 3)) @ jnp.ones(4)).sum())  # a real JAX error, its traceback filtered by JAX


sys.exit(run_cli(main))
"""


def test_a_bug_is_recorded_with_its_message_and_exit_status_70(tmp_path):
    """The trainer's CLI on an unexpected exception: traceback kept in train.log, its message in the trial record."""
    outcome = run([*python(BUG), "prog"], tmp_path)
    assert outcome.returncode == 70
    assert outcome.error == ("internal error (a bug, please report): TypeError: dot_general requires contracting "
                             "dimensions to have the same shape, got (3,) and (4,).")
    log = (tmp_path / LOG_FILE).read_text()
    assert "Traceback (most recent call last)" in log and "JAX has removed its internal frames" in log
    assert log.rstrip().splitlines()[-1] == outcome.error  # the bug's line comes last, after JAX's note


def test_trial_process_holds_the_lock_and_a_second_run_waits_for_it(tmp_path):
    # The lock's open file is inherited by the trial's process: it stays locked while that process lives, even if
    # the sweep that started it was killed.
    fds = "[f'/proc/self/fd/{f}' for f in os.listdir('/proc/self/fd')]"
    listing = f"import os; print([os.readlink(p) for p in {fds} if os.path.exists(p)])"
    run(python(listing + "; " + write_eval(tmp_path, 0.5)), tmp_path)
    assert str(tmp_path / LOCK_FILE) in (tmp_path / LOG_FILE).read_text()

    holder = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a train.py left running by a killed sweep
    outcomes = []
    thread = threading.Thread(target=lambda: outcomes.append(run(python(write_eval(tmp_path, 0.25)), tmp_path)))
    thread.start()
    time.sleep(1.5)
    assert not outcomes and "waiting for the process that holds this trial's lock" in (tmp_path / LOG_FILE).read_text()
    os.close(holder)
    thread.join(timeout=30)
    assert outcomes[0].eval_metrics["accuracy"] == 0.25


def test_stop_while_waiting_for_the_lock(tmp_path):
    (tmp_path / "trial").mkdir()
    holder = os.open(tmp_path / "trial" / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    outcome = run(python("print('never')"), tmp_path / "trial", stop)
    os.close(holder)
    assert outcome.returncode != 0 and "stopped while waiting" in outcome.error
    assert "never" not in (tmp_path / "trial" / LOG_FILE).read_text()
