"""Convolution ablation: a CIFAR ResNet-8 (one basic block per stage, 16/32/64 channels, 75,002 parameters) on
Fashion-MNIST, its six stage convolutions swapped by ``model.conv``; one short run per kind.

Command:   python train.py --config=configs/ablation_conv.py --workdir=runs/ablation_conv/deformable \
               --config.model.conv=deformable     (standard dilated deformable separable locally_connected tiled fft)
           python benchmarks/ablation_conv.py --seeds 0,1,2   (every kind and seed, then the table)
Hardware:  2 CPU cores, no GPU.
Time:      21 s (dilated) to 153 s (deformable) per run; 28 min for all seven kinds × three seeds.
Result:    78.84% ± 0.55 test accuracy with standard convolutions (seeds 0-2); locally connected 81.34% ± 0.35,
           separable 74.78% ± 0.37, the others within a standard deviation of standard; README "Convolution
           ablation" has accuracy, parameters, MACs and step time per kind.
Variant:   --config=configs/ablation_conv.py:runlocal  (2 steps; used by the tests)
Sweep:     python sweep.py --config=configs/ablation_conv.py --workdir=runs/ablation_sweep   (get_sweep below: every
           conv kind × seeds 0, 1, 2 as 21 train.py runs, with summary.md/.csv/.png; benchmarks/ablation_conv.py
           adds parameters, MACs and step time)

The images are read from ``dataset.manual_dir``, by default the repository's ``../shared/data/fashion_mnist``, and
prepared once in ``dataset.data_dir``. A run is short, 200 steps of 64 (12,800 of the 60,000 training images), so
that each kind trains in seconds to minutes on 2 CPU cores: it ranks how fast each kind learns, not the best
accuracy each can reach.
"""

import os

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_MNIST_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "fashion_mnist"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(dataset="fashion_mnist", model="cifar_resnet20")
    config.dataset.manual_dir = FASHION_MNIST_DIR
    config.dataset.train_preprocess = "decode|flip_lr|normalize"
    config.model.stage_sizes = (1, 1, 1)  # depth 6n + 2 = 8
    config.model.conv = "standard"
    config.schedule.warmup_steps = 20
    config.batch_size = 64
    config.eval_batch_size = 500
    config.num_steps = 200
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    config.log_every_steps = 20
    config.checkpoint.max_to_keep = 1

    if RUNLOCAL in variant_options(arg, __file__):
        runlocal(config, steps=2)
        config.schedule.warmup_steps = 0
        config.batch_size = 16
    return config


def get_sweep(arg: str | None = None) -> dict:
    """The ablation as a sweep: every convolution kind, three seeds each."""
    from cnn.layers import CONV_TYPES

    variant_options(arg, __file__)
    return {"metric": "accuracy", "direction": "maximize",
            "grid": {"model.conv": sorted(set(CONV_TYPES.names()) - {"acs"}), "seed": [0, 1, 2]}}  # acs: 3D only

