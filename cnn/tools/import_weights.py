"""Import torchvision's pretrained weights as a checkpoint of this project:

    python -m cnn.tools.import_weights resnet50 --from=resnet50-0676ba61.pth --out=weights/resnet50 \
        --config=configs/imagenet_resnet50.py

reads the file without torch (``cnn.models.load_torchvision``: ``.pth`` or ``.safetensors``), puts the tensors into
the training state the config builds (model ``NAME``: the config's model is replaced) and writes ``--out`` as a
training run at step 0: ``config.json`` and ``checkpoints/0``. Then ``python eval.py --workdir=weights/resnet50``
evaluates it, and ``python train.py --config=... --config.init_from=weights/resnet50`` fine-tunes from it. When the
config's dataset has another class count than the file, the head keeps its fresh initialization, named in the log.
"""

from cnn.platform import configure_xla_cpu

configure_xla_cpu()  # before JAX starts

import os  # noqa: E402
import sys  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnn.cli import run_cli  # noqa: E402


def import_weights(name: str, path: str, config, out: str) -> None:
    """Write ``out``: ``config`` with model ``name``, and a checkpoint at step 0 with the weights of ``path``."""
    from cnn.data import make_source
    from cnn.errors import UserError
    from cnn.models import load_torchvision
    from cnn.train.checkpoint import merge_pretrained, open_checkpoints
    from cnn.train.config import save_config
    from cnn.train.experiment import Experiment

    config.model.name = name
    variables = load_torchvision(name, path)
    checkpoints = open_checkpoints(config, out)
    if checkpoints.steps():
        raise UserError(f"--out={out} already holds checkpoints {checkpoints.steps()}; choose an empty directory")
    exp = Experiment(config, make_source(config.dataset).spec)
    state = merge_pretrained(exp.init_state(), variables["params"], {"batch_stats": variables["batch_stats"]}, path)
    save_config(config, out)
    checkpoints.save(0, state)
    checkpoints.wait()
    checkpoints.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise app.UsageError("usage: python -m cnn.tools.import_weights NAME --from=FILE --out=DIR --config=CONFIG")
    f = flags.FLAGS
    os.makedirs(f.out, exist_ok=True)
    import_weights(argv[1], f["from"].value, f.config, f.out)
    print(f"wrote {f.out}: config.json and checkpoints/0 ({argv[1]} from {f['from'].value})")
    return 0


def define_flags() -> None:
    """The command line's flags, defined only when this runs as a program (importing it defines none)."""
    config_flags.DEFINE_config_file(
        "config", None, "Experiment config file (path[:variant]): the dataset and optimizer the checkpoint is for; "
        "its model is replaced by NAME.", lock_config=False)
    flags.DEFINE_string("from", None, "torchvision checkpoint file (.pth or .safetensors).")
    flags.DEFINE_string("out", None, "Directory to write (config.json, checkpoints/0); must not hold checkpoints yet.")
    flags.mark_flags_as_required(["config", "from", "out"])


if __name__ == "__main__":
    define_flags()
    sys.exit(run_cli(main))
