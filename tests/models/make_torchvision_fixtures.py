"""Write the torchvision fixtures of tests/models/test_torchvision_weights.py (needs torch and torchvision; run once
by hand, outside the project's venv):

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch torchvision safetensors
    /tmp/torchvenv/bin/python tests/models/make_torchvision_fixtures.py

- ``data/torchvision_logits.npz``: for every model of ``INPUTS``, torchvision's logits in eval mode on
  ``deterministic_input`` with the weights of ``deterministic_state`` (``<name>/logits``), and the state dict's
  names and shapes (``<name>/shapes``, JSON) from which the test rebuilds the weights.
- ``data/tiny_state.pth`` (torch's zip format), ``data/tiny_state_legacy.pth`` (torch < 1.6's format) and
  ``data/tiny_state.safetensors``: ``TINY`` as torch and safetensors write it, views and dtypes included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from torchvision_reference import INPUTS, NUM_CLASSES, deterministic_input, deterministic_state, wave

DATA = Path(__file__).parent / "data"


def tiny_state() -> dict[str, torch.Tensor]:
    """Tensors that exercise the reader: views sharing one storage (transposed, offset, strided), other dtypes."""
    base = torch.from_numpy(wave(0, 12).astype(np.float32)).reshape(3, 4)
    return {"base": base, "transposed": base.t(), "offset_row": base[1:, 2], "strided": base[:, ::2],
            "half": torch.from_numpy(wave(1, 5).astype(np.float16)), "long": torch.arange(-3, 4, dtype=torch.int64),
            "double": torch.from_numpy(wave(2, 6)).reshape(2, 3)}


def main() -> None:
    DATA.mkdir(exist_ok=True)
    arrays = {}
    torch.set_grad_enabled(False)
    for name, shape in INPUTS.items():
        build = getattr(torchvision.models.video if len(shape) == 5 else torchvision.models, name)
        model = build(num_classes=NUM_CLASSES).eval()
        shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        model.load_state_dict({key: torch.from_numpy(value) for key, value in deterministic_state(shapes).items()})
        logits = model(torch.from_numpy(deterministic_input(shape))).numpy()
        arrays[f"{name}/logits"] = logits
        arrays[f"{name}/shapes"] = np.array(json.dumps(list(shapes.items())))
        print(name, logits.shape, float(np.abs(logits).max()))
    np.savez_compressed(DATA / "torchvision_logits.npz", **arrays)
    state = tiny_state()
    torch.save(state, DATA / "tiny_state.pth")
    torch.save(state, DATA / "tiny_state_legacy.pth", _use_new_zipfile_serialization=False)
    save_file({key: value.contiguous() for key, value in state.items()}, DATA / "tiny_state.safetensors")


if __name__ == "__main__":
    main()
