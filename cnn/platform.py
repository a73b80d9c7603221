"""Process set-up that must happen before JAX initializes its backends.

XLA:CPU in jaxlib 0.10.2 routes every convolution through YNNPACK by default; its weight-gradient convolutions are
4-22x slower than XLA's Eigen path (a CIFAR ResNet-18 training step: 15-19 s against 4.3 s with the flag below, see
BENCHMARKS.md). The flag sends convolutions back to Eigen and keeps matrix products on YNNPACK. An unknown XLA flag
aborts XLA at start-up, so it is added only for the jaxlib version it was checked with.
"""

from __future__ import annotations

import importlib.metadata
import os

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
CHECKED_JAXLIB = ("0.10.2",)


def configure_xla_cpu(enable: bool = True) -> bool:
    """Append the Eigen-convolution flag to ``XLA_FLAGS`` (keeping the user's) when safe; True if it is set.

    Call before the first JAX computation. ``CNN_YNN_CONV=1`` in the environment keeps YNNPACK convolutions
    (for benchmarking the difference).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return CPU_CONV_FLAG in flags
    if not enable or os.environ.get("CNN_YNN_CONV") == "1":
        return False
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return False
    if version not in CHECKED_JAXLIB:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_CONV_FLAG}".strip()
    return True


def hide_accelerators_from_tensorflow() -> None:
    """TensorFlow only feeds data here: it must never take GPU/TPU memory from JAX."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # silences its banner; TF computes nothing that matters
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
