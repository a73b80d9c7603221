"""Node classification: one graph, a label per node, full-batch training (Kipf & Welling 2017's setting).

The dataset is one graph (``cnn.data.graphs``): node features, an edge list and a label per node, and its splits
are node masks (train, validation, test). Every training step sees the whole graph, so a step is an epoch; the loss
and the accuracy are means over the split's nodes only, and evaluation counts exactly the nodes of its split's mask.
Everything else is classification's (``cnn.tasks.classification``): cross-entropy, accuracy, confusion matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from cnn.errors import UserError
from cnn.tasks.base import Batch, raise_batch_error
from cnn.tasks.classification import Classification


class FullGraphStream:
    """The training "stream" of one graph: the same batch (the whole graph, the train mask) at every step."""

    steps_per_epoch = 1
    wait_seconds = 0.0

    def __init__(self, batch: Batch):
        self.graph = batch

    def batch(self, step: int) -> Batch:
        return self.graph

    def iterate(self, start_step: int, end_step: int) -> Iterator[Batch]:
        for _ in range(start_step, end_step):
            yield self.graph


class NodeClassification(Classification):
    name = "node_classification"
    data_kind = "graph"
    shard_batch = False  # one graph, replicated on every device
    preprocessed = False  # the source gives the graph ready (row-normalized features)

    def steps_per_epoch(self, split, global_batch):
        return 1

    def train_stream(self, split, preprocess, global_batch, seed, process_index, process_count):
        return FullGraphStream(split.batch())

    def eval_batches(self, split, preprocess, global_batch, process_index, process_count):
        return iter([split.batch()])

    def check_split(self, split, name):
        from cnn.tasks.base import check_labels

        check_labels(split.labels[split.mask], self.num_classes, f"split {name!r} (its masked nodes)")

    def check_batch(self, batch: Batch) -> None:
        """The graph (features ``(N, F)``, edges naming nodes ``0 .. N-1``: ``cnn.ops.check_graph``), then a label
        and a mask entry per node."""
        from cnn.ops.graph import check_graph

        try:
            nodes = check_graph(self.model_input(batch), where="graph batch")
        except ValueError as error:
            raise UserError(str(error)) from None
        for key in ("label", "mask"):
            if batch[key].shape != (nodes,):
                raise_batch_error(key, f"({nodes},), one per node of the {nodes} node features", batch[key])

    def model_input(self, batch: dict[str, Any]) -> Any:
        from cnn.ops.graph import Graph

        return Graph(nodes=batch["features"], senders=batch["senders"], receivers=batch["receivers"])

    def sample_batch(self) -> Batch:
        """A graph of one node with the dataset's features and no edge: what initialization needs."""
        return {"features": np.zeros((1, *self.spec.image_shape), np.float32), "senders": np.zeros((0,), np.int32),
                "receivers": np.zeros((0,), np.int32), "label": np.zeros((1,), np.int32),
                "mask": np.zeros((1,), np.float32)}

    def sample_input(self, batch: Batch) -> Any:
        return self.model_input(batch)
