"""What a sweep trial costs beside its training steps: process start, imports, data, compilation, evaluation.

    python benchmarks/sweep_overhead.py [--steps 12,300] [--parallel 1]

Runs the real sweep of ``configs/default.py:runlocal`` (a 2 x 2 grid of small_cnn on the digits) through
``sweep.py`` once per step count, then splits each trial's wall time (measured by the sweep around its train.py
process) with what the trial left behind:

- start-up: from the launch to ``config.json`` (written once imports, data loading and config checks are done);
- first interval: the first logged training interval of ``metrics.jsonl`` (model init excluded; the train step's
  compilation and first steps included);
- steps: the later intervals, at the steady step rate;
- rest: everything else (model init, evaluations and their compilation, checkpoints, exit);
- overhead: wall time minus the steps' time at the steady rate, as a share of the wall time;
- sweep's own: the sweep's wall time minus its trials' (sweep.py start-up, the database, the summaries).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import optuna

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from timing import OtherLoad, load_average, table  # noqa: E402


def run_sweep(workdir: str, steps: int, parallel: int) -> float:
    command = [sys.executable, os.path.join(ROOT, "sweep.py"), "--config=configs/default.py:runlocal",
               f"--workdir={workdir}", f"--parallel={parallel}", f"--config.num_steps={steps}",
               f"--config.eval_every_steps={steps // 2}", f"--config.checkpoint_every_steps={max(steps // 3, 1)}",
               f"--config.log_every_steps={max(steps // 6, 1)}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def trial_breakdown(workdir: str, trial: optuna.trial.FrozenTrial, steps: int) -> dict[str, float]:
    trial_dir = os.path.join(workdir, trial.user_attrs["trial_dir"])
    with open(os.path.join(trial_dir, "metrics.jsonl")) as f:
        intervals = [r for r in map(json.loads, f) if r["split"] == "train"]
    seconds = [(r["step"] - previous["step"]) / r["steps_per_second"]
               for previous, r in zip([{"step": 0}, *intervals], intervals, strict=False)]
    wall = trial.user_attrs["wall_seconds"]
    startup = os.path.getmtime(os.path.join(trial_dir, "config.json")) - trial.user_attrs["launched_at"]
    first, later = seconds[0], sum(seconds[1:])
    step_time = later / (steps - intervals[0]["step"])
    return {"wall": wall, "startup": startup, "first": first, "steps": later, "rest": wall - startup - first - later,
            "overhead": wall - steps * step_time, "step_ms": 1000 * step_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="12,300", help="comma-separated training steps per trial, one sweep each")
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()

    rows = []
    load = OtherLoad()
    with tempfile.TemporaryDirectory() as tmp:
        for steps in map(int, args.steps.split(",")):
            workdir = os.path.join(tmp, f"steps{steps}")
            sweep_wall = run_sweep(workdir, steps, args.parallel)
            study = optuna.load_study(study_name=os.path.basename(workdir),
                                      storage=f"sqlite:///{os.path.join(workdir, 'sweep.db')}")
            trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
            parts = [trial_breakdown(workdir, trial, steps) for trial in trials]
            mean = {key: statistics.mean(p[key] for p in parts) for key in parts[0]}
            share = f"{100 * mean['overhead'] / mean['wall']:.0f}%"
            rows.append([steps, len(trials), sweep_wall, mean["wall"], mean["startup"], mean["first"], mean["steps"],
                         mean["rest"], mean["step_ms"], mean["overhead"], share,
                         sweep_wall - sum(p["wall"] for p in parts) / args.parallel])
    other = load.stop()
    print(f"`python benchmarks/sweep_overhead.py --steps {args.steps} --parallel {args.parallel}` "
          f"({os.cpu_count()} CPU cores; load average {load_average()}; other processes used {100 * other:.0f}% "
          "of the cores meanwhile). Per trial, means over the grid's trials, seconds:\n")
    print(table(["steps", "trials", "sweep wall", "trial wall", "start-up", "first interval", "steps (s)",
                 "init, evals, checkpoints, exit", "ms/step", "overhead", "overhead share", "sweep's own (total)"],
                rows))


if __name__ == "__main__":
    main()
