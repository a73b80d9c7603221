"""MNIST-1D with the paper's small 1D CNN (Greydanus & Kobak 2024: CNN 94%, GRU 91%, MLP 68%, logistic regression
32% test accuracy on the 1,000 test sequences).

Command:   python train.py --config=configs/mnist1d_cnn.py --workdir=runs/mnist1d_cnn
Hardware:  2 CPU cores, no GPU.
Time:      see README "Results" (6,000 steps of 100 sequences).
Result:    test accuracy on the 1,000 test sequences: README "Results".
Variant:   --config=configs/mnist1d_cnn.py:runlocal  (12 steps; used by the tests)

The recipe of the paper's code (``get_model_args`` and ``train_model`` in github.com/greydanus/mnist1d): Adam with
learning rate 1e-2 and no weight decay, batches of 100, 6,000 steps (150 epochs of the 4,000 training sequences),
a constant learning rate, the sequences as they are (no augmentation, no normalization: they are already about
zero-mean, unit-variance), evaluation every 250 steps. The data are read from ``../shared/data/mnist1d`` through the
TFDS builder ``mnist1d``.
"""

import os

import ml_collections

from cnn.config_defaults import base_config, runlocal, variant_options

MNIST1D_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                            "mnist1d"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = variant_options(arg, __file__)
    config = base_config(dataset="mnist1d", model="mnist1d_cnn")
    config.dataset.manual_dir = MNIST1D_DIR
    config.dataset.train_preprocess = "decode"  # float32 already; scale 1.0
    config.dataset.eval_preprocess = "decode"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-2
    config.optimizer.weight_decay = 0.0
    config.schedule.name = "constant"
    config.batch_size = 100
    config.eval_batch_size = 500
    config.num_steps = 6000
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 1000
    config.log_every_steps = 250

    if "runlocal" in options:
        runlocal(config, steps=12)
    return config
