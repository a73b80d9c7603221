"""The model zoo against published numbers: torchvision's parameter counts (``weights.meta["num_params"]``), the
CIFAR ResNet counts of He et al. 2016 (table 6: 0.27M ... 1.7M, exact values of the option-A reference code), and
LeNet-5's count by hand; forwards under jit; every conv kind swapped in, with parameter counts derived by hand from
the layer shapes that ``cnn.layers`` documents.

Big models are only traced (``jax.eval_shape``): shapes and parameter counts need no computation.
"""

import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.errors import ConfigError
from cnn.layers import CONV_TYPES, conv_module
from cnn.models import MODELS, create
from cnn.models.efficientnet import MBConv
from cnn.models.resnet import BasicBlock

# name: (parameters, classes, input size); torchvision's counts for 1000 classes
PUBLISHED = {
    "lenet5": (61_706, 10, 32),  # 156 + 2,416 + 48,120 + 10,164 + 850
    "alexnet": (61_100_840, 1000, 224),
    "vgg11": (132_863_336, 1000, 224),
    "vgg13": (133_047_848, 1000, 224),
    "vgg16": (138_357_544, 1000, 224),
    "vgg19": (143_667_240, 1000, 224),
    "vgg11_bn": (132_868_840, 1000, 224),
    "vgg13_bn": (133_053_736, 1000, 224),
    "vgg16_bn": (138_365_992, 1000, 224),
    "vgg19_bn": (143_678_248, 1000, 224),
    "resnet18": (11_689_512, 1000, 224),
    "resnet34": (21_797_672, 1000, 224),
    "resnet50": (25_557_032, 1000, 224),
    "resnet101": (44_549_160, 1000, 224),
    "resnet152": (60_192_808, 1000, 224),
    "cifar_resnet20": (269_722, 10, 32),
    "cifar_resnet32": (464_154, 10, 32),
    "cifar_resnet44": (658_586, 10, 32),
    "cifar_resnet56": (853_018, 10, 32),
    "cifar_resnet110": (1_727_962, 10, 32),
    # torchvision's resnet18(num_classes=10) with conv1 = Conv2d(3, 64, 3, 1, 1, bias=False), maxpool = Identity
    "cifar_resnet18": (11_173_962, 10, 32),
    "window_resnet8": (75_290, 10, 32),  # cifar_resnet20 less two basic blocks per stage (padding adds none)
    "efficientnet_b0": (5_288_548, 1000, 224),
    "efficientnet_b1": (7_794_184, 1000, 240),
    "efficientnet_b2": (9_109_994, 1000, 260),
    "efficientnet_b3": (12_233_232, 1000, 300),
    "efficientnet_b4": (19_341_616, 1000, 380),
    "efficientnet_b5": (30_389_784, 1000, 456),
    "efficientnet_b6": (43_040_704, 1000, 528),
    "efficientnet_b7": (66_347_960, 1000, 600),
}


def channels(name: str) -> int:
    return 1 if name == "lenet5" else 3


def init_shapes(model: nn.Module, shape: tuple[int, ...], train: bool | None = False):
    """Shapes of ``model``'s variables (``train=None``: a module called without the flag)."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    kwargs = {} if train is None else {"train": train}
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), x)


def num_params(model: nn.Module, shape: tuple[int, ...]) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(init_shapes(model, shape)["params"]))


def random_variables(model: nn.Module, shape: tuple[int, ...], seed: int = 0):
    """Variables drawn in numpy (no compiled init): kernels uniform of variance 2 / fan_in (He), BN scales and
    running variances 1, the rest 0."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name in ("kernel", "depthwise", "pointwise"):
            bound = np.float32(math.sqrt(6 / math.prod(leaf.shape[:-1])))
            return (2 * bound) * rng.random(leaf.shape, dtype=np.float32) - bound
        return np.full(leaf.shape, 1.0 if name in ("var", "scale") else 0.0, np.float32)

    return jax.tree_util.tree_map_with_path(draw, init_shapes(model, shape))


def test_every_registered_model_has_a_published_count():
    from tests.models.test_media_models import MEDIA_PUBLISHED

    # counted elsewhere: the graph models by hand on Cora (test_gcn.py), the segmentation models in
    # test_segmentation_models.py, the 1D and 3D models in test_media_models.py
    elsewhere = {"gcn", "chebnet_k2", "chebnet_k3"} | set(MEDIA_PUBLISHED)
    elsewhere |= {name for name in MODELS.names() if name.startswith(("unet", "fcn"))}
    assert set(MODELS.names()) - {"small_cnn"} - elsewhere == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count(name):
    count, num_classes, size = PUBLISHED[name]
    assert num_params(create(name, num_classes=num_classes), (1, size, size, channels(name))) == count


def test_cifar_resnet18_keeps_32x32_until_the_stages():
    # 3×3 /1 stem and no max pool: the stages see 32², 16², 8², 4² (resnet18's stem would leave 8² for stage 1)
    model = create("cifar_resnet18", num_classes=10, features_only=True)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    stages = jax.eval_shape(lambda x: model.init_with_output(jax.random.PRNGKey(0), x)[0], x)
    assert [s.shape for s in stages] == [(2, 32, 32, 64), (2, 16, 16, 128), (2, 8, 8, 256), (2, 4, 4, 512)]


