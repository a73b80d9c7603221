"""Segmentation: a padded U-Net training step (images/s at a tile size), the training step and input pipeline of
the segmentation configs as they train, and the per-image data work on a real ISBI 2012 slice (the augmentation of
``cnn/data/elastic.py`` and the weight map of ``cnn/data/weight_map.py``).

    python benchmarks/segmentation.py                           # tile 128, batch 4, width 16 and 64; the configs
    python benchmarks/segmentation.py --tile 256 --batch 2 --widths 32 --configs configs/isbi_unet.py:cpu

The step: Adam on the per-pixel softmax cross-entropy weighted by a weight map, compiled first, then the median of
``--repeats`` steps (each blocked). The configs (``--configs``, default ``configs/digits_segmentation.py`` and
``configs/isbi_unet.py:cpu``): the trainer's own compiled step (``Experiment.train_step``: the config's model,
loss, optimizer and batch) on the config's first real training batch, and the median time of the config's training
pipeline (``TrainStream.batch``, one thread) for a batch: printed as a ready row of BENCHMARKS.md's table, with the
load average. ISBI tiles: the pipeline of ``configs/isbi_unet.py:cpu`` (380² tiles, weight map) with the deformation
computed on the whole slice then cut (``elastic|mirror_pad(92)|random_crop(380)``) and only on the tile
(``elastic(pad=92, crop=380)``), per tile. The data work: the median over ``--repeats`` calls on slice 0 of the ISBI
training stack (512×512): the weight map (w0 = 10, σ = 5), and ``augment`` to a tile of the same size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnn.platform import configure_xla_cpu

configure_xla_cpu()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from PIL import Image  # noqa: E402
from timing import Timer, load_average, table  # noqa: E402

from cnn.data import BatchRandom, TrainStream, build_preprocess, make_source  # noqa: E402
from cnn.data.elastic import augment  # noqa: E402
from cnn.data.weight_map import unet_weight_map  # noqa: E402
from cnn.models import create  # noqa: E402
from cnn.train.config import load_config_file  # noqa: E402
from cnn.train.experiment import Durations, Experiment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012_em" / "train"
CONFIGS = [f"{ROOT}/configs/digits_segmentation.py", f"{ROOT}/configs/isbi_unet.py:cpu"]


def step_time(width: int, tile: int, batch: int, timer: Timer) -> tuple[float, float, int]:
    """(compile seconds, seconds per step, parameters) of a padded U-Net of ``width`` on ``batch`` tiles."""
    model = create("unet_padded", num_classes=2, width=width)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch, tile, tile, 1), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, 2, (batch, tile, tile)), jnp.int32)
    weights = jnp.asarray(1 + rng.random((batch, tile, tile), dtype=np.float32))
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])
    optimizer = optax.adam(1e-3)
    state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))

    @jax.jit
    def train_step(state, images, labels, weights):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                          mutable=["batch_stats"])
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            return jnp.mean(weights * losses), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    start = time.perf_counter()
    jax.block_until_ready(train_step(state, images, labels, weights))
    compile_s = time.perf_counter() - start
    seconds = timer.host(lambda: jax.block_until_ready(train_step(state, images, labels, weights)))
    return compile_s, seconds, sum(x.size for x in jax.tree.leaves(variables["params"]))


def config_step(spec: str, timer: Timer) -> list:
    """The table row of config ``spec`` (``path[:variant]``): model, parameters, batch, compile, step, images/s, and
    the pipeline's ms per batch and its share of a step if it ran in series with it."""
    config = load_config_file(spec)
    source = make_source(config.dataset)
    split = source.load(config.dataset.train_split)
    experiment = Experiment(config, source.spec, Durations.of(config, len(split) // config.batch_size))
    stream = TrainStream(split, experiment.train_preprocess, config.batch_size, seed=config.seed)
    batch, key = experiment.to_device(stream.batch(0)), jax.random.PRNGKey(config.seed)
    state = experiment.init_state()
    start = time.perf_counter()
    jax.block_until_ready(experiment.train_step(state, batch, key))
    compile_s = time.perf_counter() - start
    seconds = timer.host(lambda: jax.block_until_ready(experiment.train_step(state, batch, key)))
    pipeline_s = timer.host(lambda: stream.batch(1))
    params = sum(x.size for x in jax.tree.leaves(state.params))
    tile = "×".join(map(str, batch["image"].shape[1:-1]))
    model = f"{config.model.name} width {config.model.width}"
    return [f"`{os.path.relpath(spec, ROOT)}`: {model}", f"{params:,}", f"{config.batch_size}×{tile}", compile_s,
            seconds * 1e3, config.batch_size / seconds, pipeline_s * 1e3]


def isbi_tile_times(timer: Timer, tile: int = 380, margin: int = 92) -> list[tuple[str, float]]:
    """Ms per tile of the ISBI training pipeline (2 slices with their weight maps), deforming the whole slice or the
    tile only."""
    source = make_source(load_config_file(CONFIGS[1]).dataset)
    split = source.load("train")
    batch = {"image": split.images[:2], "label": split.labels[:2], "weight": split.weight[:2]}
    rows = []
    for name, deform in [("whole slice deformed, then cut", f"elastic|mirror_pad({margin})|random_crop({tile})"),
                         ("only the tile", f"elastic(pad={margin}, crop={tile})")]:
        chain = build_preprocess(f"decode|rot90|flip_lr|{deform}|normalize", source.spec)
        seconds = timer.host(lambda chain=chain: chain.batch(batch, BatchRandom((0, 1), 2)))
        rows.append((f"ISBI {tile}² training tile (and weight map), {name}: `{deform.split('|')[0]}`", seconds / 2))
    return rows


def data_times(timer: Timer) -> list[tuple[str, float]]:
    image = np.asarray(Image.open(ISBI / "image" / "0.png"), np.float32) / 255
    label = (np.asarray(Image.open(ISBI / "label" / "0.png")) == 255).astype(np.int32)  # 255: cell, 0: membrane
    rng = np.random.default_rng(0)
    return [
        ("weight map (512², w0 = 10, σ = 5)", timer.host(lambda: unet_weight_map(label))),
        ("augment (flip/rotate, elastic, tile 512)", timer.host(lambda: augment(rng, image, label, tile_size=512))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    args = parser.parse_args()
    timer = Timer(args.repeats, budget_s=60.0)
    print(f"load average before: {load_average()}")
    rows = []
    for width in args.widths:
        compile_s, seconds, params = step_time(width, args.tile, args.batch, timer)
        rows.append([f"unet_padded width {width}", f"{params:,}", f"{args.batch}×{args.tile}²", compile_s,
                     seconds * 1e3, args.batch / seconds])
    print(table(["model", "parameters", "batch", "compile (s)", "step (ms)", "images/s"], rows))
    if args.configs:
        print(table(["config: model", "parameters", "batch", "compile (s)", "step (ms)", "images/s",
                     "pipeline (ms a batch, 1 thread)"], [config_step(spec, timer) for spec in args.configs]))
    if ISBI.exists():
        times = isbi_tile_times(timer) + data_times(timer)
        print(table(["per image (numpy)", "ms"], [[name, s * 1e3] for name, s in times]))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
