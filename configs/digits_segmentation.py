"""Segmentation of real MNIST digits pasted on 64×64 canvases (2–3 digits of 22–34 px each, never overlapping; a
crowded canvas holds fewer): a class per pixel
(background or the digit's class, 11 classes), with a padded U-Net (``unet_padded``, width 16, depth 3, BatchNorm,
483,323 parameters), loss cross-entropy + soft Dice (``task.loss="cross_entropy+dice"``), Adam 3e-3 with 50 warmup
steps and a cosine schedule, 750 steps of 16 canvases.

Command:   python train.py --config=configs/digits_segmentation.py --workdir=runs/digits_seg
Hardware:  2 CPU cores (AMD EPYC) shared with other jobs (load average 5–7), no GPU, jax 0.10.2.
Time:      10 min 08 s (training 9 min 25 s: 0.9–2 steps/s, slower while a 4-min trial shared the cores; the
           rest start-up and 2 evaluations).
Result:    mean IoU **0.8075** on the 500 test canvases (step 375: 0.4301), pixel accuracy 0.9931, mean Dice 0.8881;
           IoU background 0.997, digits 0–9: 0.901, 0.891, 0.788, 0.859, 0.857, 0.562, 0.816, 0.742, 0.859, 0.610.
           Predicting all background: mean IoU 0.0866.
Why:       the former recipe (width 8, cross-entropy, 900 steps of 32) reached 0.1434: it found the ink in ~100
           steps, but a narrow net learned the digit's class of an ink pixel late, and uncertain ink went to the
           background majority under argmax. Trials on 32×32 one-digit canvases (the ``tiny`` data, in-process, 300
           test canvases, batch 32, Adam 3e-3 cosine; wall on the shared cores):

           | U-Net, loss                                                    | steps   | mean IoU            | wall    |
           |----------------------------------------------------------------|---------|---------------------|---------|
           | width 8, cross-entropy (3 seeds)                               | 900     | 0.217, 0.241, 0.140 | 2.5–7 m |
           | width 8, ± BN, lr 1e-3–1e-2, bg weight 0.1, depth 4; also 64²   | 200–600 | 0.09–0.12           | 1–5 m   |
           | width 32, cross-entropy                                        | 300     | 0.477 (200: 0.215)  | 7 m     |
           | width 16, cross-entropy + Dice                                 | 300     | 0.495 (200: 0.221)  | 2.6 m   |
           | the same, 3 seeds (the ``tiny`` variant, through the trainer) | 300     | 0.510, 0.667, 0.272 | 1.6–4 m |
           | the same, 3 seeds (the ``tiny`` variant, through the trainer) | 500     | 0.831, 0.908, 0.821 | 6 m     |
           | width 16, cross-entropy + Dice, this config (64², batch 16)    | 750     | 0.8075 (375: 0.430) | 10 m    |

           Capacity was the main lack (width 8 → 16 or 32); the Dice term (each class weighed as much as the
           background) got width 16 as far as width 32 with cross-entropy alone, at a third of the time (a width-16
           cross-entropy-only trial was not run). Halfway through training, BatchNorm's running statistics still lag
           (batch statistics gave 0.42 where the running ones gave 0.22 at step 200); by the end they agree.

           For CI (under a minute: fewer pixels a step, more steps), trials on 24×24 canvases of one 20–22 px digit
           (24²) or on the ``tiny`` data (32²), width 16, cross-entropy + Dice, warmup 10, seed 0 unless said (2–3
           trials at once on the 2 cores shared with other jobs, load 7–14, 1.5–4.5 min each; on an idle machine
           120 steps of 32 at 32² trained in 41 s):

           | data, batch × steps, Adam lr, other                 | mean IoU                    |
           |-----------------------------------------------------|-----------------------------|
           | 32², 16 × 200, lr 3e-3; lr 1e-2; depth 2 (3e-3)     | 0.214; 0.270; 0.191         |
           | 24², 32 × 150, lr 1e-2                              | 0.328                       |
           | 24², 8 × 600, lr 1e-2                               | 0.333                       |
           | 24², 16 × 300, lr 2e-2; width 24 (lr 1e-2)          | 0.393; 0.431                |
           | 24², 16 × 300, lr 1e-2 (``ci``), seeds 0, 1, 2, 3   | 0.383, 0.384, 0.363, 0.664  |
Variant:   --config=configs/digits_segmentation.py:runlocal  (12 steps of a narrow U-Net; used by the tests)
Variant:   ``tiny``: one digit (22–28 px) on each 32×32 canvas, 500 steps of 32, 300 test canvases, evaluated once
           at the end (the slow learned-IoU test in tests/harness/test_segmentation_runs.py).
Variant:   ``ci``: one digit (20–22 px) on each 24×24 canvas, 300 steps of 16, Adam 1e-2, warmup 10, 300 test canvases
           (the CI learned-IoU test there; seeds in the table above and in the test).

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
    options = variant_options(arg, __file__, ("tiny", "ci", RUNLOCAL))
    config = base_config(dataset="digit_canvases", model="unet_padded")
    config.task.name = "segmentation"
    config.dataset.manual_dir = MNIST_DIR
    config.dataset.image_size = (64, 64)
    config.dataset.generator.update({"train_examples": 4000, "test_examples": 500, "num_digits": (2, 3),
                                     "scale": (0.8, 1.2)})
    config.task.loss = "cross_entropy+dice"
    config.model.width = 16
    config.model.depth = 3
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 0.0
    config.schedule.warmup_steps = 50
    config.batch_size = 16
    config.eval_batch_size = 100
    config.num_steps = 750  # 3 epochs of 250 steps
    config.eval_every_steps = 375
    config.checkpoint_every_steps = 375
    config.checkpoint.best_metric = "mean_iou"
    config.log_every_steps = 25

    if "tiny" in options:  # one digit a canvas: what the learned-IoU test trains (tests/harness)
        config.dataset.image_size = (32, 32)
        config.dataset.generator.update({"test_examples": 300, "num_digits": (1, 1), "scale": (0.8, 1.0)})
        config.batch_size = 32  # a digit a canvas: as many digits a step as 16 canvases of 2–3
        config.num_steps = 500
        config.eval_every_steps = config.checkpoint_every_steps = config.num_steps
    if "ci" in options:  # the tiny task, smaller and shorter: the CI learned-IoU test (tests/harness)
        config.dataset.image_size = (24, 24)
        config.dataset.generator.update({"test_examples": 300, "num_digits": (1, 1), "scale": (0.7, 0.8)})
        config.batch_size = 16
        config.optimizer.learning_rate = 1e-2
        config.schedule.warmup_steps = 10
        config.num_steps = 300
        config.eval_every_steps = config.checkpoint_every_steps = config.num_steps
    if RUNLOCAL in options:
        runlocal(config, steps=12)
        config.dataset.generator.update({"train_examples": 64, "test_examples": 24})
        config.model.width = 4
        config.batch_size = 8
        config.eval_batch_size = 10  # 24 = 2 × 10 + 4: the last batch is partial
    return config
