"""CIFAR ResNets on CIFAR-10 with the recipe of He et al. 2016 (sec. 4.2, "Deep Residual Learning for Image
Recognition"): SGD with momentum 0.9, learning rate 0.1 divided by 10 at 32k and 48k steps, 64k steps of batch 128
(164 epochs of the 50,000 training images), weight decay 1e-4, 4-pixel padded random crops and horizontal flips.

Command:   python train.py --config=configs/cifar10_resnet.py --workdir=runs/cifar10_resnet20
           python train.py --config=configs/cifar10_resnet.py:56 --workdir=runs/cifar10_resnet56  (depth 20..110)
           (CIFAR-10 is not in ../shared/data: pass --config.dataset.manual_dir=FOLDER holding
           cifar-10-binary.tar.gz, or --config.dataset.download=true on a machine with network)
Hardware:  one GPU; not run on this project's 2-CPU machines (no CIFAR-10 offline).
Time:      not measured here.
Expected:  test error of the paper's table 6: 8.75% (depth 20), 7.51% (32), 7.17% (44), 6.97% (56), 6.43% (110).
           The paper trains on 45k images and holds out 5k; this config trains on all 50k and reports the test set.
Variant:   the argument is a depth (20, 32, 44, 56, 110), ``runlocal`` (a few steps on
           ``tfds.testing.mock_data``; used by the tests), or both: ``:56,runlocal``.

For depth 110 the paper warms up at learning rate 0.01 for about 400 steps; here: ``--config.schedule.warmup_steps=400``
(a linear warmup to 0.1).
"""

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options

DEPTHS = (20, 32, 44, 56, 110)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = variant_options(arg, __file__, [*map(str, DEPTHS), RUNLOCAL])
    depths = options - {RUNLOCAL}
    if len(depths) > 1:
        raise ValueError(f"configs/cifar10_resnet.py: unknown variant {arg!r}; one depth, not {sorted(depths)}")
    depth = int(depths.pop()) if depths else 20

    config = base_config(dataset="cifar10", model=f"cifar_resnet{depth}")
    config.dataset.train_preprocess = "decode|random_crop(32, pad=4)|flip_lr|normalize('cifar10')"
    config.dataset.eval_preprocess = "decode|normalize('cifar10')"
    config.model.conv = "standard"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "step"
    config.schedule.boundaries = (0.5, 0.75)  # 32k and 48k of 64k steps
    config.schedule.decay_factor = 0.1
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.num_steps = 64_000
    config.eval_every_epochs = 10.0
    config.checkpoint_every_epochs = 10.0
    config.log_every_steps = 100

    if RUNLOCAL in options:
        runlocal(config, steps=2)
        config.dataset.mock_examples = 16
        config.batch_size = 8
        config.eval_batch_size = 16
    return config
