"""Page faults and system time of training steps, with and without ``keep_freed_memory`` (``cnn/platform.py``).

    python benchmarks/page_faults.py                                   # CIFAR ResNet-18 and r3d_18, 2 processes each
    python benchmarks/page_faults.py --models lenet5 --steps 5 --processes 3

XLA:CPU allocates each execution's temporaries as one block; with glibc's malloc defaults that block is mapped
afresh on every step and every page of it faults in again. malloc's setting is for a whole process, made before JAX
starts, so each setting runs in its own processes (alternating): a step's wall seconds, its minor page faults and its
system CPU seconds (``getrusage``), each the median over the steps after two untimed ones (compilation, and the heap
growing to its peak). The models and their steps are ``benchmarks/vs_torch.py``'s (the project's side only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

RESULT_PREFIX = "RESULT "
SETTINGS = {"glibc defaults": "0", "freed memory kept": "1"}  # CNN_KEEP_FREED_MEMORY


def measure(name: str, steps: int) -> dict[str, float]:
    """In this process: the median wall seconds, minor faults and system seconds of one step of ``name``."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import vs_torch  # configures XLA:CPU and malloc (as CNN_KEEP_FREED_MEMORY says) before JAX starts

    case = vs_torch.CASES[name]
    step = vs_torch.project_step(case, vs_torch.synthetic_batch(case, case.batch))[0]
    step(), step()
    rows = []
    for _ in range(steps):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        step()
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        rows.append((wall, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime))
    return {key: statistics.median(row[i] for row in rows) for i, key in enumerate(("seconds", "faults", "system"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cifar_resnet18,r3d_18", help="comma-separated, from vs_torch.py's")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--processes", type=int, default=2, help="processes per setting and model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT_PREFIX + json.dumps(measure(args.child, args.steps)))
        return 0
    print("| model | glibc malloc | step s | minor faults per step | system CPU s per step |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        for _ in range(args.processes):
            for setting, value in SETTINGS.items():
                child = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                                        "--steps", str(args.steps)], capture_output=True, text=True,
                                       env={**os.environ, "CNN_KEEP_FREED_MEMORY": value})
                if child.returncode != 0:
                    sys.exit(f"error: {name} ({setting}) failed:\n{child.stderr[-4000:]}")
                line = next(line for line in child.stdout.splitlines() if line.startswith(RESULT_PREFIX))
                result = json.loads(line.removeprefix(RESULT_PREFIX))
                print(f"| {name} | {setting} | {result['seconds']:.2f} | {result['faults']:,.0f} | "
                      f"{result['system']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
