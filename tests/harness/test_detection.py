"""The ``detection`` task and ``detect.py`` on one tiny run of configs/mnist_detect.py:runlocal (trained once, in
process): eval.py's AP@0.5 recomputed by pycocotools from the saved boxes, the ground truth made again from MNIST's
test digits, and detect.py's boxes and scores found again by a crop-by-crop loop of the plain classifier."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from cnn.data import make_source
from cnn.data.windows import BACKGROUND, detection_canvases, image_pyramid
from cnn.errors import ConfigError, UserError
from cnn.models import create
from cnn.train.config import load_config_file
from cnn.train.detect import detect_images
from cnn.train.experiment import Experiment
from cnn.train.loop import train_and_evaluate
from tests.data.test_canvas import needs_mnist
from tests.harness.conftest import ROOT, restore_params, run_cli
from tests.ops.test_detection import coco_ap

pytestmark = needs_mnist
THRESHOLD = 0.2  # a barely trained classifier scores little: low enough to leave boxes to match
STEP = 6


def runlocal_config():
    config = load_config_file(str(ROOT / "configs" / "mnist_detect.py") + ":runlocal")
    config.task.score_threshold = THRESHOLD
    return config


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("detect") / "run"
    train_and_evaluate(runlocal_config(), str(workdir))
    return workdir


def test_eval_reports_coco_ap_of_the_saved_boxes(detect_run):
    result = run_cli("eval.py", f"--workdir={detect_run}", "--save_predictions",
                     env={"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"})
    assert "mAP@0.5" in result.stdout
    report = json.loads((detect_run / f"eval_{STEP}.json").read_text())
    assert report["task"] == "detection" and report["split"] == "canvases" and report["count"] == 5
    # 64², 45² and 32² levels: (size - 32) // 4 + 1 windows a side, 81 + 16 + 1 per canvas
    assert report["windows"] == 5 * 98
    truth = detection_canvases(5, seed=0, canvas_size=(64, 64))
    with np.load(detect_run / f"predictions_{STEP}.npz") as saved:
        saved = dict(saved)
    real = truth["box_labels"] >= 0
    np.testing.assert_array_equal(saved["truth_boxes"], truth["boxes"][real])
    np.testing.assert_array_equal(saved["truth_labels"], truth["box_labels"][real])
    assert report["num_detections"] == len(saved["scores"]) > 0 and (saved["scores"] >= THRESHOLD).all()

    class Found:  # one image's detections, as coco_ap reads them
        def __init__(self, n):
            mine = saved["image"] == n
            self.boxes, self.scores, self.labels = saved["boxes"][mine], saved["scores"][mine], saved["labels"][mine]

    per_image = [(saved["truth_boxes"][saved["truth_image"] == n], saved["truth_labels"][saved["truth_image"] == n])
                 for n in range(5)]
    reference = coco_ap([Found(n) for n in range(5)], per_image, 10)
    ours = np.array([-1 if a is None else a for a in report["ap50"]])
    np.testing.assert_allclose(ours, reference, atol=1e-12)
    np.testing.assert_allclose(report["map50"], reference[reference > -1].mean(), atol=1e-12)


def test_detect_finds_the_crop_loops_windows(detect_run, tmp_path):
    image = detection_canvases(1, seed=7, canvas_size=(72, 64))["images"][0]
    Image.fromarray(image).save(tmp_path / "canvas.png")
    scales = (1.0, 0.6)
    (record,) = detect_images(str(detect_run), [str(tmp_path / "canvas.png")], str(tmp_path / "out"), scales)
    assert record == json.loads((tmp_path / "out" / "canvas.json").read_text())
    for picture in ("canvas_heatmap.png", "canvas_boxes.png"):
        assert Image.open(tmp_path / "out" / picture).size[0] > 0
    # The reference: the plain classifier on every 32×32 crop of each level, stride 4; each candidate's box is the
    # mean ink box of its class in the train crops, through the scale.
    source = make_source(runlocal_config().dataset)
    crops = source.crops("train")
    templates = np.stack([crops["boxes"][crops["labels"] == c].mean(0) for c in range(10)])
    params = {"params": restore_params(detect_run, STEP)["params"]}
    model = create("lenet5", num_classes=11)
    candidates = []
    for scale, level in zip(scales, image_pyramid(image, scales), strict=True):
        corners = [(top, left) for top in range(0, level.shape[0] - 32 + 1, 4)
                   for left in range(0, level.shape[1] - 32 + 1, 4)]
        windows = np.stack([level[top: top + 32, left: left + 32] for top, left in corners])[..., None]
        normalized = (windows.astype(np.float32) / 255 - source.spec.mean) / source.spec.std
        probs = np.asarray(jax.nn.softmax(model.apply(params, normalized)))  # the classifier, one crop each
        for k, c in zip(*np.nonzero(probs[:, :BACKGROUND] >= THRESHOLD), strict=True):
            top, left = corners[k]
            candidates.append(((np.array([left, top] * 2) + templates[c]) / scale, int(c), float(probs[k, c])))
    assert 0 < len(record["detections"]) <= len(candidates)
    for found in record["detections"]:
        assert any(c == found["class"] and np.allclose(box, found["box"], atol=0.01) and
                   np.isclose(score, found["score"], atol=1e-5) for box, c, score in candidates)
    best = max(candidates, key=lambda candidate: candidate[2])
    assert np.isclose(record["detections"][0]["score"], best[2], atol=1e-5)  # NMS keeps the best


@pytest.mark.parametrize("kind", ["unreadable", "small", "rgb"])
def test_bad_images_are_one_line_naming_the_file(detect_run, tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "unreadable":
        path.write_text("not a picture")
    else:
        Image.fromarray(np.zeros((20, 20) if kind == "small" else (40, 40, 3), np.uint8)).save(path)
    expected = {"unreadable": "cannot read it", "small": "smaller than the window", "rgb": "3 channel"}[kind]
    with pytest.raises(UserError, match=expected) as error:
        detect_images(str(detect_run), [str(path)], str(tmp_path / "out"))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_classifier_that_cannot_scan_is_one_line():
    config = runlocal_config()
    config.model.name = "vgg11"
    with pytest.raises(ConfigError, match="VGG cannot be made fully convolutional") as error:
        Experiment(config, make_source(config.dataset).spec)
    assert "\n" not in str(error.value)
