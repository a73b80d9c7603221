"""Default experiment: a small CNN on the 8x8 handwritten digits that scikit-learn ships (no download).

Command:   python train.py --config=configs/default.py --workdir=runs/digits
Hardware:  2 CPU cores, no GPU.
Result:    see README "Results" (test accuracy on the fixed 360-image test split, wall time).
Variant:   --config=configs/default.py:runlocal  (a few steps; used by the tests)
"""

import ml_collections

from cnn.data.sources import dataset_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.dataset = dataset_config("digits")

    config.model = ml_collections.ConfigDict()
    config.model.name = "small_cnn"
    config.model.width = 32
    config.model.dropout_rate = 0.1

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "momentum"
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 5e-4
    config.optimizer.grad_clip_norm = 0.0

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 0
    config.schedule.warmup_epochs = 1.0
    config.schedule.end_factor = 0.0
    config.schedule.boundaries = (0.5, 0.75)  # the "step" schedule, as fractions of training
    config.schedule.decay_factor = 0.1

    config.batch_size = 64
    config.eval_batch_size = 256
    config.label_smoothing = 0.0
    # Durations: set either *_steps or *_epochs.
    config.num_steps = 0
    config.num_epochs = 30.0
    config.eval_every_steps = 0
    config.eval_every_epochs = 5.0
    config.checkpoint_every_steps = 0
    config.checkpoint_every_epochs = 5.0
    config.log_every_steps = 20

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.max_to_keep = 2
    config.checkpoint.best_metric = "accuracy"
    config.checkpoint.best_mode = "max"

    if arg == "runlocal":
        config.num_epochs = 0.0
        config.num_steps = 12
        config.eval_every_epochs = 0.0
        config.eval_every_steps = 6
        config.checkpoint_every_epochs = 0.0
        config.checkpoint_every_steps = 4
        config.log_every_steps = 2
        config.model.width = 8
    elif arg is not None:
        raise ValueError(f"configs/default.py: unknown variant {arg!r}; choose from ['runlocal']")
    return config
