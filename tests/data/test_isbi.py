"""The ISBI 2012 EM dense dataset: the fixed split of the 30 annotated slices, labels as in the PNGs read by
scikit-image (255 = cell = class 1), and the weight map computed once per slice then read from its cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
from skimage import io

from cnn.data import isbi, make_source
from cnn.errors import UserError

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "isbi2012_em"))


def source(tmp_path, weight_map=False):
    return make_source({"name": "isbi2012_em", "manual_dir": ROOT, "data_dir": str(tmp_path),
                        "weight_map": weight_map})


def test_split_is_slices_0_to_24_and_25_to_29_with_labels_of_the_pngs(tmp_path):
    data = source(tmp_path)
    assert data.spec.kind == "dense" and data.spec.num_classes == 2 and data.spec.splits == ("train", "heldout")
    train, heldout = data.load("train"), data.load("heldout")
    assert train.images.shape == (25, 512, 512, 1) and heldout.labels.shape == (5, 512, 512)
    assert train.weight is None
    for split, first in ((train, 0), (heldout, 25)):
        for n in (0, len(split) - 1):
            np.testing.assert_array_equal(split.images[n, ..., 0], io.imread(f"{ROOT}/train/image/{first + n}.png"))
            label = io.imread(f"{ROOT}/train/label/{first + n}.png")
            np.testing.assert_array_equal(split.labels[n], (label == 255).astype(np.int32))
    pixels = train.images / 255.0
    assert data.spec.mean[0] == pytest.approx(pixels.mean(), abs=1e-4)
    assert data.spec.std[0] == pytest.approx(pixels.std(), abs=1e-4)
    with pytest.raises(UserError, match=r"has no split 'test'; choose from \['train', 'heldout'\]"):
        data.load("test")


def test_weight_map_is_computed_once_per_slice_and_carried_as_the_batch_weight(tmp_path, monkeypatch):
    calls = []

    def fake_weight_map(label, **kwargs):  # the real one takes ~1.7 s a slice; its values are tested elsewhere
        calls.append(kwargs)
        return label.astype(np.float32) + len(calls)

    monkeypatch.setattr(isbi, "unet_weight_map", fake_weight_map)
    heldout = source(tmp_path, weight_map=True).load("heldout")
    assert len(calls) == 5 and calls[0] == {"w0": 10.0, "sigma": 5.0, "cell_class": 1}
    again = source(tmp_path, weight_map=True).load("heldout")  # from the cache
    assert len(calls) == 5
    np.testing.assert_array_equal(again.weight, heldout.weight)
    batch = again.batch(np.array([3, 1]))
    np.testing.assert_array_equal(batch["weight"], heldout.labels[[3, 1]] + np.array([4, 2])[:, None, None])


def test_missing_manual_dir_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"'isbi2012_em': config.dataset.manual_dir=.* must hold \['train/image'"):
        make_source({"name": "isbi2012_em", "manual_dir": str(tmp_path)})
