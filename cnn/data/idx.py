"""Reader of the IDX format of LeCun's MNIST files (and Fashion-MNIST's), gzip-compressed or not.

An IDX file is a big-endian header ``0x00 0x00 <type> <ndim>``, then ``ndim`` uint32 dimensions, then the values in
C order. Only type ``0x08`` (unsigned byte), the one the MNIST files use, is read.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from cnn.errors import UserError

UBYTE = 0x08


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file at ``path`` (``.gz`` is decompressed); :class:`UserError` naming the file
    when it is not a well-formed unsigned-byte IDX file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        raise UserError(f"{path}: cannot read the IDX file ({error})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != UBYTE:
        raise UserError(f"{path}: not an unsigned-byte IDX file (header {data[:4].hex()}, expected 0000 08 <ndim>)")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise UserError(f"{path}: header gives shape {shape} ({int(np.prod(shape))} values) but {len(data) - offset} "
                        "bytes follow")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)
