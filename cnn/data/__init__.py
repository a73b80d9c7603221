"""Input pipelines: sources by name (:mod:`cnn.data.sources`), preprocessing ops (:mod:`cnn.data.preprocess`) and
deterministic step-indexed batching (:mod:`cnn.data.pipeline`)."""

from cnn.data import canvas, fsdd, graphs, moving_digits  # noqa: F401  (register the generated, audio, graph datasets)
from cnn.data.pipeline import TrainStream, eval_batches
from cnn.data.preprocess import BatchRandom, build_preprocess
from cnn.data.sources import DATASETS, ArraySplit, DatasetSpec, make_source

__all__ = ["DATASETS", "ArraySplit", "BatchRandom", "DatasetSpec", "TrainStream", "build_preprocess", "eval_batches",
           "make_source"]
