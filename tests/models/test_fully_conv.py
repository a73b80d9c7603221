"""A classifier run fully convolutionally against the sliding window done the slow way: the original classifier
(global pool) applied to every crop, one at a time; its stride against the product of the published strides."""

from functools import partial

import flax.linen as nn
import jax
import numpy as np
import pytest

from cnn.errors import ConfigError
from cnn.models import create
from cnn.models.common import BatchNorm, standard_conv
from cnn.models.fully_conv import fully_convolutional
from cnn.models.resnet import BasicBlock


def random_variables(model, shape, seed=0):
    """Every variable drawn in numpy (no compiled init): kernels of variance about 1 / fan_in, biases, BatchNorm
    scales and running statistics random too, so that no layer is the identity."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), jax.ShapeDtypeStruct(shape, np.float32))

    def draw(path, leaf):
        if path[-1].key == "kernel":
            return (rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)
        return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


# (model, channels, training window, stride = product of the strides, extent read, pooled feature window)
CASES = [
    ("lenet5", 1, 32, 2 * 2, 32, 1),  # S2, S4: 2×2 / 2; C5 leaves 1×1
    ("window_resnet8", 3, 32, 2 * 2, 29, 2),  # stage2, stage3 stride 2; 2×2 features (floors drop 3 pixels)
    ("window_resnet8", 3, 33, 2 * 2, 33, 3),
]


@pytest.mark.parametrize(("name", "channels", "window", "stride", "extent", "features"), CASES)
def test_score_map_equals_classifier_on_every_crop(name, channels, window, stride, extent, features):
    classifier = create(name, num_classes=5)
    net = fully_convolutional(classifier, window)
    assert (net.stride, net.extent, net.feature_window) == (stride, extent, features)
    height, width = window + 3 * stride, window + 2 * stride + 1  # 4 × 3 windows, and one spare column of pixels
    rows, cols = (height - extent) // stride + 1, (width - extent) // stride + 1
    images = np.random.default_rng(1).standard_normal((2, height, width, channels)).astype(np.float32)
    variables = random_variables(classifier, (1, window, window, channels))
    scores = np.asarray(jax.jit(net.score_map)(variables, images))
    assert scores.shape == (2, rows, cols, 5) and net.score_shape(height, width) == (rows, cols)
    # every cell: the crop of the cell's extent; where the whole training window fits, that crop too
    for size in {extent, window}:
        cells = [(i, j) for i in range(rows) for j in range(cols)
                 if i * stride + size <= height and j * stride + size <= width]
        crops = np.concatenate([images[:, i * stride: i * stride + size, j * stride: j * stride + size]
                                for i, j in cells])
        expected = np.asarray(jax.jit(partial(classifier.apply, train=False))(variables, crops))
        expected = expected.reshape(len(cells), 2, 5)
        for (i, j), logits in zip(cells, expected, strict=True):
            np.testing.assert_allclose(scores[:, i, j], logits, rtol=1e-5, atol=1e-5, err_msg=f"cell {i, j}")


@pytest.mark.parametrize(("name", "fields", "window", "message"), [
    ("cifar_resnet20", {}, 32, "stem_conv pads with zeros"),
    ("vgg11", {}, 32, "no pool_window field"),
    ("lenet5", {"conv": "dilated"}, 32, "with dilated_conv"),
    ("window_resnet8", {"norm": partial(nn.GroupNorm, num_groups=4)}, 32, "only BatchNorm"),
    ("lenet5", {}, 28, "window 28 is too small for LeNet5: nothing is left of it after C5"),
])
def test_models_that_cannot_match_the_crop_loop_are_refused(name, fields, window, message):
    with pytest.raises(ConfigError, match=message):
        fully_convolutional(create(name, num_classes=10, **fields), window)


def test_image_smaller_than_the_window_is_refused():
    net = fully_convolutional(create("lenet5", num_classes=10), 32)
    with pytest.raises(ValueError, match="image of 31×40 is smaller than the window"):
        net.score_shape(31, 40)


@pytest.mark.parametrize("strides", [1, 2])
def test_unpadded_block_shortcut_reads_the_centre_of_each_field(strides):
    """With zero convolutions the block outputs its shortcut alone: output unit i must read input pixel
    s i + s + 1, the centre of its field (conv 3×3 /s then conv 3×3 at 1, no padding: by hand)."""
    block = BasicBlock(8 * strides, strides, standard_conv, partial(BatchNorm, use_running_average=True), "zero_pad",
                       padding=0)
    x = np.random.default_rng(0).uniform(0.1, 1.0, (1, 15, 15, 8)).astype(np.float32)
    variables = block.init(jax.random.PRNGKey(0), x)  # BatchNorm statistics: mean 0, variance 1
    variables["params"] = jax.tree_util.tree_map_with_path(  # kernels 0, BatchNorm the identity
        lambda path, leaf: np.full(leaf.shape, 1.0 if path[-1].key == "scale" else 0.0, np.float32),
        variables["params"])
    out = np.asarray(block.apply(variables, x))
    size = ((15 - 3) // strides + 1) - 2
    expected = x[:, strides + 1:: strides, strides + 1:: strides][:, :size, :size]
    expected = np.pad(expected, ((0, 0), (0, 0), (0, 0), (4 * (strides - 1),) * 2))  # option A: zero channels
    np.testing.assert_allclose(out, expected, rtol=1e-6)
