"""The sweep definition: parsing, every validation error, grid order, and the flags trials get."""

from __future__ import annotations

import itertools

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from cnn.errors import ConfigError, UserError
from cnn.sweep.definition import load_sweep, parse_sweep
from cnn.sweep.trial import override_flag, trial_dir_name
from cnn.train.config import load_config_file
from tests.harness.conftest import ROOT

DEFAULT = str(ROOT / "configs" / "default.py")
GRID = {"metric": "accuracy", "direction": "maximize",
        "grid": {"optimizer.learning_rate": [0.01, 0.1], "model.width": [4, 8, 16]}}
SPACE = {"metric": "loss", "direction": "minimize", "num_trials": 5, "sampler": "random",
         "space": {"optimizer.learning_rate": ("log_uniform", 1e-3, 1.0), "model.width": ("int", 4, 16),
                   "model.dropout_rate": ("uniform", 0.0, 0.5), "optimizer.name": ("choice", ["sgd", "adam"])}}


@pytest.fixture(scope="module")
def config() -> ml_collections.ConfigDict:
    return load_config_file(f"{DEFAULT}:runlocal")


def with_entries(base: dict, **entries) -> dict:
    return {**base, **entries}


def test_default_config_sweeps_parse(config):
    full = parse_sweep(load_sweep(DEFAULT), load_config_file(DEFAULT))
    assert full.keys == ["optimizer.learning_rate", "model.width"] and full.num_trials == 9
    tiny = parse_sweep(load_sweep(f"{DEFAULT}:runlocal"), config)
    assert tiny.num_trials == 4 and tiny.sampler == "grid" and tiny.seed == config.seed == 0


def test_grid_points_are_the_product(config):
    sweep = parse_sweep(GRID, config)
    points = sweep.grid_points()
    expected = {(lr, w) for lr in (0.01, 0.1) for w in (4, 8, 16)}
    assert len(points) == 6 and {(p["optimizer.learning_rate"], p["model.width"]) for p in points} == expected
    assert parse_sweep(GRID, config).grid_points() == points  # the same order from the same seed
    reseeded = parse_sweep(with_entries(GRID, seed=1), config).grid_points()
    assert reseeded != points and sorted(map(str, reseeded)) == sorted(map(str, points))


def test_partial_grid_takes_distinct_points(config):
    sweep = parse_sweep(GRID, config, num_trials=4)
    points = [tuple(p.values()) for p in sweep.grid_points()]
    assert len(set(points)) == 4 and set(points) <= set(itertools.product([0.01, 0.1], [4, 8, 16]))


def test_space_distributions(config):
    sweep = parse_sweep(SPACE, config)
    assert sweep.distributions == {
        "optimizer.learning_rate": FloatDistribution(1e-3, 1.0, log=True), "model.width": IntDistribution(4, 16),
        "model.dropout_rate": FloatDistribution(0.0, 0.5), "optimizer.name": CategoricalDistribution(["sgd", "adam"])}
    assert (sweep.num_trials, sweep.sampler, sweep.is_grid) == (5, "random", False)
    assert parse_sweep(SPACE, config, num_trials=7).num_trials == 7  # the flag wins
    assert parse_sweep({k: v for k, v in SPACE.items() if k != "sampler"}, config).sampler == "tpe"


