"""Two training steps of each model family through ``train.py`` and the ``runlocal`` variants of the experiment
configs, and conv kinds swapped in from the command line (``--config.model.conv``).

A run passes when ``train.py`` exits 0 and its step-2 checkpoint holds the parameter count published for the model
(torchvision's counts, adjusted to 10 classes by the size of the head; He et al.'s for the CIFAR ResNets; LeNet-5's
by hand), or for a swapped kind the count ``tests.models.test_zoo.conv_params`` derives from the layer shapes, and
the swapped layer's own parameters. The configs' recipes are checked against the papers' numbers. CIFAR-10 and
ImageNet are not available offline: their ``runlocal`` variants train on ``tfds.testing.mock_data``.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from cnn.data import BatchRandom, build_preprocess
from cnn.data.sources import TFDS_DATASETS
from cnn.train.config import load_config_file
from cnn.train.optim import make_schedule
from tests.harness.conftest import ROOT, cli_env, restore_params, run_cli
from tests.models.test_zoo import PUBLISHED, VGG11_CONVS_32PX, conv_params


def with_head(name: str, features: int, num_classes: int = 10) -> int:
    """The published 1000-class count of ``name`` with its last dense layer (``features`` inputs) resized."""
    return PUBLISHED[name][0] - (features + 1) * 1000 + (features + 1) * num_classes


def vgg_classifier(width: int, num_classes: int) -> int:
    """VGG's head: dense 512·7·7 → width, width → width, width → classes (with biases)."""
    return (512 * 49 + 1) * width + (width + 1) * width + (width + 1) * num_classes


# CIFAR ResNet-20's swapped 3×3 convolutions at 32×32: (in, out, output size), three stages of 6.
CIFAR_RESNET20_CONVS_32PX = [(16, 16, 32)] * 6 + [(16, 32, 16)] + [(32, 32, 16)] * 5 + [(32, 64, 8)] + [(64, 64, 8)] * 5
NARROW_VGG = {"name": "vgg11", "classifier_width": 64, "conv": "standard"}


def swapped(kind: str, convs, bias: bool) -> int:
    """Parameters a kind adds to (or removes from) the standard convolutions ``convs``."""
    return sum(conv_params(kind, *c, bias=bias) - conv_params("standard", *c, bias=bias) for c in convs)


@pytest.fixture(scope="module")
def tfds_env(tmp_path_factory) -> dict[str, str]:
    """An empty TFDS data dir: every run trains on ``tfds.testing.mock_data``."""
    return cli_env(str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def narrow_vgg_config(tmp_path_factory) -> str:
    """The CIFAR-10 runlocal config with a VGG-11 of 64-wide hidden dense layers (VGG's 4096 would dominate)."""
    path = tmp_path_factory.mktemp("configs") / "cifar10_vgg11.py"
    path.write_text(
        "import ml_collections\n"
        "from cnn.train.config import load_config_file\n\n\n"
        "def get_config(arg=None):\n"
        f"    config = load_config_file({str(ROOT / 'configs/cifar10_resnet.py:runlocal')!r})\n"
        f"    config.model = ml_collections.ConfigDict({NARROW_VGG!r})\n"
        "    config.optimizer.learning_rate = 0.01  # VGG's own rate; without BatchNorm 0.1 diverges\n"
        "    return config\n"
    )
    return str(path)


def train_two_steps(workdir: Path, config: str, *overrides: str, env: dict[str, str]) -> dict:
    """Run ``train.py``; return the step-2 parameters and the metrics records."""
    result = run_cli("train.py", f"--config={config}", f"--workdir={workdir}", *overrides, env=env)
    assert "final eval: accuracy" in result.stdout
    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2]
    return {"params": restore_params(workdir, 2)["params"], "records": records}


def count(params) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


