"""The PyTorch side of ``benchmarks/time_to_accuracy.py`` follows ``configs/mnist_lenet5.py``: its learning rate at
every step is the one optax computes for the project's run (warmup, then cosine), and its training crops are
``random_crop(32, pad=2)``'s windows. (Its model needs torch, not a dependency of the project:
``benchmarks/vs_torch.py`` checks the parameter counts.)"""

import importlib.util
import os

import numpy as np

from cnn.train.config import load_config_file
from cnn.train.optim import make_schedule

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def torch_recipe():
    path = os.path.join(REPO, "benchmarks", "torch_mnist_lenet5.py")
    spec = importlib.util.spec_from_file_location("torch_mnist_lenet5", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports numpy only; torch inside main()
    return module


def test_learning_rate_is_the_configs_optax_schedule():
    config = load_config_file(os.path.join(REPO, "configs", "mnist_lenet5.py"))
    steps_per_epoch = 60_000 // config.batch_size
    total = int(config.num_epochs * steps_per_epoch)
    schedule = make_schedule(config, total, steps_per_epoch)
    warmup = int(config.schedule.warmup_epochs * steps_per_epoch)
    recipe = torch_recipe()
    steps = [0, 1, warmup - 1, warmup, warmup + 1, total // 2, total - 1, total]
    ours = [recipe.lr_at(s, config.optimizer.learning_rate, warmup, total) for s in steps]
    np.testing.assert_allclose(ours, [float(schedule(s)) for s in steps], rtol=1e-5, atol=1e-8)


def test_random_crop_is_a_window_of_the_padded_image():
    recipe = torch_recipe()
    images = np.random.default_rng(0).random((5, 32, 32), dtype=np.float32)
    crops = recipe.random_crop(images, np.random.default_rng(1), pad=2)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    for image, crop in zip(padded, crops, strict=True):  # brute force: the offset that matches
        assert any(np.array_equal(image[y : y + 32, x : x + 32], crop) for y in range(5) for x in range(5))
    assert not all(np.array_equal(c, i) for c, i in zip(crops, images, strict=True))  # shifted, not all centred
