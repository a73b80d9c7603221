"""The training loop: resume, train, log, evaluate, checkpoint.

Rerunning the same command resumes from the newest readable checkpoint. Since batches are indexed by step and
the dropout key is ``fold_in(seed key, step)``, a resumed run reproduces an uninterrupted one bitwise on CPU.
Per-step metrics stay on the device until a log, eval or checkpoint point; they are checked there, so a NaN or
Inf loss, gradient, update or parameter stops training, naming its step, before any non-finite state is saved
(the checkpoints also refuse one).

With ``config.early_stopping`` an evaluation may end training (``cnn.train.early_stopping``): that step is
checkpointed and is the final state; a rerun of a stopped run trains no further. With ``config.dataset.test_split``
the final state is evaluated once more on that split, written to ``metrics.jsonl`` as a ``test`` record.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from cnn.errors import Interrupted, NonFiniteLossError
from cnn.train.config import save_config
from cnn.train.distributed import barrier, is_primary
from cnn.train.experiment import plan_training
from cnn.train.metrics import METRICS_FILE, MetricWriter, read_metrics
from cnn.train.steps import NONFINITE
from cnn.train.workdir import WorkdirLock, check_resume_config, make_workdir


def _mean_and_check(pending: list[tuple[int, dict]]) -> dict[str, float]:
    """Fetch pending per-step metrics; raise on the first step with a non-finite loss, gradient, update or new
    state; return their means."""
    host = jax.device_get([metrics for _, metrics in pending])
    for (step, _), metrics in zip(pending, host, strict=True):
        if not np.isfinite(metrics["loss"]):
            raise NonFiniteLossError(step, float(metrics["loss"]))
        if metrics.pop(NONFINITE, 0.0):  # popped: a check, not a metric to log
            state = f"not finite (loss {float(metrics['loss']):.4g}, grad_norm {float(metrics['grad_norm']):.4g})"
            raise NonFiniteLossError(step, state, what="the gradients, updates or parameters are")
    return {name: float(np.mean([m[name] for m in host])) for name in host[0]}


def _has_record(workdir: str, step: int, split: str) -> bool:
    path = os.path.join(workdir, METRICS_FILE)
    return os.path.exists(path) and any(r["step"] == step and r["split"] == split for r in read_metrics(workdir))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False) -> dict:
    """Train ``config`` in ``workdir`` (resuming if it holds checkpoints); return the final eval metrics. The
    workdir is locked meanwhile; a resume with a changed config needs ``allow_config_change`` (cnn/train/workdir.py)."""
    make_workdir(workdir)
    if not is_primary():  # process 0 holds the lock for all of them
        return _train(config, workdir, allow_config_change)
    with WorkdirLock(workdir):
        return _train(config, workdir, allow_config_change)


def _train(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool) -> dict:
    plan = plan_training(config, workdir)
    exp, task, durations, stream, checkpoints = (plan.experiment, plan.task, plan.durations, plan.train_stream,
                                                 plan.checkpoints)
    primary = is_primary()  # the one process that writes config.json, logs, metrics and the progress bar
    if checkpoints.steps():
        check_resume_config(config, workdir, allow_config_change)
    barrier("resume-config-read")  # every process has read config.json before process 0 rewrites it
    if primary:
        save_config(config, workdir)
        devices = jax.devices()
        print(f"training on {len(devices)} {devices[0].platform} device{'s' if len(devices) > 1 else ''} "
              f"({jax.process_count()} process(es))", file=sys.stderr)
    state, start = checkpoints.restore_latest(exp.abstract_state())
    if state is None:
        state = exp.init_state()
    elif primary:
        print(f"resumed from the checkpoint at step {start}", file=sys.stderr)
    stopper = plan.early_stopping
    if stopper is not None:  # its history, read before the writer drops the records past the restored step
        if start and os.path.exists(os.path.join(workdir, METRICS_FILE)):
            stopper.restore(read_metrics(workdir), start)
        barrier("early-stopping-history")
    stopped = stopper is not None and stopper.stopped
    writer = MetricWriter(workdir, resume_step=start)
    key = jax.device_put(jax.random.PRNGKey(config.seed), exp.replicated)
    final = None
    total = durations.total_steps
    bar = tqdm(total=total, initial=start, desc="train", unit="step", mininterval=1.0,
               disable=not primary, file=sys.stderr, dynamic_ncols=True)
    done = start
    try:
        pending: list[tuple[int, dict]] = []
        interval_start, wait_start = time.perf_counter(), stream.wait_seconds
        end = start if stopped else total  # a run that stopped early ends where it stopped
        for step, batch in zip(range(start, end), stream.iterate(start, end), strict=True):
            state, metrics = exp.train_step(state, exp.to_device(batch), key)
            done = step + 1
            pending.append((done, metrics))
            last = done == total
            evaluate, save = last or done % durations.eval_every == 0, last or done % durations.checkpoint_every == 0
            if not (last or evaluate or save or done % durations.log_every == 0):
                continue
            summary = _mean_and_check(pending)
            elapsed = time.perf_counter() - interval_start
            summary["steps_per_second"] = len(pending) / elapsed
            summary["examples_per_second"] = len(pending) * config.batch_size / elapsed
            summary["data_wait_fraction"] = (stream.wait_seconds - wait_start) / elapsed
            writer.write(done, "train", summary)
            bar.update(len(pending))
            bar.set_postfix({"loss": f"{summary['loss']:.4f}",
                             task.progress_metric: f"{summary[task.progress_metric]:.3f}"}, refresh=False)
            pending = []
            eval_metrics = None
            if evaluate:
                final, _ = exp.evaluate(state, plan.eval_split)
                eval_metrics = {name: final[name] for name in task.metrics}
                writer.write(done, "eval", eval_metrics)
                if primary:  # tqdm.write prints even for a disabled bar
                    bar.write(f"step {done}: eval {task.summary(final)}")
                stopped = stopper is not None and stopper.update(final[stopper.metric])
            if save or stopped:
                checkpoints.save(done, state, metrics=eval_metrics)
            if stopped:
                if primary:
                    bar.write(f"early stopping at step {done}: {stopper.reason()}")
                break
            interval_start, wait_start = time.perf_counter(), stream.wait_seconds
        if final is None:  # nothing left to train: report the restored state
            final, _ = exp.evaluate(state, plan.eval_split)
        last_step = int(state.step)
        # A rerun of a finished run restores its last step, whose test record metrics.jsonl already holds.
        if plan.test_split is not None and not (end == start and _has_record(workdir, last_step, "test")):
            test, _ = exp.evaluate(state, plan.test_split)
            writer.write(last_step, "test", {name: test[name] for name in task.metrics})
            if primary:
                bar.write(f"step {last_step}: {config.dataset.test_split} {task.summary(test)}")
    except KeyboardInterrupt:
        checkpoints.wait()
        kept = checkpoints.steps()
        raise Interrupted(f"interrupted at step {done}; rerun the same command to resume"
                        + (f" from the checkpoint at step {kept[-1]}" if kept else " (no checkpoint yet)")) from None
    finally:
        bar.close()
        checkpoints.wait()
        checkpoints.close()
        writer.close()
    return final
