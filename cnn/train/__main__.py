"""The trainer: ``python -m cnn.train --config=configs/default.py --workdir=runs/digits [--config.key=value]``
(``train.py`` at the repository root runs the same).

Rerunning the same command resumes from the newest checkpoint in ``--workdir``. Several processes (hosts) run the
same command with ``--config.distributed.*`` set, or under SLURM, Open MPI or a TPU slice (cnn/train/distributed.py).
"""

from cnn.platform import configure_xla_cpu

configure_xla_cpu()  # before JAX starts

import signal  # noqa: E402
import sys  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnn.cli import run_cli  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
flags.DEFINE_bool("allow_config_change", False, "Resume even though the config differs from the run's config.json "
                  "in keys that change what is trained (the differences are listed).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from cnn.train.workdir import make_workdir

    make_workdir(flags.FLAGS.workdir)  # a workdir that cannot be written fails before JAX starts
    from cnn.train import distributed

    distributed.initialize(flags.FLAGS.config.distributed)  # first: before anything starts a JAX backend
    from cnn.train.loop import train_and_evaluate

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: "interrupted at step N", the lock released
    metrics = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.allow_config_change)
    if distributed.is_primary():
        scalars = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items() if isinstance(value, float))
        print(f"final eval: {scalars} ({metrics['count']} examples)")
    return 0


def run() -> int:
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(run())