# One model per family at a small size; (name, size, second size); alexnet at its minimum 63.
FAMILIES = [
    ("lenet5", 32, 48),
    ("alexnet", 63, 127),
    ("vgg11", 32, 50),
    ("cifar_resnet20", 32, 24),
    ("resnet18", 64, 97),
    ("efficientnet_b0", 64, 33),
]


@pytest.mark.parametrize(("name", "size", "_"), FAMILIES)
def test_forward_under_jit(name, size, _):
    # VGG's first hidden dense layer alone has 25,088 × 4,096 weights: narrower here, full width traced below
    model = create(name, num_classes=7, **({"classifier_width": 256} if name == "vgg11" else {}))
    shape = (2, size, size, channels(name))
    variables = random_variables(model, shape)
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert logits.shape == (2, 7)
    assert np.isfinite(np.asarray(logits)).all()
    assert not np.allclose(logits[0], logits[1])  # the output depends on the input


@pytest.mark.parametrize(("name", "size", "other_size"), FAMILIES)
def test_other_input_sizes_in_train_and_eval_mode(name, size, other_size):
    model = create(name, num_classes=7)
    for s in (size, other_size):
        shape = (3, s, s, channels(name))
        variables = init_shapes(model, shape)
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape == (3, 7)
        logits, state = jax.eval_shape(
            lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}),
            variables, x,
        )
        assert logits.shape == (3, 7)
        assert jax.tree.structure(state.get("batch_stats", {})) == jax.tree.structure(variables.get("batch_stats", {}))


def test_train_mode_updates_batch_statistics():
    model = create("cifar_resnet20", num_classes=10)
    shape = (4, 16, 16, 3)
    variables = random_variables(model, shape)
    x = np.random.default_rng(2).standard_normal(shape, dtype=np.float32)
    _, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    mean = state["batch_stats"]["stem_bn"]["mean"]
    # torchvision's momentum 0.1: new = 0.9 * old + 0.1 * batch mean of the stem conv's output (numpy reference)
    kernel = variables["params"]["stem_conv"]["kernel"]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = sum(padded[:, a : a + 16, b : b + 16, :] @ kernel[a, b] for a in range(3) for b in range(3))
    np.testing.assert_allclose(mean, 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)  # old mean 0


@pytest.mark.parametrize(("name", "size"), [("lenet5", 28), ("alexnet", 62), ("vgg11", 31)])
def test_input_below_the_minimum_size_is_a_value_error(name, size):
    model = create(name, num_classes=10)
    x = jax.ShapeDtypeStruct((1, size, size, channels(name)), jnp.float32)
    with pytest.raises(ValueError, match=r"at least \d+×\d+"):
        jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)


def test_unknown_conv_kind_and_unknown_field_are_config_errors():
    with pytest.raises(ConfigError, match="unknown conv type 'circular'"):
        init_shapes(create("cifar_resnet20", num_classes=10, conv="circular"), (1, 32, 32, 3))
    with pytest.raises(ConfigError, match=r"its fields are \['classifier_width', 'conv', 'dropout_rate'"):
        create("vgg11", num_classes=10, depth=3)


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    """A block whose residual branch is zero (zero kernels and BN scales) outputs relu(shortcut(x))."""
    x = np.random.default_rng(3).standard_normal((2, 6, 6, 4), dtype=np.float32)
    norm = partial(nn.BatchNorm, use_running_average=True)
    block = BasicBlock(8, 2, conv_module("standard"), norm, shortcut="zero_pad")
    variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init_shapes(block, x.shape, train=None))
    expected = np.zeros((2, 3, 3, 8), np.float32)
    expected[..., 2:6] = x[:, ::2, ::2, :]  # 4 new channels: 2 zeros below, 2 above
    np.testing.assert_allclose(jax.jit(block.apply)(variables, x), np.maximum(expected, 0), atol=1e-6)
    assert "proj_conv" not in variables["params"]  # option A has no parameters


def test_unknown_shortcut_is_a_value_error():
    block = BasicBlock(8, 2, conv_module("standard"), partial(nn.BatchNorm, use_running_average=True), shortcut="B")
    with pytest.raises(ValueError, match="shortcut must be 'projection' or 'zero_pad', got 'B'"):
        init_shapes(block, (1, 4, 4, 4), train=None)


