"""Sweep fixtures: the harness's prepared digits, and config files that reuse configs/default.py's runlocal variant
with a sweep of the test's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.conftest import ROOT, cli_env, tfds_dir  # noqa: F401 - tfds_dir is a fixture used here

CONFIG_TEMPLATE = '''
import importlib.util

_spec = importlib.util.spec_from_file_location("default_config", {default!r})
_default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_default)


def get_config(arg=None):
    return _default.get_config("runlocal")


def get_sweep(arg=None):
    return {sweep!r}
'''


@pytest.fixture
def sweep_config(tmp_path):
    """``sweep_config(definition)`` writes a config file (runlocal trials) whose get_sweep() returns it."""

    def write(definition: dict, name: str = "sweep_config.py") -> str:
        path = tmp_path / name
        path.write_text(CONFIG_TEMPLATE.format(default=str(ROOT / "configs" / "default.py"), sweep=definition))
        return str(path)

    return write


def sweep_command(config: str, workdir: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweep.py"), f"--config={config}", f"--workdir={workdir}",
            "--heartbeat_seconds=1", *args]


@pytest.fixture
def run_sweep(tfds_dir):  # noqa: F811 - the fixture imported above
    """``run_sweep(config, workdir, *args)`` runs sweep.py to its end and returns the completed process."""

    def run(config: str, workdir: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(sweep_command(config, workdir, *args), cwd=ROOT, env=cli_env(tfds_dir),
                              capture_output=True, text=True, timeout=600)

    return run
