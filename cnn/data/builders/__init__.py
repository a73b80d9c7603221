"""TFDS builders for the real datasets in ``shared/data``, read in place through TFDS's ``manual_dir``.

Importing this package registers the builders with TFDS:

| TFDS name | class | manual_dir (``shared/data/...``) | splits |
|---|---|---|---|
| ``isbi2012_em`` | :class:`Isbi2012Em` | ``isbi2012_em`` | train 30 (masks), test 30 (no masks) |
| ``fsdd`` | :class:`Fsdd` | ``fsdd`` | train 2,700, test 300; speaker_train 2,500, speaker_test 500 |
| ``adrenal_mnist3d/28``, ``/64`` | :class:`AdrenalMnist3d` | ``medmnist3d`` | train 1,188, validation 98, test 298 |
| ``mnist1d`` | :class:`Mnist1d` | ``mnist1d`` | train 4,000, test 1,000 |
| ``planetoid/cora``, ``/citeseer`` | :class:`Planetoid` | ``planetoid`` | full: 1 graph, split masks inside |

Build one with::

    builder = tfds.builder("fsdd", data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="../shared/data/fsdd"))

Each builder checks that its files are there before reading anything (:class:`ManualFilesMissingError` naming the
directory and the files) and that they are the published originals (:mod:`cnn.data.checksums`); pickles are read
with :mod:`cnn.data.safe_pickle`.
"""

from cnn.data.builders.adrenal_mnist3d import AdrenalMnist3d
from cnn.data.builders.fsdd import Fsdd
from cnn.data.builders.isbi2012_em import Isbi2012Em
from cnn.data.builders.manual import ManualFilesMissingError
from cnn.data.builders.mnist1d import Mnist1d
from cnn.data.builders.planetoid import Planetoid

__all__ = ["AdrenalMnist3d", "Fsdd", "Isbi2012Em", "ManualFilesMissingError", "Mnist1d", "Planetoid"]
