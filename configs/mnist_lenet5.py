"""LeNet-5 on MNIST (LeCun et al. 1998: 0.95% test error without distortions of the training set, 0.8% with them).

Command:   python train.py --config=configs/mnist_lenet5.py --workdir=runs/mnist_lenet5
Hardware:  2 CPU cores, no GPU.
Time:      about 6 minutes (20 epochs of 468 steps); the first run also builds the TFDS dataset (about 15 s).
Result:    0.67% test error (99.33% of the 10,000 test digits); README "Results".
Variant:   --config=configs/mnist_lenet5.py:runlocal  (2 steps; used by the tests)

The digits are read from ``dataset.manual_dir``, by default the repository's ``../shared/data/mnist`` (the four
idx files, checked against their sha256), and prepared once in ``dataset.data_dir``. LeNet-5 wants 32×32 inputs:
the 28×28 digits are padded by 2 on black before ``normalize`` (so the border is background), as in the paper;
training shifts them by up to 2 pixels (``random_crop(32, pad=2)``).
"""

import os

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "mnist"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(dataset="mnist", model="lenet5")
    config.dataset.manual_dir = MNIST_DIR
    config.dataset.train_preprocess = "decode|pad(2)|random_crop(32, pad=2)|normalize"
    config.dataset.eval_preprocess = "decode|pad(2)|normalize"
    config.model.conv = "standard"
    config.optimizer.learning_rate = 0.05
    config.optimizer.weight_decay = 1e-4
    config.schedule.warmup_epochs = 1.0
    config.eval_batch_size = 1000
    config.num_epochs = 20.0
    config.eval_every_epochs = 5.0
    config.checkpoint_every_epochs = 5.0
    config.log_every_steps = 100

    if RUNLOCAL in variant_options(arg, __file__):
        runlocal(config, steps=2)
        config.batch_size = 16
    return config
