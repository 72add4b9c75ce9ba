"""Compact per-document bookkeeping for a build: numpy columns, not Python objects.

A build sees millions of records; a Python object per record (a Source, a
status string, a list entry) costs ~100 bytes each. :class:`Columns` holds
fixed-width numpy columns that grow by half (a few dozen bytes a record),
and :class:`SeenTable` remembers every conversation digest in an open-addressing
hash table (about 35-70 bytes a record) to find exact duplicates.

    >>> cols = Columns(status=(np.uint8, 0), tokens=(np.int32, NULL))
    >>> i = cols.add(status=1)
    >>> int(cols.status[i]), int(cols.tokens[i]), len(cols)
    (1, -1, 1)
"""

from __future__ import annotations

import struct

import numpy as np

from ..jit import njit

#: integer columns use this for "no value" (null in documents.arrow)
NULL = -1


class Columns:
    """Equal-length numpy columns that grow as rows are added.

    ``columns`` maps each name to ``(dtype, fill)``: rows start as ``fill``.
    ``cols.name`` is a view of the filled part of column ``name``.
    """

    def __init__(self, capacity: int = 1024, **columns: tuple[type, int]) -> None:
        self._fill = {name: fill for name, (_, fill) in columns.items()}
        self._data = {name: np.full(capacity, fill, dtype=dt) for name, (dt, fill) in columns.items()}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["_data"][name][: self.__dict__["_n"]]
        except KeyError:
            raise AttributeError(name) from None

    def _reserve(self, n: int) -> None:
        cap = len(next(iter(self._data.values())))
        if n <= cap:
            return
        while cap < n:
            cap += cap // 2 + 1  # 1.5x: less slack than doubling, for millions of rows
        for name, col in self._data.items():
            grown = np.full(cap, self._fill[name], dtype=col.dtype)
            grown[: self._n] = col[: self._n]
            self._data[name] = grown

    def add(self, **values: int) -> int:
        """Append one row (columns not named keep their fill value); return its index."""
        i = self._n
        self._reserve(i + 1)
        for name, v in values.items():
            self._data[name][i] = v
        self._n = i + 1
        return i

    def extend(self, **values: np.ndarray) -> None:
        """Append rows given as equal-length arrays (columns not named keep their fill value)."""
        n = len(next(iter(values.values())))
        self._reserve(self._n + n)
        for name, v in values.items():
            self._data[name][self._n : self._n + n] = v
        self._n += n

    def trim(self) -> None:
        """Drop the spare capacity (before the memory-hungry end of a build)."""
        self._data = {name: col[: self._n].copy() for name, col in self._data.items()}


@njit(nogil=True, work=lambda *args: 4)  # a few probes (its arguments: the whole table and a 128-bit digest)
def _find_or_insert(keys: np.ndarray, values: np.ndarray, hi: int, lo: int, value: int) -> int:
    # linear probing; a slot is free while its value is -1. The digest bits are
    # uniform, so the low word is a fine hash.
    mask = values.shape[0] - 1
    i = lo & mask
    while True:
        v = values[i]
        if v < 0:
            keys[i, 0] = hi
            keys[i, 1] = lo
            values[i] = value
            return -1
        if keys[i, 0] == hi and keys[i, 1] == lo:
            return v
        i = (i + 1) & mask


@njit(nogil=True)
def _rehash(keys: np.ndarray, values: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray) -> None:
    for i in range(values.shape[0]):
        if values[i] >= 0:
            _find_or_insert(new_keys, new_values, keys[i, 0], keys[i, 1], values[i])


class SeenTable:
    """16-byte digest -> the first value stored with it.

    24 bytes a slot, kept between 35% and 70% full: 35-70 bytes a record, where
    a dict of bytes keys costs over 150.
    """

    MAX_LOAD = 0.7

    def __init__(self, capacity: int = 1 << 12) -> None:
        self._keys = np.zeros((capacity, 2), dtype=np.int64)
        self._values = np.full(capacity, -1, dtype=np.int64)
        self._n = 0

    def first(self, digest: bytes, value: int) -> int:
        """The value stored with ``digest``; if it is new, store ``value`` and return -1."""
        if (self._n + 1) > self.MAX_LOAD * len(self._values):
            keys = np.zeros((2 * len(self._values), 2), dtype=np.int64)
            values = np.full(2 * len(self._values), -1, dtype=np.int64)
            _rehash(self._keys, self._values, keys, values)
            self._keys, self._values = keys, values
        hi, lo = struct.unpack("<qq", digest)
        found = _find_or_insert(self._keys, self._values, hi, lo, value)
        if found < 0:
            self._n += 1
        return int(found)
