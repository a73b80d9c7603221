"""GCN (Kipf & Welling 2017) on Cora, Planetoid split: node classification, full batch (one step is one epoch).

Command:   python train.py --config=configs/cora_gcn.py --workdir=runs/cora_gcn
Hardware:  2 CPU cores, no GPU.
Time:      see README "Results" (200 steps of the whole graph).
Result:    test accuracy on the 1,000 test nodes: README "Results" (Kipf & Welling: 81.5%).
Variant:   --config=configs/cora_gcn.py:runlocal  (10 steps; used by the tests)

The recipe of the paper: two layers of 16 hidden units, dropout 0.5, Adam with learning rate 0.01, 200 epochs,
row-normalized features, L2 weight decay 5e-4. Kipf & Welling decay the first layer only; here every kernel is
decayed, and there is no early stopping yet (evaluation on the validation nodes every 10 epochs).
The graph is read from ``../shared/data/planetoid`` through the TFDS builder ``planetoid``.
"""

import os

import ml_collections

from cnn.config_defaults import base_config, runlocal, variant_options

PLANETOID_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                                              "data", "planetoid"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = variant_options(arg, __file__)
    config = base_config(dataset="cora", model="gcn")
    config.task.name = "node_classification"
    config.dataset.manual_dir = PLANETOID_DIR
    config.dataset.eval_split = "validation"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 0.01
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "constant"
    config.num_steps = 200  # one step is one epoch: the whole graph
    config.eval_every_steps = 10
    config.checkpoint_every_steps = 50
    config.log_every_steps = 10

    if "runlocal" in options:
        runlocal(config, steps=10)
    return config
