"""Check every shell command README.md shows, running none: ``python tools/check_readme.py [README.md]``.

Commands come from the ```bash blocks (continuation lines joined, comments dropped, ``VAR=value`` prefixes and
launchers such as ``srun``, ``mpirun`` or ``gcloud ... --command=`` peeled off) and from the inline code spans of the
text and tables that start with ``python``, ``make`` or ``...``. An elided command (``... --config=x.py:v ...``, or
one with a ``<placeholder>``) is the previous full command with the flags it shows changed. Each is checked:

- ``train.py`` (``python -m cnn.train``), ``eval.py``, ``sweep.py``, ``detect.py`` and
  ``python -m cnn.tools.import_weights``: the arguments are parsed with the program's own absl flags, so the config
  file and its variant load, every ``--config.key=value`` names a real key and has a valid value, every flag exists
  and the required ones are given; a sweep's config file defines ``get_sweep``;
- ``python -m MODULE`` and ``python FILE.py``: the module or file exists, and its ``--flags`` are ones its
  (argparse) parser declares;
- ``make TARGET``: a target of the Makefile; ``tensorboard``: installed;
- every path under ``configs/``, ``cnn/``, ``benchmarks/``, ``tests/``, ``tools/`` or ``docs/`` it names exists.

Prints one line per broken command (``README.md:LINE: command: what``) and exits 1 if there is any; CI runs it
(``tests/test_readme.py``).
"""

from __future__ import annotations

import importlib.util
import io
import re
import runpy
import shlex
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from absl import flags

ROOT = Path(__file__).resolve().parents[1]
# The absl programs: the file that defines their flags, and how many positional arguments they take.
ABSL_PROGRAMS = {"train.py": ("cnn/train/__main__.py", 0), "cnn.train": ("cnn/train/__main__.py", 0),
                 "eval.py": ("eval.py", 0), "sweep.py": ("sweep.py", 0), "detect.py": ("detect.py", 0),
                 "cnn.tools.import_weights": ("cnn/tools/import_weights.py", 1)}
REPO_PATH = re.compile(r"^(configs|cnn|benchmarks|tests|tools|docs)/[\w./-]*\w")
LAUNCHERS = ("srun", "mpirun")
INLINE_STARTS = ("python ", ".venv/bin/python ", "make ", "... ", "tensorboard ")
PROGRAMS = ("python", ".venv/bin/python", "make", "tensorboard", "...")
PLACEHOLDER = "<>"  # what <same flags> becomes


@dataclass
class Command:
    line: int
    argv: list[str]

    def __str__(self) -> str:
        return shlex.join(self.argv)


def _lines(text: str) -> list[tuple[int, int, str]]:
    """The logical lines of the ```bash blocks (continuations joined), with their first line's number."""
    lines, block, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block:
            continue
        if not pending:
            start = number
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        lines.append((start, 0, pending))
        pending = ""
    return lines


def _spans(text: str) -> list[tuple[int, int, str]]:
    """Inline code spans outside the code blocks that hold a command (a span may wrap a line), with their line
    number and offset."""
    prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.M | re.S)
    return [(prose.count("\n", 0, m.start()) + 1, m.start(), " ".join(m.group(1).split()))
            for m in re.finditer(r"`([^`]+)`", prose) if " ".join(m.group(1).split()).startswith(INLINE_STARTS)]


def _shell_words(line: str, variables: dict[str, str]) -> list[str]:
    line = re.sub(r"<[^<>]*>", PLACEHOLDER, line.replace("[", "").replace("]", ""))  # [optional] parts are checked too
    words = shlex.split(line, comments=True)
    words = [re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), w) for w in words]
    while words and re.match(r"^\w+=", words[0]):  # VAR=value prefixes
        words = words[1:]
    if words and words[-1] in ("&", ";"):
        words = words[:-1]
    if words and words[0] in LAUNCHERS:
        words = words[words.index("python"):] if "python" in words else []
    command = next((w.split("=", 1)[1] for w in words if w.startswith("--command=")), None)
    if words and words[0] == "gcloud" and command:  # the command run on every TPU host
        words = shlex.split(command.split("&&")[-1])
    return words


def extract(text: str) -> list[Command]:
    """Every command README.md shows, elided ones completed from the previous full command."""
    commands, previous, variables = [], None, {}
    for number, _, line in sorted(_lines(text) + _spans(text)):
        for assignment in re.findall(r"^(\w+)=(\S+)\s*(?:#.*)?$", line.strip()):
            variables[assignment[0]] = assignment[1]
        loop = re.match(r"^for (\w+) in (\S+)", line.strip())
        if loop:
            variables[loop.group(1)] = loop.group(2)
        words = _shell_words(line, variables)
        if not words or not (words[0] in PROGRAMS or words[0].startswith("--")):
            continue  # shell structure (for, done), assignments, other programs (createdb)
        elided = words[0] in ("...",) or words[0].startswith("--") or PLACEHOLDER in words
        if (elided and not any(w.startswith("--") for w in words)) or (len(words) == 3 and words[1] == "-m"):
            continue  # "... not all processes joined" quotes a message; "python -m cnn.train" names a program
        if elided and previous is not None:
            words = _merge(previous, words)
        commands.append(Command(number, words))
        if not elided:
            previous = words
    return commands