def test_stochastic_depth_drops_whole_examples_and_rescales_the_rest():
    x = np.random.default_rng(4).standard_normal((64, 4, 4, 8), dtype=np.float32)
    norm = partial(nn.BatchNorm, use_running_average=False)

    def block(drop_rate):
        return MBConv(8, 2, 3, 1, drop_rate, conv_module("standard"), norm)

    variables = random_variables(block(0.0), x.shape)

    def residual(drop_rate):
        apply = jax.jit(partial(block(drop_rate).apply, train=True, mutable=["batch_stats"]))
        out, _ = apply(variables, x, rngs={"dropout": jax.random.key(5)})
        return np.asarray(out) - x

    kept, residual = residual(0.0), residual(0.5)
    dropped = np.all(residual == 0, axis=(1, 2, 3))
    assert 0 < dropped.sum() < 64
    np.testing.assert_allclose(residual[~dropped], 2 * kept[~dropped], rtol=1e-5, atol=1e-5)


def test_batchnorm_hyperparameters_follow_torchvision():
    def batchnorm(name):
        return create(name, num_classes=10).norm(use_running_average=True)

    for name in ("resnet50", "vgg11_bn", "cifar_resnet20", "efficientnet_b4"):
        assert (batchnorm(name).momentum, batchnorm(name).epsilon) == (0.9, 1e-5)
    for name in ("efficientnet_b5", "efficientnet_b7"):
        assert (batchnorm(name).momentum, batchnorm(name).epsilon) == (0.99, 1e-3)
    assert create("vgg11", num_classes=10).norm is None


# Swapped 3×3 convolutions at the test sizes: (in, out, output height = width), from the papers' tables.
CIFAR_RESNET20_CONVS_8PX = (  # stage 1 at 8×8, stage 2 at 4×4, stage 3 at 2×2; 3 blocks of 2 convs each
    [(16, 16, 8)] * 6 + [(16, 32, 4)] + [(32, 32, 4)] * 5 + [(32, 64, 2)] + [(64, 64, 2)] * 5
)
VGG11_CONVS_32PX = [(3, 64, 32), (64, 128, 16), (128, 256, 8), (256, 256, 8), (256, 512, 4), (512, 512, 4),
                    (512, 512, 2), (512, 512, 2)]


def conv_params(kind: str, cin: int, cout: int, out: int, bias: bool) -> int:
    """Parameters of one swapped 3×3 convolution, from the parameter shapes ``cnn.layers`` documents."""
    dense = 9 * cin * cout + bias * cout
    return {
        "standard": dense,
        "acs": dense,  # a 3D kind: standard on these 2D convolutions
        "dilated": dense,
        "fft": dense,
        "separable": 9 * cin + cin * cout + bias * cout,  # depthwise (3, 3, 1, cin), pointwise (cin, cout)
        "locally_connected": out * out * dense,  # one kernel (and bias) per output position
        "tiled": 4 * dense,  # 2×2 tiles of kernels
        "deformable": dense + 9 * cin * 27 + 27,  # + offset_conv: 3×3, 9 · 3 outputs (dy, dx, mask), bias
    }[kind]


@pytest.mark.parametrize("kind", CONV_TYPES.names())
def test_every_conv_kind_in_a_vgg(kind):
    model = create("vgg11", num_classes=10, conv=kind)
    shape = (2, 32, 32, 3)
    standard = PUBLISHED["vgg11"][0] - 1000 * 4097 + 10 * 4097  # 10 classes
    swapped = sum(conv_params(kind, *c, bias=True) - conv_params("standard", *c, bias=True) for c in VGG11_CONVS_32PX)
    assert num_params(model, shape) == standard + swapped
    variables = init_shapes(model, shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape == (2, 10)


@pytest.mark.parametrize("kind", CONV_TYPES.names())
def test_every_conv_kind_in_a_resnet(kind):
    model = create("cifar_resnet20", num_classes=10, conv=kind)
    shape = (2, 8, 8, 3)
    swapped = sum(conv_params(kind, *c, bias=False) - conv_params("standard", *c, bias=False)
                  for c in CIFAR_RESNET20_CONVS_8PX)
    assert num_params(model, shape) == PUBLISHED["cifar_resnet20"][0] + swapped
    small = create("cifar_resnet20", num_classes=10, conv=kind, stage_sizes=(1, 1, 1))  # a real forward, faster
    variables = random_variables(small, shape)
    x = np.random.default_rng(6).standard_normal(shape, dtype=np.float32)
    logits = jax.jit(lambda v, x: small.apply(v, x, train=False))(variables, x)
    assert logits.shape == (2, 10)
    assert np.isfinite(np.asarray(logits)).all()


def test_a_swapped_kind_changes_the_swapped_layers_only():
    """ResNet: the stem and 1×1 convolutions stay standard; EfficientNet: grouped convs stay standard except dilated."""
    shape = (1, 64, 64, 3)
    params = init_shapes(create("resnet50", num_classes=10, conv="separable"), shape)["params"]
    assert set(params["stem_conv"]) == {"kernel"}
    block = params["stage2_block1"]
    assert set(block["conv2"]) == {"depthwise", "pointwise"}
    assert set(block["conv1"]) == set(block["conv3"]) == set(block["proj_conv"]) == {"kernel"}
    params = init_shapes(create("efficientnet_b0", num_classes=10, conv="separable"), shape)["params"]
    assert set(params["stage2_block1"]["depthwise_conv"]) == {"kernel"}
