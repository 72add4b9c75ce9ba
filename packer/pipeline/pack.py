"""Sequence packing: assign whole documents to rows of at most ``seq_len`` tokens.

A document is never split; the caller has already dropped or truncated documents
longer than ``seq_len``. :func:`pack` returns the row ("bin") of every document,
rows numbered ``0..n_rows-1`` in the order the algorithm opened them, and
:func:`rows_from_bins` turns that into the documents of each row.

Worked example, five documents and rows of 8 tokens::

    >>> import numpy as np
    >>> lengths = np.array([5, 3, 4, 2, 6])
    >>> bins = pack(lengths, 8)              # best-fit decreasing
    >>> bins
    array([1, 1, 2, 0, 0])
    >>> order, offsets = rows_from_bins(bins)
    >>> [order[offsets[r] : offsets[r + 1]].tolist() for r in range(len(offsets) - 1)]
    [[3, 4], [0, 1], [2]]
    >>> lower_bound(lengths, 8), efficiency(lengths, 3, 8)
    (3, 0.8333333333333334)
    >>> pack(lengths, 8, "nextfit")
    array([0, 0, 1, 1, 2])

Best-fit decreasing takes the documents longest first (6, 5, 4, 3, 2): 6 opens
row 0 (2 tokens left), 5 and 4 fit nowhere and open rows 1 and 2 (3 and 4 left),
3 goes to the row with the least room that still fits it, row 1 (exactly full),
and 2 likewise to row 0. Rows: ``[2+6] [5+3] [4]`` = 20 of 24 tokens, 83.3%,
and 3 rows is also the lower bound ``ceil(20 / 8)``.

Algorithms (:data:`ALGORITHMS`):

``bfd``
    Best-fit decreasing (default). Documents in decreasing length, ties by
    document index; each goes to the open row with the *least* remaining room
    that still fits it, else to a new row. O(n log seq_len): a segment tree over
    remaining-capacity values 0..seq_len marks which capacities have an open row,
    and each capacity keeps its rows in a stack. **Tie rule:** among rows with
    the same (smallest sufficient) remaining capacity, the row that most recently
    arrived at that capacity wins (last in, first out). Memory is O(n + seq_len).
``ffd``
    First-fit decreasing: same order, each document goes to the *lowest
    numbered* row that fits it. O(n log n) with a max segment tree over rows.
``nextfit``
    Keeps input order with one open row: a document that does not fit closes it
    and opens the next. Rows are non-decreasing along the document index, so the
    packed data keeps the input order; it wastes more space than the others.

``bfd`` and ``ffd`` sort with a counting sort over lengths, O(n + seq_len), unless
seq_len is much larger than n, where a stable argsort is cheaper; both give the
same order. The Python functions validate and convert; the numba kernels below
them are small, pure and typed over int64 arrays.
"""

from __future__ import annotations

import operator

import numpy as np
import numpy.typing as npt

from ..jit import njit
from ..options import ALGORITHMS

__all__ = ["ALGORITHMS", "efficiency", "lower_bound", "pack", "rows_from_bins"]


# A counting sort costs O(n + seq_len) time and memory, argsort O(n log n); past
# this many keys per document the counting array would dominate, so use argsort.
_COUNTING_SORT_KEYS_PER_DOC = 4
_COUNTING_SORT_MIN_KEYS = 1 << 16


# --------------------------------------------------------------------------- kernels


