"""A segmentation run through the CLIs, too long for CI on 2 shared cores (``-m slow``): the ISBI U-Net's tiny
variant evaluates whole held-out slices by overlap-tile inference."""

from __future__ import annotations

import json

import pytest

from tests.harness.conftest import cli_env, run_cli


@pytest.mark.slow
def test_isbi_runlocal_evaluates_every_pixel_of_the_held_out_slices(tmp_path):
    env = cli_env(str(tmp_path / "tfds"))
    run_cli("train.py", "--config=configs/isbi_unet.py:runlocal", f"--workdir={tmp_path}", env=env)
    run_cli("eval.py", f"--workdir={tmp_path}", env=env)
    result = json.loads((tmp_path / "eval_4.json").read_text())
    assert result["split"] == "heldout" and result["count"] == 5
    assert result["pixels"] == 5 * 512 * 512  # the stitched 68² output tiles cover each slice exactly
    assert 0 <= result["rand_error"] <= 1 and result["pixel_error"] == pytest.approx(1 - result["pixel_accuracy"])
    assert (tmp_path / "segmentation_4.png").stat().st_size > 5000

