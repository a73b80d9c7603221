"""Shared start-up of the command-line tools: quiet logs, and user errors as one line with a non-zero exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from cnn.errors import UserError


def run_cli(main: Callable[[list[str]], int]) -> int:
    """Run an absl ``main``; a :class:`UserError` prints ``error: ...`` on stderr and exits 2, no traceback."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import app


    def guarded(argv: list[str]) -> int:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    try:
        app.run(guarded)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0
