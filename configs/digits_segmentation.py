"""Segmentation of real MNIST digits pasted on 64×64 canvases (2–3 digits of 22–34 px each, never overlapping; a
crowded canvas holds fewer): a class per pixel
(background or the digit's class, 11 classes), with a small padded U-Net (``unet_padded``, width 16, depth 3).

Command:   python train.py --config=configs/digits_segmentation.py --workdir=runs/digits_seg
Hardware:  2 CPU cores (AMD EPYC) shared with other jobs (load average 11–14), no GPU.
Time:      not yet run in full here (1,250 steps; 1.3–2.5 s a step at width 16 depending on the load).
Result:    none yet: no recipe tried reaches a useful mean IoU in the steps these CPUs allow. Measured (in-process
           trials with this model and these canvases, 200 test canvases; ``iou`` of background ~0.95–0.96, digits ~0):
           the U-Net learns ink versus background in ~100 steps, but the digit's class of an ink pixel stays near
           chance (13–20% of the ink pixels it calls digits get the right digit) for 200–600 steps at width 8, with or
           without BatchNorm, Adam 1e-3 / 3e-3 / 1e-2, background weight 1 or 0.1, depth 3 or 4, flax's ``nn.Conv``
           in place of ``standard_conv``, and even on 32×32 canvases of one digit, where a 3-layer CNN classifier of
           the same canvases reaches 89–91% test accuracy in 200 steps. Mean IoU therefore stays at 0.10–0.12 (the
           earlier 300-step width-16 run: 0.17). The mean IoU is computed right: from the confusion matrix summed over
           the whole split, classes absent from both truth and prediction left out (``cnn/tasks/segmentation.py``).
Variant:   --config=configs/digits_segmentation.py:runlocal  (12 steps of a narrow U-Net; used by the tests)
Variant:   ``tiny``: one digit (22–28 px) on each 32×32 canvas, 300 test canvases, evaluated once at the end (the
           slow learned-IoU test in tests/harness/test_segmentation_runs.py).

No ``flip_lr`` in training: a mirrored 2, 3, 4, 7 or 9 is not that digit, but its pixels would keep its class.

The canvases are generated from ``../shared/data/mnist`` (``cnn/data/canvas.py``): train canvases from MNIST's
train digits, test canvases from its test digits.
"""

import os

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options

MNIST_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                          "mnist"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = variant_options(arg, __file__, ("tiny", RUNLOCAL))
    config = base_config(dataset="digit_canvases", model="unet_padded")
    config.task.name = "segmentation"
    config.dataset.manual_dir = MNIST_DIR
    config.dataset.image_size = (64, 64)
    config.dataset.generator.update({"train_examples": 4000, "test_examples": 500, "num_digits": (2, 3),
                                     "scale": (0.8, 1.2)})
    config.model.width = 8
    config.model.depth = 3
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 0.0
    config.schedule.warmup_steps = 50
    config.batch_size = 32
    config.eval_batch_size = 100
    config.num_steps = 900  # 7.2 epochs of 125 steps
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 300
    config.checkpoint.best_metric = "mean_iou"
    config.log_every_steps = 25

    if "tiny" in options:  # one digit a canvas: what the learned-IoU test trains (tests/harness)
        config.dataset.image_size = (32, 32)
        config.dataset.generator.update({"test_examples": 300, "num_digits": (1, 1), "scale": (0.8, 1.0)})
        config.eval_every_steps = config.checkpoint_every_steps = config.num_steps
    if RUNLOCAL in options:
        runlocal(config, steps=12)
        config.dataset.generator.update({"train_examples": 64, "test_examples": 24})
        config.model.width = 4
        config.batch_size = 8
        config.eval_batch_size = 10  # 24 = 2 × 10 + 4: the last batch is partial
    return config
