"""Spoken digits (Free Spoken Digit Dataset, 8 kHz): M5 on raw waveforms (Dai et al. 2017) or a small 2D CNN on
log-mel spectrograms computed in the input pipeline, on the official split or the speaker-held-out one.

Command:   python train.py --config=configs/fsdd.py --workdir=runs/fsdd_m5                     (M5, official split)
           python train.py --config=configs/fsdd.py:log_mel --workdir=runs/fsdd_log_mel        (log-mel 2D CNN)
           python train.py --config=configs/fsdd.py:speaker --workdir=runs/fsdd_m5_speaker     (jackson held out)
           python train.py --config=configs/fsdd.py:log_mel,speaker --workdir=runs/fsdd_log_mel_speaker
Hardware:  2 CPU cores shared with other jobs, no GPU.
Time:      15 epochs: log-mel CNN 5-7 min, M5 8-11 min (load average about 10; README "1D and 3D data").
Result:    test accuracy, last step, on the 300 official test clips (takes 0-4) or the 500 clips of the held-out
           speaker: log-mel CNN 100.0% official, 74.6% held out (82.8% with ``speed``); M5 96.7% official,
           57.0% held out (64.0% with ``speed``).
Variant:   speed (training clips played 0.9-1.1 times as fast: speed perturbation, Ko et al. 2015), runlocal (a few
           steps); variants join with commas, e.g. :log_mel,speaker,speed

Training clips are 8,192 samples (zeros appended, or the centre kept); evaluation sees every test clip whole, one
clip per batch (``cnn/data/fsdd.py``). Our recipe, not the paper's (Dai et al. train on UrbanSound8k): Adam 1e-3
with a cosine decay, weight decay 1e-4, batches of 32, 15 epochs, no augmentation unless ``speed`` (each training
clip resampled to play 0.9-1.1 times as fast: pitch and tempo together, a cheap stand-in for a new speaker). The
log-mel spectrograms (40 bands, 32 ms frames every 16 ms: 40 × 65 for a training clip) are normalized with the mean
and std of the training clips' (``LOG_MEL_STATS``, padding included). No checkpoint is chosen on the test split:
the result is the last step's. The recordings are read from ``../shared/data/fsdd`` through the TFDS builder ``fsdd``.
"""

import os

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options

FSDD_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                         "fsdd"))
LOG_MEL_STATS = (-75.24, 30.43)  # dB over the 2,700 official training clips at 8,192 samples


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = variant_options(arg, __file__, ("log_mel", "speaker", "speed", RUNLOCAL))
    config = base_config(dataset="fsdd", model="m5")
    config.dataset.manual_dir = FSDD_DIR
    features = f"|log_mel|normalize({LOG_MEL_STATS[0]}, {LOG_MEL_STATS[1]})" if "log_mel" in options else ""
    config.dataset.train_preprocess = "decode" + ("|speed(0.9, 1.1)" if "speed" in options else "") + features
    config.dataset.eval_preprocess = "decode" + features
    if "log_mel" in options:
        config.model.name = "log_mel_cnn"
    if "speaker" in options:
        config.dataset.train_split = "speaker_train"
        config.dataset.eval_split = "speaker_test"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 1e-4
    config.batch_size = 32
    config.eval_batch_size = 1  # whole clips, each unpadded beyond the training length
    config.num_epochs = 15.0
    config.eval_every_epochs = 5.0
    config.checkpoint_every_epochs = 5.0
    config.checkpoint.best_metric = ""
    config.log_every_steps = 20

    if RUNLOCAL in options:
        runlocal(config, steps=4)
        config.batch_size = 8
        config.eval_batch_size = 100  # 3 batches, each padded to its longest clip: a few compilations, not 300
    return config
