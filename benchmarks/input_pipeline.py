"""Input pipeline throughput beside what the train step consumes: the pipeline must never be the bottleneck.

    python benchmarks/input_pipeline.py [--mnist_dir ../shared/data/mnist] [--batch 128]

For MNIST (real files, prepared through TFDS offline) and CIFAR-shaped data (synthetic uint8 32x32x3, the CIFAR
training chain with crop and flip), it measures images/s of ``TrainStream.batch`` on one thread and of the
prefetching iterator the trainer uses, and beside them the images/s one jit-compiled training step of zoo models
consumes on this machine.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnn.platform import configure_xla_cpu

configure_xla_cpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from cnn.data import ArraySplit, TrainStream, build_preprocess, make_source  # noqa: E402
from cnn.data.sources import TFDS_DATASETS  # noqa: E402
from cnn.models import MODELS, create  # noqa: E402
from cnn.train.state import create_train_state  # noqa: E402
from cnn.train.steps import train_step  # noqa: E402


def pipeline_rate(split: ArraySplit, chain: str, spec, batch: int, steps: int) -> tuple[float, float]:
    """Images/s of single-threaded batch preparation, and of the prefetching iterator."""
    stream = TrainStream(split, build_preprocess(chain, spec), batch, seed=0)
    stream.batch(0)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        stream.batch(step)
    single = steps * batch / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in stream.iterate(0, steps):
        pass
    return single, steps * batch / (time.perf_counter() - started)


def step_rate(model: str, shape: tuple[int, ...], batch: int, steps: int = 5) -> float:
    """Images/s one SGD step of ``model`` consumes (compiled, after warm-up)."""
    net = create(model, num_classes=10)
    state = create_train_state(net, optax.sgd(0.01, momentum=0.9), (1, *shape), seed=0)
    rng = np.random.default_rng(0)
    data = {"image": rng.normal(size=(batch, *shape)).astype(np.float32),
            "label": rng.integers(0, 10, batch).astype(np.int32)}
    step = jax.jit(functools.partial(train_step, schedule=lambda s: 0.01, label_smoothing=0.0))
    key = jax.random.PRNGKey(0)
    state, metrics = step(state, data, key)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, data, key)
    jax.block_until_ready(metrics)
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist_dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                            "mnist"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()

    cases = []
    if os.path.isdir(args.mnist_dir):
        with tempfile.TemporaryDirectory() as data_dir:
            source = make_source({"name": "mnist", "data_dir": data_dir, "manual_dir": args.mnist_dir})
            cases.append(("MNIST (real)", source.load("train"), "decode|normalize|pad(2)", (32, 32, 1),
                          ["small_cnn", "lenet5"]))
    cifar = TFDS_DATASETS["cifar10"].spec
    rng = np.random.default_rng(0)
    synthetic = ArraySplit(rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
                           rng.integers(0, 10, 50_000).astype(np.int32))
    cases.append(("CIFAR-shaped (synthetic)", synthetic, "decode|random_crop(32, pad=4)|flip_lr|normalize('cifar10')",
                  cifar.image_shape, ["small_cnn", "cifar_resnet20", "resnet18"]))

    print(f"jax {jax.__version__}, {os.cpu_count()} cores, batch {args.batch}, load average {os.getloadavg()[0]:.2f}\n")
    print("| data | preprocessing | pipeline, 1 thread (img/s) | pipeline, prefetching (img/s) | train step consumes "
          "(img/s) |\n|---|---|---|---|---|")
    for name, split, chain, shape, models in cases:
        spec = TFDS_DATASETS["mnist" if shape[-1] == 1 else "cifar10"].spec
        single, prefetched = pipeline_rate(split, chain, spec, args.batch, args.steps)
        consumed = ", ".join(f"{m} {step_rate(m, shape, args.batch):,.0f}" for m in models if m in MODELS)
        shown = chain.replace("|", r" \| ")  # a bare | would split the markdown cell
        print(f"| {name} | `{shown}` | {single:,.0f} | {prefetched:,.0f} | {consumed} |", flush=True)


if __name__ == "__main__":
    main()