@njit()
def _counting_order(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable ascending order of ``keys`` (ints in ``[0, n_keys)``) and the
    offsets of each key's run in that order (length ``n_keys + 1``)."""
    n = keys.shape[0]
    offsets = np.zeros(n_keys + 1, np.int64)
    for i in range(n):
        offsets[keys[i] + 1] += 1
    for k in range(n_keys):
        offsets[k + 1] += offsets[k]
    cursor = offsets[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        k = keys[i]
        order[cursor[k]] = i
        cursor[k] += 1
    return order, offsets


@njit()
def _first_marked_at_or_after(tree: np.ndarray, size: int, x: int) -> int:
    """Smallest marked leaf position >= ``x`` in an OR segment tree with ``size``
    leaves (``tree[size + p]`` is leaf ``p``), or -1 if none."""
    i = size + x
    if tree[i]:
        return x
    # Climb until a right sibling covers a marked position; the ranges it skips
    # are all left of x or already known empty.
    while True:
        if (i & 1) == 0 and tree[i + 1]:
            i += 1
            break
        i >>= 1
        if i == 1:
            return -1
    while i < size:
        i <<= 1
        if not tree[i]:
            i += 1
    return i - size


@njit()
def _mark(tree: np.ndarray, size: int, pos: int, value: int) -> None:
    i = size + pos
    tree[i] = value
    i >>= 1
    while i >= 1:
        v = tree[2 * i] | tree[2 * i + 1]
        if tree[i] == v:
            break  # ancestors already agree
        tree[i] = v
        i >>= 1


#: a document's trips through a packing kernel's two tree walks, in :mod:`packer.jit` elements (as Python: ~80 us;
#: the trees themselves are made by numpy, as fast either way)
_TREE_WORK = 200


@njit(work=lambda sorted_lengths, *sizes: _TREE_WORK * len(sorted_lengths))
def _bfd_kernel(sorted_lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """Best-fit row of each document of ``sorted_lengths`` (decreasing)."""
    n = sorted_lengths.shape[0]
    size = 1
    while size < seq_len + 1:
        size <<= 1
    # has_bin[size + c] == 1 iff some open row has exactly c tokens of room left.
    has_bin = np.zeros(2 * size, np.uint8)
    # Rows with the same room form a stack: top[c] is the latest row to reach c,
    # below[b] the one under row b. Full rows (room 0) are in no stack.
    top = np.full(seq_len + 1, -1, np.int64)
    below = np.empty(n, np.int64)
    bins = np.empty(n, np.int64)
    n_bins = 0
    for k in range(n):
        length = sorted_lengths[k]
        room = _first_marked_at_or_after(has_bin, size, length)
        if room < 0:
            b = n_bins
            n_bins += 1
            left = seq_len - length
        else:
            b = top[room]
            top[room] = below[b]
            if top[room] < 0:
                _mark(has_bin, size, room, 0)
            left = room - length
        if left > 0:
            below[b] = top[left]
            if top[left] < 0:
                _mark(has_bin, size, left, 1)
            top[left] = b
        bins[k] = b
    return bins


@njit(work=lambda sorted_lengths, *sizes: _TREE_WORK * len(sorted_lengths))
def _ffd_kernel(sorted_lengths: np.ndarray, seq_len: int, max_bins: int) -> np.ndarray:
    """First-fit row of each document of ``sorted_lengths`` (decreasing);
    ``max_bins`` bounds the number of rows it can open."""
    n = sorted_lengths.shape[0]
    size = 1
    while size < max_bins:
        size <<= 1
    # Max-tree of remaining room over rows. Rows not opened yet count as empty
    # (room seq_len), so "leftmost row that fits" opens row n_rows when no open
    # row fits, and rows come out numbered in creation order for free.
    room = np.full(2 * size, seq_len, np.int64)
    bins = np.empty(n, np.int64)
    for k in range(n):
        length = sorted_lengths[k]
        i = 1
        while i < size:
            i <<= 1
            if room[i] < length:
                i += 1
        room[i] -= length
        bins[k] = i - size
        i >>= 1
        while i >= 1:
            v = max(room[2 * i], room[2 * i + 1])
            if room[i] == v:
                break  # ancestors already agree
            room[i] = v
            i >>= 1
    return bins


@njit()
def _unsort_by_length(lengths: np.ndarray, sorted_values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inverse of the stable decreasing counting sort: ``sorted_values`` is in
    the order of documents by decreasing length, ties by index, and ``counts``
    the number of documents of each length; returns it in document order."""
    seq_len = counts.shape[0] - 1
    # cursor[l]: sorted position of the next document of length l. Walking the
    # documents in index order keeps seq_len sequential read streams, far kinder
    # to the cache than scattering through a permutation.
    cursor = np.empty(seq_len + 1, np.int64)
    pos = 0
    for length in range(seq_len, -1, -1):
        cursor[length] = pos
        pos += counts[length]
    out = np.empty(lengths.shape[0], np.int64)
    for i in range(lengths.shape[0]):
        length = lengths[i]
        out[i] = sorted_values[cursor[length]]
        cursor[length] += 1
    return out


@njit()
def _nextfit_kernel(lengths: np.ndarray, seq_len: int) -> np.ndarray:
    n = lengths.shape[0]
    bins = np.empty(n, np.int64)
    b = 0
    used = 0
    for i in range(n):
        if used + lengths[i] > seq_len:
            b += 1
            used = 0
        used += lengths[i]
        bins[i] = b
    return bins


# --------------------------------------------------------------------------- wrappers


def _check_seq_len(seq_len: int) -> int:
    if isinstance(seq_len, bool | np.bool_):
        raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}")
    try:
        value = operator.index(seq_len)
    except TypeError:
        raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}") from None
    if value < 1:
        raise ValueError(f"seq_len must be an integer >= 1, got {value}")
    return value


def _check_int_array(values: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        # np.asarray([]) is float64; an empty input has no wrong values.
        return np.empty(0, np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    return arr


def _check_lengths(lengths: npt.ArrayLike, seq_len: int) -> np.ndarray:
    arr = _check_int_array(lengths, "lengths")
    if arr.size == 0:
        return arr
    lo = arr.argmin()
    if arr[lo] < 1:
        raise ValueError(f"lengths must be >= 1: document {lo} has length {arr[lo]}")
    hi = arr.argmax()
    if arr[hi] > seq_len:
        raise ValueError(
            f"lengths must be <= seq_len ({seq_len}): document {hi} has length {arr[hi]}; "
            "drop or truncate overlong documents before packing"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def _uses_counting_sort(n: int, seq_len: int) -> bool:
    return seq_len <= max(_COUNTING_SORT_MIN_KEYS, _COUNTING_SORT_KEYS_PER_DOC * n)


def _pack_decreasing(lengths: np.ndarray, seq_len: int, algorithm: str) -> np.ndarray:
    """Run a decreasing-order kernel: sort lengths decreasing, ties by document
    index (stable), pack in that order, and map the rows back to documents."""
    n = lengths.shape[0]
    counting = _uses_counting_sort(n, seq_len)
    if counting:
        # Lengths are bounded by seq_len, so a counting sort is O(n + seq_len),
        # about 10x faster than a stable argsort, and the sorted lengths are just
        # each length repeated as often as it occurs.
        counts = np.bincount(lengths, minlength=seq_len + 1)
        sorted_lengths = np.repeat(np.arange(seq_len, -1, -1, dtype=np.int64), counts[::-1])
    else:
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
    if algorithm == "bfd":
        sorted_bins = _bfd_kernel(sorted_lengths, seq_len)
    else:
        # Any-fit packings leave at most one row at most half full, so
        # n_rows < 2 * sum / seq_len + 1: the tree never needs more rows than this.
        max_bins = min(n, 2 * lower_bound(lengths, seq_len) + 1)
        sorted_bins = _ffd_kernel(sorted_lengths, seq_len, max_bins)
    if counting:
        return _unsort_by_length(lengths, sorted_bins, counts)
    bins = np.empty(n, np.int64)
    bins[order] = sorted_bins
    return bins


def pack(lengths: npt.ArrayLike, seq_len: int, algorithm: str = "bfd") -> np.ndarray:
    """Row index (int64) of every document, rows numbered from 0 in creation order.

    ``lengths`` is a 1-D integer array with every value in ``[1, seq_len]``;
    ``algorithm`` is one of :data:`ALGORITHMS`. Raises ``ValueError`` on
    invalid input. An empty input gives an empty array.
    """
    seq_len = _check_seq_len(seq_len)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown packing algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    arr = _check_lengths(lengths, seq_len)
    if arr.shape[0] == 0:
        return np.empty(0, np.int64)
    if algorithm == "nextfit":
        return _nextfit_kernel(arr, seq_len)
    return _pack_decreasing(arr, seq_len, algorithm)


def rows_from_bins(bins: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Group documents by row.

    Returns ``(order, row_offsets)``: ``order[row_offsets[r]:row_offsets[r + 1]]``
    are the documents of row ``r`` in ascending document index, rows in order
    ``0..n_rows-1``; ``row_offsets`` has ``n_rows + 1`` entries (int64).
    """
    arr = _check_int_array(bins, "bins")
    if arr.size == 0:
        return np.empty(0, np.int64), np.zeros(1, np.int64)
    if arr.min() < 0:
        raise ValueError(f"bins must be >= 0, got {arr.min()}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    return _counting_order(arr, int(arr.max()) + 1)


def lower_bound(lengths: npt.ArrayLike, seq_len: int) -> int:
    """Fewest rows any packing can use: ``ceil(sum(lengths) / seq_len)``."""
    seq_len = _check_seq_len(seq_len)
    total = int(np.sum(np.asarray(lengths), dtype=np.int64))
    return -(-total // seq_len)


def efficiency(lengths: npt.ArrayLike, n_rows: int, seq_len: int) -> float:
    """Fraction of the ``n_rows * seq_len`` token slots holding document tokens
    (1.0 when there are no rows)."""
    seq_len = _check_seq_len(seq_len)
    if n_rows <= 0:
        return 1.0
    total = int(np.sum(np.asarray(lengths), dtype=np.int64))
    return total / (n_rows * seq_len)
