"""LeNet-5 on MNIST in PyTorch, the recipe of ``configs/mnist_lenet5.py``: the reference side of
``benchmarks/time_to_accuracy.py``. Needs only numpy and torch (an optional benchmark dependency).

    python benchmarks/torch_mnist_lenet5.py [--target 0.99] [--threads 2]

The same as the project's run, rule by rule:

* model: ``cnn/models/lenet.py`` (C1 5×5 6, avg pool, C3 5×5 16, avg pool, C5 5×5 120, F6 84, output 10; squash
  ``1.7159 tanh(2a/3)`` after every layer but the output; 61,706 parameters); weights drawn as flax's default
  (LeCun normal: truncated normal of variance 1 / fan_in), biases 0;
* data: the idx files of ``../shared/data/mnist``; pixels / 255, zero-padded by 2 to 32×32, in training shifted by
  a random 32×32 crop of the image zero-padded by 2 more (``random_crop(32, pad=2)``), then ``(x - 0.1307) / 0.3081``;
* order: batches of 128 from a permutation of the 60,000 training digits drawn anew each epoch with
  ``numpy.random.default_rng([seed, epoch])`` (the project's ``TrainStream``), the last partial batch dropped
  (468 steps an epoch);
* optimizer: SGD with momentum 0.9 (torch's and optax's rules are the same: ``v = 0.9 v + g; w -= lr v``), L2 weight
  decay 1e-4 added to the gradients of the weights, not the biases; learning rate linear from 0 to 0.05 over the first
  epoch, then cosine decay to 0 at the end of 20 epochs (optax's schedule, evaluated at each step's count);
* evaluation: test accuracy on the 10,000 test digits every ``--eval_every_epochs``.

Prints one JSON line per evaluation: ``{"step", "epoch", "accuracy", "seconds"}`` (since the process started); with
``--target`` it stops at the first evaluation that reaches it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
from cnn.data.canvas import load_mnist

STARTED = time.perf_counter()
MEAN, STD = 0.1307, 0.3081


def load(mnist_dir: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images zero-padded to (n, 32, 32) in [0, 1], and labels."""
    digits, labels = load_mnist(split, mnist_dir)  # the project's reader: the same files, checked by sha256
    images = digits.astype(np.float32) / 255.0
    return np.pad(images, ((0, 0), (2, 2), (2, 2))), labels.copy()  # the reader's arrays are read-only


def random_crop(images: np.ndarray, rng: np.random.Generator, pad: int = 2) -> np.ndarray:
    """A 32×32 window of each image zero-padded by ``pad``, at a random offset."""
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    size = images.shape[1]
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, len(images)))
    rows = (dy[:, None] + np.arange(size))[:, :, None]
    cols = (dx[:, None] + np.arange(size))[:, None, :]
    return padded[np.arange(len(images))[:, None, None], rows, cols]


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """optax: linear 0 → peak over ``warmup`` steps, then ``cosine_decay_schedule(peak, total - warmup)``."""
    if step < warmup:
        return peak * step / warmup
    t = min(step - warmup, total - warmup) / (total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * t))


def lenet5(torch):
    nn = torch.nn

    class Squash(nn.Module):
        def forward(self, a):
            return 1.7159 * torch.tanh(2.0 / 3.0 * a)

    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), Squash(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), Squash(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), Squash(), nn.Flatten(),  # C5 is 1×1 on 32×32: the global average pool is the identity
        nn.Linear(120, 84), Squash(), nn.Linear(84, 10),
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # flax's lecun_normal: truncated at ±2 std
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(module.bias)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist_dir", default=None, help="the MNIST idx files (default: ../shared/data/mnist)")
    parser.add_argument("--epochs", type=float, default=20.0)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--warmup_epochs", type=float, default=1.0)
    parser.add_argument("--eval_every_epochs", type=float, default=1.0)
    parser.add_argument("--target", type=float, default=None, help="stop at the first evaluation reaching it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("error: this benchmark needs PyTorch (an optional dependency, not in requirements.txt): "
              "pip install torch", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y = load(args.mnist_dir, "train")
    test_images, test_labels = load(args.mnist_dir, "test")
    test_x, test_y = torch.from_numpy((test_images[:, None] - MEAN) / STD), torch.from_numpy(test_labels)

    model = lenet5(torch)
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    optimizer = torch.optim.SGD([{"params": weights, "weight_decay": args.weight_decay},
                                 {"params": biases, "weight_decay": 0.0}], lr=0.0, momentum=0.9)
    steps_per_epoch = len(train_x) // args.batch_size
    total = int(args.epochs * steps_per_epoch)
    warmup = int(args.warmup_epochs * steps_per_epoch)
    eval_every = max(int(args.eval_every_epochs * steps_per_epoch), 1)
    loss_fn = torch.nn.CrossEntropyLoss()

    for step in range(total):
        epoch, position = divmod(step, steps_per_epoch)
        if position == 0:
            order = np.random.default_rng([args.seed, epoch]).permutation(len(train_x))
        idx = order[position * args.batch_size : (position + 1) * args.batch_size]
        crops = random_crop(train_x[idx], np.random.default_rng([args.seed, step]))
        x = torch.from_numpy((crops[:, None] - MEAN) / STD)
        y = torch.from_numpy(train_y[idx])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.learning_rate, warmup, total)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

        done = step + 1
        if done % eval_every == 0 or done == total:
            model.eval()
            with torch.no_grad():
                correct = sum(int((model(test_x[i : i + 1000]).argmax(-1) == test_y[i : i + 1000]).sum())
                              for i in range(0, len(test_x), 1000))
            accuracy = correct / len(test_x)
            print(json.dumps({"step": done, "epoch": done / steps_per_epoch, "accuracy": accuracy,
                              "seconds": time.perf_counter() - STARTED}), flush=True)
            if args.target is not None and accuracy >= args.target:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
