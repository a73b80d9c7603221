"""Detect with a trained window classifier: ``python detect.py --workdir=runs/mnist_detect --images=a.png,b.png
--out=detections [--scales=1,0.707,0.5] [--score_threshold=0.5] [--nms_iou=0.5] [--step N]``.

Writes, per image, ``<out>/<name>.json`` (boxes x0, y0, x1, y1 in pixels, class, score), ``<name>_heatmap.png``
(per-class score maps per scale) and ``<name>_boxes.png`` (see ``cnn/train/detect.py``).
"""

from cnn.platform import configure_xla_cpu

configure_xla_cpu()  # before JAX starts

import sys  # noqa: E402

from absl import app, flags  # noqa: E402

from cnn.cli import run_cli  # noqa: E402

flags.DEFINE_string("workdir", None, "Workdir of a training run (holds config.json and checkpoints/).")
flags.DEFINE_list("images", None, "Image files (PNG, JPEG, ...), comma-separated.")
flags.DEFINE_string("out", None, "Directory for the outputs (created if absent).")
flags.DEFINE_list("scales", None, "Pyramid scales, e.g. 1,0.707,0.5 (default: the run's config.task.scales).")
flags.DEFINE_float("score_threshold", None, "Least window score that makes a box (default: the run's, else 0.5).")
flags.DEFINE_float("nms_iou", None, "Boxes of a class overlapping a better one more than this are dropped "
                   "(default: the run's, else 0.3).")
flags.DEFINE_integer("step", None, "Use the checkpoint at this step (default: the latest).")
flags.mark_flags_as_required(["workdir", "images", "out"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from cnn.errors import UserError
    from cnn.train.detect import detect_images

    f = flags.FLAGS
    try:
        scales = None if f.scales is None else [float(s) for s in f.scales]
    except ValueError:
        raise UserError(f"--scales={','.join(f.scales)}: expected numbers separated by commas") from None
    records = detect_images(f.workdir, f.images, f.out, scales, f.score_threshold, f.nms_iou, f.step)
    for record in records:
        print(f"{record['image']}: {len(record['detections'])} detection(s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
