"""How CPU convolutions are lowered (``cnn.ops._lowering``): each layer's forward, input gradient and kernel
gradient, and the training steps of CIFAR ResNet-18 (batch 128, 32×32×3), LeNet-5 (batch 256, 32×32×1) and ResNet-50
(batch 32, 64×64×3), and of the 3D ResNets (r3d_18 and r2plus1d_18 on 4 clips of 8×56×56, MedMNIST's resnet18_3d on
4 volumes of 28³), under each lowering (``set_conv_lowering``: ``lax``, the ``xla`` rewrites, ``onednn``), in one
process, alternating.

    python benchmarks/conv_paths.py                   # both tables
    python benchmarks/conv_paths.py --skip-layers --rounds 5
    python benchmarks/conv_paths.py --dims 3 --rounds 3     # 3D only
    python benchmarks/conv_paths.py --dims 2 --skip-steps --layers "ResNet-18 stage"  # layers by name prefix
    python benchmarks/conv_paths.py --variants xla,onednn  # the lowerings compared (default: all three)

Each pass's "x" is the first variant's time over the last's. Each layer's row ends with the last variant's
arithmetic rate (GFLOP/s of the forward, input and kernel gradient: each pass does the forward's multiply-adds), to
compare with the matmul rate printed first.

The machine is shared: absolute times move with the load, the same-run ratios much less. Both variants of a layer
or step are compiled up front (``set_conv_lowering`` decides at trace time), then timed in alternation.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from typing import ClassVar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnn.platform import configure_xla_cpu

configure_xla_cpu()  # before JAX starts

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.timing import Timer, load_average, matmul_gflops, normal, table  # noqa: E402
from cnn.config_defaults import base_config  # noqa: E402
from cnn.data import DatasetSpec  # noqa: E402
from cnn.models import create  # noqa: E402
from cnn.models.resnet import BasicBlock, ResNet  # noqa: E402
from cnn.ops import Layer, correlate  # noqa: E402
from cnn.ops._lowering import set_conv_lowering  # noqa: E402
from cnn.tasks import make_task  # noqa: E402
from cnn.train.state import create_train_state  # noqa: E402
from cnn.train.steps import train_step  # noqa: E402

VARIANTS = ["lax", "xla", "onednn"]  # --variants

# (name, batch, input size, in channels, out channels, kernel, stride, padding[, groups]): convolutions of the zoo
LAYERS = [
    ("ResNet-18 stem", 128, 32, 3, 64, 3, 1, 1),
    ("ResNet-18 stage 1", 128, 32, 64, 64, 3, 1, 1),
    ("ResNet-18 stage 2 /2", 128, 32, 64, 128, 3, 2, 1),
    ("ResNet-18 stage 2 projection", 128, 32, 64, 128, 1, 2, 0),
    ("ResNet-18 stage 2", 128, 16, 128, 128, 3, 1, 1),
    ("ResNet-18 stage 3 projection", 128, 16, 128, 256, 1, 2, 0),
    ("ResNet-18 stage 3", 128, 8, 256, 256, 3, 1, 1),
    ("ResNet-18 stage 4 projection", 128, 8, 256, 512, 1, 2, 0),
    ("ResNet-18 stage 4", 128, 4, 512, 512, 3, 1, 1),
    ("ResNet-50 conv2_x 1x1 expand", 32, 16, 64, 256, 1, 1, 0),
    ("ResNet-50 conv2_x 1x1 reduce", 32, 16, 256, 64, 1, 1, 0),
    ("ResNet-50 conv4_x 1x1 expand", 32, 4, 256, 1024, 1, 1, 0),
    ("LeNet-5 C1", 256, 32, 1, 6, 5, 1, 0),
    ("LeNet-5 C3", 256, 14, 6, 16, 5, 1, 0),
    ("LeNet-5 C5", 256, 5, 16, 120, 5, 1, 0),
    ("U-Net level 1", 4, 128, 64, 64, 3, 1, 1),
    ("EfficientNet-B0 depthwise 3x3", 64, 32, 96, 96, 3, 1, 1, 96),
    ("EfficientNet-B0 depthwise 5x5", 64, 16, 240, 240, 5, 1, 2, 240),
    ("EfficientNet-B0 depthwise 5x5 /2", 64, 16, 240, 240, 5, 2, 2, 240),
]
# 3D: (depth, height, width) per axis. r3d_18 on 4 clips of 8×56×56; MedMNIST's ResNet-18 (no stem stride) at 28³.
LAYERS_3D = [
    ("r3d_18 stem", 4, (8, 56, 56), 3, 64, (3, 7, 7), (1, 2, 2), ((1, 1), (3, 3), (3, 3))),
    ("r3d_18 stage 1", 4, (8, 28, 28), 64, 64, (3, 3, 3), 1, 1),
    ("r3d_18 stage 2 /2", 4, (8, 28, 28), 64, 128, (3, 3, 3), 2, 1),
    ("r3d_18 stage 3", 4, (2, 7, 7), 256, 256, (3, 3, 3), 1, 1),
    ("r2plus1d_18 stage 1 spatial", 4, (8, 28, 28), 64, 144, (1, 3, 3), 1, ((0, 0), (1, 1), (1, 1))),
    ("r2plus1d_18 stage 1 temporal", 4, (8, 28, 28), 144, 64, (3, 1, 1), 1, ((1, 1), (0, 0), (0, 0))),
    ("resnet18_3d 28³ stage 1", 4, (28, 28, 28), 64, 64, (3, 3, 3), 1, 1),
    ("resnet18_3d 28³ stage 2 /2", 4, (28, 28, 28), 64, 128, (3, 3, 3), 2, 1),
    ("resnet18_3d 28³ stage 2", 4, (14, 14, 14), 128, 128, (3, 3, 3), 1, 1),
]


class CifarResNet18(ResNet):
    """ResNet-18 for 32×32 inputs: a 3×3 stem at stride 1 and no max pool (11,173,962 parameters, 10 classes)."""

    stem: ClassVar[Layer] = Layer(3, 1, 1, 1)
    stem_pool: ClassVar[Layer | None] = None


def compiled_for_each_variant(fn, args: tuple) -> dict:
    """``{variant: (compiled fn, args)}``: ``fn`` traced and compiled under each lowering."""
    out = {}
    for variant in VARIANTS:
        set_conv_lowering(variant)
        fresh = functools.partial(fn)  # a new function: jit would reuse its trace of ``fn`` with the other setting
        out[variant] = (jax.jit(fresh).lower(*args).compile(), args)
    set_conv_lowering("auto")
    return out


def alternate(compiled: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each compiled function, timed in turn ``rounds`` times, ``calls`` calls each."""
    times = {name: [] for name in compiled}
    for fn, args in compiled.values():
        jax.block_until_ready(fn(*args))  # warm-up
    for _ in range(rounds):
        for name, (fn, args) in compiled.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = fn(*args)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def conv_passes(stride: int, padding: int, groups: int) -> dict:
    """``(x, w, dy) ->`` the forward, the input gradient and the kernel gradient of one correlation."""
    conv = functools.partial(correlate, stride=stride, padding=padding, groups=groups)
    return {
        "fwd": lambda x, w, dy: conv(x, w),
        "dx": lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy),
        "dw": lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy),
    }