def _merge(base: list[str], changes: list[str]) -> list[str]:
    """``base`` with each ``--flag[=value]`` of ``changes`` replacing the same flag (or added)."""
    merged = list(base)
    for change in (c for c in changes if c.startswith("--")):
        name = change.split("=", 1)[0]
        same = [i for i, word in enumerate(merged) if word.split("=", 1)[0] == name]
        if same:
            merged[same[0]] = change
        else:
            merged.append(change)
    return merged


def _program(argv: list[str]) -> tuple[str, list[str]]:
    """``(program, arguments)``: ``train.py``, a module name for ``-m``, a file, ``make`` or ``tensorboard``."""
    if argv[0] in ("python", ".venv/bin/python"):
        if len(argv) > 2 and argv[1] == "-m":
            return argv[2], argv[3:]
        return (argv[1], argv[2:]) if len(argv) > 1 else ("python", [])
    return argv[0], argv[1:]


def _parse_absl(program: str, args: list[str]) -> str | None:
    """Parse ``args`` with the flags ``program`` defines (loaded into absl's FLAGS, then removed)."""
    source, positionals = ABSL_PROGRAMS[program]
    before, saved_argv = set(flags.FLAGS), sys.argv
    namespace = runpy.run_path(str(ROOT / source), run_name="check_readme")
    if "define_flags" in namespace:  # a module that defines its flags only when run as a program
        namespace["define_flags"]()
    try:
        flags.FLAGS.unparse_flags()
        # A placeholder value (--step=N, --workdir=W, --config.dataset.path=FOLDER) stands for a valid one.
        argv = [program, *(re.sub(r"^(--[\w.]+)=[A-Z]+$", r"\1=1", a) for a in args)]
        sys.argv = argv  # ml_collections reads the --config.key overrides from sys.argv
        with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
            rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS:
            config = flags.FLAGS.config  # ml_collections loads the file (and applies the overrides) when first read
            config.keys()
        if len(rest) - 1 != positionals:
            return f"takes {positionals} positional argument(s), got {rest[1:]}"
        if program == "sweep.py" and "get_sweep" not in Path(ROOT / args_config(args)).read_text():
            return f"{args_config(args)} has no get_sweep()"
    except SystemExit:
        return "the flags do not parse"
    except Exception as error:  # a missing config file, a bad variant, an unknown key or flag, a bad value
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]  # the last: not a traceback's
        return f"{type(error).__name__}: {lines[-1][:300] if lines else ''}"
    finally:
        sys.argv = saved_argv
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)
    return None


def args_config(args: list[str]) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith("--config=")).split(":")[0]


def _module_file(module: str) -> Path | None:
    parts = ROOT.joinpath(*module.split("."))
    return next((p for p in (parts.with_suffix(".py"), parts / "__main__.py") if p.is_file()), None)


def check(command: Command) -> str | None:
    """What is wrong with ``command``, or None."""
    program, args = _program(command.argv)
    for word in command.argv:
        for value in (word, word.split("=", 1)[-1]):
            path = REPO_PATH.match(value.split(":")[0])
            if path and not (ROOT / path.group(0)).exists():
                return f"{path.group(0)} does not exist"
    if program in ABSL_PROGRAMS:
        return _parse_absl(program, args)
    if program == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
        missing = [a for a in args if a not in targets]
        return f"no make target {missing}" if missing else None
    if program == "tensorboard":
        return None if importlib.util.find_spec("tensorboard") else "tensorboard is not installed"
    if program == "pytest":
        return None
    file = ROOT / program if program.endswith(".py") else _module_file(program)
    if file is None or not file.is_file():
        return f"{program}: no such file or module"
    declared = set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", file.read_text()))
    unknown = [a.split("=", 1)[0] for a in args if a.startswith("--") and a.split("=", 1)[0] not in declared]
    return f"{program} has no flag(s) {unknown}" if unknown else None


def main(argv: list[str]) -> int:
    readme = Path(argv[1]) if len(argv) > 1 else ROOT / "README.md"
    commands = extract(readme.read_text())
    broken = [(command, problem) for command in commands if (problem := check(command))]
    for command, problem in broken:
        print(f"{readme.name}:{command.line}: {command}: {problem}")
    print(f"{len(commands)} commands checked, {len(broken)} broken", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv))
