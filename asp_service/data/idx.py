"""A small reader for the IDX files that MNIST and Fashion-MNIST ship in.

The IDX format (LeCun et al.) is a 4-byte magic number ``0x00 0x00 <dtype> <ndim>``, then
``ndim`` big-endian uint32 sizes, then the array in C order. MNIST's files use dtype ``0x08``
(unsigned byte). Files may be gzip-compressed (``.gz``), as torchvision's downloads and
Debian's ``dataset-fashion-mnist`` package leave them.

Reading the raw files ourselves instead of through ``torchvision.datasets.MNIST`` keeps the
loader fast (one ``numpy.frombuffer``), never writes next to the data (shared data folders are
read-only) and needs torchvision only to download.

Example
-------
>>> import gzip, io, numpy as np
>>> blob = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9])
>>> read_idx_bytes(blob).tolist()
[7, 8, 9]
"""

from __future__ import annotations

import gzip
import os

import numpy as np

__all__ = ["read_idx", "read_idx_bytes"]

# IDX type byte -> numpy dtype (big-endian where multi-byte).
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(blob: bytes) -> np.ndarray:
    """Parse an in-memory IDX file into a numpy array (native byte order).

    Raises
    ------
    ValueError
        If the header is malformed or the payload size does not match the header.
    """
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0:
        raise ValueError("not an IDX file: bad magic number")
    code, ndim = blob[2], blob[3]
    if code not in _DTYPES:
        raise ValueError(f"unsupported IDX data type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise ValueError("truncated IDX header")
    shape = tuple(int.from_bytes(blob[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(blob) - header != expected:
        raise ValueError(
            f"IDX payload has {len(blob) - header} bytes, header says {expected}")
    arr = np.frombuffer(blob, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) from disk; the result is writable memory."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        blob = fh.read()
    arr = read_idx_bytes(blob)
    # frombuffer over bytes is read-only; give callers an owned, writable copy.
    return np.array(arr, copy=True)
