"""Gathering the tokens of a set of documents: the range-gather kernel and the in-memory token source.

Kept out of :mod:`packer.output.shards` (schema, file names, writer), which the
read-only commands import: this is the only numba code the writer side needs,
and ``packer verify`` or ``packer show`` should not load numba for it.

    starts  = [10, 3]    lengths = [2, 3]
    gather_index(starts, lengths) -> [10, 11, 3, 4, 5]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..jit import njit


@njit(nogil=True)
def _gather_ranges(starts: np.ndarray, lengths: np.ndarray, total: int) -> np.ndarray:
    out = np.empty(total, dtype=np.int64)
    k = 0
    for i in range(starts.shape[0]):
        s = starts[i]
        for j in range(lengths[i]):
            out[k] = s + j
            k += 1
    return out


def gather_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the concatenation of ranges ``[starts[i], starts[i]+lengths[i])``."""
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    return _gather_ranges(starts, lengths, int(lengths.sum()))


@dataclass(frozen=True)
class ArrayTokens:
    """A :class:`packer.output.shards.TokenSource` held in memory, flat: document ``k`` at
    ``starts[k]:starts[k]+lengths[k]`` (tests compare the spill files against it)."""

    ids: np.ndarray
    roles: np.ndarray
    flags: np.ndarray  # uint8 (packer.output.roles.LAST_FLAG | UNTRAINED_FLAG), or bool: the last-turn flag
    starts: np.ndarray
    lengths: np.ndarray

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = gather_index(self.starts[docs], self.lengths[docs])
        return self.ids[idx], self.roles[idx], self.flags[idx]
