"""Experiment sweeps on Optuna: every trial a ``train.py`` run in its own workdir; kill-safe, resumable, and
shareable between machines through one database.

A config file defines ``get_sweep(arg=None)`` next to ``get_config(arg=None)`` (``arg`` is the same ``path:arg``
variant) and returns a dict, either a **grid** (every combination, each run once)::

    {"metric": "accuracy", "direction": "maximize",
     "grid": {"optimizer.learning_rate": [0.01, 0.05, 0.25], "model.width": [16, 32, 64]}}

or a **search space** (a random or TPE search of ``num_trials`` parameter sets)::

    {"metric": "loss", "direction": "minimize", "num_trials": 20, "sampler": "tpe",
     "space": {"optimizer.learning_rate": ("log_uniform", 1e-3, 1.0),
               "optimizer.weight_decay": ("uniform", 0.0, 1e-3),
               "model.width": ("int", 8, 64),
               "optimizer.name": ("choice", ["sgd", "adam"])}}

- ``metric``: an eval metric train.py writes to metrics.jsonl (``accuracy`` or ``loss``), read from the final
  evaluation of each trial; ``direction``: ``maximize`` or ``minimize``.
- ``grid``: config key -> non-empty list of values (str, int, float, bool; each must fit the config field).
  The points are queued in an order shuffled with the seed; ``num_trials`` (default: the grid size) runs the first
  ones, and a rerun with a larger ``--num_trials`` queues more.
- ``space``: config key -> ``("uniform", low, high)``, ``("log_uniform", low, high)``, ``("int", low, high)``
  (bounds included) or ``("choice", [values])``; ``sampler``: ``tpe`` (default) or ``random``; ``num_trials``
  here or ``--num_trials``.
- ``seed`` (default: the config's ``seed``) orders the grid and seeds the sampler: trial *n* draws from (seed, n).

Modules: ``definition`` (the format, checked where it enters), ``study`` (storage, heartbeats, grid queue, stale
trials), ``trial`` (one train.py run), ``runner`` (worker threads), ``summary`` (summary.md/.csv/.png),
``command`` (what ``sweep.py`` does).
"""
