"""Direction of motion of a real MNIST digit sliding across a canvas (``moving_digits``: clips of 8 frames of 44×44,
4 classes: right, left, down, up): 3D, (2+1)D and per-frame 2D convolutions compared on a label that needs the order
of the frames (``cnn/data/moving_digits.py``: a per-frame 2D network pooled over time cannot beat chance, 25%).

Command:   python train.py --config=configs/moving_digits.py --workdir=runs/moving_r3d                (3D)
           python train.py --config=configs/moving_digits.py:r2plus1d --workdir=runs/moving_r2plus1d  ((2+1)D)
           python train.py --config=configs/moving_digits.py:frames --workdir=runs/moving_frames      (per-frame 2D)
Hardware:  2 CPU cores, no GPU.
Time:      see README "Results" (a few minutes each).
Result:    test accuracy on 500 clips made from MNIST's test digits only: README "Results".
Variant:   runlocal (a few steps on 32 clips; used by the tests), joined by commas, e.g. :frames,runlocal

The networks are ``r3d_18``, ``r2plus1d_18`` and ``fr2d_18`` (Tran et al. 2018) made small so that a CPU trains
them in minutes: one block per stage instead of two and width 8 instead of 64 (stages 8, 16, 32, 64 channels).
Adam 3e-3 with a cosine decay, batches of 32, 4 epochs of 2,000 training clips, no augmentation.
"""

import os

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options

MNIST_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                          "mnist"))
MODELS = {"r3d": "r3d_18", "r2plus1d": "r2plus1d_18", "frames": "fr2d_18"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = variant_options(arg, __file__, (*MODELS, RUNLOCAL))
    chosen = [MODELS[name] for name in MODELS if name in options]
    if len(chosen) > 1:
        raise ValueError(f"configs/moving_digits.py: choose one of {list(MODELS)}, got {arg!r}")
    config = base_config(dataset="moving_digits", model=chosen[0] if chosen else "r3d_18")
    config.dataset.manual_dir = MNIST_DIR
    config.dataset.image_size = (44, 44)  # 28 + 7 frames × 2 pixels of travel
    config.dataset.generator.update({"train_examples": 2000, "test_examples": 500, "frames": 8, "seed": 0})
    config.model.stage_sizes = (1, 1, 1, 1)
    config.model.width = 8
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 0.0
    config.batch_size = 32
    config.eval_batch_size = 100
    config.num_epochs = 4.0
    config.eval_every_epochs = 2.0
    config.checkpoint_every_epochs = 2.0
    config.checkpoint.best_metric = ""  # the result is the last step's, nothing chosen on the test split
    config.log_every_steps = 10

    if RUNLOCAL in options:
        runlocal(config, steps=4)
        config.dataset.generator.update({"train_examples": 32, "test_examples": 24})
        config.model.width = 4
        config.batch_size = 8
        config.eval_batch_size = 10
    return config
