"""Segmentation of real MNIST digits pasted on 64×64 canvases (2–3 digits of 22–34 px each, never overlapping; a
crowded canvas holds fewer): a class per pixel
(background or the digit's class, 11 classes), with a small padded U-Net (``unet_padded``, width 16, depth 3).

Command:   python train.py --config=configs/digits_segmentation.py --workdir=runs/digits_seg
Hardware:  2 CPU cores, no GPU.
Time:      not yet run in full here (1,250 steps; about 1.3 s a step on 2 shared CPU cores).
Result:    not yet measured: a 300-step run on 1,000 canvases reached mean IoU 0.17 on 100 test canvases (still
           learning); the full run's mean IoU on the 500 test canvases (MNIST's test digits only) goes in README
           "Results" when it is made.
Variant:   --config=configs/digits_segmentation.py:runlocal  (12 steps of a narrow U-Net; used by the tests)

The canvases are generated from ``../shared/data/mnist`` (``cnn/data/canvas.py``): train canvases from MNIST's
train digits, test canvases from its test digits.
"""

import os

import ml_collections

from cnn.config_defaults import base_config, runlocal, variant_options

MNIST_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                          "mnist"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = variant_options(arg, __file__)
    config = base_config(dataset="digit_canvases", model="unet_padded")
    config.task.name = "segmentation"
    config.dataset.manual_dir = MNIST_DIR
    config.dataset.image_size = (64, 64)
    config.dataset.generator.update({"train_examples": 4000, "test_examples": 500, "num_digits": (2, 3),
                                     "scale": (0.8, 1.2)})
    config.dataset.train_preprocess = "decode|flip_lr|normalize"
    config.dataset.eval_preprocess = "decode|normalize"
    config.model.width = 16
    config.model.depth = 3
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 0.0
    config.schedule.warmup_steps = 50
    config.batch_size = 32
    config.eval_batch_size = 100
    config.num_epochs = 10.0
    config.eval_every_epochs = 5.0
    config.checkpoint_every_epochs = 5.0
    config.checkpoint.best_metric = "mean_iou"
    config.log_every_steps = 25

    if "runlocal" in options:
        runlocal(config, steps=12)
        config.dataset.generator.update({"train_examples": 64, "test_examples": 24})
        config.model.width = 4
        config.batch_size = 8
        config.eval_batch_size = 10  # 24 = 2 × 10 + 4: the last batch is partial
    return config
