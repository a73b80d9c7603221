"""Training steps on 1D and 3D data next to the 2D ResNet-18: examples/s and XLA's compiled memory.

    python benchmarks/media.py                       # resnet18_3d (and its ACS variant) 64³, M5, resnet18 64²
    python benchmarks/media.py --volume 28 --batch 2 --steps 2
    python benchmarks/media.py --compile-only        # memory only (a 64³ step takes minutes on 2 CPU cores)

One training step (cross-entropy, Adam, BatchNorm statistics updated) of each model on a synthetic batch, jitted,
lowered and compiled once; memory is ``compile().memory_analysis()``: arguments (parameters, optimizer state, the
batch) + outputs + temporaries (activations kept for the backward pass and workspace), XLA's buffer assignment
(the CPU backend reports no runtime peak). Steps are timed after a warm-up, median of ``--steps``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnn.platform import configure_xla_cpu

configure_xla_cpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.timing import Timer, load_average, table  # noqa: E402
from cnn.models import create  # noqa: E402

MiB = 2**20


def train_step(model, tx):
    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(params):
            logits, state = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                        mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    return step


def measure(name: str, shape: tuple[int, ...], num_classes: int, timer: Timer | None, **fields) -> dict:
    model = create(name, num_classes=num_classes, **fields)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, num_classes, size=shape[0]).astype(np.int32)
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
    tx = optax.adam(1e-3)
    args = (variables["params"], variables.get("batch_stats", {}), tx.init(variables["params"]), x, y)
    started = time.perf_counter()
    compiled = jax.jit(train_step(model, tx)).lower(*args).compile()
    compile_s = time.perf_counter() - started
    memory = compiled.memory_analysis()
    total = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
    step_s = timer.host(lambda *a: jax.block_until_ready(compiled(*a)), *args) if timer else float("nan")
    params = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    label = f"{name}{' conv=' + fields['conv'] if 'conv' in fields else ''}"
    return {"model": label, "input": "×".join(map(str, shape[1:-1])), "batch": shape[0], "parameters": params,
            "compile (s)": compile_s, "step (ms)": 1e3 * step_s, "examples/s": shape[0] / step_s,
            "temp (MiB)": memory.temp_size_in_bytes / MiB, "memory (MiB)": total / MiB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", type=int, default=64, help="edge of the 3D ResNet-18's volumes")
    parser.add_argument("--batch", type=int, default=2, help="batch of the 3D and 2D ResNet-18 steps")
    parser.add_argument("--audio-batch", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8192, help="M5 clip length (FSDD's batching length)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of timed steps per model, at most")
    parser.add_argument("--compile-only", action="store_true", help="report memory and compile time, no steps")
    args = parser.parse_args()
    timer = None if args.compile_only else Timer(args.steps, args.budget)
    print(f"load average at start: {load_average()}", flush=True)
    v, b = args.volume, args.batch
    runs = [
        ("resnet18_3d", (b, v, v, v, 1), 2, {}),
        ("resnet18_3d", (b, v, v, v, 1), 2, {"conv": "acs"}),
        ("m5", (args.audio_batch, args.samples, 1), 10, {}),
        ("resnet18", (b, v, v, 3), 10, {}),
    ]
    rows = []
    for name, shape, classes, fields in runs:
        row = measure(name, shape, classes, timer, **fields)
        print(row, flush=True)
        rows.append(row)
    print(f"load average at end: {load_average()}")
    print(table(list(rows[0]), [list(row.values()) for row in rows]))


if __name__ == "__main__":
    main()
