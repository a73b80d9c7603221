"""Evaluate checkpoints: ``python eval.py --workdir=runs/digits [--step N | --step best | --all] [--split S]
[--save_predictions]``.

Prints a table and writes ``eval_<step>.json`` and the task's pictures (``confusion_<step>.png``,
``segmentation_<step>.png``) into the workdir; ``--save_predictions`` also ``predictions_<step>.npz``.
"""

from cnn.platform import configure_xla_cpu

configure_xla_cpu()  # before JAX starts

import sys  # noqa: E402

from absl import app, flags  # noqa: E402

from cnn.cli import run_cli  # noqa: E402

flags.DEFINE_string("workdir", None, "Workdir of a training run (holds config.json and checkpoints/).")
flags.DEFINE_string("step", None, "Evaluate the checkpoint at this step (default: the latest); 'best': the one with "
                   "the best value of the run's checkpoint.best_metric.")
flags.DEFINE_bool("all", False, "Evaluate every kept checkpoint.")
flags.DEFINE_string("split", None, "Dataset split (default: the config's eval split).")
flags.DEFINE_bool("save_predictions", False, "Also write predictions_<step>.npz: the task's outputs for every example "
                  "of the split, in order (logits and labels; class maps for segmentation).")
flags.DEFINE_string("coordinator_address", None, "Several processes: host:port of process 0 (as "
                    "config.distributed.coordinator_address of train.py; unset: one process or JAX's detection).")
flags.DEFINE_integer("num_processes", None, "Several processes: how many.")
flags.DEFINE_integer("process_id", None, "Several processes: this one's index, 0 .. num_processes - 1.")
flags.DEFINE_integer("initialization_timeout", 300, "Several processes: seconds to wait for all of them to join.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from cnn.train.workdir import make_workdir

    f = flags.FLAGS
    make_workdir(f.workdir, create=False)  # a missing or read-only workdir fails before JAX starts
    from cnn.train import distributed

    # First, before anything starts a JAX backend. The run's config.json says how it was trained, not how many
    # processes evaluate it: a checkpoint written by N processes restores on any number.
    distributed.initialize({key: f[key].value for key in (*distributed.KEYS, "initialization_timeout")})
    from cnn.train.evaluate import evaluate_checkpoints, format_table, parse_step

    results = evaluate_checkpoints(f.workdir, step=parse_step(f.step), all_steps=f.all, split=f.split,
                                   save_predictions=f.save_predictions)
    if not distributed.is_primary():
        return 0
    print(format_table(results))
    last = results[-1]
    print(f"{last['split']} {last['summary']} (step {last['step']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
