"""Several command lines of one CLI in ONE Python process, so that the start-up (Python, JAX, TensorFlow imports)
is paid once: ``python -m tests.harness.cli_batch MODULE OUT.json ARGS.json`` runs ``MODULE.run()`` (what the
script's ``__main__`` calls: flags, one-line errors, exit status) once per argument list of ``ARGS.json``, and
writes ``[{"returncode", "stdout", "stderr"}, ...]`` to ``OUT.json``. For command lines that end before training
(bad input); :func:`tests.harness.conftest.run_cli_batch` is the caller."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys


def run_each(module: str, arguments: list[list[str]]) -> list[dict]:
    from absl import flags

    entry = importlib.import_module(module)
    results = []
    for args in arguments:
        # As a fresh process would see them: no flag parsed yet, and no ``--config.key`` override flag, which
        # ml_collections defines while parsing (a second definition is an error).
        for name in [name for name in flags.FLAGS if name.startswith("config.")]:
            delattr(flags.FLAGS, name)
        flags.FLAGS.unparse_flags()
        sys.argv = [module, *args]
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            returncode = entry.run()
        results.append({"returncode": returncode, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
    return results


if __name__ == "__main__":
    module, out, arguments = sys.argv[1:]
    with open(arguments) as f:
        results = run_each(module, json.load(f))
    with open(out, "w") as f:
        json.dump(results, f)
