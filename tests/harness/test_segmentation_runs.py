"""Segmentation runs through the CLIs, too long for CI on 2 shared cores (``-m slow``): the ISBI U-Net's tiny
variant evaluates whole held-out slices by overlap-tile inference, and a small padded U-Net learns the digit
canvases."""

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


DIGITS_RUN = ("--config=configs/digits_segmentation.py", "--config.model.width=8",
              "--config.dataset.generator.train_examples=1000", "--config.dataset.generator.test_examples=200",
              "--config.num_steps=150", "--config.eval_every_steps=150", "--config.checkpoint_every_steps=150")


@pytest.mark.slow
def test_a_small_padded_unet_learns_the_digit_canvases(tmp_path):
    """150 steps of a width-8 padded U-Net on 1,000 train canvases; mean IoU over the 11 classes on 200 test canvases
    made from MNIST's test digits. THRESHOLD: see the comment at its value."""
    run_cli("train.py", *DIGITS_RUN, f"--workdir={tmp_path}", env=cli_env(str(tmp_path / "tfds")))
    result = json.loads((tmp_path / "eval_150.json").read_text())
    assert result["count"] == 200
    assert result["mean_iou"] >= DIGITS_THRESHOLD
