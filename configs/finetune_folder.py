"""Fine-tune torchvision's ImageNet ResNet-50 on your own image folder (``FOLDER/train/<class>/*.jpg``, and
``FOLDER/test/...`` to evaluate on): every layer starts from the imported weights but the head, which is sized for
the folder's classes and initialized afresh (named in the log). SGD with momentum 0.9, learning rate 0.01 (a tenth of
training from scratch), cosine decay over 10 epochs, weight decay 1e-4, 224×224 inputs.

Command:   python -m cnn.tools.import_weights resnet50 --from=resnet50-0676ba61.pth --out=weights/resnet50 \\
               --config=configs/imagenet_resnet50.py
           python train.py --config=configs/finetune_folder.py --workdir=runs/finetune \\
               --config.dataset.path=FOLDER --config.init_from=weights/resnet50
Hardware:  an accelerator; not run on this project's 2-CPU machines.
Time:      not measured here.
Expected:  depends on the folder (README, "Pretrained weights").
Variant:   --config=configs/finetune_folder.py:runlocal  (resnet18 on 32×32 images, two steps; used by the tests)
"""

import ml_collections

from cnn.config_defaults import RUNLOCAL, base_config, runlocal, variant_options


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config(dataset="image_folder", model="resnet50")
    config.dataset.image_size = (256, 256)
    config.dataset.train_preprocess = "decode|random_crop(224)|flip_lr|normalize"
    config.dataset.eval_preprocess = "decode|center_crop(224)|normalize"
    config.model.conv = "standard"
    config.optimizer.learning_rate = 0.01
    config.optimizer.weight_decay = 1e-4
    config.batch_size = 64
    config.eval_batch_size = 128
    config.num_epochs = 10.0

    if RUNLOCAL in variant_options(arg, __file__):
        runlocal(config, steps=2)
        config.model.name = "resnet18"
        config.dataset.image_size = (32, 32)
        config.dataset.train_preprocess = config.dataset.eval_preprocess = "decode|normalize"
        config.batch_size = 4
        config.eval_batch_size = 8
    return config
