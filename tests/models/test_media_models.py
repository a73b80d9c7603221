"""1D and 3D models against published numbers: torchvision's video ResNet counts at 400 classes
(``weights.meta["num_params"]``), C3D, M5, MNIST-1D's ConvBase and the log-mel CNN counted by hand from their
papers' layer tables, MedMNIST's 3D ResNet-18 (with and without ACS) from its layer shapes; the MNIST-1D CNN's
forward against a numpy loop of torch's Conv1d/flatten/Linear; any clip size; one-line errors for wrong inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.models import create
from tests.models.test_zoo import init_shapes, num_params


def resnet18_3d_count(kernel_taps: int, channels: int, num_classes: int) -> int:
    """MedMNIST's ResNet-18 (kuangliu's CIFAR layout: 3×3 stem of 64, no pool) with ``kernel_taps`` per 3×3 kernel
    (27 in 3D, 9 under ACS), 1×1 projections, BN scale and offset per channel, dense head."""
    count = kernel_taps * channels * 64 + 2 * 64
    cin = 64
    for cout in (64, 128, 256, 512):
        for _ in range(2):
            count += kernel_taps * (cin * cout + cout * cout) + 4 * cout
            if cin != cout:
                count += cin * cout + 2 * cout
            cin = cout
    return count + 512 * num_classes + num_classes


# name: (parameters, classes, input shape)
MEDIA_PUBLISHED = {
    "r3d_18": (33_371_472, 400, (1, 16, 112, 112, 3)),  # torchvision R3D_18_Weights.KINETICS400_V1
    "mc3_18": (11_695_440, 400, (1, 16, 112, 112, 3)),  # MC3_18_Weights.KINETICS400_V1
    "r2plus1d_18": (31_505_325, 400, (1, 16, 112, 112, 3)),  # R2Plus1D_18_Weights.KINETICS400_V1
    "fr2d_18": (11_689_512 - 513 * 600, 400, (1, 16, 112, 112, 3)),  # torchvision resnet18, head 1000 → 400 classes
    # Tran et al. 2015 fig. 3: 8 convs 3×3×3 (27·C·O + O), fc6 8,192 → 4,096, fc7, fc8 to Sports-1M's 487
    "c3d": (27 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 256 + 256 * 512 + 3 * 512 * 512) + 64 + 128
            + 2 * 256 + 4 * 512 + 8192 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 487 + 487, 487,
            (1, 16, 112, 112, 3)),
    # Dai et al. 2017 table 1 (M5 "0.5M"): convs 80·1·128, 3·128·128, 3·128·256, 3·256·512, no bias; BN scale and
    # offset; dense 512 → 10
    "m5": (80 * 128 + 3 * 128 * 128 + 3 * 128 * 256 + 3 * 256 * 512 + 2 * (128 + 128 + 256 + 512) + 512 * 10 + 10,
           10, (1, 8000, 1)),
    # ConvBase: Conv1d(1, 25, 5), Conv1d(25, 25, 3) twice, Linear(125, 10), with biases
    "mnist1d_cnn": (5 * 25 + 25 + 2 * (3 * 25 * 25 + 25) + 125 * 10 + 10, 10, (1, 40, 1)),
    # 3×3 convs 1→32→64→128→128 without bias, BN, dense 128 → 10
    "log_mel_cnn": (9 * (32 + 32 * 64 + 64 * 128 + 128 * 128) + 2 * (32 + 64 + 128 + 128) + 1290, 10,
                    (1, 40, 64, 1)),
    "resnet18_3d": (resnet18_3d_count(27, 1, 2), 2, (1, 28, 28, 28, 1)),  # MedMNIST: AdrenalMNIST3D, 1 channel
}


@pytest.mark.parametrize("name", sorted(MEDIA_PUBLISHED))
def test_parameter_count(name):
    count, num_classes, shape = MEDIA_PUBLISHED[name]
    assert num_params(create(name, num_classes=num_classes), shape) == count


def test_m5_is_the_papers_half_million():
    assert round(MEDIA_PUBLISHED["m5"][0], -5) in (500_000, 600_000)  # table 1 gives 0.5M (558,090 exactly)


@pytest.mark.parametrize(("conv", "taps"), [("standard", 27), ("acs", 9)])
def test_resnet18_3d_and_its_acs_variant(conv, taps):
    model = create("resnet18_3d", num_classes=2, conv=conv)
    assert num_params(model, (1, 28, 28, 28, 1)) == resnet18_3d_count(taps, 1, 2)


@pytest.mark.parametrize(
    ("name", "shape"),
    [("r3d_18", (2, 5, 33, 20, 3)), ("mc3_18", (2, 1, 17, 17, 3)), ("r2plus1d_18", (2, 7, 24, 40, 3)),
     ("fr2d_18", (2, 3, 20, 20, 3)), ("c3d", (2, 19, 50, 37, 3)), ("resnet18_3d", (2, 64, 64, 64, 1)),
     ("m5", (2, 1021, 1)), ("mnist1d_cnn", (2, 73, 1)), ("log_mel_cnn", (2, 40, 9, 1))],
)
def test_any_clip_size_in_train_and_eval_mode(name, shape):
    model = create(name, num_classes=5)
    variables = init_shapes(model, shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape == (2, 5)
    logits, _ = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}),
        variables, x,
    )
    assert logits.shape == (2, 5)


def conv1d_loop(x, kernel, bias, stride, pad):
    """torch's Conv1d on ``(length, C)``, kernel ``(O, C, k)``:
    ``y[i, o] = b[o] + sum_{c,k} x_pad[i·s + k, c] w[o, c, k]``."""
    xp = np.pad(x, ((pad, pad), (0, 0)))
    out = (len(xp) - kernel.shape[2]) // stride + 1
    y = np.tile(bias, (out, 1)).astype(np.float64)
    for i in range(out):
        for o in range(kernel.shape[0]):
            y[i, o] += np.sum(xp[i * stride : i * stride + kernel.shape[2]].T * kernel[o])
    return y


def test_mnist1d_cnn_is_convbase():
    """ConvBase's forward in numpy with the same weights (torch layouts), flattened channel-major as torch's view."""
    model = create("mnist1d_cnn", num_classes=10)
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32) * 0.3,
                             init_shapes(model, (2, 40, 1)))
    x = rng.standard_normal((2, 40, 1)).astype(np.float32)
    got = np.asarray(jax.jit(model.apply)(variables, x))
    p = variables["params"]
    for n in range(2):
        h = x[n]
        for name, stride in (("conv1", 2), ("conv2", 2), ("conv3", 2)):
            kernel = np.transpose(p[name]["kernel"], (2, 1, 0))  # (k, C, O) → torch's (O, C, k)
            h = np.maximum(conv1d_loop(h, kernel, p[name]["bias"], stride, 1), 0)
        flat = h.T.reshape(-1)  # torch: (channels, length) flattened
        np.testing.assert_allclose(got[n], flat @ p["linear"]["kernel"] + p["linear"]["bias"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("resnet18", (1, 16, 16, 16, 3), r"ResNet takes images \(batch, height, width, channels\), got an input of "
                                         r"shape \(1, 16, 16, 16, 3\)"),
        ("r3d_18", (1, 32, 32, 3), r"ResNet3d takes volumes or clips"),
        ("m5", (1, 4000, 2, 1), r"M5 takes waveforms \(batch, samples, channels\)"),
        ("log_mel_cnn", (1, 40, 50, 9, 1), r"LogMelCNN takes spectrograms"),
        ("m5", (1, 1020, 1), r"M5 needs clips of at least 1021 samples .*, got 1020"),
        ("c3d", (1, 15, 112, 112, 3), r"C3D needs clips of at least 16 frames of 16×16 .*, got \(15, 112, 112\)"),
        ("log_mel_cnn", (1, 40, 7, 1), r"LogMelCNN needs spectrograms of at least 8×8 .*, got \(40, 7\)"),
    ],
)
def test_wrong_input_rank_or_too_short_is_one_line(name, shape, message):
    with pytest.raises(ValueError, match=message) as error:
        init_shapes(create(name, num_classes=3), shape)
    assert "\n" not in str(error.value)


def test_the_count_formula_in_2d_is_the_published_cifar_resnet18():
    """With 9 taps the formula is the 2D network MedMNIST converts: kuangliu's CIFAR ResNet18, 11,173,962 parameters
    (10 classes)."""
    assert resnet18_3d_count(9, 3, 10) == 11_173_962
