"""Bad segmentation input fails before training with one line naming what and where: an unpadded U-Net on canvases
of an invalid size (through train.py), label maps of another size than the images, label values outside the
classes."""

from __future__ import annotations

import numpy as np
import pytest

from cnn.config_defaults import base_config
from cnn.data import ArraySplit, DatasetSpec
from cnn.errors import UserError
from cnn.tasks import make_task
from tests.harness.conftest import cli_env, run_cli


def test_a_unet_input_of_invalid_size_is_one_line_through_train_py(tmp_path):
    result = run_cli("train.py", "--config=configs/digits_segmentation.py:runlocal", "--config.model.name=unet",
                     f"--workdir={tmp_path / 'run'}", env=cli_env(str(tmp_path / "tfds")), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: unet: input size 64 is invalid at depth 3 (every map entering a 2×2 pooling must have an even size); "
        "the nearest valid input size is 92 (output 4)")
    assert "step 1" not in result.stderr


def test_label_size_and_values_are_checked_with_their_place():
    config = base_config("isbi2012_em", "unet")
    config.task.name, config.task.ignore_label = "segmentation", 255
    task = make_task(config, DatasetSpec(2, (8, 8, 1), kind="dense"))
    with pytest.raises(UserError, match=r"batch key 'label': expected shape \(batch, 8, 8\) like the image's "
                                        r"\(2, 8, 8, 1\) without channels, got shape \(2, 6, 8\)"):
        task.check_batch({"image": np.zeros((2, 8, 8, 1)), "label": np.zeros((2, 6, 8), np.int32)})
    labels = np.zeros((2, 8, 8), np.int32)
    labels[1, 2, 3], labels[0, 0, 0] = 2, 255  # 255 is the ignore label: allowed
    with pytest.raises(UserError, match=r"split 'heldout': 1 label\(s\) outside 0..1 or the ignore label 255: \[2\]"):
        task.check_split(ArraySplit(np.zeros((2, 8, 8, 1), np.uint8), labels), "heldout")
