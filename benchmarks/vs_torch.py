"""Training steps of the same models in this project and in PyTorch, on this machine, in one process.

    python benchmarks/vs_torch.py                          # every model below, 10 timed rounds
    python benchmarks/vs_torch.py --models cifar_resnet18,lenet5 --steps 20
    python benchmarks/vs_torch.py --quick                  # a smoke run: batches / 8, 2 rounds (not for tables)
    python benchmarks/vs_torch.py --models lenet5 --processes 3   # each side alone in its own process, 3 times

PyTorch (with torchvision) is an optional benchmark dependency, not in requirements.txt: without it the script says
so and exits. Every model is trained by SGD with momentum 0.9 (learning rate 0.01, no weight decay) in float32 on a
fixed random batch:

| model           | batch, classes          | PyTorch model (the project's: the same name in the zoo) |
|-----------------|-------------------------|---------------------------------------------------------|
| cifar_resnet18  | 128 × 32×32×3, 10       | torchvision resnet18, conv1 3×3 /1, maxpool Identity    |
| lenet5          | 256 × 32×32×1, 10       | ``lenet5`` of benchmarks/torch_mnist_lenet5.py          |
| efficientnet_b0 | 64 × 64×64×3, 10        | torchvision efficientnet_b0                             |
| unet_padded     | 4 × 128×128×1, 2 per px | ``torch_unet`` below (BatchNorm, "same" padding)        |
| r3d_18          | 4 × 8×56×56×3 clips, 10 | torchvision video r3d_18                                |

The project's side is its own training step: a :class:`cnn.train.experiment.Experiment` built from a config (the
model by name, the task's loss, the optimizer, the compiled ``train_step`` that ``train.py`` runs, with the XLA:CPU
flag of ``cnn/platform.py``). PyTorch runs eager NCHW, eager channels-last and ``torch.compile`` (default mode, of
the NCHW model) for the first two models, eager NCHW for the others; ``--threads`` (default: every core) for torch.
Both sides' parameter counts are printed and must agree (the same model), or the script stops.
On a machine whose cores other jobs oversubscribe, torch's worker threads wait for each other spinning: pass
``--threads 1`` there (a LeNet-5 step of batch 128 at load average 11 on 2 cores: 2.65 s with 2 threads, 0.33 s with
1, 0.29 s and 0.02 s of CPU); on an idle machine, every core.

The calls of one model's variants are interleaved round-robin (a load spike hits every variant alike) after one
warm-up round (compilation); a variant's time is its median step. Torch's OpenMP worker threads keep spinning long
after their calls (seconds: a 2 s pause before each call did not help) and take the cores from XLA's threads in
the same process: the project's LeNet-5 step ran at 8.0k img/s beside them and at 11.7k with ``GOMP_SPINCOUNT=0``
in the environment, which costs torch's own calls 5-10%. Run both ways; the fair ratio is between the two. Or
``--processes N``: each side alone in its own process (torch with its default policy and, unless
``--torch-malloc kept``, glibc's malloc defaults: the project's processes keep freed memory, ``cnn/platform.py``),
the sides alternating N times, medians over the processes; on this 2-vCPU machine one process's LeNet-5 steps ran
at about 10k img/s and the next one's at 14k (alike for whole runs, for both sides), so use several.
Also printed: float32 2048² matrix products in numpy, torch and XLA (the practical arithmetic peak of this machine,
measured in the same run), the step's floating-point operations (XLA's cost analysis of the compiled step) and the
share of that peak they reach, and the load average. Only ratios measured in one run compare across machines.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from cnn.platform import configure_xla_cpu, keep_freed_memory

FLAG_SET = configure_xla_cpu()  # before JAX starts, as train.py does
MALLOC_KEPT = keep_freed_memory()  # already done by configure_xla_cpu: says whether it applies

import jax  # noqa: E402
import numpy as np  # noqa: E402
from timing import OtherLoad, Timer, load_average, matmul_gflops, table  # noqa: E402

from cnn.config_defaults import base_config  # noqa: E402
from cnn.data import DatasetSpec  # noqa: E402
from cnn.ops._lowering import set_conv_lowering  # noqa: E402
from cnn.train.experiment import Durations, Experiment  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    batch: int
    image_shape: tuple[int, ...]  # channels last, as the project takes it
    num_classes: int
    dense: bool = False  # per-pixel labels (segmentation)
    torch_variants: tuple[str, ...] = ("eager",)


CASES = {
    "cifar_resnet18": Case("cifar_resnet18", 128, (32, 32, 3), 10,
                           torch_variants=("eager", "eager channels-last", "torch.compile")),
    "lenet5": Case("lenet5", 256, (32, 32, 1), 10, torch_variants=("eager", "eager channels-last", "torch.compile")),
    "efficientnet_b0": Case("efficientnet_b0", 64, (64, 64, 3), 10),
    "unet_padded": Case("unet_padded", 4, (128, 128, 1), 2, dense=True),
    "r3d_18": Case("r3d_18", 4, (8, 56, 56, 3), 10),
}
LEARNING_RATE, MOMENTUM = 0.01, 0.9
RESULT_PREFIX = "RESULT "  # a child process's measurements, one JSON line (``--processes``)


def synthetic_batch(case: Case, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    label_shape = (batch, *case.image_shape[:-1]) if case.dense else (batch,)
    return {"image": rng.standard_normal((batch, *case.image_shape), dtype=np.float32),
            "label": rng.integers(0, case.num_classes, label_shape).astype(np.int32)}


def project_step(case: Case, data: dict[str, np.ndarray]) -> tuple[Callable[[], None], int, float]:
    """The project's compiled training step on ``data``: (run one step, parameter count, FLOPs per step)."""
    config = base_config(dataset="digits", model=case.name)  # the dataset is only named: the spec below is used
    config.task.name = "segmentation" if case.dense else "classification"
    config.optimizer.update(name="momentum", learning_rate=LEARNING_RATE, momentum=MOMENTUM, weight_decay=0.0)
    config.schedule.name = "constant"
    config.checkpoint.best_metric = ""  # no checkpoints here; "accuracy" is no segmentation metric
    config.batch_size = len(data["label"])
    spec = DatasetSpec(case.num_classes, case.image_shape, kind="dense" if case.dense else "image")
    durations = Durations(steps_per_epoch=1000, total_steps=10**6, eval_every=1000, checkpoint_every=1000,
                          log_every=100)
    # The step's FLOPs as XLA counts them, from the step traced with lax's convolutions (oneDNN's custom calls count
    # none); a new Experiment, as a jitted step keeps its first trace whatever the lowering set since.
    set_conv_lowering("lax")
    exp = Experiment(config, spec, durations)
    state = exp.init_state()
    batch, key = exp.to_device(data), jax.device_put(jax.random.PRNGKey(0), exp.replicated)
    cost = exp.train_step.lower(state, batch, key).cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost or {}).get("flops", float("nan")))
    set_conv_lowering("auto")
    exp = Experiment(config, spec, durations)
    compiled = exp.train_step.lower(state, batch, key).compile()
    holder = [state]

    def step() -> None:
        holder[0], metrics = compiled(holder[0], batch, key)
        jax.block_until_ready((holder[0], metrics))

    return step, sum(leaf.size for leaf in jax.tree.leaves(state.params)), flops


