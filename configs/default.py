"""Default experiment: a small CNN on the 8x8 handwritten digits that scikit-learn ships (no download).

Command:   python train.py --config=configs/default.py --workdir=runs/digits   (or: make demo)
Hardware:  2 CPU cores, no GPU.
Time:      14 s for train.py (660 steps) on 2 idle cores; eval.py 5 s.
Result:    98.06% test accuracy (353 of the fixed 360 test images); README "Results".
Variant:   --config=configs/default.py:runlocal  (12 steps of a narrower net; used by the tests)

Sweep:     python sweep.py --config=configs/default.py --workdir=runs/sweep_digits   (get_sweep below: learning rate
           0.01/0.05/0.25 x width 16/32/64, 9 train.py runs one at a time). 4 min 5 s on 2 CPU cores shared with
           other jobs (load average ~5; 15-47 s a trial). Best: learning rate 0.25, width 32: 98.61% (355/360);
           the default's 0.05, 32: 98.06%; worst 0.01, 16: 94.17%.
"""

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(dataset="digits", model="small_cnn")
    config.model.width = 32
    config.model.dropout_rate = 0.1
    config.optimizer.learning_rate = 0.05
    config.schedule.warmup_epochs = 1.0
    config.batch_size = 64
    config.eval_batch_size = 256
    config.num_epochs = 30.0
    config.eval_every_epochs = 5.0
    config.checkpoint_every_epochs = 5.0
    config.log_every_steps = 20

    if RUNLOCAL in variant_options(arg, __file__):
        runlocal(config, steps=12)
        config.model.width = 8
    return config


def get_sweep(arg: str | None = None) -> dict:
    """Learning rate x width of small_cnn: a 3 x 3 grid (runlocal: 2 x 2 grid of 12-step runs, for the tests)."""
    if RUNLOCAL in variant_options(arg, __file__):
        grid = {"optimizer.learning_rate": [0.05, 0.2], "model.width": [4, 8]}
    else:
        grid = {"optimizer.learning_rate": [0.01, 0.05, 0.25], "model.width": [16, 32, 64]}
    return {"metric": "accuracy", "direction": "maximize", "grid": grid}
