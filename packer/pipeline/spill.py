"""Build-time spill files: tokens and rejections go to disk as they are made.

A build keeps in memory only a few numbers per document (:mod:`packer.output.doctable`);
the tokens of kept documents and the rejection lines are appended to files
inside the output directory while it holds the ``.packer-incomplete`` marker,
and are deleted before the manifest is written, so they never survive into a
finished output (a build that dies leaves them beside the marker, and the next
build clears the directory).

Each part of a build (:mod:`packer.pipeline.part`) spills into files of its own, tagged
with the part's number; tokens, in the order its documents were kept (= doc_id
order)::

    .packer-spill-0-ids    int32 per token
    .packer-spill-0-roles  uint8 per token: role code | flags << 4 (packer.output.roles: LAST_FLAG, UNTRAINED_FLAG,
                           FORCED_FLAG, and CHOSEN_FLAG / DESIRABLE_FLAG: four bits, all used)

The parts' files read as one run in part order: spilled document ``k`` owns
tokens ``starts[k] : starts[k] + lengths[k]`` of it, with ``starts`` the
running sum of the spilled lengths, so no offsets are stored.
:class:`TokenSpillReader` gathers the tokens of a set of documents (a batch of
packed rows) with explicit reads into a buffer of that batch's size.

Rejection lines go to files of their own (:class:`RejectionSpill`), each line
behind the doc_id it is sorted by, so merging them never reads the JSON.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from ..output.gather import gather_index

SPILL_PREFIX = ".packer-spill-"
_LAST_SHIFT = 4
_ROLE_MASK = (1 << _LAST_SHIFT) - 1


def spill_path(out: Path, tag: int | str, kind: str) -> Path:
    """The spill file ``kind`` ("ids", "roles", "rejected-read", ...) of part ``tag`` in ``out``."""
    return out / f"{SPILL_PREFIX}{tag}-{kind}"


def remove_spill(out: Path, *, tokens_only: bool = False) -> None:
    """Delete the spill files of ``out``: all, or the token files only."""
    for path in out.glob(f"{SPILL_PREFIX}*"):
        if not tokens_only or path.name.endswith(("-ids", "-roles")):
            path.unlink(missing_ok=True)


class TokenSpillWriter:
    """Appends the tokens of kept documents to part ``tag``'s two spill files."""

    def __init__(self, out: Path, tag: int | str = 0) -> None:
        self.out = out
        self.paths = (spill_path(out, tag, "ids"), spill_path(out, tag, "roles"))
        self._ids = open(self.paths[0], "wb")
        self._roles = open(self.paths[1], "wb")
        self.tokens = 0

    def append(self, ids: np.ndarray, roles: np.ndarray, flags: np.ndarray) -> None:
        packed = roles.astype(np.uint8) | (flags.astype(np.uint8) << _LAST_SHIFT)
        for f, path, data in ((self._ids, self.paths[0], np.ascontiguousarray(ids, dtype=np.int32).tobytes()),
                              (self._roles, self.paths[1], packed.tobytes())):
            try:
                f.write(data)
            except OSError as e:  # a full disk: say which file (a file object's error names none)
                raise OSError(e.errno, e.strerror, str(path)) from None
        self.tokens += len(ids)

    def close(self) -> None:
        failed = None
        for f, path in ((self._ids, self.paths[0]), (self._roles, self.paths[1])):
            try:
                f.close()  # writes what is buffered
            except OSError as e:
                failed = failed or OSError(e.errno, e.strerror, str(path))
        if failed is not None:
            raise failed


