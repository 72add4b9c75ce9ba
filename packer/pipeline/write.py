"""The write stage of a build: packed rows -> shards, documents.arrow and rejected.jsonl.

:func:`write_output` takes what :mod:`packer.pipeline.combine` decided and writes, into
the build's staging folder, the shards (a record batch at a time, each kept
document's tokens read back from the parts' spill files), documents.arrow
(one row per record, with where its tokens went) and rejected.jsonl (the
parts' rejection lines merged in doc_id order), then deletes the spill. It
also counts the tokens the shards hold, per role and per strategy, as they go
by, for the manifest (:mod:`packer.pipeline.manifest`)::

    kept doc_ids [0, 1, 3]   lengths [5, 3, 4]   order [0, 2, 1]   row_offsets [0, 2, 3]   (seq_len 9)
    shard-00000.arrow  row 0: docs 0, 3 (9 tokens)   row 1: doc 1 (3 tokens)
    documents.arrow    doc 0: train shard 0 row 0 offset 0   doc 1: train shard 0 row 1 offset 0
                       doc 2: rejected (no place)            doc 3: train shard 0 row 0 offset 5

With an eval split, its rows go to ``eval-shard-NNNNN.arrow`` (numbered from 0), written after the
train shards, and documents.arrow's ``split`` column says which split's shard a document is in.

With a mixture, a record packed ``k`` times is ``k`` documents in the shards (its doc_id ``k`` times in
their ``doc_ids``); documents.arrow's shard/row/offset name its first copy (the first in shard, row,
offset order) and its ``copies`` column, present only then, says ``k`` (0 for a record not packed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..output import roles as R
from ..output.arrays import coded_strings, numpy_array
from ..output.doctable import NULL
from ..output.layout import (
    DOCUMENTS_FILE,
    FORMAT_VERSION,
    REJECTED_FILE,
    shard_pattern,
    write_atomic,
)
from ..output.shards import ShardInfo, ShardWriter, write_documents
from ..read.records import STATUSES
from .combine import DOCUMENT_STATS, PREFERENCE_STATS, Combined, SplitRows
from .outdir import checkpoint
from .spill import TokenSpillReader, remove_spill, spill_path

if TYPE_CHECKING:
    from .engine import Engine


class TokenTotals:
    """Token counts of the packed documents for the manifest, added as the shards are written."""

    def __init__(self, strategy_table: dict[str, tuple[str, ...]]) -> None:
        self.strategy_table = strategy_table
        self.role_counts = np.zeros(R.N_ROLES, dtype=np.int64)
        #: tokens of messages marked untrained, per role
        self.untrained_counts = np.zeros(R.N_ROLES, dtype=np.int64)
        #: tokens of non-assistant messages marked "training": true (loss under every strategy), per role
        self.forced_counts = np.zeros(R.N_ROLES, dtype=np.int64)
        self.luts = {name: R.role_lut(names) for name, names in strategy_table.items()}
        # last-turn strategies need the flag, so they cannot be derived from role counts: their loss per role
        self.last_loss_per_role = {name: np.zeros(R.N_ROLES, dtype=np.int64)
                                   for name in strategy_table if name in R.LAST_TURN_STRATEGIES}

    def merge(self, other: TokenTotals) -> None:
        """Add the counts of ``other`` (the same strategies: a shard written elsewhere)."""
        self.role_counts += other.role_counts
        self.untrained_counts += other.untrained_counts
        self.forced_counts += other.forced_counts
        for name, counts in self.last_loss_per_role.items():
            counts += other.last_loss_per_role[name]

    def add(self, roles: np.ndarray, flags: np.ndarray) -> None:
        self.role_counts += np.bincount(roles, minlength=R.N_ROLES)[: R.N_ROLES]
        untrained = (flags & R.UNTRAINED_FLAG) != 0
        if untrained.any():
            self.untrained_counts += np.bincount(roles[untrained], minlength=R.N_ROLES)[: R.N_ROLES]
        forced = (flags & R.FORCED_FLAG) != 0
        if forced.any():
            self.forced_counts += np.bincount(roles[forced], minlength=R.N_ROLES)[: R.N_ROLES]
        last = (flags & R.LAST_FLAG) != 0
        for name, counts in self.last_loss_per_role.items():
            sel = self.luts[name][roles] & last & ~untrained | forced
            counts += np.bincount(roles[sel], minlength=R.N_ROLES)[: R.N_ROLES]

    @property
    def total(self) -> int:
        return int(self.role_counts.sum())

    def loss(self) -> dict[str, int]:
        out = {}
        for name in self.strategy_table:
            counts = self.role_counts if name in R.UNFLAGGED_STRATEGIES else self.role_counts - self.untrained_counts
            lut = self.luts[name][: R.N_ROLES]
            # forced tokens have loss whatever their role: those of the strategy's roles are counted already
            per_role = int(counts[lut].sum()) + int(self.forced_counts[~lut].sum())
            last = self.last_loss_per_role.get(name)
            out[name] = int(last.sum()) if last is not None else per_role
        return out


@dataclass
class Written:
    """What the write stage wrote: the shards and token counts of each split (train first), the rejection
    lines."""

    split_shards: dict[str, list[ShardInfo]]
    rejection_lines: int
    split_totals: dict[str, TokenTotals]
    #: the output's format version (:data:`~packer.output.layout.FORMAT_VERSION`: stream shards)
    version: int = FORMAT_VERSION

    @property
    def shards(self) -> list[ShardInfo]:
        """The train split's shards."""
        return self.split_shards["train"]

    @property
    def totals(self) -> TokenTotals:
        """The train split's token counts."""
        return self.split_totals["train"]


