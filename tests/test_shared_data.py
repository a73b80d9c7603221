"""The real data folder ``<repo>/../shared/data``: the tests that read it skip where it is absent (a developer's
clone), so in CI, which has it, its absence must be one clear failure rather than silent skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_real_data_folder_is_present_in_ci():
    if os.environ.get("CI") != "true":
        pytest.skip(f"not in CI (CI=true unset): the tests that read {SHARED} skip where it is absent")
    assert SHARED.is_dir(), (
        f"CI=true but the real data folder {SHARED} is absent: the tests that read it were skipped, not run"
    )


@pytest.mark.parametrize(
    ("ci", "with_data", "outcome"),
    [("true", False, "1 failed"), (None, False, "1 skipped"), ("true", True, "1 passed")],
)
def test_the_check_in_a_clone_elsewhere(tmp_path, ci, with_data, outcome):
    """This file copied into a repository under ``tmp_path``, next to which ``shared/data`` exists or not."""
    tests = tmp_path / "repo" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(__file__, tests)
    if with_data:
        (tmp_path / "shared" / "data").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci else {})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         f"{tests / Path(__file__).name}::test_real_data_folder_is_present_in_ci"],
        cwd=tmp_path / "repo", env=env, capture_output=True, text=True, timeout=120,
    )
    assert outcome in result.stdout, result.stdout
    if ci and not with_data:
        assert f"the real data folder {tmp_path / 'shared' / 'data'} is absent" in result.stdout
