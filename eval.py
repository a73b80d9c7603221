"""Evaluate checkpoints: ``python eval.py --workdir=runs/digits [--step N | --all] [--split test]``.

Prints a table and writes ``eval_<step>.json`` and ``confusion_<step>.png`` into the workdir.
"""

from cnn.platform import configure_xla_cpu

configure_xla_cpu()  # before JAX starts

import sys  # noqa: E402

from absl import app, flags  # noqa: E402

from cnn.cli import run_cli  # noqa: E402

flags.DEFINE_string("workdir", None, "Workdir of a training run (holds config.json and checkpoints/).")
flags.DEFINE_integer("step", None, "Evaluate the checkpoint at this step (default: the latest).")
flags.DEFINE_bool("all", False, "Evaluate every kept checkpoint.")
flags.DEFINE_string("split", None, "Dataset split (default: the config's eval split).")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from cnn.train.evaluate import evaluate_checkpoints, format_table

    f = flags.FLAGS
    results = evaluate_checkpoints(f.workdir, step=f.step, all_steps=f.all, split=f.split)
    print(format_table(results))
    print(f"test accuracy: {results[-1]['accuracy']:.4f} (step {results[-1]['step']}, split {results[-1]['split']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
