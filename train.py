"""Train an experiment: ``python train.py --config=configs/default.py --workdir=runs/digits [--config.key=value]``.

The same as ``python -m cnn.train`` (``cnn/train/__main__.py``). Rerunning the same command resumes from the newest
checkpoint in ``--workdir``.
"""

import sys

from cnn.train.__main__ import run

if __name__ == "__main__":
    sys.exit(run())
