"""Deterministic, step-indexed batching.

The training batch at step ``k`` is a pure function of ``(seed, k)``: epoch ``e = k // steps_per_epoch`` draws the
permutation ``rng(seed, e)`` of the split and step ``k`` takes its ``k mod steps_per_epoch``-th block of
``global_batch`` examples (the tail of each epoch that does not fill a batch is dropped). A resumed run therefore
sees exactly the batches of an uninterrupted one; the only state to checkpoint is the step. Each process takes its
own contiguous slice of every global batch. Preprocessing (:mod:`cnn.data.preprocess`) draws its random values
from ``rng(seed, step)`` for the global batch, so augmentations resume exactly too.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np

from cnn.data.preprocess import BatchRandom, Preprocess
from cnn.data.sources import ArraySplit
from cnn.data.streaming import StreamingSplit
from cnn.errors import ConfigError


def local_slice(global_batch: int, process_index: int, process_count: int) -> slice:
    if global_batch % process_count:
        raise ConfigError(f"batch_size={global_batch} must be divisible by the process count {process_count}")
    per_process = global_batch // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)


class TrainStream:
    """Training batches indexed by step (see the module docstring)."""

    def __init__(
        self,
        split: ArraySplit | StreamingSplit,
        preprocess: Preprocess,
        global_batch: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if global_batch < 1 or global_batch > len(split):
            raise ConfigError(f"batch_size={global_batch} must be between 1 and the split size {len(split)}")
        self.split, self.preprocess, self.global_batch, self.seed = split, preprocess, global_batch, seed
        self.steps_per_epoch = len(split) // global_batch
        self._local = local_slice(global_batch, process_index, process_count)
        self.wait_seconds = 0.0  # time the consumer spent blocked on this stream

    def indices(self, step: int) -> np.ndarray:
        """Example indices of this process's part of the global batch at ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.split))
        return order[position * self.global_batch : (position + 1) * self.global_batch][self._local]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        idx = self.indices(step)
        rand = BatchRandom((self.seed, step), self.global_batch, self._local)
        return self.preprocess.batch(self.split.batch(idx), rand)

    def iterate(self, start_step: int, end_step: int, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
        """Batches for steps ``start_step .. end_step - 1``, prepared ``prefetch`` ahead on a background thread."""
        buffer: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()

        def produce():
            for step in range(start_step, end_step):
                try:
                    item = self.batch(step)
                except BaseException as error:  # handed to the consumer, which raises it: never a silent hang
                    item = _Failure(error)
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set() or isinstance(item, _Failure):
                    return

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        try:
            for _ in range(start_step, end_step):
                started = time.perf_counter()
                item = buffer.get()
                self.wait_seconds += time.perf_counter() - started
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()


class _Failure:
    """What the producer thread hands over in place of a batch it could not make."""

    def __init__(self, error: BaseException):
        self.error = error


def eval_batches(
    split: ArraySplit | StreamingSplit,
    preprocess: Preprocess,
    global_batch: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """The whole split in order; the last global batch is padded and ``mask`` marks the real examples."""
    local = local_slice(global_batch, process_index, process_count)
    for start in range(0, len(split), global_batch):
        idx = np.arange(start, start + global_batch)
        real = idx < len(split)
        rand = BatchRandom((0, start), global_batch, local)
        batch = preprocess.batch(split.batch(np.where(real, idx, 0)[local]), rand)
        yield {**batch, "mask": real[local].astype(np.float32)}