class _Counted:
    """The token source of the shard writer: kept documents' tokens from the spill, counted as they go
    ("writing" progress, :class:`TokenTotals`)."""

    def __init__(self, source: TokenSpillReader, spill_index: np.ndarray, totals: TokenTotals, events) -> None:  # type: ignore[no-untyped-def]
        self.source, self.spill_index, self.totals, self.events = source, spill_index, totals, events
        self.total, self.done = len(spill_index), 0  # one count over all splits: set totals per split

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        checkpoint("writing")
        ids, roles, flags = self.source.gather(self.spill_index[docs])
        self.totals.add(roles, flags)
        self.done += len(docs)
        if self.events is not None:
            self.events.progress("writing", self.done, self.total)
        return ids, roles, flags


def _nullable(values: np.ndarray, type: pa.DataType = pa.int32()) -> Callable[[int, int], pa.Array]:  # noqa: B008
    """An integer column of documents.arrow, NULL -> null (stored as 0, as pyarrow stores a None)."""

    def chunk(a: int, b: int) -> pa.Array:
        v = values[a:b]
        null = v == NULL
        return numpy_array(np.where(null, 0, v), type, null=null)

    return chunk


#: what a shard written elsewhere reads of the combined build (:func:`write_shard`), saved as .npy files
_SHARED = ("kept_len", "kept_ids", "spill_index", "spilled_len", "order", "row_offsets")


def _shared_path(out: Path, split: str, name: str) -> Path:
    return spill_path(out, f"write-{split}", f"{name}.npy")


def write_shard(
    out: str, strategy_table: dict[str, tuple[str, ...]], shard_bytes: int, split: str, tags: list[int],
    number: int, r0: int, r1: int, version: int = FORMAT_VERSION, rows: str = "sft", forced: bool = False,
) -> tuple[ShardInfo, np.ndarray, np.ndarray, TokenTotals]:
    """Write shard ``number`` (rows ``r0:r1``) of ``split`` in a worker: the task of a parallel write stage.
    Reads the packing from the files :func:`write_output` saved beside the spill; returns the shard's info,
    its documents' rows and offsets (:meth:`~packer.output.shards.ShardWriter.write_shard`) and its token counts."""
    where = Path(out)
    a = {name: np.load(_shared_path(where, split, name), mmap_mode="r") for name in _SHARED}
    totals = TokenTotals(strategy_table)
    tokens = TokenSpillReader(where, np.asarray(a["spilled_len"]), tags)
    try:
        writer = ShardWriter(where, strategy_table, shard_bytes, shard_pattern(split), version, rows, forced)
        counted = _Counted(tokens, np.asarray(a["spill_index"]), totals, None)
        info, rows, offsets = writer.write_shard(number, r0, r1, counted, a["kept_len"], a["kept_ids"], a["order"],
                                                 a["row_offsets"])
    finally:
        tokens.close()
    return info, rows, offsets, totals


