"""Evaluate the checkpoints of a run: rebuild the model from ``config.json``, restore, count exactly.

Writes ``eval_<step>.json`` (metrics and confusion matrix) and ``confusion_<step>.png`` into the workdir (process 0
of a multi-process run; every process restores and evaluates its share).
"""

from __future__ import annotations

import json
import os

import numpy as np

from cnn.data import make_source
from cnn.errors import UserError
from cnn.train.config import load_config
from cnn.train.distributed import is_primary
from cnn.train.experiment import Experiment
from cnn.train.loop import open_checkpoints


def select_steps(available: list[int], step: int | None, all_steps: bool) -> list[int]:
    if all_steps:
        return available
    if step is None:
        return available[-1:]
    if step not in available:
        raise UserError(f"--step={step}: no checkpoint at that step; available: {available}")
    return [step]


def evaluate_checkpoints(
    workdir: str, step: int | None = None, all_steps: bool = False, split: str | None = None
) -> list[dict]:
    if not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir}: no such directory")
    config = load_config(workdir)
    checkpoints = open_checkpoints(config, workdir, read_only=True)
    available = checkpoints.steps()
    if not available:
        raise UserError(f"--workdir={workdir}: no checkpoints in {checkpoints.directory}")
    split = split or config.dataset.eval_split
    source = make_source(config.dataset)
    data = source.load(split)
    exp = Experiment(config, source.spec, steps_per_epoch=1)  # the schedule's length changes no shape of the state
    results = []
    try:
        for chosen in select_steps(available, step, all_steps):
            state = checkpoints.restore(chosen, exp.abstract_state())
            metrics = exp.evaluate(state, data)
            result = {"step": chosen, "split": split, **metrics, "confusion": metrics["confusion"].tolist()}
            if is_primary():  # every process computed the same totals; one writes them
                with open(os.path.join(workdir, f"eval_{chosen}.json"), "w") as f:
                    json.dump(result, f, indent=1)
                plot_confusion(metrics["confusion"], os.path.join(workdir, f"confusion_{chosen}.png"),
                               title=f"{config.dataset.name} {split}, step {chosen}: "
                                     f"accuracy {metrics['accuracy']:.4f}")
            results.append(result)
    finally:
        checkpoints.close()
    return results


def plot_confusion(confusion: np.ndarray, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = confusion.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 0.8 + 0.5 * n))
    ax.imshow(confusion, cmap="Blues")
    if n <= 20:
        for (i, j), count in np.ndenumerate(confusion):
            color = "white" if count > confusion.max() / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
    ax.set(xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(results: list[dict]) -> str:
    lines = [f"{'step':>8}  {'split':<8} {'examples':>8}  {'accuracy':>8}  {'loss':>8}"]
    lines += [f"{r['step']:>8}  {r['split']:<8} {r['count']:>8}  {r['accuracy']:>8.4f}  {r['loss']:>8.4f}"
              for r in results]
    return "\n".join(lines)
