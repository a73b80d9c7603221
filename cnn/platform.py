"""Process set-up that must happen before JAX initializes its backends.

XLA:CPU in jaxlib 0.10.2 routes every convolution through YNNPACK by default; its weight-gradient convolutions are
4-22x slower than XLA's Eigen path (a CIFAR ResNet-18 training step: 15-19 s against 4.3 s with the flag below, see
BENCHMARKS.md). The flag sends convolutions back to Eigen and keeps matrix products on YNNPACK. An unknown XLA flag
aborts XLA at start-up, so it is added only for the jaxlib version it was checked with.

XLA:CPU also allocates each execution's temporaries as one block and frees it at the end (574 MB for a CIFAR
ResNet-18 training step of 128 images), from a thread of its pool. glibc's malloc serves such a block with a fresh
``mmap`` and unmaps it on ``free``, so the kernel faults in and zeroes every page of it again on every step (140,293
page faults, 0.3 s of system time per 2.2 s step). ``keep_freed_memory`` has malloc keep freed memory for reuse
instead (BENCHMARKS.md, "Page faults": the step 1.07x faster, r3d_18's 1.2x).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
CHECKED_JAXLIB = ("0.10.2",)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters (malloc.h)


def configure_xla_cpu(enable: bool = True) -> bool:
    """Append the Eigen-convolution flag to ``XLA_FLAGS`` (keeping the user's) when safe; True if it is set.

    Call before the first JAX computation. ``CNN_YNN_CONV=1`` in the environment keeps YNNPACK convolutions
    (for benchmarking the difference). Also calls ``keep_freed_memory``.
    """
    keep_freed_memory()
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


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the process's next allocations; True if set (glibc only).

    Every block comes from one heap that grows with ``brk`` (no ``mmap``: ``M_MMAP_MAX`` 0; one arena, since a
    thread's own arena maps blocks over 64 MB anyway) and never shrinks (``M_TRIM_THRESHOLD`` unbounded): a
    process holds the most memory it ever used at once. ``CNN_KEEP_FREED_MEMORY=0`` keeps glibc's defaults. Call
    before JAX starts its threads: a thread that has allocated keeps its arena.
    """
    if os.environ.get("CNN_KEEP_FREED_MEMORY") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    # -1 is read as the largest size_t: no trim threshold
    return all(mallopt(option, value) == 1 for option, value in
               ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1)))


def hide_accelerators_from_tensorflow() -> None:
    """TensorFlow only feeds data here: it must never take GPU/TPU memory from JAX."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # silences its banner; TF computes nothing that matters
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
