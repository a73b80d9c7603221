"""AdrenalMNIST3D (MedMNIST v2): a 3D ResNet-18 on adrenal gland shape masks, normal or hyperplasia, with MedMNIST's
protocol. Published test ACC / AUC at 28³ (Yang et al. 2023, table): ResNet-18+3D 0.721 / 0.827, ResNet-18+ACS
0.754 / 0.839, ResNet-18+2.5D 0.772 / 0.718, auto-sklearn 0.802 / 0.828.

Command:   python train.py --config=configs/adrenal3d.py --workdir=runs/adrenal3d            (28³, 3D convolutions)
           python train.py --config=configs/adrenal3d.py:64 --workdir=runs/adrenal3d_64      (64³)
           python train.py --config=configs/adrenal3d.py:acs --workdir=runs/adrenal3d_acs    (ACS convolutions)
           then: python eval.py --workdir=W --split=test --step=best (the checkpoint with the best validation
           AUC: config.checkpoint.best_metric)
           python train.py --config=configs/adrenal3d.py:cpu --workdir=runs/adrenal3d_cpu    (2 CPU cores)
Hardware:  an accelerator for the protocol (3,700 steps of 32 volumes: on 2 CPU cores a 28³ step of the
           full-width network takes 40-100 s, 100 epochs days). The ``cpu`` variant runs on 2 cores.
Result:    README "Results".
Variant:   cpu (width 16: 1/16 of the convolutions' work, 2,073,618 parameters, ACS 700,146; 10 epochs with the
           learning rate ×0.1 at epochs 5 and 7.5, the protocol's schedule compressed); runlocal (a narrow
           ResNet-10, 4 steps; used by the tests); joined by commas, e.g. :64,acs or :cpu,acs

MedMNIST's protocol (github.com/MedMNIST/experiments, ``train_and_eval_pytorch.py``): Adam, learning rate 1e-3,
100 epochs, the learning rate ×0.1 at epochs 50 and 75, batches of 32, the model evaluated on the validation split
every epoch and the checkpoint with the best validation AUC evaluated on test. The network is ``resnet18_3d``
(the CIFAR-style ResNet-18 with 3×3×3 kernels and no stem pooling); ``acs`` makes every convolution an ACS one (its
2D kernels split over the axial, coronal and sagittal views, Yang et al. 2021). MedMNIST repeats the mask over three
channels and scales the volume by 0.5 (random scaling while training: a shape transform); here it is one channel,
normalized, without augmentation. The volumes are read from ``../shared/data/medmnist3d`` through the TFDS builder
``adrenal_mnist3d`` (configs ``28`` and ``64``).
"""

import os

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options

MEDMNIST_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                             "medmnist3d"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    options = variant_options(arg, __file__, ("64", "acs", "cpu", RUNLOCAL))
    config = base_config(dataset="adrenal_mnist3d_64" if "64" in options else "adrenal_mnist3d",
                         model="resnet18_3d")
    config.dataset.manual_dir = MEDMNIST_DIR
    config.dataset.eval_split = "validation"
    config.model.conv = "acs" if "acs" in options else "standard"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0
    config.schedule.name = "step"
    config.schedule.boundaries = (0.5, 0.75)  # epochs 50 and 75 of 100
    config.schedule.decay_factor = 0.1
    config.batch_size = 32
    config.eval_batch_size = 98  # the validation split in one batch
    config.num_epochs = 100.0
    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    config.checkpoint.best_metric = "roc_auc"
    config.log_every_steps = 10

    if "cpu" in options:
        config.model.width = 16
        config.num_epochs = 10.0

    if RUNLOCAL in options:
        runlocal(config, steps=4)
        config.model.stage_sizes = (1, 1, 1, 1)
        config.model.width = 4
        config.batch_size = 4
        config.eval_batch_size = 40  # 98 = 2 × 40 + 18: the last batch is partial
    return config
