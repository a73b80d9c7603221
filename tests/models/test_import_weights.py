"""``cnn.tools.import_weights`` and ``config.init_from``: torchvision-format weights (written here as a
``.safetensors`` file, byte by byte from the format's definition) become a checkpoint that ``eval.py``'s evaluation
reads and that ``train.py`` fine-tunes with a new head."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cnn.tools.import_weights import import_weights
from cnn.train.config import load_config_file
from cnn.train.evaluate import evaluate_checkpoints
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


def test_import_evaluate_and_fine_tune_with_a_new_head(tmp_path):
    shapes, _ = _fixture("resnet18")
    shapes |= {"fc.weight": (2, 512), "fc.bias": (2,)}  # the 2 classes of the folder it is evaluated on
    state = {key: value.astype(np.float32) for key, value in deterministic_state(shapes).items()
             if not key.endswith("num_batches_tracked")}
    write_safetensors(tmp_path / "resnet18.safetensors", state)
    write_folder(tmp_path / "two", 2)
    config = load_config_file(str(ROOT / "configs/finetune_folder.py:runlocal"))
    config.dataset.path = str(tmp_path / "two")
    import_weights("resnet18", str(tmp_path / "resnet18.safetensors"), config, str(tmp_path / "imported"))

    stored = restore_params(tmp_path / "imported", 0)
    np.testing.assert_array_equal(stored["params"]["stem_conv"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(stored["params"]["head"]["kernel"], state["fc.weight"].T)
    np.testing.assert_array_equal(stored["model_state"]["batch_stats"]["stage4_block2"]["bn2"]["var"],
                                  state["layer4.1.bn2.running_var"])
    assert evaluate_checkpoints(str(tmp_path / "imported"))[-1]["count"] == 4

    write_folder(tmp_path / "three", 3)
    result = subprocess.run(
        [sys.executable, "train.py", "--config=configs/finetune_folder.py:runlocal", f"--workdir={tmp_path / 'run'}",
         f"--config.dataset.path={tmp_path / 'three'}", f"--config.init_from={tmp_path / 'imported'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "except head/bias, head/kernel (not there, or another shape)" in result.stderr
    tuned = restore_params(tmp_path / "run", 2)["params"]
    assert tuned["head"]["kernel"].shape == (512, 3)
    imported = stored["params"]["stage3_block1"]["conv1"]["kernel"]
    assert np.corrcoef(np.ravel(tuned["stage3_block1"]["conv1"]["kernel"]), np.ravel(imported))[0, 1] > 0.99
