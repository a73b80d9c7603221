"""The sweep's summary in its workdir: ``summary.md`` and ``summary.csv`` (one row per parameter set: completed
ones best first, then running and queued ones, failed ones last with their error) and ``summary.png`` (the metric
against each swept key, one panel per key).

Rows come from the study: a parameter set's latest attempt gives its state, value and eval metrics (copied from its
``metrics.jsonl`` when it finished). Files are replaced atomically: several processes may write them.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from typing import Any

import numpy as np
from optuna.trial import TrialState

from cnn.sweep.definition import Sweep
from cnn.sweep.study import TRIAL_DIR, ParameterSet

STATE_RANK = {TrialState.COMPLETE: 0, TrialState.RUNNING: 1, TrialState.WAITING: 2, TrialState.PRUNED: 3,
              TrialState.FAIL: 4}


def summary_columns(sweep: Sweep) -> list[str]:
    metrics = [sweep.metric, *(m for m in sweep.eval_metrics if m != sweep.metric)]
    return ["trial", "state", "attempts", *sweep.keys, *metrics, "wall_seconds", "workdir", "error"]


def summary_rows(sets: list[ParameterSet], sweep: Sweep) -> list[dict[str, Any]]:
    """One row per parameter set, in summary order."""
    rows = []
    for parameter_set in sets:
        latest = parameter_set.latest
        evaluation = latest.user_attrs.get("eval", {})
        row = {"trial": parameter_set.number, "state": latest.state.name, "attempts": len(parameter_set.attempts),
               **{key: parameter_set.params.get(key, "") for key in sweep.keys},
               **{metric: evaluation.get(metric, "") for metric in sweep.eval_metrics},
               "wall_seconds": latest.user_attrs.get("wall_seconds", ""),
               "workdir": latest.user_attrs.get(TRIAL_DIR, ""), "error": latest.user_attrs.get("error", "")}
        if latest.state == TrialState.COMPLETE:
            row[sweep.metric] = latest.value
        rows.append(row)
    sign = -1.0 if sweep.direction == "maximize" else 1.0

    def order(row: dict[str, Any]) -> tuple:
        value = row[sweep.metric] if row["state"] == "COMPLETE" else 0.0
        return STATE_RANK[TrialState[row["state"]]], sign * value, row["trial"]

    return sorted(rows, key=order)


def metric_statistics(rows: list[dict[str, Any]], sweep: Sweep) -> dict[str, tuple[float, float]]:
    """Each metric's mean and sample standard deviation (n − 1; nan for one trial) over the complete rows."""
    complete = [row for row in rows if row["state"] == "COMPLETE"]
    result = {}
    for name in [sweep.metric, *(m for m in sweep.eval_metrics if m != sweep.metric)]:
        values = np.array([row[name] for row in complete if isinstance(row[name], int | float)], np.float64)
        if len(values):
            result[name] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan)
    return result


def write_summary(sets: list[ParameterSet], sweep: Sweep, workdir: str, title: str) -> list[dict[str, Any]]:
    """Write summary.md, summary.csv and summary.png into ``workdir``; return the rows."""
    rows = summary_rows(sets, sweep)
    columns = summary_columns(sweep)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _replace(os.path.join(workdir, "summary.csv"), text.getvalue().encode())
    _replace(os.path.join(workdir, "summary.md"), _markdown(rows, columns, sweep, title).encode())
    _replace(os.path.join(workdir, "summary.png"), _plot(rows, sweep))
    return rows


def _markdown(rows: list[dict[str, Any]], columns: list[str], sweep: Sweep, title: str) -> str:
    counts = {state: sum(row["state"] == state for row in rows) for state in ("COMPLETE", "RUNNING", "WAITING",
                                                                               "FAIL")}
    lines = [f"# Sweep `{title}`", "",
             f"`{sweep.metric}` ({sweep.direction}) over {', '.join(f'`{k}`' for k in sweep.keys)} "
             f"({sweep.sampler}, seed {sweep.seed}): {len(rows)} parameter sets, "
             + ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n) + "."]
    complete = [row for row in rows if row["state"] == "COMPLETE"]
    if complete:
        best = complete[0]
        values = ", ".join(f"{key}={best[key]}" for key in sweep.keys)
        lines += ["", f"Best: trial {best['trial']}, {sweep.metric} {best[sweep.metric]:.4f} ({values}), "
                      f"`{best['workdir']}`."]
    statistics = metric_statistics(rows, sweep)
    if statistics:
        lines += ["", f"Mean ± sd over the {len(complete)} complete trials (sd with n − 1; a sweep over seeds gives "
                      "the spread of a result):", "", "| metric | mean | sd |", "|---|---|---|"]
        lines += [f"| {name} | {mean:.4f} | {sd:.4f} |" for name, (mean, sd) in statistics.items()]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[column]) for column in columns) + " |" for row in rows]
    lines += ["", "![the metric against each swept key](summary.png)", ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value).replace("|", "\\|")


def _plot(rows: list[dict[str, Any]], sweep: Sweep) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    complete = [row for row in rows if row["state"] == "COMPLETE"]
    figure = Figure(figsize=(4 * len(sweep.keys), 3.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(sweep.keys), squeeze=False)[0]
    for ax, key in zip(axes, sweep.keys, strict=True):
        values = [row[key] for row in complete]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric:
            x = values
            if sweep.log_scale(key) and all(v > 0 for v in values):
                ax.set_xscale("log")
        else:  # categories at positions 0, 1, ... in the order the sweep gives them
            choices = [c for c in sweep.distributions[key].choices if c in values]
            x = [choices.index(v) for v in values]
            ax.set_xticks(range(len(choices)), [str(c) for c in choices])
        y = [row[sweep.metric] for row in complete]
        ax.scatter(x, y, color="tab:blue", zorder=2)
        if complete:
            ax.scatter(x[:1], y[:1], color="tab:red", marker="*", s=160, zorder=3, label="best")
            ax.legend(loc="best", fontsize="small")
        ax.set_xlabel(key)
        ax.set_ylabel(sweep.metric)
        ax.grid(True, alpha=0.3)
    failed = sum(row["state"] == "FAIL" for row in rows)
    figure.suptitle(f"{sweep.metric} ({sweep.direction}): {len(complete)} complete"
                    + (f", {failed} failed (not shown)" if failed else ""), fontsize="medium")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _replace(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".summary-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the summary is for everyone who reads the workdir
    os.replace(tmp, path)
