"""Graph datasets: one graph whose splits are node masks (Cora and CiteSeer with the Planetoid split).

``load(split)`` returns a :class:`GraphSplit`: the whole graph, and the mask of the split's nodes. Features are
row-normalized (each node's bag of words sums to 1; an all-zero row stays zero), as Kipf & Welling's reference code
does. Read through the TFDS builder ``planetoid`` (``cnn.data.builders.planetoid``) from ``dataset.manual_dir``
(``shared/data/planetoid``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cnn.data.sources import DATASETS, DatasetSpec, TfdsDataset, TfdsSource, check_split
from cnn.errors import UserError

GRAPH_SPLITS = {"train": "train_mask", "validation": "val_mask", "test": "test_mask"}

GRAPH_DATASETS = {
    "cora": TfdsDataset("planetoid/cora", DatasetSpec(7, (1433,), 1.0, kind="graph", splits=tuple(GRAPH_SPLITS)),
                        {}, "https://github.com/kimiyoung/planetoid"),
    "citeseer": TfdsDataset("planetoid/citeseer", DatasetSpec(6, (3703,), 1.0, kind="graph",
                                                              splits=tuple(GRAPH_SPLITS)),
                            {}, "https://github.com/kimiyoung/planetoid"),
}


@dataclasses.dataclass(frozen=True)
class GraphSplit:
    """A graph (``features (N, F)``, directed edges ``senders → receivers``, ``labels (N,)``) and the nodes of one
    split (``mask (N,)`` bool)."""

    features: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    labels: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.mask.sum())

    def batch(self) -> dict[str, np.ndarray]:
        return {"features": self.features, "senders": self.senders, "receivers": self.receivers,
                "label": self.labels, "mask": self.mask.astype(np.float32)}


def row_normalize(features: np.ndarray) -> np.ndarray:
    sums = features.sum(1, keepdims=True)
    return np.where(sums > 0, features / np.where(sums > 0, sums, 1), 0).astype(np.float32)


class GraphSource(TfdsSource):
    def __init__(self, name: str, data_dir: str | None = None, manual_dir: str | None = None):
        super().__init__(name, data_dir, manual_dir, dataset=GRAPH_DATASETS[name])
        self._graph: dict[str, np.ndarray] | None = None  # the one example, read once for every split

    def load(self, split: str) -> GraphSplit:
        check_split(self.name, split, self.spec.splits)
        if self._graph is None:
            import tensorflow_datasets as tfds

            builder = self.prepare()
            (self._graph,) = tfds.as_numpy(builder.as_dataset(split="full"))
        g = self._graph
        check_masks(self.name, {name: np.asarray(g[key], bool) for name, key in GRAPH_SPLITS.items()})
        return GraphSplit(row_normalize(g["features"]), g["edges"][:, 0].astype(np.int32),
                          g["edges"][:, 1].astype(np.int32), g["labels"].astype(np.int32),
                          g[GRAPH_SPLITS[split]].astype(bool))


def check_masks(dataset: str, masks: dict[str, np.ndarray]) -> None:
    """The splits of a graph are disjoint, non-empty sets of nodes: a node in two splits (training on test nodes)
    or a split without nodes (a metric of nothing) is a one-line error naming them."""
    for name, mask in masks.items():
        if not mask.any():
            raise UserError(f"dataset {dataset!r}: split {name!r} has no nodes (its mask is all false)")
    names = list(masks)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            shared = np.flatnonzero(masks[first] & masks[second])
            if shared.size:
                raise UserError(f"dataset {dataset!r}: splits {first!r} and {second!r} share {shared.size} node(s), "
                                f"e.g. {shared[:5].tolist()}; the splits must be disjoint")


for _name in GRAPH_DATASETS:
    DATASETS.register(_name, lambda c, _name=_name: GraphSource(_name, c.get("data_dir"), c.get("manual_dir")))
