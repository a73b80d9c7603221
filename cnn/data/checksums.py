"""sha256 of every file that the builders in :mod:`cnn.data.builders` read, and their verification.

The values come from ``shared/data/SHA256SUMS`` (and ``shared/data/README.md``); keys are paths under ``shared/data``.

- Single files (:data:`FILE_SHA256`) are checked one by one with :func:`verify`.
- The folders of many small files (3,000 FSDD recordings, 3 x 30 ISBI slices) are checked against the combined
  digests that the README publishes (:data:`FOLDER_SHA256`): the sha256 of the folder's ``SHA256SUMS`` lines,
  ``"<sha256>  ./<folder>/<name>\\n"``, in path order. :func:`folder_digest` rebuilds those lines from the files it
  finds, so every byte of every file is checked, wherever the folder lives (the lines use the canonical folder name,
  not the actual path), and ``SHA256SUMS`` is not needed at build time (a copy of one dataset folder suffices).
  A mismatch names the folder, not the file: ``sha256sum -c SHA256SUMS`` in ``shared/data`` finds it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

from cnn.errors import UserError

FILE_SHA256: dict[str, str] = {
    "medmnist3d/adrenalmnist3d.npz": "8ffd78c0f000265deb7cf4ee0b454136fb3170f9839ecaa7bb01adf9f88aa7d1",
    "medmnist3d/adrenalmnist3d_64.npz": "124a53ea2c66c8ac1985a4c98ea6f34d1ab35bdab1dc50947f80d4a87e54057d",
    "mnist1d/mnist1d_data.pkl": "e95257676e9fb04568e46dda007da22cc8664ccba1451456afde55d7f6dd6aa5",
    "planetoid/ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "planetoid/ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "planetoid/ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "planetoid/ind.citeseer.test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    "planetoid/ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "planetoid/ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "planetoid/ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "planetoid/ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "planetoid/ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "planetoid/ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "planetoid/ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "planetoid/ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    "planetoid/ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "planetoid/ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "planetoid/ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "planetoid/ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
}

FOLDER_SHA256: dict[str, str] = {
    "isbi2012_em/train/image": "10042e1f2ee5f7a7650d5ed20cc4571deede3bfffd62ef0759bb9bf5aec82deb",
    "isbi2012_em/train/label": "00d28a592d3d90a0f5a89f58360105c5510ada1e8729ac4051de99f6b8aef44f",
    "isbi2012_em/test": "215a7c97adafed586c4c2183e4ea85ba6d11c8ab40141b1a60b82e14bbfb1df0",
    "fsdd/recordings": "e957de025befdbb9519d3821dc9b3577acf3d325e283f2ab49ea98f23b15720f",
}

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ChecksumError(UserError):
    """A data file is not byte-for-byte the published original."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_digest_arg(expected_sha256: str) -> None:
    if not isinstance(expected_sha256, str) or not _SHA256_HEX.fullmatch(expected_sha256):
        raise ValueError(f"expected_sha256 must be 64 lowercase hex digits, got {expected_sha256!r}")


def verify(path: str | os.PathLike, expected_sha256: str) -> None:
    """Raise :class:`ChecksumError` naming ``path`` and both digests unless its sha256 is ``expected_sha256``."""
    _check_digest_arg(expected_sha256)
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ChecksumError(f"{path}: sha256 is {actual}, expected {expected_sha256}: the file is damaged or not the "
                            "published original (shared/data/README.md)")


def folder_digest(directory: str | os.PathLike, names: Iterable[str], folder: str) -> str:
    """sha256 of the ``SHA256SUMS`` lines of ``names`` in ``directory``, as if it were ``shared/data/<folder>``.

    Equals ``grep ' ./<folder>/' SHA256SUMS | sha256sum`` when ``names`` are all the folder's files.
    """
    lines = "".join(f"{sha256_of(os.path.join(directory, name))}  ./{folder}/{name}\n" for name in sorted(names))
    return hashlib.sha256(lines.encode()).hexdigest()


def verify_folder(directory: str | os.PathLike, names: Iterable[str], folder: str, expected_sha256: str) -> None:
    """Raise :class:`ChecksumError` unless the :func:`folder_digest` of ``names`` is ``expected_sha256``."""
    _check_digest_arg(expected_sha256)
    names = list(names)
    actual = folder_digest(directory, names, folder)
    if actual != expected_sha256:
        raise ChecksumError(
            f"{directory}: the combined sha256 of its {len(names)} files (their {folder} lines of SHA256SUMS) is "
            f"{actual}, expected {expected_sha256}: a file is damaged or not the published original; "
            "`sha256sum -c SHA256SUMS` in shared/data names it")