# CIFAR ResNet-8 (one block per stage) on 28×28×1 with 10 classes, by hand: stem 3·3·1·16, three stages of two 3×3
# convolutions (16→16, 16→16; 16→32, 32→32; 32→64, 64→64), a BatchNorm (scale, bias) after each of the 7 convolutions,
# dense 64→10.
RESNET8_FASHION_MNIST = (9 * 1 * 16 + 9 * (16 * 16 * 2 + 16 * 32 + 32 * 32 + 32 * 64 + 64 * 64)
                         + 2 * (16 * 3 + 32 * 2 + 64 * 2) + 65 * 10)

# config, command-line overrides, expected parameters, {path of a swapped layer: its parameter shapes}
RUNS = [
    pytest.param("configs/cifar10_resnet.py:runlocal", (), PUBLISHED["cifar_resnet20"][0], {}, id="cifar_resnet20"),
    pytest.param("configs/cifar10_resnet.py:runlocal", ("--config.model.conv=tiled",),
                 PUBLISHED["cifar_resnet20"][0] + swapped("tiled", CIFAR_RESNET20_CONVS_32PX, bias=False),
                 {"stage2_block1/conv1": {"kernel": (2, 2, 3, 3, 16, 32)}}, id="cifar_resnet20-tiled",
                 marks=pytest.mark.slow),  # a kind swapped in through the CLI trains in CI as vgg11-separable
    pytest.param("configs/cifar10_resnet.py:runlocal", ("--config.model.name=resnet18",), with_head("resnet18", 512),
                 {}, id="resnet18", marks=pytest.mark.slow),  # the ResNet code trains in CI as cifar_resnet20
    pytest.param("narrow_vgg", ("--config.model.conv=separable",),
                 PUBLISHED["vgg11"][0] - vgg_classifier(4096, 1000) + vgg_classifier(64, 10)
                 + swapped("separable", VGG11_CONVS_32PX, bias=True),
                 {"conv3_1": {"depthwise": (3, 3, 1, 128), "pointwise": (128, 256), "bias": (256,)}},
                 id="vgg11-separable"),
    pytest.param("configs/ablation_conv.py:runlocal", ("--config.dataset.mock_examples=16",), RESNET8_FASHION_MNIST,
                 {}, id="resnet8-ablation", marks=pytest.mark.slow),  # the CIFAR ResNet trains in CI as cifar_resnet20
    pytest.param("configs/mnist_lenet5.py:runlocal", ("--config.dataset.mock_examples=16",), PUBLISHED["lenet5"][0],
                 {}, id="lenet5"),
    pytest.param("configs/cifar10_resnet.py:runlocal", ("--config.model.name=efficientnet_b0",),
                 with_head("efficientnet_b0", 1280), {}, id="efficientnet_b0", marks=pytest.mark.slow),
    pytest.param("configs/imagenet_resnet50.py:runlocal", (), PUBLISHED["resnet50"][0], {}, id="resnet50-imagenet",
                 marks=pytest.mark.slow),
    pytest.param("configs/cifar10_resnet.py:runlocal", ("--config.model.conv=deformable",),
                 PUBLISHED["cifar_resnet20"][0] + swapped("deformable", CIFAR_RESNET20_CONVS_32PX, bias=False),
                 {"stage2_block1/conv1": {"kernel": (3, 3, 16, 32), "offset_conv": {"kernel": (3, 3, 16, 27),
                                                                                  "bias": (27,)}}},
                 id="cifar_resnet20-deformable", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("config", "overrides", "expected_params", "swapped_layers"), RUNS)
def test_two_training_steps(config, overrides, expected_params, swapped_layers, tfds_env, narrow_vgg_config,
                            tmp_path):
    config = narrow_vgg_config if config == "narrow_vgg" else config
    run = train_two_steps(tmp_path / "run", config, *overrides, env=tfds_env)
    assert all(math.isfinite(r["loss"]) for r in run["records"] if "loss" in r)
    assert count(run["params"]) == expected_params
    for path, shapes in swapped_layers.items():
        layer = functools.reduce(lambda tree, key: tree[key], path.split("/"), run["params"])
        assert jax.tree.map(lambda leaf: tuple(leaf.shape), layer) == shapes


def test_cifar_config_follows_he_et_al():
    """Sec. 4.2: lr 0.1, divided by 10 at 32k and 48k iterations, stop at 64k; momentum 0.9, weight decay 1e-4,
    mini-batch 128; 4-pixel padded 32×32 crops and flips."""
    config = load_config_file(str(ROOT / "configs/cifar10_resnet.py"))
    assert (config.model.name, config.batch_size, config.num_steps) == ("cifar_resnet20", 128, 64_000)
    assert (config.optimizer.name, config.optimizer.momentum, config.optimizer.weight_decay) == ("momentum", 0.9, 1e-4)
    schedule = make_schedule(config, config.num_steps, steps_per_epoch=50_000 // 128)
    lrs = [float(schedule(step)) for step in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert "random_crop(32, pad=4)|flip_lr" in config.dataset.train_preprocess


def test_imagenet_config_divides_the_rate_by_10_every_30_epochs():
    config = load_config_file(str(ROOT / "configs/imagenet_resnet50.py"))
    steps_per_epoch = 1_281_167 // 256  # ILSVRC 2012 training images
    schedule = make_schedule(config, round(90 * steps_per_epoch), steps_per_epoch)
    epochs = (0, 30, 60, 89)
    assert [float(schedule(e * steps_per_epoch)) for e in epochs] == pytest.approx([0.1, 0.01, 0.001, 0.001])
    assert float(schedule(30 * steps_per_epoch - 1)) == pytest.approx(0.1)


@pytest.mark.parametrize(("arg", "model", "mock_examples"), [
    (None, "cifar_resnet20", 0), ("56", "cifar_resnet56", 0), ("110,runlocal", "cifar_resnet110", 16),
])
def test_cifar_config_argument_picks_the_depth(arg, model, mock_examples):
    config = load_config_file(str(ROOT / "configs/cifar10_resnet.py") + (f":{arg}" if arg else ""))
    assert (config.model.name, config.dataset.mock_examples) == (model, mock_examples)


@pytest.mark.parametrize("spec", ["configs/cifar10_resnet.py:21", "configs/cifar10_resnet.py:20,56",
                                  "configs/mnist_lenet5.py:big", "configs/imagenet_resnet50.py:56",
                                  "configs/ablation_conv.py:deformable"])
def test_unknown_variant_is_a_value_error(spec):
    with pytest.raises(ValueError, match="unknown variant"):
        load_config_file(str(ROOT / spec))


@pytest.mark.parametrize(("config", "folder"), [("mnist_lenet5", "mnist"), ("ablation_conv", "fashion_mnist")])
def test_manual_dir_defaults_to_the_shared_data_next_to_the_repository(config, folder):
    manual_dir = Path(load_config_file(str(ROOT / f"configs/{config}.py")).dataset.manual_dir)
    assert manual_dir.resolve() == (ROOT.parent / "shared" / "data" / folder).resolve()
    assert {"train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"} <= {p.name for p in manual_dir.iterdir()}


def test_lenet5_input_is_padded_to_32_with_background():
    """The 28×28 digits become 32×32; the 2-pixel border equals a black pixel after normalization."""
    config = load_config_file(str(ROOT / "configs/mnist_lenet5.py"))
    spec = TFDS_DATASETS["mnist"].spec
    digits = np.zeros((2, 28, 28, 1), np.uint8)
    digits[:, 10:18, 10:18] = 255
    rand = BatchRandom((0, 0), 2)
    for chain in (config.dataset.train_preprocess, config.dataset.eval_preprocess):
        images = build_preprocess(chain, spec)(digits, rand)
        assert images.shape == (2, 32, 32, 1)
        black, white = (0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081  # MNIST's pixel mean and std, in [0, 1]
        for border in (images[:, :2], images[:, -2:], images[:, :, :2], images[:, :, -2:]):
            np.testing.assert_allclose(border, black, rtol=1e-6)
        assert np.isclose(images, white).sum() == 2 * 64  # the white square, maybe shifted, whole
