"""The sweep definition: what a config file's ``get_sweep(arg)`` returns, checked where it enters.

Every mistake is a :class:`ConfigError` naming the entry (``get_sweep()["grid"]["model.width"]``) and what was
expected, before any trial starts: an unknown config key, a value the config field cannot hold, an empty grid, a
bad distribution, a metric the run's task does not report (``cnn.tasks``), a bad direction or sampler.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

import ml_collections
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from cnn.errors import ConfigError, UserError
from cnn.tasks import metric_directions
from cnn.train.config import load_config_module

DIRECTIONS = ("maximize", "minimize")
SAMPLERS = ("random", "tpe")
DISTRIBUTIONS = ("uniform", "log_uniform", "int", "choice")
FIELDS = ("metric", "direction", "grid", "space", "num_trials", "sampler", "seed")

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: which config keys vary over what, and what is measured."""

    metric: str
    direction: str
    eval_metrics: tuple[str, ...]  # what the task's evaluations write to metrics.jsonl (the summary's columns)
    distributions: dict[str, BaseDistribution]  # swept config key -> its values, in the order given
    grid: dict[str, list[Scalar]] | None  # the grid's values per key; None for a random or TPE search
    num_trials: int
    sampler: str  # "grid", "random" or "tpe"
    seed: int

    @property
    def keys(self) -> list[str]:
        return list(self.distributions)

    @property
    def is_grid(self) -> bool:
        return self.grid is not None

    def grid_points(self) -> list[dict[str, Scalar]]:
        """The first ``num_trials`` points of the grid, in an order shuffled with the seed (a partial grid then
        covers every key's range, not only the last key's)."""
        assert self.grid is not None
        points = [dict(zip(self.grid, values, strict=True)) for values in itertools.product(*self.grid.values())]
        random.Random(self.seed).shuffle(points)
        return points[: self.num_trials]

    def log_scale(self, key: str) -> bool:
        """Whether ``key``'s values are best shown on a log axis."""
        distribution = self.distributions[key]
        if isinstance(distribution, FloatDistribution | IntDistribution):
            return distribution.log
        numbers = [v for v in distribution.choices if isinstance(v, int | float) and not isinstance(v, bool)]
        return len(numbers) == len(distribution.choices) and min(numbers) > 0 and max(numbers) >= 10 * min(numbers)

    def identity(self) -> dict[str, Any]:
        """What must match for two commands to be the same sweep (``num_trials`` may grow between runs)."""
        return {"metric": self.metric, "direction": self.direction, "sampler": self.sampler, "seed": self.seed,
                "grid": self.grid,
                "space": None if self.is_grid else {k: _describe(d) for k, d in self.distributions.items()}}


def load_sweep(config_spec: str) -> dict:
    """``path[:arg]`` (as ``--config`` takes it) -> ``get_sweep(arg)`` of that file, unchecked."""
    module, arg = load_config_module(config_spec)
    path = module.__file__
    if not hasattr(module, "get_sweep"):
        raise UserError(f"{path} defines no get_sweep(); add one next to get_config() (format: see cnn/sweep)")
    try:
        raw = module.get_sweep(arg)
    except ValueError as error:
        raise ConfigError(f"{path}: get_sweep({arg!r}): {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: get_sweep() must return a dict, got {type(raw).__name__}")
    return raw


def parse_sweep(raw: dict, config: ml_collections.ConfigDict, num_trials: int | None = None,
                overridden: tuple[str, ...] = ()) -> Sweep:
    """Check ``raw`` (what ``get_sweep`` returned) against ``config``; ``num_trials`` (the flag) replaces the
    definition's; ``overridden`` are the keys given as ``--config.key=value`` on the command line."""
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ConfigError(f"get_sweep(): unknown entry {unknown[0]!r}; expected some of {list(FIELDS)}")
    metric = raw.get("metric")
    eval_metrics = tuple(metric_directions(config.task.name))
    if config.dataset.get("test_split"):  # the final state on it, as train.py writes it: test_<metric>
        eval_metrics += tuple(f"test_{name}" for name in eval_metrics)
    if metric not in eval_metrics:
        hint = " (test_<metric> needs config.dataset.test_split)" if str(metric).startswith("test_") else ""
        raise ConfigError(f"get_sweep()['metric'] must be a metric task {config.task.name!r} reports, one of "
                          f"{list(eval_metrics)}; got {metric!r}{hint}")
    direction = raw.get("direction")
    if direction not in DIRECTIONS:
        raise ConfigError(f"get_sweep()['direction'] must be one of {list(DIRECTIONS)}, got {direction!r}")
    seed = raw.get("seed", config.seed)
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"get_sweep()['seed'] must be a non-negative integer, got {seed!r}")
    if ("grid" in raw) == ("space" in raw):
        raise ConfigError("get_sweep() must have exactly one of 'grid' (every combination) and 'space' "
                          "(a random or TPE search)")
    checker = _ConfigChecker(config)
    section = "grid" if "grid" in raw else "space"
    entries = raw[section]
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"get_sweep()[{section!r}] must be a non-empty dict of config key -> values")
    for key in entries:
        checker.check_key(key, f"get_sweep()[{section!r}]")
        if key in overridden:
            raise ConfigError(f"--config.{key} is swept by get_sweep()[{section!r}]; remove the override")

    if section == "grid":
        grid = {key: _grid_values(checker, key, values) for key, values in entries.items()}
        distributions = {key: CategoricalDistribution(values) for key, values in grid.items()}
        size = math.prod(len(values) for values in grid.values())
        if raw.get("sampler", "grid") != "grid":
            raise ConfigError(f"get_sweep()['sampler'] is {raw['sampler']!r}, but a grid runs every point "
                              "(leave 'sampler' out, or use 'space' for a search)")
        trials = _num_trials(num_trials if num_trials is not None else raw.get("num_trials", size))
        if trials > size:
            raise ConfigError(f"num_trials={trials} is more than the grid's {size} points")
        return Sweep(metric, direction, eval_metrics, distributions, grid, trials, "grid", seed)

    distributions = {key: _distribution(checker, key, spec) for key, spec in entries.items()}
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(f"get_sweep()['sampler'] must be one of {list(SAMPLERS)}, got {sampler!r}")
    if num_trials is None and "num_trials" not in raw:
        raise ConfigError("a search ('space') needs get_sweep()['num_trials'] or --num_trials")
    trials = _num_trials(num_trials if num_trials is not None else raw["num_trials"])
    return Sweep(metric, direction, eval_metrics, distributions, None, trials, sampler, seed)


