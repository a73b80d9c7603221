"""Files given to a builder through TFDS's ``manual_dir``: fail at once when some are missing, verify the rest.

Each builder reads one folder of ``shared/data`` in place: pass it as
``tfds.download.DownloadConfig(manual_dir="<...>/shared/data/<SHARED_FOLDER>")``. Without a check, a missing file
surfaces deep inside generation (or TFDS asks for a download it cannot make); here it is one error, raised before
anything is read, naming the directory and the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds

from cnn.data import checksums
from cnn.errors import UserError

MAX_LISTED = 10


class ManualFilesMissingError(UserError, FileNotFoundError):
    """Files that a builder reads from ``manual_dir`` are not there."""


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def manual_dir(builder: tfds.core.DatasetBuilder, dl_manager: tfds.download.DownloadManager,
               files: Sequence[str]) -> Path:
    """``dl_manager.manual_dir`` after checking that it holds every path in ``files`` (relative to it).

    Raises :class:`ManualFilesMissingError` naming the dataset, the directory, the missing files and what the
    directory should be (the builder's ``MANUAL_DOWNLOAD_INSTRUCTIONS``).
    """
    config = builder.builder_config
    dataset = f"{builder.name}/{config.name}" if config else builder.name
    files = list(files)
    try:
        root = Path(dl_manager.manual_dir)
    except AssertionError as error:  # TFDS: the directory does not exist or is empty (its instructions follow)
        reason = str(error).split(" Create it", 1)[0].rstrip(".")
        missing, where = files, reason
    else:
        missing = [name for name in files if not (root / name).is_file()]
        where = f"manual_dir {root}"
    if missing:
        raise ManualFilesMissingError(
            f"{dataset}: {len(missing)} of the {len(files)} files it reads are missing ({where}): {_listing(missing)}. "
            f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS} Pass that folder as --config.dataset.manual_dir=FOLDER to "
            "train.py or --manual_dir=FOLDER to python -m cnn.data.prepare (in Python: "
            "tfds.download.DownloadConfig(manual_dir=FOLDER)).")
    return root


def verify_files(root: Path, shared_folder: str, files: Sequence[str]) -> None:
    """Check each of ``files`` in ``root`` against the sha256 of ``shared/data/<shared_folder>/<file>``."""
    for name in files:
        checksums.verify(root / name, checksums.FILE_SHA256[f"{shared_folder}/{name}"])
