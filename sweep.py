"""Sweep an experiment: ``python sweep.py --config=configs/default.py --workdir=runs/sweep1 [--parallel=N]``.

Each trial is a ``train.py`` run in ``<workdir>/trials/<trial>``; the config file's ``get_sweep()`` says what varies
(format: ``cnn/sweep/__init__.py``), ``--config.key=value`` applies to every trial. Rerunning the same command
resumes the sweep; ``--summarize_only`` rewrites ``summary.md``/``.csv``/``.png`` of a sweep in progress. The exit
status is the number of failed trials.
"""

from cnn.platform import configure_xla_cpu

configure_xla_cpu()  # before JAX starts: the trials train in this process

import sys  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnn.cli import run_cli  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:variant]) with get_sweep().",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Sweep directory: sweep.db (default storage), trials/, summary.*.")
flags.DEFINE_integer("parallel", 1, "Trials to run at a time in this process.")
flags.DEFINE_string("storage", None, "Optuna storage URL (default sqlite:///<workdir>/sweep.db); PostgreSQL "
                    "(postgresql://user:password@host/db) lets several machines work on one sweep.")
flags.DEFINE_string("study_name", None, "Study name in the storage (default: the workdir's name).")
flags.DEFINE_integer("num_trials", None, "Parameter sets to run (default: get_sweep()'s, or the grid's size).")
flags.DEFINE_bool("summarize_only", False, "Only write the summary of the sweep as it stands.")
flags.DEFINE_integer("heartbeat_seconds", 10, "Heartbeat interval of running trials; a trial without heartbeat for "
                     "3 intervals belongs to a dead process and is run again.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from cnn.sweep.command import SweepOptions, run_sweep

    f = flags.FLAGS
    options = SweepOptions(
        config_spec=config_flags.get_config_filename(f["config"]), config=f.config,
        overrides=dict(config_flags.get_override_values(f["config"])), workdir=f.workdir, parallel=f.parallel,
        storage=f.storage, study_name=f.study_name, num_trials=f.num_trials, heartbeat_seconds=f.heartbeat_seconds)
    return run_sweep(options, summarize_only=f.summarize_only)


if __name__ == "__main__":
    sys.exit(run_cli(main))