def layer_rows(layers: list[tuple], rounds: int) -> list[list]:
    rng = np.random.default_rng(0)
    rows = []
    for name, batch, size, cin, cout, k, stride, padding, *groups in layers:
        groups = groups[0] if groups else 1
        passes = conv_passes(stride, padding, groups)
        spatial, kernel = (size, size) if isinstance(size, int) else size, (k, k) if isinstance(k, int) else k
        x, w = normal(rng, batch, *spatial, cin), normal(rng, *kernel, cin // groups, cout, scale=0.1)
        dy = normal(rng, *jax.eval_shape(passes["fwd"], x, w, None).shape)
        strides = "x".join(map(str, stride)) if isinstance(stride, tuple) else stride
        row = [name, f"{'x'.join(map(str, (batch, *spatial, cin)))}->{cout} {'x'.join(map(str, kernel))} /{strides}"]
        flops = 2 * dy.size * cin // groups * np.prod(kernel)  # multiply-adds of one pass
        rates = []
        for fn in passes.values():
            ms = alternate(compiled_for_each_variant(fn, (x, w, dy)), rounds, 1)
            row += [1e3 * ms[v] for v in VARIANTS] + [ms[VARIANTS[0]] / ms[VARIANTS[-1]]]
            rates.append(f"{flops / ms[VARIANTS[-1]] / 1e9:.0f}")
        row.append(" / ".join(rates))
        rows.append(row)
        print(row, flush=True)
    return rows


def step_models(dims: set[int]) -> list[tuple]:
    """(name, model, batch, input shape without the batch) of the training steps for 2D and/or 3D inputs."""
    models = []
    if 2 in dims:
        models += [
            ("CIFAR ResNet-18", CifarResNet18(stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock, num_classes=10), 128,
             (32, 32, 3)),
            ("LeNet-5", create("lenet5", num_classes=10), 256, (32, 32, 1)),
            ("ResNet-50, 64×64 (bottlenecks: 1×1 convolutions)", create("resnet50", num_classes=10), 32, (64, 64, 3)),
        ]
    if 3 in dims:
        models += [
            ("r3d_18, 8×56×56 clips", create("r3d_18", num_classes=10), 4, (8, 56, 56, 3)),
            ("r2plus1d_18, 8×56×56 clips", create("r2plus1d_18", num_classes=10), 4, (8, 56, 56, 3)),
            ("resnet18_3d (MedMNIST), 28³", create("resnet18_3d", num_classes=2), 4, (28, 28, 28, 1)),
        ]
    return models


def step_rows(dims: set[int], rounds: int, calls: int) -> list[list]:
    rng = np.random.default_rng(0)
    rows = []
    for name, net, batch, shape in step_models(dims):
        state = create_train_state(net, optax.sgd(0.01, momentum=0.9), (1, *shape), seed=0)
        data = {"image": rng.normal(size=(batch, *shape)).astype(np.float32),
                "label": rng.integers(0, 2, size=batch).astype(np.int32)}
        task = make_task(base_config("digits", "lenet5"), DatasetSpec(10, shape))  # classification
        step = functools.partial(train_step, schedule=lambda s: 0.01, task=task)
        calls_per_round = 1 if len(shape) == 4 else calls  # a 3D step takes seconds
        seconds = alternate(compiled_for_each_variant(step, (state, data, jax.random.PRNGKey(0))), rounds,
                            calls_per_round)
        speed_up = seconds[VARIANTS[0]] / seconds[VARIANTS[-1]]
        rows.append([name, batch, *(batch / seconds[v] for v in VARIANTS), speed_up])
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--dims", default="2,3", help="comma-separated: 2 (2D layers and steps), 3 (3D)")
    parser.add_argument("--layers", default="", help="only the layers whose name starts with this")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated lowerings, compared in order")
    args = parser.parse_args()
    VARIANTS[:] = args.variants.split(",")
    dims = {int(d) for d in args.dims.split(",")}
    print(f"jax {jax.__version__}, {jax.default_backend()}, {os.cpu_count()} cores, load average {load_average()}")
    print(f"float32 2048² matmul GFLOP/s: {matmul_gflops(Timer(5, 10.0))}\n")
    if not args.skip_layers:
        headers = ["layer", "shape"] + [f"{p} {v}" for p in ("fwd", "dx", "dw") for v in (*VARIANTS, "x")]
        headers.append(f"{VARIANTS[-1]} GFLOP/s fwd / dx / dw")
        layers = (LAYERS if 2 in dims else []) + (LAYERS_3D if 3 in dims else [])
        layers = [layer for layer in layers if layer[0].startswith(args.layers)]
        print(table(headers, layer_rows(layers, args.rounds)), "\n")
    if not args.skip_steps:
        rows = step_rows(dims, args.rounds, 3)
        print(table(["train step", "batch", *(f"examples/s {v}" for v in VARIANTS), "speed-up"], rows))
    print(f"\nload average at the end {load_average()}")


if __name__ == "__main__":
    main()
