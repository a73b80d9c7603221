"""Time for LeNet-5 to reach 99% MNIST test accuracy: ``train.py`` with ``configs/mnist_lenet5.py`` against
``benchmarks/torch_mnist_lenet5.py`` (the same recipe in PyTorch), as a user runs them.

    python benchmarks/time_to_accuracy.py [--target 0.99] [--max_minutes 30] [--together]

Each side is a fresh process that reads the MNIST idx files of ``../shared/data/mnist``, trains the 20-epoch recipe
and evaluates test accuracy after every epoch (``--config.eval_every_epochs=1`` for train.py; everything else is the
config file's). The clock starts at the launch (imports, data loading and compilation included) and stops when
the first evaluation reaching ``--target`` is written (train.py's ``metrics.jsonl``, the torch script's stdout); the
process is then ended. Reported: wall seconds, CPU seconds of the process (user + system, all its threads: less
sensitive to other load on a shared machine than the wall time), and the step and epoch. The TFDS copy of MNIST is
prepared before the clock starts (``python -m cnn.data.prepare mnist``: a one-off, not part of training).

By default the sides run one after the other; ``--together`` runs them at the same time (on a machine with other
load, both then see the same conditions). Torch is an optional dependency: without it only the project side runs.
``--threads`` sets torch's threads: 1 where other jobs oversubscribe the cores (see ``benchmarks/vs_torch.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "mnist"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of a running process, all its threads (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Run:
    """One side: a process, and how to read its evaluations so far."""

    def __init__(self, name: str, command: list[str], records_path: str, stdout_is_records: bool = False):
        """``records_path``: the JSON lines holding the evaluations (train.py's metrics.jsonl, or the file the
        process's stdout goes to)."""
        self.name, self.records_path = name, records_path
        self.started = time.perf_counter()
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (read on failure, after the process ends)
        stdout = open(records_path, "w") if stdout_is_records else self.log  # noqa: SIM115 (the child's)
        self.process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=self.log, text=True)
        self.result: dict | None = None
        self.last: dict | None = None

    def evaluations(self) -> list[dict]:
        if not os.path.exists(self.records_path):
            return []
        with open(self.records_path) as f:
            complete = f.read().rpartition("\n")[0]  # a line being written is read next time
        records = [json.loads(line) for line in complete.splitlines() if line.startswith("{")]
        return [r for r in records if r.get("split", "eval") == "eval"]

    def poll(self, target: float, steps_per_epoch: int) -> bool:
        """True once finished: the target reached (the process is then ended), or the process exited."""
        evaluations = self.evaluations()
        self.last = evaluations[-1] if evaluations else None
        reached = [e for e in evaluations if e["accuracy"] >= target]
        if reached:
            self.result = {"seconds": time.perf_counter() - self.started, "cpu_seconds": cpu_seconds(self.process.pid),
                           "step": reached[0]["step"], "epoch": reached[0]["step"] / steps_per_epoch,
                           "accuracy": reached[0]["accuracy"]}
            self.stop()
            return True
        return self.process.poll() is not None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()

    def failure(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max_minutes", type=float, default=30.0, help="give up on a side after this long")
    parser.add_argument("--together", action="store_true", help="run both sides at the same time")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args(argv)

    prepare = [sys.executable, "-m", "cnn.data.prepare", "mnist", f"--manual_dir={MNIST_DIR}"]
    subprocess.run(prepare, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    try:
        import torch  # noqa: F401
        has_torch = True
    except ImportError:
        has_torch = False
        print("PyTorch is not installed (an optional benchmark dependency, not in requirements.txt): "
              "only the project side runs", file=sys.stderr)

    steps_per_epoch = 60_000 // 128  # both recipes: batch 128, the last partial batch dropped
    with tempfile.TemporaryDirectory() as workdir:
        sides = [("project (train.py)", lambda: Run(
            "project (train.py)",
            [sys.executable, "train.py", "--config=configs/mnist_lenet5.py", f"--workdir={workdir}/run",
             "--config.eval_every_epochs=1"],
            os.path.join(workdir, "run", "metrics.jsonl")))]
        if has_torch:
            sides.append(("torch eager", lambda: Run(
                "torch eager",
                [sys.executable, "benchmarks/torch_mnist_lenet5.py", f"--target={args.target}",
                 f"--threads={args.threads}", f"--mnist_dir={MNIST_DIR}"],
                os.path.join(workdir, "torch.jsonl"), stdout_is_records=True)))
        batches = [sides] if args.together else [[side] for side in sides]
        runs: list[Run] = []
        loads = []
        for batch in batches:
            active = [start() for _, start in batch]
            runs += active
            while active:
                time.sleep(1.0)
                loads.append(os.getloadavg()[0])
                for run in list(active):
                    timed_out = time.perf_counter() - run.started > 60 * args.max_minutes
                    if run.poll(args.target, steps_per_epoch) or timed_out:
                        run.stop()
                        active.remove(run)

    print(f"time to {args.target:.1%} MNIST test accuracy, LeNet-5, evaluated every epoch "
          f"({'together' if args.together else 'one after the other'}; load average (1 min) while running "
          f"{min(loads):.1f}..{max(loads):.1f}, {os.cpu_count()} cores)")
    print("| side | wall s | CPU s | step | epoch | accuracy |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        if run.result:
            r = run.result
            print(f"| {run.name} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['step']} | {r['epoch']:.0f} | "
                  f"{r['accuracy']:.2%} |")
        else:
            print(f"| {run.name} | not reached (last evaluation: {run.last}) | | | | |")
            if run.process.returncode not in (0, None, -15):
                print(run.failure(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
