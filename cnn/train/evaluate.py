"""Evaluate the checkpoints of a run: rebuild the model from ``config.json``, restore, count exactly.

Writes ``eval_<step>.json`` (the task's metrics) and the task's pictures (a confusion matrix, segmentation
overlays) into the workdir, and with ``save_predictions`` ``predictions_<step>.npz`` (what the task saves of every
example, in split order: logits and labels for classification, predicted and true class maps for segmentation).
Process 0 of a multi-process run writes; every process restores and evaluates its share.
"""

from __future__ import annotations

import json
import os

import numpy as np

from cnn.errors import UserError
from cnn.train.checkpoint import Checkpoints, CorruptCheckpointError
from cnn.train.config import load_config
from cnn.train.distributed import is_primary
from cnn.train.experiment import plan_evaluation
from cnn.train.workdir import make_workdir

BEST = "best"  # --step=best: the checkpoint with the best value of the run's checkpoint.best_metric


def parse_step(value: str | None) -> int | str | None:
    """``--step``'s value: None (the latest), ``"best"`` or a step number."""
    if value is None or value == BEST:
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--step={value}: expected a step number or 'best'") from None


def select_steps(available: list[int], step: int | str | None, all_steps: bool, best: int | None = None) -> list[int]:
    """The steps to evaluate: every kept one, the latest, ``step``, or (``step="best"``) ``best``."""
    if all_steps and step is not None:
        raise UserError(f"--all and --step={step} contradict each other: give one of them")
    if all_steps:
        return available
    if step is None:
        return available[-1:]
    if step == BEST:
        if best is None:
            raise UserError(f"--step=best: no kept checkpoint has a value of the best metric; available: {available}")
        return [best]
    if step not in available:
        raise UserError(f"--step={step}: no checkpoint at that step; available: {available}")
    return [step]


def _json_ready(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def evaluate_checkpoints(workdir: str, step: int | str | None = None, all_steps: bool = False, split: str | None = None,
                         save_predictions: bool = False) -> list[dict]:
    make_workdir(workdir, create=False)  # eval_<step>.json is written there
    config = load_config(workdir)
    if step == BEST and not config.checkpoint.best_metric:
        raise UserError(f"--step=best: the run in {workdir} has no checkpoint.best_metric (config.json), so no "
                        "checkpoint is the best; give --step=N")
    plan = plan_evaluation(config, workdir, split)
    exp, task, checkpoints = plan.experiment, plan.task, plan.checkpoints
    results = []
    try:
        available = checkpoints.steps()
        if not available:
            raise UserError(f"--workdir={workdir}: no checkpoints in {checkpoints.directory}")
        for chosen in select_steps(available, step, all_steps, checkpoints.best_step()):
            state = _restore(checkpoints, chosen, exp.abstract_state())
            metrics, totals = exp.evaluate(state, plan.eval_split, keep_examples=save_predictions,
                                           keep_first=task.report_examples)
            result = {"step": chosen, "split": plan.eval_split_name, "task": task.name,
                      **{k: _json_ready(v) for k, v in metrics.items()}}
            if is_primary():  # every process computed the same totals; one writes them
                with open(os.path.join(workdir, f"eval_{chosen}.json"), "w") as f:
                    json.dump(result, f, indent=1)
                task.write_report(metrics, totals, workdir, chosen,
                                  title=f"{config.dataset.name} {plan.eval_split_name}, step {chosen}")
                if save_predictions:
                    np.savez_compressed(os.path.join(workdir, f"predictions_{chosen}.npz"),
                                        **task.predictions(totals))
            result["summary"] = task.summary(metrics)
            results.append(result)
    finally:
        checkpoints.close()
    return results


def _restore(checkpoints: Checkpoints, step: int, abstract_state):
    """Restore ``step``; when it is unreadable or corrupt, say so and name the newest good checkpoint."""
    try:
        return checkpoints.restore(step, abstract_state)
    except Exception as error:
        if isinstance(error, UserError) and not isinstance(error, CorruptCheckpointError):
            raise  # a mismatch with the config, a step deleted under us: already one clear line
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        good = checkpoints.newest_readable_step(abstract_state, below=step)
        newest = f"the newest good one is step {good} (--step={good})" if good is not None else "no older one is good"
        raise UserError(f"checkpoint at step {step} is unreadable ({reason[:300]}); {newest}") from None


def format_table(results: list[dict]) -> str:
    lines = [f"{'step':>8}  {'split':<10} {'examples':>8}  metrics"]
    lines += [f"{r['step']:>8}  {r['split']:<10} {r['count']:>8}  {r['summary']}" for r in results]
    return "\n".join(lines)
