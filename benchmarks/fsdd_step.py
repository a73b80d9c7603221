"""Where an FSDD training step's time goes (configs/fsdd.py, real recordings): the input pipeline, the compiled
step, the evaluation on whole clips, and the max pooling's forward + backward (``cnn.ops.max_pool`` against flax's
``nn.max_pool``, a ``lax.reduce_window`` differentiated by XLA's select-and-scatter).

    TFDS_DATA_DIR=/tmp/tfds python benchmarks/fsdd_step.py                 # M5 and the log-mel CNN
    TFDS_DATA_DIR=/tmp/tfds python benchmarks/fsdd_step.py --variants log_mel

Wall times are medians; ``cpu`` is this process's CPU time per call (both cores), which a loaded machine changes
less than the wall time. The dataset is prepared from ``../shared/data/fsdd`` on first use.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnn.platform import configure_xla_cpu

configure_xla_cpu()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.timing import Timer, load_average, table  # noqa: E402
from cnn import ops  # noqa: E402
from cnn.train.config import load_config_file  # noqa: E402
from cnn.train.experiment import plan_training  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOLS = {"": [((32, 2048, 128), 4), ((32, 512, 128), 4), ((32, 128, 256), 4)],  # M5's, at 8,192 samples
         "log_mel": [((32, 40, 65, 32), 2), ((32, 20, 32, 64), 2), ((32, 10, 16, 128), 2)]}


def cpu_and_wall(fn, repeats: int) -> tuple[float, float]:
    """Median wall seconds and mean CPU seconds per call of ``fn`` (which blocks), after a warm-up call."""
    fn()
    walls, cpu = [], time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    return float(np.median(walls)), (time.process_time() - cpu) / repeats


def profile(variant: str, steps: int) -> list[list]:
    config = load_config_file(os.path.join(ROOT, "configs", "fsdd.py") + (f":{variant}" if variant else ""))
    with tempfile.TemporaryDirectory() as workdir:
        return _profile(plan_training(config, workdir), config, variant or "m5", steps)


def _profile(plan, config, name: str, steps: int) -> list[list]:
    exp, stream = plan.experiment, plan.train_stream
    rows = [[name, "input pipeline (gather, pad_or_crop, preprocess), per batch",
             *cpu_and_wall(lambda: stream.batch(0), steps)]]
    state, key = exp.init_state(), jax.random.PRNGKey(config.seed)
    batch = exp.to_device(stream.batch(0))

    def step():
        nonlocal state
        state, metrics = exp.train_step(state, batch, key)
        jax.block_until_ready(metrics)

    rows.append([name, f"train step (batch {config.batch_size})", *cpu_and_wall(step, steps)])
    started, cpu = time.perf_counter(), time.process_time()
    exp.evaluate(state, plan.eval_split)
    rows.append([name, f"evaluation, first ({len(plan.eval_split)} whole clips, one a batch; compiles)",
                 time.perf_counter() - started, time.process_time() - cpu])
    rows.append([name, "evaluation, again", *cpu_and_wall(lambda: exp.evaluate(state, plan.eval_split), 1)])
    return rows


def pool_rows(variant: str, timer: Timer) -> list[list]:
    rows = []
    for shape, window in POOLS[variant]:
        x = jax.random.normal(jax.random.key(0), shape)
        windows = (window,) * (len(shape) - 2)
        grads = {"cnn.ops.max_pool": jax.grad(lambda v, w=window: (ops.max_pool(v, w) ** 2).sum()),
                 "flax nn.max_pool": jax.grad(lambda v, w=windows: (nn.max_pool(v, w, strides=w) ** 2).sum())}
        rows += [[variant or "m5", f"{name} fwd+bwd {shape}, window {window}", timer(grad, x), float("nan")]
                 for name, grad in grads.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["", "log_mel"], help="configs/fsdd.py variants ('' = M5)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"load average at the start: {load_average()}")
    rows = []
    for variant in args.variants:
        rows += profile(variant, args.steps) + pool_rows(variant, Timer(repeats=args.steps, budget_s=5.0))
    ms = [[m, what, 1e3 * wall, 1e3 * cpu] for m, what, wall, cpu in rows]
    print(table(["config", "what", "wall ms", "cpu ms"], ms))
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
