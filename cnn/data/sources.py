"""Datasets by name: where the examples come from, their shape, classes and pixel statistics.

``config.dataset.name`` picks a source from ``DATASETS``; ``make_source(config.dataset)`` returns an object with a
``spec`` and ``load(split)``: an :class:`ArraySplit` (the split in host memory) or, for a split larger than
``MAX_IN_MEMORY_BYTES`` or when ``dataset.streaming`` is true, a :class:`cnn.data.streaming.StreamingSplit` that reads
and decodes examples on demand. Both answer ``len(split)``, ``split.gather(indices) -> (images, labels)`` and
``split.batch(indices) -> {"image", "label"[, "weight"]}``; batching is done by :mod:`cnn.data.pipeline`.

* TFDS datasets (``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``) are prepared once in
  ``dataset.data_dir`` (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) from ``dataset.manual_dir`` when
  given (no network needed), or by TFDS's download when ``dataset.download`` is true. Otherwise the error comes
  at once (not after TFDS's minutes of retries) and names the files to fetch and where to put them. Streaming reads
  the ArrayRecord format (random access): ``imagenet2012`` is prepared in it, and so is any dataset prepared with
  ``dataset.streaming`` true.
* ``image_folder`` and ``numpy``, the user's own files: :mod:`cnn.data.files`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import shutil
import sys
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np
from absl import logging

from cnn.data.checksums import verify
from cnn.data.streaming import StreamingSplit, fit_image
from cnn.errors import ConfigError, UserError
from cnn.registry import Registry

DATASETS = Registry("dataset")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Shape and classes of a dataset, and the statistics ``normalize`` uses: ``(pixel / scale - mean) / std``.

    ``kind`` says what its labels are: ``"image"``, one per example (an image, a clip, a volume); ``"dense"``, one per
    pixel (labels ``(N, *spatial)``); ``"graph"``, one per node of a graph (``image_shape`` is then a node's
    features). A task (``cnn.tasks``) learns from one kind."""

    num_classes: int
    image_shape: tuple[int, ...]
    scale: float = 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    splits: tuple[str, ...] = ("train", "test")
    kind: str = "image"


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """One split in memory: ``images (N, *spatial, channels)`` and integer ``labels (N,)`` (or per-pixel label maps
    ``(N, *spatial)``), and optionally a per-pixel loss ``weight (N, *spatial)`` (U-Net's weight map)."""

    images: np.ndarray
    labels: np.ndarray
    weight: np.ndarray | None = None

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise UserError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.weight is not None and self.weight.shape != self.labels.shape:
            raise UserError(f"weight map of shape {self.weight.shape} for label maps of shape {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images[indices], self.labels[indices]

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The batch at ``indices``: ``image``, ``label`` and, when the split has one, ``weight``."""
        batch = {"image": self.images[indices], "label": self.labels[indices]}
        return batch if self.weight is None else {**batch, "weight": self.weight[indices]}


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    """A TFDS dataset held in memory, and the files its builder reads from a ``manual_dir`` (with their sha256
    where known)."""

    tfds_name: str
    spec: DatasetSpec
    manual_files: dict[str, str | None]
    homepage: str
    file_format: str | None = None  # "array_record": always prepared for random access; None: TFDS's default


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")

# Mean and std per channel after scaling to [0, 1], over the training split. The sha256 of the manual files are
# the ones TFDS registers for its downloads (shared/data/README.md).
TFDS_DATASETS = {
    "digits": TfdsDataset("sklearn_digits", DatasetSpec(10, (8, 8, 1), 16.0, (0.3054,), (0.3755,)), {},
                          "bundled with scikit-learn"),
    "mnist": TfdsDataset("mnist", DatasetSpec(10, (28, 28, 1), 255.0, (0.1307,), (0.3081,)), dict(zip(IDX_FILES, (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"), strict=True)),
        "https://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": TfdsDataset("fashion_mnist", DatasetSpec(10, (28, 28, 1), 255.0, (0.2860,), (0.3530,)),
                                 dict(zip(IDX_FILES, (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"), strict=True)),
        "https://github.com/zalandoresearch/fashion-mnist"),
    "cifar10": TfdsDataset("cifar10", DatasetSpec(10, (32, 32, 3), 255.0, (0.4914, 0.4822, 0.4465),
                                                  (0.2470, 0.2435, 0.2616)),
                           {"cifar-10-binary.tar.gz": None}, "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": TfdsDataset("cifar100", DatasetSpec(100, (32, 32, 3), 255.0, (0.5071, 0.4865, 0.4409),
                                                    (0.2673, 0.2564, 0.2762)),
                            {"cifar-100-binary.tar.gz": None}, "https://www.cs.toronto.edu/~kriz/cifar.html"),
    # Read from shared/data through the builders of cnn.data.builders, which check their own files.
    "mnist1d": TfdsDataset("mnist1d", DatasetSpec(10, (40, 1), 1.0, (-0.0003,), (0.9976,)), {},
                           "https://github.com/greydanus/mnist1d"),
    "adrenal_mnist3d": TfdsDataset("adrenal_mnist3d/28", DatasetSpec(2, (28, 28, 28, 1), 255.0, (0.0158,), (0.1247,),
                                                                     ("train", "validation", "test")), {},
                                   "https://medmnist.com"),
    "adrenal_mnist3d_64": TfdsDataset("adrenal_mnist3d/64", DatasetSpec(2, (64, 64, 64, 1), 255.0, (0.0169,),
                                                                        (0.1288,), ("train", "validation", "test")),
                                      {}, "https://medmnist.com"),
    # Too large for host memory: streamed from ArrayRecord files, each image fitted to 256×256 as it is read.
    "imagenet2012": TfdsDataset("imagenet2012", DatasetSpec(1000, (256, 256, 3), 255.0, (0.485, 0.456, 0.406),
                                                            (0.229, 0.224, 0.225), ("train", "validation")),
                                {"ILSVRC2012_img_train.tar": None, "ILSVRC2012_img_val.tar": None},
                                "https://image-net.org/download-images (manual download)", "array_record"),
}

# Pixels (bytes) above which a split is streamed instead of loaded into host memory.
MAX_IN_MEMORY_BYTES = 8 << 30


def too_large_for_memory(examples: int, image_shape: Sequence[int]) -> bool:
    return examples * int(np.prod(image_shape)) > MAX_IN_MEMORY_BYTES


def resolve_data_dir(data_dir: str | None) -> str:
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


class TfdsSource:
    def __init__(self, name: str, data_dir: str | None = None, manual_dir: str | None = None, download: bool = False,
                 mock_examples: int = 0, streaming: bool | None = None, workers: int = 0,
                 dataset: TfdsDataset | None = None):
        self.name, self.dataset = name, dataset or TFDS_DATASETS[name]
        self.spec = self.dataset.spec
        self.data_dir, self.manual_dir, self.download = resolve_data_dir(data_dir), manual_dir, download
        if os.path.exists(self.data_dir) and not os.path.isdir(self.data_dir):
            raise UserError(f"data_dir {self.data_dir} is a file, not a directory")
        self.mock_examples = mock_examples  # > 0: random examples from tfds.testing.mock_data, for tests
        self.streaming, self.workers = streaming, workers  # streaming None: only splits too large for memory
        # None: whatever a prepared copy holds, TFRecord for a new one.
        self.file_format = "array_record" if streaming else self.dataset.file_format

    def builder(self):
        from cnn.platform import hide_accelerators_from_tensorflow

        hide_accelerators_from_tensorflow()
        import tensorflow_datasets as tfds

        from cnn.data import builders, digits  # noqa: F401  (register our builders with TFDS)

        try:
            return tfds.builder(self.dataset.tfds_name, data_dir=self.data_dir, file_format=self.file_format)
        except ValueError as error:
            if "File format is already set" not in str(error):
                raise
            raise self._not_array_record("config.dataset.streaming is true") from error

    def _not_array_record(self, why: str) -> UserError:
        return UserError(f"dataset {self.name!r} is streamed ({why}), but {self.data_dir} holds it as TFRecord, not "
                         f"ArrayRecord: prepare it in another data_dir with python -m cnn.data.prepare {self.name} "
                         "--streaming --data_dir=DIR (or set config.dataset.streaming=false)")

    def prepare(self):
        """Build the TFDS dataset if needed, from ``manual_dir`` when given; fail fast when that cannot work."""
        import tensorflow_datasets as tfds

        builder = self.builder()
        if builder.is_prepared():
            return builder
        files = self.dataset.manual_files
        if self.manual_dir:
            missing = [f for f in files if not os.path.isfile(os.path.join(self.manual_dir, f))]
            if missing:
                raise UserError(f"dataset {self.name!r}: manual_dir {self.manual_dir} lacks {missing}; "
                                f"put the files from {self.dataset.homepage} there")
            for name, sha256 in files.items():
                if sha256:
                    verify(os.path.join(self.manual_dir, name), sha256)
        elif files and not self.download:
            raise UserError(
                f"dataset {self.name!r} is not prepared in {self.data_dir}: put {sorted(files)} (from "
                f"{self.dataset.homepage}) in a folder and pass it as --config.dataset.manual_dir=FOLDER (or run "
                f"python -m cnn.data.prepare {self.name} --manual_dir=FOLDER), or allow the download with "
                "--config.dataset.download=true"
            )
        with preparation_lock(self.data_dir, self.dataset.tfds_name):
            builder = self.builder()  # afresh: another process may have prepared it while this one waited
            if builder.is_prepared():
                return builder
            download_dir = os.path.join(self.data_dir, "downloads", self.name)  # one per dataset: file names repeat
            # What this attempt creates, removed if it fails: the dataset's folders, not data_dir/downloads, which
            # other datasets share.
            created = [path for path in (download_dir, *_dataset_dirs(self.data_dir, self.dataset.tfds_name))
                       if not os.path.exists(path)]
            if not sys.stderr.isatty():  # a log file or a pipe: no progress bars (hundreds of escape-coded lines)
                tfds.disable_progress_bar()
            config = tfds.download.DownloadConfig(manual_dir=self.manual_dir) if self.manual_dir else None
            try:
                builder.download_and_prepare(download_dir=download_dir, download_config=config)
            except BaseException:
                for path in created:
                    shutil.rmtree(path, ignore_errors=True)
                raise
        return builder

    def load(self, split: str) -> ArraySplit:
        import tensorflow_datasets as tfds

        check_split(self.name, split, self.spec.splits)
        if self.mock_examples > 0:
            with tfds.testing.mock_data(num_examples=self.mock_examples):
                return self._read(self.builder(), split)
        return self._read(self.prepare(), split)

    def _read(self, builder, split: str) -> ArraySplit:
        import tensorflow as tf
        import tensorflow_datasets as tfds

        examples = builder.info.splits[split].num_examples if builder.info.splits else self.mock_examples
        too_large = too_large_for_memory(examples, self.spec.image_shape)
        if self.streaming or (self.streaming is None and too_large):
            return self._stream(builder, split)
        if too_large:
            raise UserError(f"dataset {self.name!r} split {split!r} holds {examples:,} examples: too large for host "
                            "memory; stream it with config.dataset.streaming=true (or leave it unset)")
        if str(builder.info.file_format.value) == "array_record":  # no tf.data reader: read every record
            stream = self._stream(builder, split)
            return ArraySplit(*stream.gather(np.arange(len(stream))))
        dataset = builder.as_dataset(split=split, as_supervised=True)
        if None in builder.info.features[builder.info.supervised_keys[0]].shape:  # images of varying size
            size = self.spec.image_shape[:-1]
            dataset = dataset.map(lambda x, y: (tf.cast(tf.image.resize(x, size), tf.uint8), y))
        # Batches of 8,192 rather than batch_size=-1, which aborts TensorFlow under tfds.testing.mock_data.
        batches = list(tfds.as_numpy(dataset.batch(8192)))
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches]).astype(np.int32)
        check_example_shape(self.name, split, images, self.spec.image_shape)
        return ArraySplit(images=images, labels=labels)

    def _stream(self, builder, split: str) -> StreamingSplit:
        try:
            records = builder.as_data_source(split=split)
        except (ValueError, NotImplementedError) as error:  # prepared as TFRecord: no random access
            raise self._not_array_record(f"split {split!r} is too large for memory") from error
        image_key, label_key = builder.info.supervised_keys
        shape = self.spec.image_shape

        def read(index: int) -> tuple[np.ndarray, int]:
            example = records[index]
            return fit_image(example[image_key], shape), int(example[label_key])

        return StreamingSplit(read, len(records), shape, self.workers)


def _dataset_dirs(data_dir: str, tfds_name: str) -> list[str]:
    """``data_dir/mnist`` for ``mnist``; ``data_dir/adrenal_mnist3d`` and ``.../adrenal_mnist3d/28`` for a config."""
    parts = tfds_name.split("/")
    return [os.path.join(data_dir, *parts[: i + 1]) for i in range(len(parts))]


@contextlib.contextmanager
def preparation_lock(data_dir: str, tfds_name: str) -> Iterator[None]:
    """Hold ``data_dir/.prepare-<dataset>.lock`` while preparing: one process (of any host sharing ``data_dir``)
    builds a dataset, the others wait here and then find it prepared. TFDS alone is not safe: two builders of one
    dataset race to rename their ``incomplete.*`` folder and the second fails with ``FileExistsError``.

    ``flock`` is exclusive across the processes of one host. On NFS, Linux turns it into a POSIX lock that the
    server arbitrates between hosts (NFSv4, or v3 with lockd running; ``nolock`` mounts lock per host only). A
    filesystem without locks (``ENOLCK``, ``EOPNOTSUPP``) prepares unlocked, with a warning.
    """
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, f".prepare-{tfds_name.split('/')[0]}.lock")  # every config of a dataset at once
    with open(path, "a") as lock:
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another process preparing {tfds_name} in {data_dir} (lock {path})",
                      file=sys.stderr, flush=True)
                fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise
            logging.warning("%s: no file locks here (%s); preparing %s without one", path, error, tfds_name)
        yield  # closing the file releases the lock


def check_split(name: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise UserError(f"dataset {name!r} has no split {split!r}; choose from {list(splits)}")


def check_example_shape(name: str, split: str, images: np.ndarray, expected: Sequence[int]) -> None:
    """One line when a split's examples (images, volumes, clips) are not of the shape the dataset's spec says."""
    if tuple(images.shape[1:]) != tuple(expected):
        raise UserError(f"dataset {name!r} split {split!r}: examples of shape {tuple(images.shape[1:])}, expected "
                        f"{tuple(expected)} (the dataset's spec: (*spatial, channels))")


for _name in TFDS_DATASETS:
    DATASETS.register(_name, lambda c, _name=_name: TfdsSource(_name, c.get("data_dir"), c.get("manual_dir"),
                                                               bool(c.get("download")), c.get("mock_examples") or 0,
                                                               c.get("streaming"), c.get("num_workers") or 0))


def make_source(dataset_config: ml_collections.ConfigDict | dict):
    """The source named by ``dataset_config.name``, built from the rest of ``config.dataset``."""
    if not dataset_config.get("name"):
        raise ConfigError("config.dataset.name is required")
    return DATASETS.get(dataset_config["name"])(dataset_config)