BAD_DEFINITIONS = [
    (with_entries(GRID, metrik="accuracy"), "unknown entry 'metrik'"),
    (with_entries(GRID, metric="f1"), "get_sweep()['metric'] must be a metric task 'classification' reports"),
    (with_entries(GRID, direction="up"), "get_sweep()['direction'] must be one of ['maximize', 'minimize']"),
    (with_entries(GRID, seed=-1), "get_sweep()['seed'] must be a non-negative integer"),
    (with_entries(GRID, space=SPACE["space"]), "exactly one of 'grid'"),
    ({"metric": "accuracy", "direction": "maximize"}, "exactly one of 'grid'"),
    (with_entries(GRID, grid={}), "get_sweep()['grid'] must be a non-empty dict"),
    (with_entries(GRID, grid={"model.conv": ["standard", "separable"]}), "no such config key 'model.conv'"),
    (with_entries(GRID, grid={"optimizer.learnin_rate": [0.1]}), "(config.optimizer has ['b1'"),
    (with_entries(GRID, grid={"model": [1]}), "config.model is a group of keys, not a value"),
    (with_entries(GRID, grid={"model.width": []}), "get_sweep()['grid']['model.width'] must be a non-empty list"),
    (with_entries(GRID, grid={"model.width": ["wide"]}), "'wide' does not fit config.model.width (a int)"),
    (with_entries(GRID, grid={"model.width": [4.5]}), "4.5 does not fit config.model.width"),
    (with_entries(GRID, grid={"model.width": [(4, 8)]}), "(4, 8) is not a str, int, float or bool"),
    (with_entries(GRID, grid={"model.width": [4, 4]}), "repeats a value"),
    (with_entries(GRID, sampler="tpe"), "a grid runs every point"),
    (with_entries(GRID, num_trials=7), "num_trials=7 is more than the grid's 6 points"),
    (with_entries(GRID, num_trials=0), "num_trials must be a positive integer"),
    (with_entries(SPACE, space={"model.width": ("normal", 4, 8)}), "expected ('uniform', low, high)"),
    (with_entries(SPACE, space={"model.width": "int"}), "expected ('uniform', low, high)"),
    (with_entries(SPACE, space={"model.width": ("int", 4)}), "'int' takes (low, high)"),
    (with_entries(SPACE, space={"model.width": ("int", 4.5, 8)}), "'int' bounds must be integers"),
    (with_entries(SPACE, space={"model.width": ("uniform", 4.0, 8.0)}), "4.0 does not fit config.model.width"),
    (with_entries(SPACE, space={"optimizer.learning_rate": ("uniform", 1.0, 0.1)}), "low must be below high"),
    (with_entries(SPACE, space={"optimizer.learning_rate": ("log_uniform", 0.0, 1.0)}), "needs low > 0"),
    (with_entries(SPACE, space={"optimizer.learning_rate": ("uniform", 0.0, float("inf"))}), "finite numbers"),
    (with_entries(SPACE, space={"optimizer.name": ("choice", [])}), "must be a non-empty list"),
    (with_entries(SPACE, sampler="cmaes"), "get_sweep()['sampler'] must be one of ['random', 'tpe']"),
    ({k: v for k, v in SPACE.items() if k != "num_trials"}, "needs get_sweep()['num_trials'] or --num_trials"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_DEFINITIONS, ids=[m for _, m in BAD_DEFINITIONS])
def test_bad_definitions_name_the_entry(config, raw, message):
    with pytest.raises(ConfigError) as error:
        parse_sweep(raw, config)
    assert message in str(error.value)


def test_a_swept_key_cannot_also_be_overridden(config):
    with pytest.raises(ConfigError, match=r"--config.model.width is swept by get_sweep\(\)\['grid'\]"):
        parse_sweep(GRID, config, overridden=("model.width",))


def test_load_sweep_errors(tmp_path):
    with pytest.raises(UserError, match="defines no get_sweep"):
        load_sweep(str(ROOT / "configs" / "mnist_lenet5.py"))
    with pytest.raises(ConfigError, match="unknown variant 'tiny'"):
        load_sweep(f"{DEFAULT}:tiny")
    with pytest.raises(UserError, match="does not exist"):
        load_sweep(str(tmp_path / "missing.py"))
    (tmp_path / "listy.py").write_text("def get_sweep(arg=None):\n    return [1]\n")
    with pytest.raises(ConfigError, match="must return a dict, got list"):
        load_sweep(str(tmp_path / "listy.py"))


def test_override_flags_parse_back_through_config_flags():
    """What trials receive on the command line reads back, through the parser train.py uses, as the same values."""
    values = {"rate": 1e-05, "third": 1 / 3, "width": 16, "flag": False, "name": "separable", "big": 1e9}
    config = ml_collections.ConfigDict({"rate": 0.1, "third": 0.5, "width": 8, "flag": True, "name": "standard",
                                        "big": 1.0})
    argv = ["prog", *(override_flag(key, value) for key, value in values.items())]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    parsed = flag_values.config
    assert {key: parsed[key] for key in values} == values
    assert all(type(parsed[key]) is type(value) for key, value in values.items())


def test_trial_dir_names():
    assert trial_dir_name(3, {"optimizer.learning_rate": 0.1, "model.conv": "separable"}) == \
        "0003_learning_rate=0.1_conv=separable"
    assert trial_dir_name(12, {"a.path": "x/y z", "b": 1 / 3}) == "0012_path=x-y-z_b=0.3333"


def test_the_ablation_sweep_covers_every_conv_kind_and_seed():
    config = load_config_file(str(ROOT / "configs" / "ablation_conv.py"))
    sweep = parse_sweep(load_sweep(str(ROOT / "configs" / "ablation_conv.py")), config)
    kinds = ["deformable", "dilated", "fft", "locally_connected", "separable", "standard", "tiled"]  # the list
    expected = {(kind, seed) for kind in kinds for seed in (0, 1, 2)}
    assert {(p["model.conv"], p["seed"]) for p in sweep.grid_points()} == expected and sweep.num_trials == 21

