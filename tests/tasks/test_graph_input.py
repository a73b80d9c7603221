"""Bad graph input is one line naming what and where: split masks that overlap or are empty (``GraphSource.load``),
features and labels of different node counts and edges naming a node outside the graph
(``NodeClassification.check_batch``). A graph model given an image batch: tests/models/test_gcn.py."""

from __future__ import annotations

import numpy as np
import pytest

from cnn.config_defaults import base_config
from cnn.data.graphs import GraphSource
from cnn.errors import UserError
from cnn.tasks import make_task

NODES = 6


def _graph(**masks: list[int]) -> dict[str, np.ndarray]:
    """What the TFDS builder gives: a 6-node path graph, 3 classes, and the split masks as node lists."""
    def mask(nodes: list[int]) -> np.ndarray:
        m = np.zeros(NODES, bool)
        m[nodes] = True
        return m

    lists = {"train_mask": [0, 1], "val_mask": [2, 3], "test_mask": [4, 5], **masks}
    edges = np.array([[i, i + 1] for i in range(NODES - 1)] + [[i + 1, i] for i in range(NODES - 1)])
    return {"features": np.eye(NODES, 4, dtype=np.float32), "edges": edges, "labels": np.arange(NODES) % 3,
            **{key: mask(nodes) for key, nodes in lists.items()}}


def _source(graph: dict[str, np.ndarray]) -> GraphSource:
    source = GraphSource("cora")
    source._graph = graph  # as if read from the prepared dataset
    return source


def test_a_good_graph_loads():
    split = _source(_graph()).load("validation")
    assert split.mask.tolist() == [False, False, True, True, False, False] and len(split) == 2


@pytest.mark.parametrize(("masks", "message"), [
    ({"test_mask": [1, 4, 5]}, r"^dataset 'cora': splits 'train' and 'test' share 1 node\(s\), e\.g\. \[1\]; the "
                               r"splits must be disjoint$"),
    ({"val_mask": [2, 3, 4, 5]}, r"splits 'validation' and 'test' share 2 node\(s\), e\.g\. \[4, 5\]"),
    ({"val_mask": []}, r"^dataset 'cora': split 'validation' has no nodes \(its mask is all false\)$"),
])
def test_masks_that_overlap_or_are_empty_are_refused(masks, message):
    with pytest.raises(UserError, match=message):
        _source(_graph(**masks)).load("train")


def _task():
    config = base_config("cora", "gcn")
    config.task.name = "node_classification"
    return make_task(config, GraphSource("cora").spec)


def _batch(**changes: np.ndarray) -> dict[str, np.ndarray]:
    return {**_source(_graph()).load("train").batch(), **changes}


def test_a_good_batch_passes():
    _task().check_batch(_batch())


@pytest.mark.parametrize(("changes", "message"), [
    ({"label": np.zeros(NODES - 1, np.int32)},
     r"^batch key 'label': expected shape \(6,\), one per node of the 6 node features, got shape \(5,\)$"),
    ({"mask": np.ones(NODES + 2, np.float32)},
     r"^batch key 'mask': expected shape \(6,\), one per node of the 6 node features, got shape \(8,\)$"),
    ({"receivers": np.array([1, 2, 3, 4, 6, 0, 1, 2, 3, 4], np.int32)},
     r"^graph batch\.receivers\[4\] = 6 names a node outside the graph of 6 nodes"),
    ({"senders": np.array([-1, 1, 2, 3, 4, 1, 2, 3, 4, 5], np.int32)},
     r"^graph batch\.senders\[0\] = -1 names a node outside the graph of 6 nodes"),
    ({"features": np.zeros((2, 3, 3, 1), np.float32)},
     r"^graph batch\.nodes must be \(num_nodes, features\), got shape \(2, 3, 3, 1\): an image batch\?"),
])
def test_a_bad_batch_is_one_line(changes, message):
    with pytest.raises(UserError, match=message):
        _task().check_batch(_batch(**changes))


@pytest.mark.parametrize(("dataset", "model", "task", "message"), [
    ("cora", "small_cnn", "node_classification",
     r"^model 'small_cnn' takes image batches, but task 'node_classification' on dataset 'cora' gives it a graph; "
     r"choose a graph model for it \(config.model.name\)$"),
    ("digits", "gcn", "classification",
     r"^model 'gcn' takes a graph, but task 'classification' on dataset 'digits' gives it image batches; choose a "
     r"model for it \(config.model.name\)$"),
])
def test_a_model_for_the_other_kind_of_input_is_one_line(dataset, model, task, message):
    """Before anything is built: an image model given a graph, or a graph model given image batches (the model's own
    check, tests/models/test_gcn.py, is for a direct call)."""
    from cnn.data import make_source
    from cnn.errors import ConfigError
    from cnn.train.experiment import Experiment

    config = base_config(dataset, model)
    config.task.name = task
    with pytest.raises(ConfigError, match=message):
        Experiment(config, make_source(config.dataset).spec)
