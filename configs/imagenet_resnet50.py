"""ResNet-50 on ImageNet (ILSVRC 2012) with the recipe of He et al. 2016 as torchvision trained its first weights:
SGD with momentum 0.9, learning rate 0.1 for batch 256, divided by 10 every 30 epochs, 90 epochs, weight decay 1e-4,
random crops and horizontal flips.

Command:   python train.py --config=configs/imagenet_resnet50.py --workdir=runs/imagenet_resnet50 \
               --config.dataset.manual_dir=FOLDER   (FOLDER holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar)
Hardware:  accelerators; not run on this project's 2-CPU machines.
Time:      not measured here.
Expected:  76.13% top-1 on the 50,000 validation images for torchvision's ResNet50_Weights.IMAGENET1K_V1, trained
           with this schedule and random-resized crops; the fixed-scale crops here augment less. (He et al. 2016,
           table 3: 22.85% top-1 error with 10-crop testing and scale augmentation.)
Variant:   --config=configs/imagenet_resnet50.py:runlocal  (two steps on ``tfds.testing.mock_data`` at 64×64; used by
           the tests)

The 1.28M training images do not fit in host memory: the dataset is prepared once as ArrayRecord files and each
batch reads and decodes its images on a pool of threads (``cnn.data.streaming``), fitting each to 256×256 (shorter
side resized to 256, centre crop). Training takes a random 224×224 crop of that and a horizontal flip, evaluation the
centre crop ("resize 256, crop 224"). ``--config.dataset.num_workers`` sets the decoding threads (default: one per
core); ``python benchmarks/input_pipeline.py`` measures the images/s one host decodes.
"""

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(dataset="imagenet2012", model="resnet50")
    config.dataset.eval_split = "validation"
    config.dataset.streaming = True
    config.dataset.train_preprocess = "decode|random_crop(224)|flip_lr|normalize"
    config.dataset.eval_preprocess = "decode|center_crop(224)|normalize"
    config.model.conv = "standard"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "step"
    config.schedule.boundaries = (30 / 90, 60 / 90)  # epochs 30 and 60
    config.schedule.decay_factor = 0.1
    config.batch_size = 256
    config.eval_batch_size = 500
    config.num_epochs = 90.0
    config.log_every_steps = 100

    if RUNLOCAL in variant_options(arg, __file__):
        runlocal(config, steps=2)
        config.dataset.mock_examples = 4
        config.dataset.train_preprocess = "decode|resize(64)|flip_lr|normalize"
        config.dataset.eval_preprocess = "decode|resize(64)|normalize"
        config.batch_size = 2
        config.eval_batch_size = 4
    return config
