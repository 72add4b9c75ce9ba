"""Build-time spill files: tokens and rejections go to disk as they are made.

A build keeps in memory only a few numbers per document (:mod:`packer.doctable`);
the tokens of kept documents and the rejection lines are appended to files
inside the output directory while it holds the ``.packer-incomplete`` marker,
and are deleted before the manifest is written, so they never survive into a
finished output (a build that dies leaves them beside the marker, and the next
build clears the directory).

Tokens, in the order documents were kept (= doc_id order)::

    .packer-spill-ids    int32 per token
    .packer-spill-roles  uint8 per token: role code | last-turn flag << 4

Document ``k`` owns tokens ``starts[k] : starts[k] + lengths[k]`` of both, with
``starts`` the running sum of the kept lengths, so no offsets are stored.
:class:`TokenSpillReader` gathers the tokens of a set of documents (a batch of
packed rows) with explicit reads into a buffer of that batch's size.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .gather import gather_index

SPILL_IDS = ".packer-spill-ids"
SPILL_ROLES = ".packer-spill-roles"
#: rejections found while reading (reader, duplicate, template) and while tokenizing (overlong):
#: two files, each in doc_id order, merged at the end
SPILL_REJECTED = (".packer-spill-rejected-read", ".packer-spill-rejected-tokens")
SPILL_FILES = (SPILL_IDS, SPILL_ROLES, *SPILL_REJECTED)
_LAST_SHIFT = 4
_ROLE_MASK = (1 << _LAST_SHIFT) - 1


def remove_spill(out: Path, *, tokens_only: bool = False) -> None:
    """Delete the spill files of ``out`` (missing ones are fine): all, or the token files only."""
    for name in (SPILL_IDS, SPILL_ROLES) if tokens_only else SPILL_FILES:
        (out / name).unlink(missing_ok=True)


class TokenSpillWriter:
    """Appends the tokens of kept documents to the two spill files."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._ids = open(out / SPILL_IDS, "wb")
        self._roles = open(out / SPILL_ROLES, "wb")
        self.tokens = 0

    def append(self, ids: np.ndarray, roles: np.ndarray, last: np.ndarray) -> None:
        self._ids.write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
        packed = roles.astype(np.uint8) | (last.astype(np.uint8) << _LAST_SHIFT)
        self._roles.write(packed.tobytes())
        self.tokens += len(ids)

    def close(self) -> None:
        self._ids.close()
        self._roles.close()


class TokenSpillReader:
    """Tokens of documents by document index, read from the spill files.

    ``gather(docs)`` returns ``(ids, roles, last)`` of the documents ``docs``
    concatenated in that order; memory is what that returns, whatever the size
    of the files. It reads with ``preadv`` into a buffer of its own, not through
    a memory map: packed rows pick documents from all over the file, and the
    kernel maps ~64 KiB around every page fault of a mapping, so a map would put
    the whole spill into the process's RSS.
    """

    #: documents closer than this many tokens are read together, with the gap
    GAP = 256

    def __init__(self, out: Path, lengths: np.ndarray) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.starts = np.zeros(len(self.lengths), dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=self.starts[1:])
        total = int(self.lengths.sum())
        self._fds: list[int] = []
        for path, size in ((out / SPILL_IDS, total * 4), (out / SPILL_ROLES, total)):
            if os.path.getsize(path) != size:
                raise RuntimeError(f"{path}: spill file holds {os.path.getsize(path)} bytes, expected {size}")
            self._fds.append(os.open(path, os.O_RDONLY))

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        docs = np.asarray(docs, dtype=np.int64)
        lens = self.lengths[docs]
        if not len(docs):
            return np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, bool)
        # sort by place in the file and merge neighbours into runs, one read per run
        order = np.argsort(self.starts[docs], kind="stable")
        s = self.starts[docs][order]
        e = s + lens[order]
        reach = np.maximum.accumulate(e)
        new_run = np.ones(len(s), dtype=bool)
        new_run[1:] = s[1:] > reach[:-1] + self.GAP
        first = np.flatnonzero(new_run)
        run_start = s[first]
        run_len = np.maximum.reduceat(e, first) - run_start
        run_buf = np.cumsum(run_len) - run_len
        size = int(run_len.sum())
        ids = np.empty(size, dtype=np.int32)
        packed = np.empty(size, dtype=np.uint8)
        for start, n, at in zip(run_start.tolist(), run_len.tolist(), run_buf.tolist(), strict=True):
            _read_into(self._fds[0], memoryview(ids[at : at + n]).cast("B"), start * 4)
            _read_into(self._fds[1], memoryview(packed[at : at + n]), start)
        run_of = np.cumsum(new_run) - 1
        pos = np.empty(len(docs), dtype=np.int64)
        pos[order] = run_buf[run_of] + (s - run_start[run_of])
        idx = gather_index(pos, lens)
        packed = packed[idx]
        return ids[idx], packed & _ROLE_MASK, (packed >> _LAST_SHIFT).astype(bool)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


def _read_into(fd: int, buf: memoryview, offset: int) -> None:
    """Fill ``buf`` from ``fd`` at ``offset`` (preadv may return short)."""
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], offset + done)
        if n <= 0:
            raise RuntimeError("spill file ended early")
        done += n


class RejectionSpill:
    """``rejected.jsonl`` lines, written as rejections happen.

    Rejections come from two stages, each in doc_id order: reading (and
    rendering) records, and tokenizing them (overlong, truncated), which runs
    behind. Each stage appends to its own file; :meth:`merged` yields all lines
    in doc_id order (a record has at most one line).
    """

    READ, TOKENS = 0, 1

    def __init__(self, out: Path) -> None:
        self.paths = [out / name for name in SPILL_REJECTED]
        self._files = [open(p, "w", encoding="utf-8") for p in self.paths]
        self.count = 0

    def write(self, stage: int, line: str) -> None:
        self._files[stage].write(line)
        self.count += 1

    def close(self) -> None:
        for f in self._files:
            f.close()

    def merged(self) -> Iterator[str]:
        def doc_id(line: str) -> int:
            # lines start with {"doc_id": N, (see build.py)
            return int(line[11 : line.index(",")])

        files = [open(p, encoding="utf-8") for p in self.paths]
        try:
            yield from heapq.merge(*files, key=doc_id)
        finally:
            for f in files:
                f.close()