class _ConfigChecker:
    """Checks swept keys and values against the config the trials start from."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.scratch = copy.deepcopy(config)  # assignments here run ml_collections' own type checks

    def check_key(self, key: str, where: str) -> None:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be dotted config keys like 'optimizer.learning_rate', got {key!r}")
        node, parts = self.config, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                parent = "config" + "".join(f".{p}" for p in parts[:i])
                has = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else "no keys"
                raise ConfigError(f"{where}: no such config key {key!r} ({parent} has {has})")
            node = node[part]
        if isinstance(node, ml_collections.ConfigDict):
            raise ConfigError(f"{where}: config.{key} is a group of keys, not a value; sweep one of {sorted(node)}")

    def check_value(self, key: str, value: Any, where: str) -> None:
        if not isinstance(value, Scalar):
            raise ConfigError(f"{where}: {value!r} is not a str, int, float or bool")
        *parents, leaf = key.split(".")
        node = self.scratch
        for part in parents:
            node = node[part]
        current = node[leaf]
        try:
            node[leaf] = value
        except TypeError as error:
            raise ConfigError(f"{where}: {value!r} does not fit config.{key} (a {type(current).__name__})") from error


def _grid_values(checker: _ConfigChecker, key: str, values: Any) -> list[Scalar]:
    where = f"get_sweep()['grid'][{key!r}]"
    if not isinstance(values, list | tuple) or not values:
        raise ConfigError(f"{where} must be a non-empty list of values, got {values!r}")
    for value in values:
        checker.check_value(key, value, where)
    if len({(type(v), v) for v in values}) < len(values):
        raise ConfigError(f"{where} repeats a value: {list(values)}")
    return list(values)


def _distribution(checker: _ConfigChecker, key: str, spec: Any) -> BaseDistribution:
    where = f"get_sweep()['space'][{key!r}]"
    usage = ("expected ('uniform', low, high), ('log_uniform', low, high), ('int', low, high) or "
             "('choice', [values])")
    if not isinstance(spec, list | tuple) or not spec or spec[0] not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: {usage}; got {spec!r}")
    kind, *args = spec
    if kind == "choice":
        if len(args) != 1:
            raise ConfigError(f"{where}: {usage}; got {spec!r}")
        return CategoricalDistribution(_grid_values(checker, key, args[0]))
    if len(args) != 2:
        raise ConfigError(f"{where}: {kind!r} takes (low, high); got {spec!r}")
    low, high = args
    if kind == "int":
        if not (_is_int(low) and _is_int(high)):
            raise ConfigError(f"{where}: 'int' bounds must be integers, got {low!r}, {high!r}")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in args):
        raise ConfigError(f"{where}: {kind!r} bounds must be finite numbers, got {low!r}, {high!r}")
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got {low!r}, {high!r}")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: 'log_uniform' needs low > 0, got {low!r}")
    if kind == "int":
        checker.check_value(key, low, where)
        return IntDistribution(low, high)
    checker.check_value(key, float(low), where)
    return FloatDistribution(float(low), float(high), log=kind == "log_uniform")


def _describe(distribution: BaseDistribution) -> list:
    if isinstance(distribution, CategoricalDistribution):
        return ["choice", list(distribution.choices)]
    if isinstance(distribution, IntDistribution):
        return ["int", distribution.low, distribution.high]
    return ["log_uniform" if distribution.log else "uniform", distribution.low, distribution.high]


def _num_trials(value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"num_trials must be a positive integer, got {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
