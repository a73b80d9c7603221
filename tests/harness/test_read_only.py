"""A read-only workdir (train.py, eval.py) and a read-only sweep storage: one ``error:`` line, exit status 2, nothing
written; each fails before JAX starts.

The tests run as root on the CI machine, where mode bits do not stop a write. There the CLIs run without the
capabilities that let root pass them (``setpriv`` drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
set), so a 0555 directory binds them as it binds its owner. (Running them as nobody does not work here: the
interpreter lies under /root, which only root may enter.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from configs.default import get_config
from tests.harness.conftest import ROOT

# Root keeps its uid but loses the two capabilities that override mode bits, in the program exec'd.
WITHOUT_ROOT_OVERRIDES = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def _contents(path: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


def test_read_only_workdir_and_sweep_storage_are_one_line_and_write_nothing(tmp_path):
    from cnn.train.config import save_config

    read_only, sweep_workdir = tmp_path / "read_only", tmp_path / "sweep"
    run, fresh = read_only / "run", read_only / "new"
    run.mkdir(parents=True)
    save_config(get_config("runlocal"), str(run))  # a run's workdir, as eval.py reads it
    run.chmod(0o555)
    read_only.chmod(0o555)
    before = _contents(read_only)
    storage = f"sqlite:///{read_only}/sweep.db"
    commands = {
        f"--workdir={run}: cannot write there (Permission denied)":
            ["train.py", "--config=configs/default.py:runlocal", f"--workdir={run}"],
        f"--workdir={fresh}: cannot write there (Permission denied)":
            ["train.py", "--config=configs/default.py:runlocal", f"--workdir={fresh}"],
        f"--workdir={run}: cannot write there (Permission denied) ":  # (a trailing space: another dict key)
            ["eval.py", f"--workdir={run}"],
        f"--storage={storage}: cannot write {read_only}/sweep.db.lock (Permission denied)":
            ["sweep.py", "--config=configs/default.py:runlocal", f"--workdir={sweep_workdir}", f"--storage={storage}"],
    }
    # Started together: each is a Python start-up and a config file, no JAX.
    prefix = WITHOUT_ROOT_OVERRIDES if os.geteuid() == 0 else []
    processes = {expected: subprocess.Popen(
        [*prefix, sys.executable, str(ROOT / script), *args], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for expected, (script, *args) in commands.items()}
    try:
        for expected, process in processes.items():
            _, stderr = process.communicate(timeout=120)
            assert (process.returncode, stderr) == (2, f"error: {expected.strip()}\n")
        assert _contents(read_only) == before
    finally:
        read_only.chmod(0o755)
        run.chmod(0o755)
