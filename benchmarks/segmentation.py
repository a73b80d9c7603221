"""Segmentation: a padded U-Net training step (images/s at a tile size), and the per-image data work around it on a
real ISBI 2012 slice (the augmentation of ``cnn/data/elastic.py`` and the weight map of ``cnn/data/weight_map.py``).

    python benchmarks/segmentation.py                           # tile 128, batch 4, width 16 and 64
    python benchmarks/segmentation.py --tile 256 --batch 2 --widths 32

The step: Adam on the per-pixel softmax cross-entropy weighted by a weight map, compiled first, then the median of
``--repeats`` steps (each blocked). The data work: the median over ``--repeats`` calls on slice 0 of the ISBI
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

from cnn.data.elastic import augment  # noqa: E402
from cnn.data.weight_map import unet_weight_map  # noqa: E402
from cnn.models import create  # noqa: E402

ISBI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012_em" / "train"


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
    args = parser.parse_args()
    timer = Timer(args.repeats, budget_s=60.0)
    print(f"load average before: {load_average()}")
    rows = []
    for width in args.widths:
        compile_s, seconds, params = step_time(width, args.tile, args.batch, timer)
        rows.append([f"unet_padded width {width}", f"{params:,}", f"{args.batch}×{args.tile}²", compile_s,
                     seconds * 1e3, args.batch / seconds])
    print(table(["model", "parameters", "batch", "compile (s)", "step (ms)", "images/s"], rows))
    if ISBI.exists():
        print(table(["per image (numpy)", "ms"], [[name, s * 1e3] for name, s in data_times(timer)]))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
