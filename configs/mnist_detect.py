"""Sliding-window digit detection: LeNet-5 trained on 32×32 window crops (the 10 digits and a background class) of
MNIST's train digits, evaluated as a detector on canvases of MNIST's test digits (task ``detection``).

Command:   python train.py --config=configs/mnist_detect.py --workdir=runs/mnist_detect
           python eval.py --workdir=runs/mnist_detect          # AP@0.5 per digit and mAP on the test canvases
           python detect.py --workdir=runs/mnist_detect --images=a.png --out=detections
Hardware:  2 CPU cores, no GPU.
Time:      see README "Results".
Result:    mAP@0.5 on the 200 test canvases (128×128, 2-5 digits of 21-62 px, clutter): README "Results".
Variant:   --config=configs/mnist_detect.py:runlocal  (a few steps on few crops and canvases; used by the tests)

The crops and canvases are generated from ``../shared/data/mnist`` (``cnn/data/windows.py``, dataset
``digit_windows``): train crops from MNIST's train digits; the canvases (split ``canvases``) from its test digits
only. The detector scans a pyramid of 3 scales (1, 1/√2, 1/2), so that digits up to twice the training size fit a
window; windows whose digit score reaches 0.5 become boxes, suppressed per class at IoU 0.3.
"""

import os

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options

MNIST_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                          "mnist"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(dataset="digit_windows", model="lenet5")
    config.task.name = "detection"
    config.task.scales = (1.0, 2**-0.5, 0.5)  # cnn.data.windows.PYRAMID
    config.task.score_threshold = 0.5
    config.task.nms_iou = 0.3  # windows 8 px apart on a 20 px digit: IoU 0.43, a duplicate at 0.5 (mAP 0.52)
    config.dataset.manual_dir = MNIST_DIR
    config.dataset.eval_split = "canvases"
    config.dataset.generator = ml_collections.ConfigDict({"train_examples": 40_000, "test_examples": 2_000,
                                                          "canvases": 200, "canvas_size": (128, 128), "seed": 0})
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 0.0
    config.schedule.warmup_steps = 100
    config.batch_size = 128
    config.eval_batch_size = 50
    config.num_steps = 3000
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.checkpoint.best_metric = "map50"
    config.log_every_steps = 100

    if RUNLOCAL in variant_options(arg, __file__):
        runlocal(config, steps=6)
        config.dataset.generator.update({"train_examples": 256, "test_examples": 32, "canvases": 5,
                                         "canvas_size": (64, 64)})
        config.batch_size = 32
        config.eval_batch_size = 4  # 5 = 4 + 1: the last batch of each level is partial
    return config
