"""End to end (slow): LeNet-5 trained briefly on window crops of MNIST train digits, run fully convolutionally over
an image pyramid of test canvases, NMS, and COCO AP at IoU 0.5 well above chance on MNIST test digits."""

import jax
import numpy as np
import optax
import pytest

from cnn.data.windows import BACKGROUND, PYRAMID, box_templates, detection_canvases, image_pyramid, make_window_crops
from cnn.models import create
from cnn.models.fully_conv import fully_convolutional
from cnn.ops.detection import average_precision, mean_average_precision, pyramid_detections
from tests.data.test_canvas import needs_mnist


@needs_mnist
@pytest.mark.slow
def test_trained_window_classifier_detects_test_digits():
    crops = make_window_crops("train", 20_000, seed=0)
    images, labels = crops["images"].astype(np.float32) / 255, crops["labels"]
    model = create("lenet5", num_classes=11)
    params = model.init(jax.random.PRNGKey(0), images[:1])
    optimizer = optax.adam(2e-3)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    opt_state, rng = optimizer.init(params), np.random.default_rng(0)
    for _ in range(1500):
        batch = rng.integers(0, len(labels), 128)
        params, opt_state = step(params, opt_state, images[batch], labels[batch])

    net = fully_convolutional(model, 32)
    digit_scores = jax.jit(lambda x: jax.nn.softmax(net.score_map(params, x))[..., :BACKGROUND])
    templates = box_templates(labels, crops["boxes"])
    canvases = detection_canvases(50, seed=0)
    found, truth = [], []
    for image, boxes, box_labels, count in zip(canvases["images"], canvases["boxes"], canvases["box_labels"],
                                               canvases["num_boxes"], strict=True):
        maps = [np.asarray(digit_scores(level[None, ..., None].astype(np.float32) / 255))[0]
                for level in image_pyramid(image, PYRAMID)]
        found.append(pyramid_detections(maps, PYRAMID, net.stride, 32, threshold=0.5, iou_threshold=0.5,
                                        templates=templates))
        truth.append((boxes[:count], box_labels[:count]))
    assert mean_average_precision(average_precision(found, truth, 10)) > 0.4  # measured 0.49
