"""Input pipelines: sources by name (:mod:`cnn.data.sources`), preprocessing ops (:mod:`cnn.data.preprocess`) and
deterministic step-indexed batching (:mod:`cnn.data.pipeline`)."""

# Register the generated, audio, graph and ISBI datasets.
from cnn.data import canvas, files, fsdd, graphs, isbi, moving_digits, windows  # noqa: F401
from cnn.data.pipeline import TrainStream, eval_batches
from cnn.data.preprocess import BatchRandom, build_preprocess
from cnn.data.sources import DATASETS, ArraySplit, DatasetSpec, make_source

__all__ = ["DATASETS", "ArraySplit", "BatchRandom", "DatasetSpec", "TrainStream", "build_preprocess", "eval_batches",
           "make_source"]
