"""Deterministic torchvision-format weights and inputs, a formula of each tensor's index in the state dict, in plain
numpy: ``make_torchvision_fixtures.py`` fills torchvision's models with them (torch), the tests rebuild them (no
torch) and compare the zoo's logits with torchvision's.

Tensor ``i`` of ``n`` elements starts from ``wave = sin(0.5 + 0.7 i + 2.3 k)``, ``k = 0..n-1`` (float64, then
float32): a conv or linear weight is ``wave · 2 / sqrt(fan_in)`` (He-like variance ``2 / fan_in``), a bias
``0.05 · wave``, a BatchNorm weight ``0.5 + 0.2 · wave`` (below 1, so that deep ResNets stay bounded), running
mean ``0.1 · wave``, running variance ``0.5 + 0.25 · (1 + wave)``; ``num_batches_tracked`` is 0.
"""

from __future__ import annotations

import math

import numpy as np

# Zoo name -> input shape, channels-first as torch takes it (batch 2): small, and each family's minimum at least.
INPUTS = {
    "alexnet": (2, 3, 64, 64),
    **{f"vgg{d}{bn}": (2, 3, 32, 32) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    **{f"resnet{d}": (2, 3, 64, 64) for d in (18, 34, 50, 101, 152)},
    **{f"efficientnet_b{i}": (2, 3, 64, 64) for i in range(8)},
    **{name: (2, 3, 4, 32, 32) for name in ("r3d_18", "mc3_18", "r2plus1d_18")},
}
NUM_CLASSES = 10
CI_MODELS = ("alexnet", "resnet18")  # the others are marked slow (each 10-30 s on one core)


def wave(index: int, size: int) -> np.ndarray:
    return np.sin(0.5 + 0.7 * index + 2.3 * np.arange(size, dtype=np.float64))


def deterministic_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The state dict with these tensor names and shapes (in state-dict order), filled by the formula above."""
    state = {}
    for index, (key, shape) in enumerate(shapes.items()):
        kind = key.rpartition(".")[2]
        w = wave(index, math.prod(shape)).reshape(shape)
        if kind == "num_batches_tracked":
            state[key] = np.zeros(shape, np.int64)
            continue
        if kind == "running_var":
            w = 0.5 + 0.25 * (1 + w)
        elif kind == "running_mean":
            w = 0.1 * w
        elif kind == "bias":
            w = 0.05 * w
        elif len(shape) == 1:  # a BatchNorm weight
            w = 0.5 + 0.2 * w
        else:
            w = w * 2 / math.sqrt(math.prod(shape[1:]))
        state[key] = w.astype(np.float32)
    return state


def deterministic_input(shape: tuple[int, ...]) -> np.ndarray:
    """Channels-first images in [-1, 1]."""
    return wave(-1, math.prod(shape)).reshape(shape).astype(np.float32)
