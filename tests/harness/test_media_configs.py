"""The 1D and 3D experiment files: AdrenalMNIST3D's runlocal variant through train.py (ROC AUC on the 98 validation
volumes at every evaluation, the number the best checkpoint is chosen by), and the variants of each file resolved
to the dataset, split, model and recipe their docstrings promise (MedMNIST's protocol, the MNIST-1D paper's)."""

from __future__ import annotations

import json

import pytest

from cnn.train.config import load_config_file
from tests.harness.conftest import ROOT, cli_env, run_cli

SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.slow  # compiling the 3D network's steps: over 20 s of CPU (461 s wall on the loaded 2-core machine)
@pytest.mark.skipif(not (SHARED / "medmnist3d").is_dir(), reason="needs ../shared/data/medmnist3d")
def test_adrenal3d_runlocal_trains_and_reports_validation_auc(tmp_path, tfds_dir):
    workdir = tmp_path / "adrenal"
    result = run_cli("train.py", "--config=configs/adrenal3d.py:runlocal", f"--workdir={workdir}",
                     env=cli_env(tfds_dir))
    assert "(98 examples)" in result.stdout  # the validation split
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if line["split"] == "eval"]
    assert [line["step"] for line in evals] == [2, 4]
    assert all(0.0 <= line["roc_auc"] <= 1.0 for line in evals)


def config(spec: str):
    return load_config_file(str(ROOT / "configs" / spec))


def test_adrenal3d_variants_follow_medmnist():
    base, big = config("adrenal3d.py"), config("adrenal3d.py:64,acs")
    assert (base.dataset.name, base.model.name, base.model.conv) == ("adrenal_mnist3d", "resnet18_3d", "standard")
    assert (big.dataset.name, big.model.conv) == ("adrenal_mnist3d_64", "acs")
    assert (base.optimizer.name, base.optimizer.learning_rate, base.batch_size, base.num_epochs) == ("adam", 1e-3, 32,
                                                                                                     100)
    assert (base.schedule.name, tuple(base.schedule.boundaries), base.schedule.decay_factor) == ("step", (0.5, 0.75),
                                                                                                 0.1)
    assert (base.checkpoint.best_metric, base.dataset.eval_split) == ("roc_auc", "validation")
    cpu = config("adrenal3d.py:cpu,acs")  # the 2-core recipe: a narrower network, the schedule compressed
    assert (cpu.model.width, cpu.num_epochs, tuple(cpu.schedule.boundaries), cpu.model.conv) == (16, 10, (0.5, 0.75),
                                                                                                 "acs")
    assert base.model.get("width", 64) == 64


@pytest.mark.parametrize(("variant", "model", "splits"), [
    ("", "m5", ("train", "test")),
    (":log_mel", "log_mel_cnn", ("train", "test")),
    (":speaker", "m5", ("speaker_train", "speaker_test")),
    (":log_mel,speaker", "log_mel_cnn", ("speaker_train", "speaker_test")),
])
def test_fsdd_variants(variant, model, splits):
    c = config(f"fsdd.py{variant}")
    assert (c.model.name, c.dataset.train_split, c.dataset.eval_split) == (model, *splits)
    assert ("log_mel" in c.dataset.train_preprocess) == (model == "log_mel_cnn")
    assert c.eval_batch_size == 1  # whole clips
    assert c.dataset.train_preprocess == c.dataset.eval_preprocess  # no augmentation unless asked


def test_fsdd_speed_perturbs_training_clips_only_before_their_spectrogram():
    c = config("fsdd.py:log_mel,speaker,speed")
    assert c.dataset.train_preprocess.startswith("decode|speed(0.9, 1.1)|log_mel|")
    assert "speed" not in c.dataset.eval_preprocess and c.dataset.train_split == "speaker_train"


def test_moving_digits_variants_and_one_model_at_a_time():
    assert [config(f"moving_digits.py:{v}").model.name for v in ("r3d", "r2plus1d", "frames")] == [
        "r3d_18", "r2plus1d_18", "fr2d_18"]
    with pytest.raises(ValueError, match="choose one of"):
        config("moving_digits.py:r3d,frames")
