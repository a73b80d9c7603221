"""``cnn.tools.macs`` against torchvision's published GFLOPS (``weights.meta["_ops"]``, which count the
multiply-accumulates of convolutions and linear layers) and against hand-computed counts; ``cnn.tools.receptive_field``
against receptive fields computed by hand from the papers' tables and against the measured gradient support."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnn.layers import conv_module
from cnn.models import create
from cnn.tools import macs as macs_tool
from cnn.tools import receptive_field as rf_tool
from cnn.tools.macs import count_macs, macs_by_module

# torchvision's "_ops" at 224×224 (GFLOPS as they publish them, rounded to that many decimals)
PUBLISHED_GMACS = {"resnet18": 1.814, "resnet50": 4.089, "vgg16": 15.47, "alexnet": 0.714, "efficientnet_b0": 0.386}


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_macs_match_torchvision(name):
    published = PUBLISHED_GMACS[name]
    decimals = len(str(published).split(".")[1])
    macs = count_macs(create(name, num_classes=1000), (1, 224, 224, 3))
    assert round(macs / 1e9, decimals) == published


class Nested(nn.Module):
    """A strided convolution, a depthwise one (shifted slices on CPU), a dense layer in a 3-step scan, a cond."""

    @nn.compact
    def __call__(self, x, train=False):
        x = conv_module("standard")(8, (3, 3), 2, padding=1, name="conv")(x)  # 1×5×5×8 out, 3·3·4 taps each
        x = conv_module("standard")(8, (5, 5), padding=2, feature_group_count=8, name="depthwise")(x)  # 5·5 taps
        h = x.reshape(1, -1)  # 200 features
        kernel = self.param("kernel", nn.initializers.zeros, (200, 200))
        h, _ = jax.lax.scan(lambda h, _: (h @ kernel, None), h, None, length=3)
        small, big = self.param("small", nn.initializers.zeros, (200, 2)), self.param("big", nn.initializers.zeros,
                                                                                       (200, 7))
        return jax.lax.cond(h.sum() > 0, lambda h: h @ small, lambda h: (h @ big)[:, :2], h)


def test_macs_by_hand_with_nested_jaxprs():
    by_module = macs_by_module(Nested(), (1, 10, 10, 4))
    assert by_module == {"conv": 5 * 5 * 8 * 3 * 3 * 4, "depthwise": 5 * 5 * 8 * 5 * 5, "": 3 * 200 * 200 + 200 * 7}
    assert count_macs(Nested(), (1, 10, 10, 4)) == sum(by_module.values())


def test_macs_cli(capsys):
    macs_tool.main(["lenet5", "--size", "32", "--channels", "1", "--num-classes", "10"])
    # C1 28²·6·25 + C3 10²·16·150 + C5 120·400 + F6 120·84 + output 84·10
    assert capsys.readouterr().out.strip() == (
        "lenet5 at 32×32×1, 10 classes: 61,706 parameters, 416,520 MACs (0.000 G)"
    )


def test_macs_rejects_a_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape must be"):
        count_macs(create("lenet5", num_classes=10), (32, 32))


# Receptive field sizes and jumps after each stage, by hand: r += (k - 1)·j, j *= s along the longest path.
# resnet18: stem 7/2 -> 7 (j 2); max pool 3/2 -> 11 (j 4) and four 3×3 -> 43; each later stage: a 3×3/2 adds 2j,
# three 3×3 add 3·2·(2j): 43 + 8 + 48 = 99 (j 8), 99 + 16 + 96 = 211 (j 16), 211 + 32 + 192 = 435 (j 32).
# vgg11 (last conv of each stage; a 2×2/2 pool opens stages 2-5): 3; 4, 8; 10, 18, 26; 30, 46, 62; 70, 102, 134.
HAND_FIELDS = {
    "resnet18": [(7, 2), (43, 4), (99, 8), (211, 16), (435, 32)],
    "vgg11": [(3, 1), (8, 2), (26, 4), (62, 8), (134, 16)],
}


@pytest.mark.parametrize(("name", "size"), [("resnet18", 96), ("vgg11", 64)])
def test_receptive_fields_analytic_by_hand_and_measured(name, size):
    model = create(name, num_classes=10)
    rows, head_macs = rf_tool.stage_fields(model, size)
    assert [(row.field.size, row.field.jump) for row in rows] == HAND_FIELDS[name]
    for row in rows:
        assert (row.measured.first, row.measured.last) == row.analytic, row.stage
    assert sum(row.macs for row in rows) + head_macs == count_macs(model, (1, size, size, 3))
    assert rows[0].macs == macs_by_module(model, (1, size, size, 3))[rows[0].stage]


def test_receptive_field_cli(capsys):
    rf_tool.main(["lenet5", "--channels", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("lenet5 on 32×32×1")
    # C1 5×5 -> 5; S2 2/2 -> 6 (j 2), C3 5×5 -> 14; S4 2/2 -> 16 (j 4), C5 5×5 -> 32: the whole 32×32 input
    assert [line.split()[:3] for line in lines[2:5]] == [["C1", "5", "1"], ["C3", "14", "2"], ["C5", "32", "4"]]
    assert lines[4].split()[4:6] == ["0..31", "0..31"]


def test_constant_variables_keep_activations_positive():
    shapes = {"params": {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 4, 8), jnp.float32),
                                  "bias": jax.ShapeDtypeStruct((8,), jnp.float32)},
                         "bn": {"scale": jax.ShapeDtypeStruct((8,), jnp.float32)}},
              "batch_stats": {"bn": {"mean": jax.ShapeDtypeStruct((8,), jnp.float32),
                                     "var": jax.ShapeDtypeStruct((8,), jnp.float32)}}}
    values = rf_tool.constant_variables(shapes)
    assert float(values["params"]["conv"]["kernel"][0, 0, 0, 0]) == pytest.approx(1 / 36)
    assert float(values["params"]["conv"]["bias"].sum()) == 0
    assert float(values["params"]["bn"]["scale"].min()) == float(values["batch_stats"]["bn"]["var"].min()) == 1


@pytest.mark.parametrize(
    ("tool", "argv", "message"),
    [
        (macs_tool, ["vgg11", "--size", "16"], "VGG needs images of at least 32×32"),
        (macs_tool, ["resnet18", "--size", "0"], "argument --size: expected an int >= 1, got 0"),
        (rf_tool, ["small_cnn"], "model 'small_cnn' does not describe its layer chain"),
        (rf_tool, ["alexnet", "--size", "40"], "AlexNet needs images of at least 63×63"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tool, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        tool.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]
