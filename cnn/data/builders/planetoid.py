"""TFDS builder for the Planetoid citation graphs Cora and CiteSeer, with the standard semi-supervised split.

Z. Yang, W. Cohen, R. Salakhutdinov, "Revisiting Semi-Supervised Learning with Graph Embeddings", ICML 2016; graphs
from Sen et al. 2008 (LINQS). Files ``ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}`` of
github.com/kimiyoung/planetoid (the same as tkipf/gcn's): Python 2 pickles read through :mod:`cnn.data.safe_pickle`.

Preprocessing of Kipf & Welling's GCN reference code (``gcn/utils.py: load_data``), written directly:

- ``allx`` / ``ally`` are the features / one-hot labels of nodes ``0 .. len(allx)-1``; row ``k`` of ``tx`` / ``ty``
  belongs to node ``test.index[k]`` (the test nodes follow, ``len(allx) .. max(test.index)``).
- CiteSeer has 15 nodes in that range that are not in ``test.index`` (GCN's "isolated nodes": they have links, but
  no features or label in the files): they get a zero feature row and no label, as GCN pads ``tx`` / ``ty``.
- ``graph`` is a dict of adjacency lists; the edge list holds each link in both directions, without duplicates or
  self loops.

One example per config (split ``full``; the transductive split is in the masks):

| feature | shape | meaning |
|---|---|---|
| ``features`` | (N, F) float32 | raw bag-of-words (0/1); row normalisation is left to the model |
| ``labels`` | (N,) int32 | argmax of the one-hot label, -1 for a node without one (CiteSeer's 15 padded nodes) |
| ``edges`` | (E, 2) int32 | (source, target), both directions, sorted, no duplicates, no self loops |
| ``train_mask`` | (N,) bool | nodes ``0 .. len(y)-1``: 140 (Cora) / 120 (CiteSeer), 20 per class |
| ``val_mask`` | (N,) bool | the next 500 nodes |
| ``test_mask`` | (N,) bool | the 1,000 nodes of ``test.index`` |

| config | N | F | classes | link records | duplicate records | self loops | undirected links | E = directed edges |
|---|---|---|---|---|---|---|---|---|
| ``cora`` | 2,708 | 1,433 | 7 | 5,429 | 151 | 0 | 5,278 | 10,556 |
| ``citeseer`` | 3,327 | 3,703 | 6 | 4,732 | 56 | 124 | 4,552 | 9,104 |

``graph`` lists each citation record under both of its nodes (10,858 and 9,464 entries: twice the published link
counts 5,429 and 4,732). Records of a pair already linked (cited both ways, or listed twice) collapse into one
undirected link, and self loops (a paper citing itself, 124 CiteSeer nodes) are dropped; the counts equal PyG's
``Planetoid`` (10,556 and 9,104 edges). 48 CiteSeer nodes are left without any edge (Cora: none).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from cnn.data import safe_pickle
from cnn.data.builders import manual

SHARED_FOLDER = "planetoid"
PICKLED_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph")
NUM_VAL = 500


@dataclasses.dataclass
class PlanetoidConfig(tfds.core.BuilderConfig):
    """One citation graph: its size, used to declare the feature shapes and to check the files."""

    num_nodes: int = 0
    num_features: int = 0
    num_classes: int = 0
    num_train: int = 0


def planetoid_files(dataset: str) -> list[str]:
    return [f"ind.{dataset}.{part}" for part in (*PICKLED_PARTS, "test.index")]


def read_planetoid(root: Path, dataset: str) -> dict[str, np.ndarray]:
    """The arrays of one example (see the module docstring) from the ``ind.<dataset>.*`` files in ``root``."""
    parts = {}
    for part in PICKLED_PARTS:
        with open(root / f"ind.{dataset}.{part}", "rb") as file:
            parts[part] = safe_pickle.load(file, encoding="latin1")
    test_index = np.loadtxt(root / f"ind.{dataset}.test.index", dtype=np.int64, ndmin=1)
    allx, ally = parts["allx"].toarray(), np.asarray(parts["ally"])
    num_known = len(allx)
    if test_index.min() != num_known:
        raise ValueError(f"ind.{dataset}.test.index: expected the test nodes to start at len(allx) = {num_known}, "
                         f"got {test_index.min()}")
    num_nodes = int(test_index.max()) + 1
    features = np.zeros((num_nodes, allx.shape[1]), np.float32)
    features[:num_known] = allx
    features[test_index] = parts["tx"].toarray()
    one_hot = np.zeros((num_nodes, ally.shape[1]), np.int64)
    one_hot[:num_known] = ally
    one_hot[test_index] = parts["ty"]
    labels = np.where(one_hot.any(axis=1), one_hot.argmax(axis=1), -1).astype(np.int32)

    graph = parts["graph"]
    links = np.array([(source, target) for source, targets in graph.items() for target in targets], np.int64)
    if links.min() < 0 or links.max() >= num_nodes:
        raise ValueError(f"ind.{dataset}.graph: node ids must lie in 0..{num_nodes - 1}, got {links.min()}.."
                         f"{links.max()}")
    links = links[links[:, 0] != links[:, 1]]
    edges = np.unique(np.concatenate([links, links[:, ::-1]]), axis=0).astype(np.int32)

    node = np.arange(num_nodes)
    num_train = len(parts["y"])
    return {
        "features": features,
        "labels": labels,
        "edges": edges,
        "train_mask": node < num_train,
        "val_mask": (node >= num_train) & (node < num_train + NUM_VAL),
        "test_mask": np.isin(node, test_index),
    }


class Planetoid(tfds.core.GeneratorBasedBuilder):
    """Cora and CiteSeer as a TFDS dataset (registered as ``planetoid``, configs ``cora`` and ``citeseer``)."""

    name = "planetoid"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Kipf & Welling preprocessing, standard Planetoid split."}
    BUILDER_CONFIGS: ClassVar[list[PlanetoidConfig]] = [
        PlanetoidConfig(name="cora", description="Cora: 2,708 papers, 7 classes", num_nodes=2708,
                        num_features=1433, num_classes=7, num_train=140),
        PlanetoidConfig(name="citeseer", description="CiteSeer: 3,327 papers, 6 classes", num_nodes=3327,
                        num_features=3703, num_classes=6, num_train=120),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"manual_dir is shared/data/{SHARED_FOLDER}: it holds ind.{{cora,citeseer}}.{{x,y,tx,ty,allx,ally,graph,"
        "test.index}, the files of github.com/kimiyoung/planetoid data/."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        nodes = (config.num_nodes,)
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(*nodes, config.num_features), dtype=np.float32,
                                                     encoding=tfds.features.Encoding.ZLIB),
                    "labels": tfds.features.Tensor(shape=nodes, dtype=np.int32),
                    "edges": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
                    **{mask: tfds.features.Tensor(shape=nodes, dtype=np.bool_)
                       for mask in ("train_mask", "val_mask", "test_mask")},
                }
            ),
            homepage="https://github.com/kimiyoung/planetoid",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        files = planetoid_files(config.name)
        root = manual.manual_dir(self, dl_manager, files)
        manual.verify_files(root, SHARED_FOLDER, files)
        graph = read_planetoid(root, config.name)
        found = (len(graph["labels"]), graph["features"].shape[1], graph["labels"].max() + 1,
                 graph["train_mask"].sum())
        expected = (config.num_nodes, config.num_features, config.num_classes, config.num_train)
        if found != expected:
            raise ValueError(f"{config.name}: expected (nodes, features, classes, train nodes) = {expected}, "
                             f"the files give {found}")
        return {"full": self._generate_examples(graph)}

    def _generate_examples(self, graph: dict[str, np.ndarray]):
        yield self.builder_config.name, graph
