"""Rerun of issue 15's classes of bad input: ``python tools/hostile_inputs.py [--out=DIR] [--only=WORD]``.

Tries bad or hostile inputs of every class the issue lists (config flags, workdirs, eval, data preparation, image
folders, numpy sources, corrupted checkpoints, sweeps, a full disk, concurrent runs, signals, operators called from
Python) through the command-line tools and the Python API, each in a fresh process, and classifies what happened:

- ``one line``: a nonzero exit whose stderr ends with one ``error: ...`` line (argparse's ``prog: error: ...``
  included) and holds no traceback: what a user should see;
- ``recovered``: an input the code is documented to recover from (a stale lock, a corrupt newest checkpoint, a
  SIGKILL) ended with exit 0 and the documented note;
- ``traceback``: a traceback on stderr (or exit status 70, the CLIs' "internal error");
- ``exit 0``: a bad input accepted silently (exit 0, no error): the worst outcome;
- ``other``: anything else (a nonzero exit with no ``error:`` line, a time-out).

Not in CI (several minutes: one short training run is shared, a few cases train for seconds). Needs root only for
the full-disk case (a 96 KiB tmpfs) and for dropping root's write override in the read-only case. Prints a table of
outcomes per class and writes ``hostile_inputs.json`` with every case's command, status and last stderr line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from hostile_cases import CASES, OUTCOMES, PYTHON, ROOT, RUNLOCAL, Case, make_read_only


def classify(case: Case, status: int | None, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if "Traceback (most recent call last)" in stderr or status == 70:
        return "traceback"
    if status == 0:
        return "recovered" if case.recovers and case.recovers in stderr else "exit 0"
    if status is not None and (last.startswith("error: ") or ": error: " in last):
        return "one line"
    return "other"


def run_case(case: Case, directory: Path, trained: Path, env: dict) -> dict:
    directory.mkdir(parents=True)
    if case.needs_run:
        shutil.copytree(trained, directory / "run")
    if case.setup:
        case.setup(directory)
    status, stderr = None, ""
    try:
        if case.run:
            status, stderr = case.run(case, directory, env)
        else:
            if case.code:  # a pure operator's documented error is a ValueError
                argv = ["-c", "import sys\ntry:\n" + "".join(f"    {line}\n" for line in case.code.splitlines())
                        + "except ValueError as error:\n    print(f'error: ValueError: {error}', file=sys.stderr)\n"
                        "    sys.exit(2)"]
            else:
                argv = [arg.replace("{d}", str(directory)) for arg in case.argv]
            # Root writes through mode bits: without CAP_DAC_OVERRIDE/READ_SEARCH it cannot.
            drop = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
                    if case.setup is make_read_only and os.geteuid() == 0 else [])
            result = subprocess.run([*drop, PYTHON, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=600)
            status, stderr = result.returncode, result.stderr
    except subprocess.TimeoutExpired:
        stderr = "time-out"
    finally:
        if (directory / "disk").is_dir():
            subprocess.run(["umount", str(directory / "disk")], check=False)
    outcome = classify(case, status, stderr)
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    return {"kind": case.kind, "name": case.name, "command": case.code or " ".join(case.argv) or case.run.__name__,
            "status": status, "outcome": outcome, "last_line": last[:300]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="directory for the cases' files (default: a temporary one)")
    parser.add_argument("--only", default="", help="run only the cases whose class or name contains this")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="hostile-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(TFDS_DATA_DIR=str(out / "tfds"), PYTHONUNBUFFERED="1")
    cases = [c for c in CASES if args.only in c.kind or args.only in c.name]
    trained = out / "trained"
    if not (out / "tfds").is_dir():
        subprocess.run([PYTHON, "-c", "from cnn.data import make_source; make_source({'name': 'digits'}).prepare()"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
    if any(c.needs_run for c in cases) and not (trained / "checkpoints").is_dir():
        subprocess.run([PYTHON, "train.py", RUNLOCAL, f"--workdir={trained}"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
    results = []
    for number, case in enumerate(cases):
        result = run_case(case, out / f"case{number:02d}", trained, env)
        results.append(result)
        print(f"{result['outcome']:>9}  {case.kind}: {case.name}  [{result['status']}] {result['last_line'][:150]}",
              flush=True)
    (out / "hostile_inputs.json").write_text(json.dumps(results, indent=1))
    counts = {kind: Counter(r["outcome"] for r in results if r["kind"] == kind) for kind in dict.fromkeys(
        r["kind"] for r in results)}
    print(f"\n| class | inputs | {' | '.join(OUTCOMES)} |\n|---|---|{'---|' * len(OUTCOMES)}")
    for kind, counter in [*counts.items(), ("all", Counter(r["outcome"] for r in results))]:
        print(f"| {kind} | {sum(counter.values())} | {' | '.join(str(counter[o]) for o in OUTCOMES)} |")
    print(f"\ncases and outputs: {out}/hostile_inputs.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
