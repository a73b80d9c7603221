"""Input pipeline throughput beside what the train step consumes: the pipeline must never be the bottleneck.

    python benchmarks/input_pipeline.py [--mnist_dir ../shared/data/mnist] [--batch 128] [--jpegs 512]

For MNIST (real files, prepared through TFDS offline) and CIFAR-shaped data (synthetic uint8 32x32x3, the CIFAR
training chain with crop and flip), it measures images/s of ``TrainStream.batch`` on one thread and of the
prefetching iterator the trainer uses, and beside them the images/s one jit-compiled training step of zoo models
consumes on this machine. For streaming, an ImageNet-shaped folder of JPEGs (500×375, written to a temporary
folder) is read through the streaming ``image_folder`` source with 1, 2, ... decoding threads: each image decoded,
fitted to 256×256 and cropped to 224 (the ImageNet chain), beside what a ResNet-50 step consumes here.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time

from cnn.platform import configure_xla_cpu

configure_xla_cpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from cnn.config_defaults import base_config  # noqa: E402
from cnn.data import ArraySplit, DatasetSpec, TrainStream, build_preprocess, make_source  # noqa: E402
from cnn.data.sources import TFDS_DATASETS  # noqa: E402
from cnn.models import MODELS, create  # noqa: E402
from cnn.tasks import make_task  # noqa: E402
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
    task = make_task(base_config("digits", model), DatasetSpec(10, shape))  # plain classification
    step = jax.jit(functools.partial(train_step, schedule=lambda s: 0.01, task=task))
    key = jax.random.PRNGKey(0)
    state, metrics = step(state, data, key)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, data, key)
    jax.block_until_ready(metrics)
    return steps * batch / (time.perf_counter() - started)


def write_jpegs(folder: str, count: int, size: tuple[int, int] = (500, 375)) -> None:
    """ImageNet-like JPEGs: smooth colour gradients plus noise (quality 90), two classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    for i in range(count):
        phase = rng.uniform(0, 6.3, 3)
        pixels = np.stack([127 + 100 * np.sin(xx / (40 + 20 * c) + yy / 70 + phase[c]) for c in range(3)], -1)
        pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
        target = os.path.join(folder, "train", f"class{i % 2}")
        os.makedirs(target, exist_ok=True)
        Image.fromarray(pixels).save(os.path.join(target, f"{i}.jpg"), quality=90)


def streaming_rates(count: int, batch: int) -> list[tuple[int, float]]:
    """Images/s of the streaming ImageNet chain with 1 .. cpu_count decoding threads."""
    spec = TFDS_DATASETS["imagenet2012"].spec
    chain = build_preprocess("decode|random_crop(224)|flip_lr|normalize", spec)
    rates = []
    with tempfile.TemporaryDirectory() as folder:
        write_jpegs(folder, count)
        for workers in sorted({1, 2, os.cpu_count() or 1}):
            source = make_source({"name": "image_folder", "path": folder, "image_size": (256, 256),
                                  "streaming": True, "num_workers": workers})
            stream = TrainStream(source.load("train"), chain, batch, seed=0)
            steps = count // batch
            started = time.perf_counter()
            for _ in stream.iterate(0, steps):
                pass
            rates.append((workers, steps * batch / (time.perf_counter() - started)))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist_dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                            "mnist"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--jpegs", type=int, default=512, help="ImageNet-shaped JPEGs for the streaming case")
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

    print("\n| streamed JPEGs, 500×375 → 256 → crop 224 + flip | decoding threads | pipeline (img/s) |\n|---|---|---|")
    for workers, rate in streaming_rates(args.jpegs, 32):
        print(f"| image_folder, streaming | {workers} | {rate:,.0f} |", flush=True)
    print(f"\nresnet50 train step at 224×224, batch 16, consumes {step_rate('resnet50', (224, 224, 3), 16, 2):,.1f} "
          "img/s here")


if __name__ == "__main__":
    main()
