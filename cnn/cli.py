"""Shared start-up of the command-line tools: quiet logs; user errors as one line and exit status 2; Ctrl-C as one
line and exit status 130; anything else (a bug) with its traceback, a last line that says so, and exit status 70."""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback
from collections.abc import Callable

from cnn.errors import Interrupted, UserError

USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as a shell reports a process that Ctrl-C ended
INTERNAL_ERROR_STATUS = 70  # EX_SOFTWARE of sysexits.h: an internal software error
INTERNAL_ERROR = "internal error (a bug, please report): "
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
HELP_FLAGS = {"--help", "-?", "--helpshort", "--helpfull", "--helpxml"}


def run_cli(main: Callable[[list[str]], int]) -> int:
    """Run an absl ``main``; a :class:`UserError`, or a file that cannot be written because the disk is full or
    read-only, prints ``error: ...`` on stderr and exits 2, no traceback; Ctrl-C or SIGTERM (``KeyboardInterrupt``,
    :class:`Interrupted`) the same with exit status 130. Any other exception is a bug: its
    traceback, then ``internal error (a bug, please report): <type>: <message>`` as the last line (which a sweep
    records), and exit status 70, so that a script can tell it from a user error."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import app

    def guarded(argv: list[str]) -> int:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            return main(argv)
        except (Interrupted, KeyboardInterrupt) as error:  # before it could say where: "interrupted"
            print(f"error: {str(error) or 'interrupted'}", file=sys.stderr)
            return INTERRUPTED_STATUS
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return USER_ERROR_STATUS
        except app.UsageError:
            raise  # absl prints the usage
        except Exception as error:
            if isinstance(error, OSError) and error.errno in DISK_ERRORS:
                # Any file of a run (metrics, events, config.json) may meet a full or read-only disk: not a bug.
                print(f"error: cannot write {error.filename or 'a file'} ({error.strerror}): free space (or make it "
                      "writable) and rerun the same command to resume", file=sys.stderr)
                return USER_ERROR_STATUS
            traceback.print_exc()
            message = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
            print(f"{INTERNAL_ERROR}{type(error).__name__}: {message}", file=sys.stderr)
            return INTERNAL_ERROR_STATUS

    try:
        app.run(guarded, flags_parser=_parse_flags)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with every error as one line: a bad flag value, a config key that does not exist, a config
    file that does not load (ml_collections loads it lazily, so it is touched here)."""
    from absl import flags

    try:
        try:
            args = flags.FLAGS(argv)
        except SystemExit as exit_:  # absl exits 1 after printing the help it was asked for; that is a success
            sys.exit(0 if HELP_FLAGS & {arg.partition("=")[0] for arg in argv[1:]} else exit_.code)
        if "config" in flags.FLAGS:
            flags.FLAGS.config.keys()
        return args
    except (AttributeError, KeyError) as error:
        # ml_collections reports an unknown key as a KeyError wrapped in an AttributeError, quoted twice.
        key = re.search(r"'(\w+)", str(error))
        hint = re.search(r"Did you mean [^?]*\?", str(error))
        message = f"no such config key {key.group(1) if key else str(error)!r}"
        message += f" ({hint.group(0)})" if hint else ""
    except (flags.Error, OSError, TypeError, ValueError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        message = re.sub(r"^\w+Error: ", "", lines[-1]) if lines else type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_STATUS)
