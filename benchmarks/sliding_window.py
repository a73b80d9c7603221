"""The sliding window two ways on one canvas: the classifier run fully convolutionally (``cnn.models.fully_conv``)
against the crop loop over the same windows. Prints a markdown table (the "Sliding window" section of
BENCHMARKS.md).

    python benchmarks/sliding_window.py [--size 256] [--models lenet5,window_resnet8] [--window 32]

For each model (random weights: the cost does not depend on them), on a ``size``×``size`` canvas of real MNIST
test digits:

* fully convolutional: one jit-compiled pass of the converted network over the canvas, every window's scores;
* crop loop, batched: every window cut out (a gather inside the same jit) and classified as one batch, the work a
  crop-by-crop evaluation does, without Python in the loop;
* crop loop, one by one: a jit-compiled classifier called once per window from Python (timed on a sample of
  ``--loop_sample`` windows and scaled to all of them).

MACs are those of the convolutions and dense layers (``cnn.tools.macs``); the FLOP ratio is the crop loop's MACs
over the fully convolutional pass's. Both outputs are compared (max |difference| of the logits).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/sliding_window.py` from the root

from cnn.platform import configure_xla_cpu

configure_xla_cpu()  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from timing import OtherLoad, Timer, load_average, table  # noqa: E402

from cnn.data.windows import detection_canvases  # noqa: E402
from cnn.models import create  # noqa: E402
from cnn.models.fully_conv import fully_convolutional  # noqa: E402
from cnn.tools.macs import count_macs  # noqa: E402

CHANNELS = {"lenet5": 1}  # the rest take 3 (the canvas repeated)


def measure(name: str, window: int, canvas: np.ndarray, timer: Timer, loop_sample: int) -> list:
    classifier = create(name, num_classes=11)
    net = fully_convolutional(classifier, window)
    channels = CHANNELS.get(name, 3)
    image = jnp.asarray(np.repeat(canvas[None, ..., None], channels, axis=-1).astype(np.float32) / 255)
    variables = jax.jit(classifier.init)(jax.random.PRNGKey(0), image[:, :window, :window])
    rows, cols = net.score_shape(*canvas.shape)
    tops = jnp.arange(rows) * net.stride
    lefts = jnp.arange(cols) * net.stride

    def crops(image):
        def cut(top, left):
            return jax.lax.dynamic_slice(image[0], (top, left, 0), (net.extent, net.extent, channels))
        grid = jax.vmap(lambda top: jax.vmap(lambda left: cut(top, left))(lefts))(tops)
        return grid.reshape(rows * cols, net.extent, net.extent, channels)

    def crop_loop(variables, image):
        return classifier.apply(variables, crops(image), train=False).reshape(1, rows, cols, -1)

    scores = jax.jit(net.score_map)(variables, image)
    looped = jax.jit(crop_loop)(variables, image)
    difference = float(jnp.abs(scores - looped).max())
    full_s = timer(net.score_map, variables, image)
    batched_s = timer(crop_loop, variables, image)
    one = jax.jit(lambda v, crop: classifier.apply(v, crop, train=False))
    sample = [np.asarray(image[:, t: t + net.extent, left: left + net.extent])
              for t, left in zip(np.asarray(tops)[np.arange(loop_sample) % rows],
                                 np.asarray(lefts)[np.arange(loop_sample) // rows % cols], strict=True)]
    jax.block_until_ready(one(variables, sample[0]))
    start = time.perf_counter()
    for crop in sample:
        jax.block_until_ready(one(variables, crop))
    one_by_one_s = (time.perf_counter() - start) / loop_sample * rows * cols
    full_macs = count_macs(net.model, image.shape)
    loop_macs = rows * cols * count_macs(classifier, (1, net.extent, net.extent, channels))
    return [name, f"{window} (reads {net.extent})", net.stride, f"{rows}×{cols}", full_s * 1e3, batched_s * 1e3,
            one_by_one_s * 1e3, batched_s / full_s, one_by_one_s / full_s, full_macs / 1e6, loop_macs / 1e6,
            loop_macs / full_macs, f"{difference:.1e}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models", default="lenet5,window_resnet8")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--loop_sample", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    canvas = detection_canvases(1, seed=0, canvas_size=(args.size, args.size), num_digits=(8, 12))["images"][0]
    timer, other = Timer(args.repeats, budget_s=20.0), OtherLoad()
    rows = [measure(name, args.window, canvas, timer, args.loop_sample) for name in args.models.split(",")]
    print(table(["model", "window", "stride", "windows", "fully conv (ms)", "crop loop batched (ms)",
                 "crop loop one by one (ms)", "speed-up vs batched", "speed-up vs one by one", "fully conv MMACs",
                 "crop loop MMACs", "FLOP ratio", "max |diff|"], rows))
    print(f"\n{jax.device_count()} {jax.default_backend()} device(s); {args.size}×{args.size} canvas; load average "
          f"{load_average()}; other processes used {other.stop():.0%} of the cores meanwhile")


if __name__ == "__main__":
    main()
