"""Training throughput: examples/s of a config, the split of step time between data and compute, and what the
XLA:CPU convolution flag of ``cnn/platform.py`` buys.

    python benchmarks/train_throughput.py                      # default config, then the flag comparison
    python benchmarks/train_throughput.py --skip-flag-compare --steps 200

Part 1 runs the real input pipeline and compiled train step of ``--config``: compile time, then a synchronous loop
that times batch preparation and the step (blocked) separately, then the pipelined loop (prefetch thread) as the
trainer runs it. Part 2 times one training step of a conv-heavy model on a synthetic CIFAR-shaped batch in two
subprocesses, with convolutions on YNNPACK (jaxlib's default) and on Eigen (the flag), and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from cnn.platform import configure_xla_cpu

FLAG_SET = configure_xla_cpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402


def pipeline_throughput(config_path: str, steps: int) -> dict:
    from cnn.data import TrainStream, make_source
    from cnn.train.config import load_config_file
    from cnn.train.experiment import Durations, Experiment

    config = load_config_file(config_path)
    source = make_source(config.dataset)
    split = source.load(config.dataset.train_split)
    exp = Experiment(config, source.spec, Durations.of(config, len(split) // config.batch_size))
    stream = TrainStream(split, exp.train_preprocess, config.batch_size, config.seed)
    state, key = exp.init_state(), jax.device_put(jax.random.PRNGKey(0), exp.replicated)

    started = time.perf_counter()
    state, metrics = exp.train_step(state, exp.to_device(stream.batch(0)), key)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - started

    data_times, step_times = [], []
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        batch = exp.to_device(stream.batch(step))
        t1 = time.perf_counter()
        state, metrics = exp.train_step(state, batch, key)
        jax.block_until_ready(metrics)
        data_times.append(t1 - t0)
        step_times.append(time.perf_counter() - t1)

    stream.wait_seconds = 0.0
    t0 = time.perf_counter()
    for batch in stream.iterate(steps + 1, 2 * steps + 1):
        state, metrics = exp.train_step(state, exp.to_device(batch), key)
    jax.block_until_ready(metrics)
    pipelined = time.perf_counter() - t0
    return {
        "config": config_path,
        "batch_size": config.batch_size,
        "compile_s": compile_seconds,
        "data_ms": 1e3 * statistics.median(data_times),
        "compute_ms": 1e3 * statistics.median(step_times),
        "examples_per_s": steps * config.batch_size / pipelined,
        "data_wait_fraction": stream.wait_seconds / pipelined,
    }


def conv_step_time(model: str, overrides: dict, batch: int, image: int, steps: int) -> dict:
    """Median time of one SGD step of ``model`` on a synthetic ``(batch, image, image, 3)`` batch."""
    import functools

    import optax

    from cnn.config_defaults import base_config
    from cnn.data import DatasetSpec
    from cnn.models import create
    from cnn.tasks import make_task
    from cnn.train.state import create_train_state
    from cnn.train.steps import train_step

    net = create(model, num_classes=10, **overrides)
    state = create_train_state(net, optax.sgd(0.01, momentum=0.9), (1, image, image, 3), seed=0)
    rng = np.random.default_rng(0)
    data = {"image": rng.normal(size=(batch, image, image, 3)).astype(np.float32),
            "label": rng.integers(0, 10, size=batch).astype(np.int32)}
    task = make_task(base_config("digits", model), DatasetSpec(10, (image, image, 3)))  # plain classification
    step = jax.jit(functools.partial(train_step, schedule=lambda s: 0.01, task=task))
    key = jax.random.PRNGKey(0)
    state, metrics = step(state, data, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = step(state, data, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "flag": FLAG_SET}


def compare_flag(model: str, overrides: dict, batch: int, image: int, steps: int) -> tuple[float, float]:
    results = {}
    for name, extra_env in (("ynnpack", {"CNN_YNN_CONV": "1"}), ("eigen", {})):
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CNN_YNN_CONV")} | extra_env
        spec = json.dumps({"model": model, "overrides": overrides, "batch": batch, "image": image, "steps": steps})
        out = subprocess.run([sys.executable, __file__, "--child", spec], env=env, capture_output=True, text=True,
                             check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        assert results[name]["flag"] == (name == "eigen")
    return results["ynnpack"]["step_s"], results["eigen"]["step_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--flag-steps", type=int, default=5)
    parser.add_argument("--skip-flag-compare", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(conv_step_time(spec["model"], spec["overrides"], spec["batch"], spec["image"],
                                        spec["steps"])))
        return

    print(f"jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} device(s), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}\n")
    r = pipeline_throughput(args.config, args.steps)
    print("| config | batch | compile (s) | data (ms/step) | compute (ms/step) | examples/s (pipelined) "
          "| data wait |\n|---|---|---|---|---|---|---|")
    print(f"| `{r['config']}` | {r['batch_size']} | {r['compile_s']:.2f} | {r['data_ms']:.2f} | "
          f"{r['compute_ms']:.2f} | {r['examples_per_s']:.0f} | {100 * r['data_wait_fraction']:.1f}% |")
    if args.skip_flag_compare:
        return
    print("\n| model (batch 128, 32x32x3) | step, YNNPACK convs (s) | step, Eigen convs (s) | speed-up |\n"
          "|---|---|---|---|")
    models = (("small_cnn", {"width": 64}), ("small_cnn", {"width": 128}), ("cifar_resnet20", {}), ("resnet18", {}))
    for model, overrides in models:
        ynn, eigen = compare_flag(model, overrides, batch=128, image=32, steps=args.flag_steps)
        print(f"| {model} {overrides} | {ynn:.3f} | {eigen:.3f} | {ynn / eigen:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
