"""torchvision's weights in the zoo: the zoo's logits with imported weights against torchvision's own (stored by
``make_torchvision_fixtures.py``, which needs torch; these tests do not), the readers against files torch and
safetensors wrote, and the restricted unpickler against pickles that run code."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnn import models
from cnn.errors import UserError
from cnn.models.torchvision import read_state_dict, torchvision_variables
from tests.models.torchvision_reference import (
    CI_MODELS,
    INPUTS,
    NUM_CLASSES,
    deterministic_input,
    deterministic_state,
    wave,
)

DATA = Path(__file__).parent / "data"


def _fixture(name: str) -> tuple[dict[str, tuple[int, ...]], np.ndarray]:
    with np.load(DATA / "torchvision_logits.npz") as stored:
        shapes = {key: tuple(shape) for key, shape in json.loads(str(stored[f"{name}/shapes"]))}
        return shapes, stored[f"{name}/logits"]


@pytest.mark.parametrize("name", [name if name in CI_MODELS else pytest.param(name, marks=pytest.mark.slow)
                                  for name in INPUTS])
def test_imported_logits_equal_torchvision(name):
    shapes, expected = _fixture(name)
    variables = torchvision_variables(name, deterministic_state(shapes))
    x = deterministic_input(INPUTS[name])
    x = np.moveaxis(x, 1, -1)  # channels-first (torch) -> channels-last (the zoo)
    logits = models.create(name, num_classes=NUM_CLASSES).apply(variables, x, train=False)
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("file", ["tiny_state.pth", "tiny_state_legacy.pth", "tiny_state.safetensors"])
def test_reads_what_torch_and_safetensors_wrote(file):
    base = wave(0, 12).astype(np.float32).reshape(3, 4)
    expected = {"base": base, "transposed": base.T, "offset_row": base[1:, 2], "strided": base[:, ::2],
                "half": wave(1, 5).astype(np.float16), "long": np.arange(-3, 4), "double": wave(2, 6).reshape(2, 3)}
    state = read_state_dict(DATA / file)
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert state[key].dtype == value.dtype, key
        np.testing.assert_array_equal(state[key], value, err_msg=key)


class _Payload:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("call,refused", [(os.system, "refused global posix.system"),
                                          (eval, "refused global builtins.eval"),
                                          (subprocess.call, "refused global subprocess.call")])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_pth_that_runs_code_is_refused(tmp_path, call, refused, layout):
    marker = tmp_path / "ran"
    command = f"open({str(marker)!r}, 'w')" if call is eval else ["touch", str(marker)]
    payload = pickle.dumps({"weight": _Payload(call, " ".join(command) if call is os.system else command)})
    path = tmp_path / "evil.pth"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", payload)
    else:
        path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001) + pickle.dumps({}) + payload)
    with pytest.raises(UserError, match=refused) as error:
        read_state_dict(path)
    assert "\n" not in str(error.value)
    assert not marker.exists()


def test_every_missing_left_over_or_misshapen_tensor_is_one_line():
    shapes, _ = _fixture("resnet18")
    state = deterministic_state(shapes)
    del state["layer2.0.downsample.1.running_var"]
    state["layer5.0.conv1.weight"] = np.zeros((3, 3), np.float32)
    state["layer1.1.conv2.weight"] = state["layer1.1.conv2.weight"][:, :, :2]
    with pytest.raises(UserError) as error:
        torchvision_variables("resnet18", state)
    lines = str(error.value).splitlines()
    assert lines[0] == "3 problems importing torchvision weights into resnet18:"
    assert sorted(lines[1:]) == sorted([
        "tensor layer5.0.conv1.weight (3, 3): no variable of resnet18 takes it",
        "tensor layer1.1.conv2.weight (64, 64, 2, 3): params/stage1_block2/conv2/kernel needs (3, 3, 64, 64), the "
        "tensor gives (2, 3, 64, 64)",
        "variable batch_stats/stage2_block1/proj_bn/var (128,): no tensor fills it",
    ])


def test_a_tensor_that_reads_past_its_storage_is_refused(tmp_path, monkeypatch):
    """A ``.pth`` pickled as torch does (stand-ins for ``torch.FloatStorage`` and ``_rebuild_tensor_v2``, so that
    pickle writes their names) whose 4×4 tensor views a storage of 4 elements."""
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage_type = type("FloatStorage", (), {"__module__": "torch"})

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_torch.FloatStorage, fake_utils._rebuild_tensor_v2 = storage_type, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)
    storage = object()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_type, "0", "cpu", 4) if obj is storage else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": _Payload(_rebuild_tensor_v2, storage, 0, (4, 4), (4, 1), False, {})})
    path = tmp_path / "overread.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("overread/data.pkl", buffer.getvalue())
        archive.writestr("overread/data/0", np.arange(4, dtype="<f4").tobytes())
    with pytest.raises(UserError, match=r"tensor 'w' reads past the end of its storage \(16 > 4 elements\)"):
        read_state_dict(path)