def torch_model(torch, case: Case):
    import torchvision

    if case.name == "cifar_resnet18":
        model = torchvision.models.resnet18(num_classes=case.num_classes)
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
        return model
    if case.name == "lenet5":
        from torch_mnist_lenet5 import lenet5

        return lenet5(torch)
    if case.name == "efficientnet_b0":
        return torchvision.models.efficientnet_b0(num_classes=case.num_classes)
    if case.name == "r3d_18":
        return torchvision.models.video.r3d_18(num_classes=case.num_classes)
    if case.name == "unet_padded":
        return torch_unet(torch, case.image_shape[-1], case.num_classes)
    raise ValueError(f"no torch model for {case.name!r}")


def torch_unet(torch, in_channels: int, num_classes: int, width: int = 64, depth: int = 4):
    """``cnn.models.unet.UNet(padding="SAME", norm=BatchNorm)``: per level two 3×3 convolutions (bias) + BN + ReLU;
    2×2 max pools; 2×2 /2 up-convolutions halving the channels, concatenated after the skip; a final 1×1."""
    nn = torch.nn

    def level(cin: int, cout: int):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    class TorchUNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [width * 2**i for i in range(depth + 1)]
            self.down = nn.ModuleList(level(a, b) for a, b in zip([in_channels, *widths[:-1]], widths, strict=True))
            self.upconv = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, 2) for i in range(depth))
            self.up = nn.ModuleList(level(2 * widths[i], widths[i]) for i in range(depth))
            self.output = nn.Conv2d(width, num_classes, 1)

        def forward(self, x):
            skips = []
            for i, down in enumerate(self.down):
                x = down(nn.functional.max_pool2d(x, 2) if i else x)
                skips.append(x)
            for i in reversed(range(depth)):
                x = self.up[i](torch.cat([skips[i], self.upconv[i](x)], 1))
            return self.output(x)

    return TorchUNet()


