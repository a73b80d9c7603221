"""``cnn.tools.import_weights`` and ``config.init_from``: torchvision-format weights (written here as a
``.safetensors`` file, byte by byte from the format's definition) become a checkpoint that ``eval.py``'s evaluation
reads and that ``train.py`` fine-tunes with a new head."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from PIL import Image

from cnn import models
from cnn.tools.import_weights import import_weights
from cnn.train.checkpoint import merge_pretrained
from cnn.train.config import load_config_file
from cnn.train.evaluate import evaluate_checkpoints
from cnn.train.state import create_train_state
from tests.harness.conftest import restore_params
from tests.models.test_torchvision_weights import _fixture
from tests.models.torchvision_reference import deterministic_state

ROOT = Path(__file__).resolve().parents[2]


def write_safetensors(path: Path, state: dict[str, np.ndarray]) -> None:
    """The safetensors format: an 8-byte little-endian header length, a JSON header, the float32 bytes."""
    header, offset = {}, 0
    for name, value in state.items():
        header[name] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    encoded = json.dumps(header).encode()
    body = b"".join(np.ascontiguousarray(value, "<f4").tobytes() for value in state.values())
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + body)


def write_folder(root: Path, classes: int) -> None:
    for split in ("train", "test"):
        for label in range(classes):
            (root / split / f"c{label}").mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (40 + 60 * label + i,) * 3).save(root / split / f"c{label}" / f"{i}.png")


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """resnet18 weights with a 2-class head, imported with a config on a 2-class image folder."""
    tmp_path = tmp_path_factory.mktemp("import")
    shapes, _ = _fixture("resnet18")
    shapes |= {"fc.weight": (2, 512), "fc.bias": (2,)}
    state = {key: value for key, value in deterministic_state(shapes).items()
             if not key.endswith("num_batches_tracked")}
    write_safetensors(tmp_path / "resnet18.safetensors", state)
    write_folder(tmp_path / "two", 2)
    config = load_config_file(str(ROOT / "configs/finetune_folder.py:runlocal"))
    config.dataset.path = str(tmp_path / "two")
    import_weights("resnet18", str(tmp_path / "resnet18.safetensors"), config, str(tmp_path / "imported"))
    return tmp_path / "imported", state


@pytest.mark.slow  # 25 s on the 2 shared cores: resnet18's initialization compiles
def test_import_writes_the_weights_as_a_checkpoint(imported):
    workdir, state = imported
    stored = restore_params(workdir, 0)
    np.testing.assert_array_equal(stored["params"]["stem_conv"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(stored["params"]["head"]["kernel"], state["fc.weight"].T)
    np.testing.assert_array_equal(stored["model_state"]["batch_stats"]["stage4_block2"]["bn2"]["var"],
                                  state["layer4.1.bn2.running_var"])
    assert (workdir / "config.json").is_file()


@pytest.mark.slow  # 2 min on the 2 shared cores: resnet18's evaluation and training steps compile
def test_evaluate_and_fine_tune_with_a_new_head(imported, tmp_path):
    workdir, _ = imported
    assert evaluate_checkpoints(str(workdir))[-1]["count"] == 4
    write_folder(tmp_path / "three", 3)
    result = subprocess.run(
        [sys.executable, "train.py", "--config=configs/finetune_folder.py:runlocal", f"--workdir={tmp_path / 'run'}",
         f"--config.dataset.path={tmp_path / 'three'}", f"--config.init_from={workdir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "except head/bias, head/kernel (not there, or another shape)" in result.stderr
    tuned = restore_params(tmp_path / "run", 2)["params"]
    assert tuned["head"]["kernel"].shape == (512, 3)
    imported_kernel = restore_params(workdir, 0)["params"]["stage3_block1"]["conv1"]["kernel"]
    assert np.corrcoef(np.ravel(tuned["stage3_block1"]["conv1"]["kernel"]), np.ravel(imported_kernel))[0, 1] > 0.99


def test_pretrained_arrays_that_fit_are_taken_and_the_new_head_is_named(caplog):
    model = models.create("small_cnn", num_classes=3, width=4)
    state = create_train_state(model, optax.sgd(0.1), (1, 8, 8, 1), seed=0)
    source = models.create("small_cnn", num_classes=5, width=4).init(jax.random.PRNGKey(1), np.zeros((1, 8, 8, 1)))
    with caplog.at_level(logging.WARNING):
        merged = merge_pretrained(state, source["params"], {"batch_stats": source["batch_stats"]}, "pretrained/")
    for name, value in merged.params.items():
        expected = state.params[name] if name == "Dense_0" else source["params"][name]  # Dense_0: its head
        for leaf, array in value.items():
            np.testing.assert_array_equal(array, expected[leaf], err_msg=f"{name}/{leaf}")
    assert "initialized from pretrained/ except Dense_0/bias, Dense_0/kernel (not there" in caplog.text
