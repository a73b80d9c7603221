"""Input pipelines: datasets by name (:mod:`cnn.data.sources`) and deterministic batching (:mod:`cnn.data.pipeline`)."""

from cnn.data.pipeline import TrainStream, eval_batches, standardize
from cnn.data.sources import DATASETS, ArraySplit, DatasetSpec, load_split

__all__ = ["DATASETS", "ArraySplit", "DatasetSpec", "TrainStream", "eval_batches", "load_split", "standardize"]
