"""GCN and ChebNet (Kipf & Welling 2017) on Cora and CiteSeer, Planetoid split: node classification, full batch
(one step is one epoch).

Command:   python train.py --config=configs/planetoid.py:cora,gcn --workdir=runs/cora_gcn
           python sweep.py --config=configs/planetoid.py:cora,gcn --workdir=runs/sweep_cora_gcn   (10 seeds)
Hardware:  2 CPU cores, no GPU.
Time:      see README "Results" (at most 200 steps of the whole graph).
Result:    test accuracy on the 1,000 test nodes, mean ± sd over 10 seeds: README "Results" (Kipf & Welling, table 2:
           GCN 81.5 / 70.3, Chebyshev K=2 81.2 / 69.6, K=3 79.5 / 69.8 on Cora / CiteSeer).
Variants:  ``path:dataset,model[,runlocal]``: dataset ``cora`` (default) or ``citeseer``; model ``gcn`` (default),
           ``chebnet_k2`` or ``chebnet_k3``; ``runlocal``: 10 steps (the tests).

The recipe of the paper (sec. 5.2 and its code): two layers of 16 hidden units, dropout 0.5, Adam with learning
rate 0.01, row-normalized features, L2 weight decay 5e-4 on the first layer only (``conv1``), at most 200 epochs
with early stopping on the validation loss (window 10: ``cnn/train/early_stopping.py``), evaluated every epoch on
the 500 validation nodes. The final state, the one training stopped at, is evaluated once on the 1,000 test nodes
(``dataset.test_split``: the ``test`` record of metrics.jsonl, ``test_accuracy`` in a sweep). The graph is read from
``../shared/data/planetoid`` through the TFDS builder ``planetoid``.
"""

import os

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options

PLANETOID_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                                              "data", "planetoid"))
DATASETS = ("cora", "citeseer")
MODELS = ("gcn", "chebnet_k2", "chebnet_k3")


def _choice(options: set[str], choices: tuple[str, ...], kind: str) -> str:
    chosen = options & set(choices)
    if len(chosen) > 1:
        raise ValueError(f"configs/planetoid.py: several {kind}s {sorted(chosen)}; give one of {list(choices)}")
    return chosen.pop() if chosen else choices[0]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = variant_options(arg, __file__, (RUNLOCAL, *DATASETS, *MODELS))
    config = base_config(dataset=_choice(options, DATASETS, "dataset"), model=_choice(options, MODELS, "model"))
    config.task.name = "node_classification"
    config.dataset.manual_dir = PLANETOID_DIR
    config.dataset.eval_split = "validation"
    config.dataset.test_split = "test"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 0.01
    config.optimizer.weight_decay = 5e-4
    config.optimizer.weight_decay_paths = ("conv1",)
    config.schedule.name = "constant"
    config.num_steps = 200  # one step is one epoch: the whole graph
    config.eval_every_steps = 1  # the validation loss every epoch, for early stopping
    config.early_stopping.metric = "loss"
    config.early_stopping.window = 10
    config.early_stopping.mode = "min"
    config.checkpoint_every_steps = 50
    config.log_every_steps = 10

    if RUNLOCAL in options:
        runlocal(config, steps=10)
    return config


def get_sweep(arg: str | None = None) -> dict:
    """Ten seeds: the mean ± sd of the test accuracy, as the paper reports its results."""
    return {"metric": "test_accuracy", "direction": "maximize", "grid": {"seed": list(range(10))}}