def _write_split(
    out: Path, c: Combined, split: SplitRows, strategy_table: dict[str, tuple[str, ...]], shard_bytes: int,
    engine: Engine, counted: _Counted, version: int = FORMAT_VERSION, rows: str = "sft", forced: bool = False,
) -> tuple[list[ShardInfo], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One split's shards, each written by a task of ``engine``."""
    writer = ShardWriter(out, strategy_table, shard_bytes, shard_pattern(split.name), version, rows, forced)
    ranges = writer.ranges(c.kept_len, split.order, split.row_offsets)
    arrays = {"kept_len": c.kept_len, "kept_ids": c.kept_ids, "spill_index": c.spill_index,
              "spilled_len": c.spilled_len, "order": split.order, "row_offsets": split.row_offsets}
    for name in _SHARED:
        np.save(_shared_path(out, split.name, name), np.ascontiguousarray(arrays[name]))
    where = tuple(np.full(len(c.kept_len), -1, dtype=np.int32) for _ in range(3))

    def on_done(k: int, result: tuple) -> None:
        r0, r1 = ranges[k]
        counted.done += int(split.row_offsets[r1] - split.row_offsets[r0])
        if counted.events is not None:
            counted.events.progress("writing", counted.done, counted.total)

    calls = [(str(out), strategy_table, shard_bytes, split.name, c.tags, k, r0, r1, version, rows, forced)
             for k, (r0, r1) in enumerate(ranges)]
    shards = []
    for k, (info, rows, offsets, totals) in enumerate(engine.map(write_shard, calls, on_done)):
        r0, r1 = ranges[k]
        docs = split.order[split.row_offsets[r0] : split.row_offsets[r1]]
        where[0][docs], where[1][docs], where[2][docs] = k, rows, offsets
        counted.totals.merge(totals)
        shards.append(info)
    return shards, where  # type: ignore[return-value]


def write_output(
    out: Path, c: Combined, strategy_table: dict[str, tuple[str, ...]], *, shard_bytes: int,
    events=None, engine: Engine | None = None, forced: bool = False, rows: str = "sft",  # type: ignore[no-untyped-def]
) -> Written:
    """Write the shards, documents.arrow and rejected.jsonl of ``c`` into ``out``; see the module's docstring.
    ``forced``: the parts spilled tokens of messages marked ``"training": true`` that are not the assistant's,
    so the shards get the ``forced`` column (as format version 3 had it). ``rows``: what a document is, "sft", a
    preference pair ("pairs", or "separate") or a labelled KTO record ("kto"): preference shards have the columns
    of format version 4. Every output is :data:`~packer.output.layout.FORMAT_VERSION` (stream shards)."""
    version = FORMAT_VERSION
    n = c.records
    where = {name: np.full(n, NULL, dtype=np.int32) for name in ("shard", "row", "offset")}
    split_col = np.full(n, NULL, dtype=np.int32)
    split_col[c.kept_ids] = c.split_of()
    shards: dict[str, list[ShardInfo]] = {}
    totals: dict[str, TokenTotals] = {}
    tokens = TokenSpillReader(out, c.spilled_len, c.tags)
    counted = _Counted(tokens, c.spill_index, TokenTotals(strategy_table), events)
    try:
        for split in c.splits:
            counted.totals = totals[split.name] = TokenTotals(strategy_table)
            if engine is None or engine.workers == 1:
                writer = ShardWriter(out, strategy_table, shard_bytes, shard_pattern(split.name), version, rows, forced)
                placed = writer.write(counted, c.kept_len, c.kept_ids, split.order, split.row_offsets)
                split_shards = writer.shards
            else:
                split_shards, placed = _write_split(out, c, split, strategy_table, shard_bytes, engine, counted,
                                                    version, rows, forced)
            members = split.members
            if c.copies is not None:  # the first copy of each record, in shard, row, offset order
                s_, r_, o_ = (v[members] for v in placed)
                by = np.lexsort((o_, r_, s_, c.kept_ids[members]))
                ids = c.kept_ids[members][by]
                first = np.ones(len(ids), dtype=bool)
                first[1:] = ids[1:] != ids[:-1]
                members = members[by[first]]
            for name, values in zip(("shard", "row", "offset"), placed, strict=True):
                where[name][c.kept_ids[members]] = values[members]
            shards[split.name] = split_shards
    finally:
        tokens.close()
    remove_spill(out, tokens_only=True)

    docs = c.docs
    split_names = [s.name for s in c.splits]
    write_documents(
        out / DOCUMENTS_FILE,
        {
            "doc_id": lambda a, b: numpy_array(np.arange(a, b, dtype=np.int64)),
            "input": lambda a, b: coded_strings(c.files, docs["file"][a:b]),
            "record": lambda a, b: numpy_array(docs["record"][a:b], pa.int64()),
            "status": lambda a, b: coded_strings(STATUSES, docs["status"][a:b]),
            "split": lambda a, b: coded_strings(split_names, split_col[a:b], null=split_col[a:b] == NULL),
            **{name: _nullable(col) for name, col in where.items()},
            **{name: _nullable(docs[name]) for name in DOCUMENT_STATS},
            "duplicate_of": _nullable(docs["duplicate_of"], pa.int64()),
            **({"copies": lambda a, b: numpy_array(copies[a:b].astype(np.int32), pa.int32())}
               if (copies := c.copies) is not None else {}),
            **({name: _nullable(docs[name]) for name in PREFERENCE_STATS[:3]} if rows in ("pairs", "separate") else {}),
            **({"label": _nullable(docs["label"], pa.bool_())} if rows == "kto" else {}),
        },
        n_rows=n,
    )

    lines = 0

    def write_rejected(tmp: Path) -> None:
        nonlocal lines
        with open(tmp, "w", encoding="utf-8") as f:
            for line in c.rejected_lines():
                f.write(line)
                lines += 1

    write_atomic(out / REJECTED_FILE, write_rejected)
    remove_spill(out)
    if lines != c.rejection_lines:
        raise RuntimeError(f"internal error: {lines} rejection lines written, {c.rejection_lines} expected")
    return Written(shards, lines, totals, version)