class TokenSpillReader:
    """Tokens of documents by document index, read from the spill files of
    parts ``tags`` (in that order) holding ``lengths`` tokens a document.

    ``gather(docs)`` returns ``(ids, roles, flags)`` of the documents ``docs``
    concatenated in that order; memory is what that returns, whatever the size
    of the files. It reads with ``preadv`` into a buffer of its own, not through
    a memory map: packed rows pick documents from all over the file, and the
    kernel maps ~64 KiB around every page fault of a mapping, so a map would put
    the whole spill into the process's RSS.
    """

    #: documents closer than this many tokens are read together, with the gap
    GAP = 256

    def __init__(self, out: Path, lengths: np.ndarray, tags: Sequence[int | str] = (0,)) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.starts = np.zeros(len(self.lengths), dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=self.starts[1:])
        total = int(self.lengths.sum())
        #: per part: (token where its files start, ids fd, roles fd)
        self._files: list[tuple[int, int, int]] = []
        at = 0
        try:
            for tag in tags:
                ids, roles = spill_path(out, tag, "ids"), spill_path(out, tag, "roles")
                n = os.path.getsize(roles)
                if os.path.getsize(ids) != 4 * n:
                    raise RuntimeError(f"{ids}: {os.path.getsize(ids)} bytes for {n} tokens")
                self._files.append((at, os.open(ids, os.O_RDONLY), os.open(roles, os.O_RDONLY)))
                at += n
        except BaseException:
            self.close()
            raise
        if at != total:
            raise RuntimeError(f"spill files in {out} hold {at} tokens, expected {total}")
        self._file_starts = np.array([f[0] for f in self._files] + [at], dtype=np.int64)

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        docs = np.asarray(docs, dtype=np.int64)
        lens = self.lengths[docs]
        if not len(docs):
            return np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.uint8)
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
        runs = zip(run_start.tolist(), run_len.tolist(), run_buf.tolist(), strict=True)
        if len(self._files) == 1:  # one part's files (a build in one process): each run is two reads, no lookups
            _, fd_ids, fd_roles = self._files[0]
            ids_bytes, packed_bytes = memoryview(ids).cast("B"), memoryview(packed)
            for start, n, at in runs:
                _read_into(fd_ids, ids_bytes[4 * at : 4 * (at + n)], 4 * start)
                _read_into(fd_roles, packed_bytes[at : at + n], start)
        else:
            for start, n, at in runs:
                self._read(start, n, ids[at : at + n], packed[at : at + n])
        run_of = np.cumsum(new_run) - 1
        pos = np.empty(len(docs), dtype=np.int64)
        pos[order] = run_buf[run_of] + (s - run_start[run_of])
        idx = gather_index(pos, lens)
        packed = packed[idx]
        return ids[idx], packed & _ROLE_MASK, packed >> _LAST_SHIFT

    def _read(self, start: int, n: int, ids: np.ndarray, packed: np.ndarray) -> None:
        """Tokens ``start : start + n`` of the parts' run into ``ids``/``packed`` (a read may span parts)."""
        done = 0
        while done < n:
            p = int(np.searchsorted(self._file_starts, start + done, side="right")) - 1
            first, fd_ids, fd_roles = self._files[p]
            local = start + done - first
            k = min(n - done, int(self._file_starts[p + 1]) - (start + done))
            _read_into(fd_ids, memoryview(ids[done : done + k]).cast("B"), local * 4)
            _read_into(fd_roles, memoryview(packed[done : done + k]), local)
            done += k

    def close(self) -> None:
        for _, a, b in self._files:
            os.close(a)
            os.close(b)
        self._files.clear()


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

    Rejections come from stages that each meet records in doc_id order: reading
    (and rendering) records, tokenizing them (overlong, truncated), which runs
    behind, and combining parts (duplicates across them). Each stage appends to
    a file of its own, every line behind its doc_id; :func:`merged_lines`
    yields the lines of any set of such files in doc_id order.
    """

    READ, TOKENS = "rejected-read", "rejected-tokens"

    def __init__(self, out: Path, tag: int | str = 0, stages: Sequence[str] = (READ, TOKENS)) -> None:
        self.paths = {stage: spill_path(out, tag, stage) for stage in stages}
        self._files = {stage: open(p, "w", encoding="utf-8") for stage, p in self.paths.items()}
        self.count = 0

    def write(self, stage: str, doc_id: int, line: str) -> None:
        """Append ``line`` (one line of JSON, with its newline) of document ``doc_id``."""
        self._files[stage].write(f"{doc_id}\t{line}")
        self.count += 1

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def merged_lines(paths: Sequence[Path], skip: Callable[[int, int], bool] | None = None) -> Iterator[str]:
    """The lines of rejection spill files ``paths`` (each in doc_id order) in doc_id order, without
    their doc_id; ``skip(file, doc_id)`` leaves out a line of file ``paths[file]``."""

    def keyed(k: int, f: TextIO) -> Iterator[tuple[int, int, str]]:
        for line in f:
            tab = line.index("\t")
            yield int(line[:tab]), k, line[tab + 1 :]

    files = [open(p, encoding="utf-8") for p in paths]
    try:
        for doc_id, k, line in heapq.merge(*(keyed(k, f) for k, f in enumerate(files))):
            if skip is None or not skip(k, doc_id):
                yield line
    finally:
        for f in files:
            f.close()