def torch_steps(torch, case: Case, data: dict[str, np.ndarray]) -> tuple[dict[str, Callable[[], None]], int]:
    """One training step per torch variant of ``case`` (each its own copy of one initialized model), and the
    parameter count."""
    torch.manual_seed(0)
    base = torch_model(torch, case)
    spatial = len(case.image_shape) - 1
    # channels last -> channels first: (N, *spatial, C) -> (N, C, *spatial)
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(data["image"], -1, 1)))
    y = torch.from_numpy(data["label"].astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = {}
    for variant in case.torch_variants:
        model = copy.deepcopy(base).train()
        inputs = x
        if variant == "eager channels-last":
            memory_format = torch.channels_last if spatial == 2 else torch.channels_last_3d
            model = model.to(memory_format=memory_format)
            inputs = x.contiguous(memory_format=memory_format)
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
        forward = torch.compile(model) if variant == "torch.compile" else model

        def step(forward=forward, optimizer=optimizer, inputs=inputs) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(forward(inputs), y).backward()
            optimizer.step()

        steps[f"torch {variant}"] = step
    return steps, sum(p.numel() for p in base.parameters())


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each step, the calls interleaved round-robin after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(warmup + rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(names: list[str], side: str, rounds: int, warmup: int, quick: bool, torch) -> dict[str, dict]:
    """Per model: its batch, parameter counts and img/s of each variant of ``side`` (project, torch or both), and
    the project step's FLOPs; the variants interleaved in this process."""
    results = {}
    for name in names:
        case = CASES[name]
        batch = max(case.batch // 8, 2) if quick else case.batch
        data = synthetic_batch(case, batch)
        steps, params, flops = {}, {}, float("nan")
        if side in ("both", "project"):
            steps["project"], params["project"], flops = project_step(case, data)
        if side in ("both", "torch"):
            torch_variants, params["torch"] = torch_steps(torch, case, data)
            steps.update(torch_variants)
        print(f"{name}: batch {batch} × {'×'.join(map(str, case.image_shape))}; parameters: "
              + ", ".join(f"{k} {v:,}" for k, v in params.items()), flush=True)
        seconds = interleaved(steps, rounds, warmup)
        results[name] = {"batch": batch, "params": params, "flops": flops,
                         "rates": {variant: batch / s for variant, s in seconds.items()}}
        print("  img/s: " + ", ".join(f"{v} {r:.1f}" for v, r in results[name]["rates"].items()), flush=True)
    return results


def in_separate_processes(argv: list[str], processes: int, torch_malloc: str) -> dict[str, dict]:
    """Each side alone in its own process (no thread of one side spinning beside the other), the sides alternating
    ``processes`` times; per variant the median img/s over its processes. The torch side's malloc: glibc's defaults
    (``torch_malloc`` "default") or the project's (``cnn.platform.keep_freed_memory``, "kept")."""
    runs: list[dict[str, dict]] = []
    torch_env = {**os.environ, "CNN_KEEP_FREED_MEMORY": "0"} if torch_malloc == "default" else None
    for _ in range(processes):
        for side in ("project", "torch"):
            child = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--side", side],
                                   capture_output=True, text=True, env=torch_env if side == "torch" else None)
            if child.returncode != 0:
                sys.exit(f"error: the {side} side's process failed (exit {child.returncode}):\n{child.stderr[-4000:]}")
            line = next(line for line in child.stdout.splitlines() if line.startswith(RESULT_PREFIX))
            runs.append(json.loads(line.removeprefix(RESULT_PREFIX)))
    merged = {}
    for name in runs[0]:
        parts = [run[name] for run in runs]
        rates: dict[str, list[float]] = {}
        for part in parts:
            for variant, rate in part["rates"].items():
                rates.setdefault(variant, []).append(rate)
        print(f"{name} img/s per process: " + "; ".join(f"{v} " + ", ".join(f"{r:.1f}" for r in rs)
                                                        for v, rs in rates.items()), flush=True)
        merged[name] = {"batch": parts[0]["batch"], "params": {k: v for p in parts for k, v in p["params"].items()},
                        "flops": next(p["flops"] for p in parts if "project" in p["params"]),
                        "rates": {v: statistics.median(rs) for v, rs in rates.items()}}
    return merged


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES), help=f"comma-separated, from {list(CASES)}")
    parser.add_argument("--steps", type=int, default=10, help="timed rounds per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (compilation)")
    parser.add_argument("--quick", action="store_true", help="batches / 8 and 2 rounds: a smoke run")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--processes", type=int, default=0,
                        help="run each side alone in its own process, alternating, this many times each (medians); "
                             "0: both sides in this process, interleaved")
    parser.add_argument("--torch-malloc", choices=("default", "kept"), default="default",
                        help="with --processes: torch's process on glibc's malloc defaults, as a PyTorch user runs "
                             "it, or keeping freed memory as this project's processes do (cnn/platform.py)")
    parser.add_argument("--side", choices=("both", "project", "torch"), default="both", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(CASES)}")
    if args.processes < 0:
        parser.error(f"--processes: expected a count >= 0, got {args.processes}")
    try:
        import torch
        import torchvision
    except ImportError:
        print("error: benchmarks/vs_torch.py compares against PyTorch, an optional benchmark dependency that is not "
              "installed (not in requirements.txt): pip install torch torchvision", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else args.steps
    if args.side != "both":
        print(RESULT_PREFIX + json.dumps(measure(names, args.side, rounds, args.warmup, args.quick, torch)))
        return 0

    started_load, other = load_average(), OtherLoad()
    print(f"jax {jax.__version__} ({jax.default_backend()}, XLA:CPU conv flag {'set' if FLAG_SET else 'not set'}), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision {torchvision.__version__}; "
          f"{os.cpu_count()} cores; load average at start {started_load}; "
          + (f"each side alone in {args.processes} processes (torch's malloc: {args.torch_malloc})" if args.processes
             else f"both sides in this process (malloc: {'kept' if MALLOC_KEPT else 'default'})"))
    if args.processes:
        # a child given --side ignores --processes
        results = in_separate_processes(argv, args.processes, args.torch_malloc)
    else:
        results = measure(names, "both", rounds, args.warmup, args.quick, torch)
    # After the steps: measured before them, torch's OpenMP threads spinning on after its matmul shared the cores
    # with the first child (LeNet-5 12.8k img/s there, 20-21k in the next ones; 21.1k first once moved here).
    peak = matmul_gflops(Timer(repeats=10, budget_s=5.0))
    a = torch.randn(2048, 2048)
    peak["torch"] = 2 * 2048**3 / Timer(repeats=10, budget_s=5.0).host(torch.mm, a, a) / 1e9
    best = max(peak.values())
    print("float32 2048² matmul GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))

    rows = []
    for name, result in results.items():
        params, rate, batch = result["params"], result["rates"], result["batch"]
        if params["project"] != params["torch"]:
            print(f"error: {name}: the two sides' parameter counts differ ({params}): not the same model",
                  file=sys.stderr)
            return 1
        reference = "torch torch.compile" if "torch torch.compile" in rate else "torch eager"
        rows.append([name, f"{batch}", rate["project"], *(rate.get(f"torch {v}", float("nan"))
                                                          for v in ("eager", "eager channels-last", "torch.compile")),
                     f"{rate['project'] / rate[reference]:.2f}× ({reference.removeprefix('torch ')})",
                     result["flops"] / batch / 1e9, 100 * result["flops"] * rate["project"] / batch / 1e9 / best])

    print()
    print(table(["model", "batch", "project img/s", "torch eager NCHW", "torch eager channels-last", "torch.compile",
                 "project / torch", "GFLOP per image (XLA)", "project % of matmul peak"], rows))
    print(f"\nload average at the end {load_average()}; other processes used {other.stop():.0%} of the cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
