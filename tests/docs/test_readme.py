"""Every command README.md shows is checked by tools/check_readme.py (flags parsed by each CLI's own definitions,
nothing run), and the checker reports each kind of broken command it claims to catch."""

from __future__ import annotations

import subprocess
import sys

from tests.harness.conftest import ROOT

BROKEN = """
```bash
python train.py --config=configs/nope.py --workdir=w                            # 3
python train.py --config=configs/default.py:bogus --workdir=w                   # 4
python train.py --config=configs/default.py --workdir=w --config.model.widht=3  # 5
python eval.py --workdir=w --stepp=3                                            # 6
python sweep.py --config=configs/mnist_lenet5.py --workdir=w                    # 7
make demoo                                                                      # 8
python -m cnn.data.prepare mnist --manual=x                                     # 9
python eval.py --workdir=w --step=best                                          # 10: fine
```

| run | `python train.py --config=configs/default.py --workdir=w` | fine; `... --config=configs/default.py:runlocal` |
| run | `... --config.optimizer.learning_rate=fast ...` | 14: a float that is not one |
| see `benchmarks/nope.py` and `python benchmarks/nope.py --seeds 1` | 15 |
"""


def _check(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "check_readme.py"), str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_every_readme_command_checks():
    result = _check(ROOT / "README.md")
    assert result.returncode == 0, result.stdout
    assert result.stderr.endswith(" broken\n") and int(result.stderr.split()[0]) >= 80  # the commands were found


def test_the_checker_reports_each_kind_of_broken_command(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(BROKEN)
    result = _check(readme)
    reported = {int(line.split(":")[1]): line for line in result.stdout.splitlines()}
    assert result.returncode == 1 and sorted(reported) == [3, 4, 5, 6, 7, 8, 9, 14, 15], result.stdout
    assert "configs/nope.py does not exist" in reported[3]
    assert "unknown variant 'bogus'" in reported[4]
    assert "widht" in reported[5] and "Unknown command line flag 'stepp'" in reported[6]
    assert "configs/mnist_lenet5.py has no get_sweep()" in reported[7]
    assert "no make target ['demoo']" in reported[8] and "has no flag(s) ['--manual']" in reported[9]
    assert "learning_rate" in reported[14] and "fast" in reported[14]
    assert "benchmarks/nope.py does not exist" in reported[15]
    assert result.stderr == "12 commands checked, 9 broken\n"
