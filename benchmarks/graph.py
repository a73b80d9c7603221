"""Message passing on Cora: gather + ``segment_sum`` against a ``jax.experimental.sparse`` BCOO product (the two
``method``s of ``cnn.ops.propagate``; these numbers chose the default), then the two GCN layers of Kipf & Welling,
then one training epoch of each model of ``configs/planetoid.py`` (``--tables epoch``).

The graph is Cora's (2,708 nodes, 10,556 directed edges, read from ``shared/data/planetoid`` by the TFDS builder's
reader) with its self loops and normalized weights (``gcn_normalize``): 13,264 edges. Features are random, of each
width ``F``; "fwd+bwd" also takes the gradients with respect to the features and the edge weights.

    .venv/bin/python benchmarks/graph.py [--repeats 7] [--tables propagate layers epoch]

An epoch is one compiled train step of the run's ``Experiment`` on the whole graph (forward, backward, Adam with the
first layer's decay) and one evaluation of the validation nodes (forward), the work ``train.py`` does per epoch with
early stopping; the graph is read through the TFDS builder (prepared in the default data dir on first use).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/graph.py` from the repo root

from cnn.platform import configure_xla_cpu

configure_xla_cpu()  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from timing import OtherLoad, Timer, forward_backward, load_average, normal, table  # noqa: E402

from cnn import ops  # noqa: E402
from cnn.data.builders.planetoid import read_planetoid  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "planetoid"
WIDTHS = (7, 16, 64, 256, 1433)
TABLES = ["propagate", "layers", "epoch"]


def propagate(x: jax.Array, weights: jax.Array, *, graph: ops.Graph, method: str) -> jax.Array:
    return ops.propagate(graph._replace(nodes=x, weights=weights), method=method)


def gcn_layer(x: jax.Array, kernel: jax.Array, *, graph: ops.Graph, method: str) -> jax.Array:
    return ops.gcn_conv(graph._replace(nodes=x), kernel, method=method)


def epoch_times(timer: Timer, variant: str) -> tuple[float, float]:
    """Seconds of one train step and one evaluation of ``configs/planetoid.py:<variant>``."""
    from cnn.train.config import load_config_file
    from cnn.train.experiment import plan_training

    config = load_config_file(str(Path(__file__).resolve().parents[1] / "configs" / f"planetoid.py:{variant}"))
    config.dataset.manual_dir = str(DATA)
    with tempfile.TemporaryDirectory(prefix="graph-epoch-") as workdir:
        plan = plan_training(config, workdir)
        exp = plan.experiment
        state, batch = exp.init_state(), exp.to_device(plan.train_stream.batch(0))
        key = jax.random.PRNGKey(0)
        train = timer.host(lambda: jax.block_until_ready(exp.train_step(state, batch, key)))
        evaluate = timer.host(lambda: exp.evaluate(state, plan.eval_split))
        plan.checkpoints.close()
    return train, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=TABLES)
    args = parser.parse_args()
    timer = Timer(args.repeats, budget_s=2.0)
    rng = np.random.default_rng(0)
    cora = read_planetoid(DATA, "cora")
    edges = jnp.asarray(cora["edges"])
    num_nodes = len(cora["labels"])
    print(f"load average at the start: {load_average()}")
    other = OtherLoad()

    if "propagate" in args.tables:
        propagate_table(timer, rng, edges, num_nodes)
    if "layers" in args.tables:
        layer_table(timer, rng, edges, num_nodes)
    if "epoch" in args.tables:
        rows = []
        for variant in ("cora,gcn", "cora,chebnet_k2", "cora,chebnet_k3", "citeseer,gcn", "citeseer,chebnet_k2",
                        "citeseer,chebnet_k3"):
            train, evaluate = epoch_times(timer, variant)
            rows.append([variant, train * 1e3, evaluate * 1e3, (train + evaluate) * 1e3])
        print("\n### one training epoch (configs/planetoid.py)\n")
        print(table(["variant", "train step ms", "evaluation ms", "epoch ms"], rows))
    print(f"\nload average at the end: {load_average()}; other processes used {other.stop():.0%} of the cores; "
          f"jax {jax.__version__}")


def propagate_table(timer: Timer, rng: np.random.Generator, edges: jax.Array, num_nodes: int) -> None:
    rows = []
    for width in WIDTHS:
        x = normal(rng, num_nodes, width)
        graph = ops.gcn_normalize(ops.Graph(x, edges[:, 0], edges[:, 1]))
        row: list = [width]
        for method in ("segment", "sparse"):
            run = partial(propagate, graph=graph, method=method)
            cotangent = normal(rng, num_nodes, width)
            row += [timer(run, x, graph.weights) * 1e3,
                    timer(forward_backward(run), cotangent, x, graph.weights) * 1e3]
        rows.append(row)
    print("\n### propagate: A X on Cora (13,264 edges with self loops)\n")
    print(table(["F", "segment fwd ms", "segment fwd+bwd ms", "sparse fwd ms", "sparse fwd+bwd ms"], rows))


def layer_table(timer: Timer, rng: np.random.Generator, edges: jax.Array, num_nodes: int) -> None:
    rows = []
    for f_in, f_out in ((1433, 16), (16, 7)):
        x, kernel = normal(rng, num_nodes, f_in), normal(rng, f_in, f_out, scale=f_in**-0.5)
        graph = ops.Graph(x, edges[:, 0], edges[:, 1])
        row = [f"{f_in} -> {f_out}"]
        for method in ("segment", "sparse"):
            layer = partial(gcn_layer, graph=graph, method=method)
            cotangent = normal(rng, num_nodes, f_out)
            row += [timer(layer, x, kernel) * 1e3, timer(forward_backward(layer), cotangent, x, kernel) * 1e3]
        rows.append(row)
    print("\n### gcn_conv on Cora (normalization included)\n")
    print(table(["layer", "segment fwd ms", "segment fwd+bwd ms", "sparse fwd ms", "sparse fwd+bwd ms"], rows))


if __name__ == "__main__":
    main()
