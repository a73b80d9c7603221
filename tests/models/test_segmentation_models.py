"""The segmentation models against their papers: U-Net's 31,030,658 parameters and 572² → 388² (Ronneberger et al.
2015, fig. 1), 3D U-Net's 19,069,955 parameters and 132×132×116 → 44×44×28 (Çiçek et al. 2016, sec. 2 and fig. 2),
FCN parameter counts derived by hand from torchvision's ResNet-18 count, and the bilinear initialisation of FCN's
upsampling against numpy's linear interpolation.

Big models are only traced (``jax.eval_shape``).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.errors import ConfigError
from cnn.layers import ConvTranspose
from cnn.models import create
from cnn.models.fcn import bilinear_upsampling_kernel
from cnn.models.unet import nearest_valid_input_size, unet_output_size
from tests.models.test_zoo import random_variables


def traced(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...], set[str]]:
    """(parameters, output shape, variable collections) of ``model`` on an input of ``shape``, traced only."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"])), out.shape, set(variables)


def test_unet_as_published():
    assert traced(create("unet", num_classes=2), (1, 572, 572, 1))[:2] == (31_030_658, (1, 388, 388, 2))


def test_unet3d_as_published():
    count, shape, collections = traced(create("unet3d", num_classes=3), (1, 132, 132, 116, 3))
    assert (count, shape) == (19_069_955, (1, 44, 44, 28, 3))
    assert "batch_stats" in collections  # BatchNorm before each ReLU


def test_output_size_helper_agrees_with_the_model():
    assert unet_output_size(572) == 388 and unet_output_size(132, depth=3) == 44 and unet_output_size(116, 3) == 28
    model = create("unet", num_classes=3, width=2, depth=2)
    for size in (44, 60, 68):  # valid at depth 2: 4·b + 28
        expected = (1, unet_output_size(size, 2), unet_output_size(size + 8, 2), 3)
        assert traced(model, (1, size, size + 8, 1))[1] == expected


def test_invalid_size_names_the_nearest_valid_one():
    assert nearest_valid_input_size(570) == 572 and nearest_valid_input_size(10) == 188  # 188: the smallest, 4 out
    with pytest.raises(ConfigError, match=r"input size 570 is invalid .* nearest valid input size is 572 \(output 388"):
        traced(create("unet", num_classes=2), (1, 570, 572, 1))


def test_unet_padded_keeps_the_size_and_adds_batchnorm():
    count, shape, collections = traced(create("unet_padded", num_classes=2), (2, 48, 64, 1))
    # the paper's convolutions, plus BatchNorm's scale and shift after every 3×3 convolution
    convs_3x3 = 2 * (64 + 128 + 256 + 512 + 1024) + 2 * (512 + 256 + 128 + 64)
    assert (count, shape) == (31_030_658 + 2 * convs_3x3, (2, 48, 64, 2))
    assert "batch_stats" in collections
    assert traced(create("unet_padded", num_classes=5, width=8, norm=None), (1, 32, 16, 3))[1] == (1, 32, 16, 5)
    with pytest.raises(ConfigError, match=r"input size 50 is not divisible by 16 .* nearest valid input size is 48"):
        traced(create("unet_padded", num_classes=2), (1, 50, 64, 1))


def test_unet_padded_forward_with_a_swapped_convolution():
    model = create("unet_padded", num_classes=3, width=4, depth=2, conv="dilated")
    x = np.random.default_rng(0).standard_normal((2, 16, 12, 1), dtype=np.float32)
    variables = random_variables(model, x.shape)  # drawn in numpy: a compiled init takes long
    logits, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    assert logits.shape == (2, 16, 12, 3) and np.isfinite(np.asarray(logits)).all()
    assert variables["params"]["down1_conv1"]["kernel"].shape == (3, 3, 1, 4)
    assert not np.allclose(state["batch_stats"]["down1_norm1"]["mean"], 0)


RESNET18_TRUNK = 11_689_512 - 512 * 1000 - 1000  # torchvision's count without its dense head


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("fcn32s_resnet18", RESNET18_TRUNK + 512 * 21 + 21),
        # + two 4×4 class-to-class upsamplings without bias, scores on stage3 (256) and stage2 (128)
        ("fcn8s_resnet18", RESNET18_TRUNK + 512 * 21 + 21 + 2 * 16 * 21 * 21 + 256 * 21 + 21 + 128 * 21 + 21),
    ],
)
def test_fcn_counts_and_any_input_size(name, count):
    for size in ((64, 64), (70, 97)):
        assert traced(create(name, num_classes=21), (2, *size, 3))[:2] == (count, (2, *size, 21))


def test_fcn_bad_output_stride():
    with pytest.raises(ConfigError, match="output_stride must be one of"):
        traced(create("fcn8s_resnet18", num_classes=2, output_stride=4), (1, 64, 64, 3))


def test_bilinear_upsampling_interpolates_between_pixel_centres():
    up = ConvTranspose(2, (4, 4), strides=2, padding=1, use_bias=False, kernel_init=bilinear_upsampling_kernel)
    y = np.random.default_rng(1).standard_normal((1, 6, 5, 2)).astype(np.float32)
    out = np.asarray(up.apply(up.init(jax.random.PRNGKey(0), y), y))
    assert out.shape == (1, 12, 10, 2)

    def interp(a, axis):  # output pixel p sits at input coordinate (p + 0.5) / 2 - 0.5 (half-pixel centres)
        n = a.shape[axis]
        at = (np.arange(2 * n) + 0.5) / 2 - 0.5
        return np.apply_along_axis(lambda v: np.interp(at, np.arange(n), v), axis, a)

    expected = interp(interp(y.astype(np.float64), 1), 2)
    # the border row and column see the zero padding; inside, exactly bilinear
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-6)
