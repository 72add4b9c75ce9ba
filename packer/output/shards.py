"""Arrow IPC stream shards: the one source of truth for their schema, and the writer.

One row is one packed sequence of at most ``seq_len`` tokens:

    input_ids : [  1,  12,  40,   2,  77 |   1,  19,   2,  31 ]
    roles     : [spe, ins, res, end, mar | spe, ins, res, end ]   (uint8 codes)
    seq_lens  : [5, 4]             doc_ids : [17, 3]
    trainable : [1, 1, 1, 1, 1 | 1, 1, 1, 1]   (0 in messages marked "weight": 0)
    forced    : [0, 1, 0, 0, 0 | 0, 0, 0, 0]   (only in outputs with one: 1 in a user message marked "training": true)
    mask_instruction_tuning : [0, 0, 1, 1, 0 | 0, 0, 1, 1]
    mask_instruction_modelling : [0, 1, 1, 1, 0 | 0, 1, 1, 1]

A mask column exists for every strategy of the manifest. Files are written
under a temporary name and renamed once complete, so a shard that exists is
whole. A shard is an Arrow IPC stream (format version 5; :mod:`packer.output.container`), its
manifest entry indexing its record batches; documents.arrow is an Arrow IPC file.

This module imports only numpy and pyarrow (``packer verify``, ``show`` and
``inspect`` read its names); the numba kernel that gathers documents' tokens
is in :mod:`packer.output.gather`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from . import roles as R
from .arrays import numpy_array
from .container import message_offsets
from .layout import (
    DOCUMENTS_FILE,
    EVAL_SHARD_PATTERN,
    FORCED_VERSION,
    FORMAT_NAME,
    FORMAT_VERSION,
    SHARD_PATTERN,
    STREAM_VERSION,
    file_sha256,
    write_atomic,
)

#: rows per Arrow record batch: small enough to stream, big enough to amortise
BATCH_ROWS = 1024

#: fixed shard columns: name -> (Arrow type, description)
SHARD_COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "input_ids": (pa.list_(pa.int32()), "token ids of the packed row"),
    "roles": (pa.list_(pa.uint8()), "role code of each token (see manifest 'roles')"),
    "seq_lens": (
        pa.list_(pa.int32()),
        "lengths of the documents packed in the row, in order; sum = row length",
    ),
    "doc_ids": (
        pa.list_(pa.int64()),
        "record index (across all inputs) of each document; see documents.arrow",
    ),
    "trainable": (
        pa.list_(pa.bool_()),
        "false where the token belongs to a message marked untrained (\"weight\": 0 or \"training\": false): no "
        "loss under any strategy but full, role sets chosen at load time included (format version 2; a version 1 "
        "shard has no such column: every token trainable)",
    ),
    "forced": (
        pa.list_(pa.bool_()),
        "true where the token is content of a message other than the assistant's marked \"training\": true (or "
        "\"weight\": 1): the flag overrides the role, so it has loss under every strategy, role sets chosen at load "
        "time included; the template's markup around it has none (only outputs with such a message have this "
        "column, and preference outputs; it came with format version 3)",
    ),
}
#: shard columns of preference outputs only (since format version 4): name -> (Arrow type, description); the rows of a
#: ``pairs`` output have ``branch``, those of a ``kto`` output ``labels`` (docs/preference.md)
PREFERENCE_COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "branch": (
        pa.list_(pa.uint8()),
        "pair rows: per token, 0 in its pair's shared prefix (stored once), 1 on the pair's chosen branch, 2 on its "
        "rejected branch; a pair is laid out prefix, chosen suffix, rejected suffix, and seq_lens/doc_ids list one "
        "entry per pair (with pairs=separate: no prefix, the two whole sides, two entries per pair)",
    ),
    "labels": (pa.list_(pa.bool_()), "KTO rows: per document (as doc_ids), its label: true desirable, false not"),
}
#: which preference column the rows of each kind of output have
KIND_COLUMN: dict[str, str] = {"pairs": "branch", "kto": "labels"}
MASK_TYPE = pa.list_(pa.bool_())
#: shard columns that shards of an older format version lack: name -> the version that added it
ADDED_IN: dict[str, int] = {"trainable": 2, "forced": FORCED_VERSION}

DOCUMENT_COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "doc_id": (pa.int64(), "record index counted across all inputs in the order given"),
    "input": (pa.string(), "input file the record came from"),
    "record": (pa.int64(), "record index within its input file"),
    "status": (pa.string(), "'packed', 'truncated', the rejection reason, or 'unsampled' (a mixture used it 0 times)"),
    "split": (pa.string(), "'train' or 'eval': the split a packed or truncated record went to (null if rejected)"),
    "shard": (pa.int32(), "shard number, within its split's shards, the document was packed into (null if rejected)"),
    "row": (pa.int32(), "row within that shard"),
    "offset": (pa.int32(), "first token of the document within the row"),
    "tokens": (pa.int32(), "tokens of the document as packed"),
    "turns": (pa.int32(), "messages other than system"),
    "prompt_tokens": (pa.int32(), "tokens with role system, instruction or input"),
    "response_tokens": (pa.int32(), "tokens with role response, tool_call or reasoning (what the assistant writes)"),
    "prompt_words": (pa.int32(), "whitespace-split words of system and user messages, +1 per message"),
    "response_words": (pa.int32(), "whitespace-split words of assistant messages, +1 per message"),
    "duplicate_of": (pa.int64(), "doc_id of the first record with the same conversation (null if none before it)"),
    "copies": (pa.int32(), "only in outputs built with a mixture (--mix) or records split by --overlong split: "
               "documents the record is packed as (copies x pieces; 0: not packed; shard/row/offset name the first)"),
    "shared_tokens": (pa.int32(), "only in pair outputs: the pair's shared prefix, the longest common prefix of its "
                      "two sides' tokens (stored once unless pairs=separate)"),
    "chosen_tokens": (pa.int32(), "only in pair outputs: the chosen side's tokens past the shared prefix, as stored"),
    "rejected_tokens": (pa.int32(), "only in pair outputs: the rejected side's tokens past the shared prefix"),
    "label": (pa.bool_(), "only in KTO outputs: the record's label (true: desirable; null where it was rejected "
              "before its label was read)"),
}
#: the columns of documents.arrow that only some outputs have
OPTIONAL_DOCUMENT_COLUMNS = ("copies", "shared_tokens", "chosen_tokens", "rejected_tokens", "label")


def mask_column(strategy: str) -> str:
    return f"mask_{strategy}"


def has_forced(version: int, kind: str = "sft", forced: bool = False) -> bool:
    """Whether shards of format ``version`` have the ``forced`` column: in IPC-file outputs, from version 3 on
    (:data:`FORCED_VERSION`: 3 and the preference version 4); in stream outputs (version 5), those of a
    preference ``kind`` and, ``forced``, those of a build with a message other than the assistant's marked
    ``"training": true`` (the columns of version 2, 3 or 4: only the container changed).

    >>> has_forced(3), has_forced(2), has_forced(5), has_forced(5, forced=True), has_forced(5, "kto")
    (True, False, False, True, True)
    """
    if version >= STREAM_VERSION:
        return forced or kind != "sft"
    return version >= ADDED_IN["forced"]


def shard_schema(strategies: Sequence[str], version: int = FORMAT_VERSION, kind: str = "sft",
                 forced: bool = False) -> pa.Schema:
    """The Arrow schema of a shard of format ``version`` holding the given strategies' masks, for an output of
    ``kind`` ("sft", "pairs" or "kto": the pairs' ``branch`` column, KTO's ``labels``); ``forced``: a stream
    output with the ``forced`` column (:func:`has_forced`)."""
    with_forced = has_forced(version, kind, forced)
    fields = [pa.field(n, t, nullable=False) for n, (t, _) in SHARD_COLUMNS.items()
              if ADDED_IN.get(n, 1) <= version and (n != "forced" or with_forced)]
    if kind in KIND_COLUMN:
        name = KIND_COLUMN[kind]
        fields.append(pa.field(name, PREFERENCE_COLUMNS[name][0], nullable=False))
    fields += [pa.field(mask_column(s), MASK_TYPE, nullable=False) for s in strategies]
    return pa.schema(fields, metadata={"format": FORMAT_NAME, "version": str(version)})


def documents_schema(names: Sequence[str] | None = None) -> pa.Schema:
    """documents.arrow's schema: every column, less the optional ones not in ``names``."""
    return pa.schema([pa.field(n, t) for n, (t, _) in DOCUMENT_COLUMNS.items()
                      if n not in OPTIONAL_DOCUMENT_COLUMNS or (names is not None and n in names)])


def describe() -> dict:
    """A JSON description of both Arrow schemas (written to ``schemas/``)."""

    def cols(table: Mapping[str, tuple[pa.DataType, str]]) -> list[dict]:
        return [{"name": n, "type": str(t), "description": d} for n, (t, d) in table.items()]

    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "shard": {
            "container": "Arrow IPC stream (format version 5; versions 1-4: Arrow IPC file)",
            "file": SHARD_PATTERN.replace("{:05d}", "NNNNN"),
            "eval_file": EVAL_SHARD_PATTERN.replace("{:05d}", "NNNNN"),
            "columns": cols(SHARD_COLUMNS),
            "preference_columns": cols(PREFERENCE_COLUMNS),
            "mask_columns": {
                "name": "mask_<strategy>",
                "type": str(MASK_TYPE),
                "description": "true where the strategy puts loss; one column per strategy of the manifest",
            },
        },
        "documents": {"file": DOCUMENTS_FILE, "columns": cols(DOCUMENT_COLUMNS)},
        "roles": dict(R.ROLES),
        "role_precedence": [R.ROLE_NAMES[c] for c in R.PRECEDENCE],
        "control_tokens": R.CONTROL_TOKEN_RULE,
        "builtin_strategies": {k: list(v) for k, v in R.BUILTIN_STRATEGIES.items()},
    }


def strategy_masks(
    roles: np.ndarray, flags: np.ndarray, strategies: Mapping[str, Sequence[str]]
) -> dict[str, np.ndarray]:
    """Boolean mask per strategy for a flat run of tokens; ``flags`` holds the
    :data:`packer.output.roles.LAST_FLAG`, :data:`packer.output.roles.UNTRAINED_FLAG` and
    :data:`packer.output.roles.FORCED_FLAG` bits (a bool array: the last-turn flag alone). A forced token has loss
    under every strategy, whatever its role and turn."""
    flags = np.asarray(flags).astype(np.uint8)
    last = (flags & R.LAST_FLAG).astype(bool)
    trainable = (flags & R.UNTRAINED_FLAG) == 0
    untrained = not trainable.all()
    forced = (flags & R.FORCED_FLAG) != 0
    any_forced = forced.any()
    out = {}
    for name, role_names in strategies.items():
        mask = R.role_lut(role_names)[roles]
        if name in R.LAST_TURN_STRATEGIES:
            mask &= last
        if untrained and name not in R.UNFLAGGED_STRATEGIES:
            mask &= trainable
        if any_forced:
            mask |= forced
        out[name] = mask
    return out


def pair_branches(flags: np.ndarray, doc_starts: np.ndarray) -> np.ndarray:
    """The ``branch`` column of pair units from their tokens' flags: a pair's chosen tokens have
    :data:`~packer.output.roles.CHOSEN_FLAG`; its tokens before them are its shared prefix (0), after them its
    rejected branch (2). ``doc_starts``: where each unit starts, then the end.

    >>> pair_branches(np.array([0, 0, 8, 8, 0, 8, 0, 0], np.uint8), np.array([0, 5, 8])).tolist()
    [0, 0, 1, 1, 2, 1, 2, 2]
    """
    chosen = (flags & R.CHOSEN_FLAG) != 0
    seen = np.cumsum(chosen)
    before = np.repeat(seen[doc_starts[:-1]] - chosen[doc_starts[:-1]], np.diff(doc_starts)) if len(flags) else seen
    return np.where(chosen, 1, np.where(seen - before > 0, 2, 0)).astype(np.uint8)


@dataclass(frozen=True)
class ShardInfo:
    file: str
    rows: int
    tokens: int
    bytes: int
    sha256: str
    #: where each record batch's message starts in the stream, then where its end-of-stream marker starts
    batch_offsets: list[int] = field(default_factory=list)
    #: each record batch's rows
    batch_rows: list[int] = field(default_factory=list)


def _list_array(offsets: np.ndarray, values: pa.Array | np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(numpy_array(offsets, pa.int32()), values)


class TokenSource(Protocol):
    """Where a :class:`ShardWriter` gets the tokens of packed documents."""

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids, roles, flags)`` of documents ``docs``, concatenated in that order (flags:
        :data:`packer.output.roles.LAST_FLAG` | :data:`packer.output.roles.UNTRAINED_FLAG`)."""
        ...


class ShardWriter:
    """Writes packed rows into size-bounded shards.

    Rows are lists of documents (``order``/``row_offsets`` from
    :func:`packer.pipeline.pack.rows_from_bins`); their tokens come from a
    :class:`TokenSource` one Arrow record batch (:data:`BATCH_ROWS` rows) at a
    time, and each batch goes to the file as soon as it is made, so memory is
    one record batch, whatever the size of the shard or of the whole output.
    """

    def __init__(
        self, out: Path, strategies: Mapping[str, Sequence[str]], max_bytes: int, pattern: str = SHARD_PATTERN,
        version: int = FORMAT_VERSION, rows: str = "sft", forced: bool = False,
    ) -> None:
        self.out = out
        self.pattern = pattern
        self.strategies = dict(strategies)
        #: the format version: the shards are IPC streams from :data:`STREAM_VERSION` on (files before, as an
        #: older packer wrote them; only tests write those)
        self.version = version
        #: what a document is: "sft", a pair ("pairs"; "separate": its two sides are two documents), or "kto"
        self.rows = rows
        self.kind = "pairs" if rows == "separate" else rows
        #: the shards have the ``forced`` column: the build has tokens of messages marked "training": true that
        #: are not the assistant's (or it is a preference build)
        self.forced = has_forced(version, self.kind, forced)
        self.schema = shard_schema(list(self.strategies), version, self.kind, forced)
        self.max_bytes = max_bytes
        # bytes per token on disk: id, role, and one bit per mask and for trainable
        self._token_bytes = 4 + 1 + (len(self.strategies) + 1) / 8
        self.shards: list[ShardInfo] = []

    def write(
        self,
        tokens: TokenSource,
        doc_lengths: np.ndarray,
        doc_ids: np.ndarray,
        order: np.ndarray,
        row_offsets: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Write all rows; return per-document (shard, row, offset-in-row)."""
        where = (
            np.full(len(doc_lengths), -1, dtype=np.int32),
            np.full(len(doc_lengths), -1, dtype=np.int32),
            np.full(len(doc_lengths), -1, dtype=np.int32),
        )
        for number, (r0, r1) in enumerate(self.ranges(doc_lengths, order, row_offsets)):
            info, rows, offsets = self.write_shard(number, r0, r1, tokens, doc_lengths, doc_ids, order, row_offsets)
            docs = order[row_offsets[r0] : row_offsets[r1]]
            where[0][docs], where[1][docs], where[2][docs] = number, rows, offsets
            self.shards.append(info)
        return where

    def ranges(self, doc_lengths: np.ndarray, order: np.ndarray, row_offsets: np.ndarray) -> list[tuple[int, int]]:
        """The rows ``(r0, r1)`` of each shard: as many rows as fit ``max_bytes`` (at least one), decided from
        the documents' lengths alone, so shards can be written apart, in any order."""
        n_rows = len(row_offsets) - 1
        row_tokens = np.add.reduceat(doc_lengths[order], row_offsets[:-1]) if n_rows else np.zeros(0, np.int64)
        row_docs = np.diff(row_offsets)
        row_bytes = row_tokens * self._token_bytes + row_docs * 12 + 16
        out = []
        start = 0
        while start < n_rows:
            cum = np.cumsum(row_bytes[start:])
            stop = start + max(1, int(np.searchsorted(cum, self.max_bytes, side="right")))
            out.append((start, stop))
            start = stop
        return out

    def _record_batch(self, b0, b1, tokens, doc_lengths, doc_ids, order, row_offsets):
        """Rows ``b0:b1`` as one record batch, its tokens, and per document (in row order) its row within
        the batch and its offset in that row."""
        docs = order[row_offsets[b0] : row_offsets[b1]]
        doc_off = row_offsets[b0 : b1 + 1] - row_offsets[b0]
        lens = doc_lengths[docs]
        ids, r, flags = tokens.gather(docs)
        tok_cum = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=tok_cum[1:])
        tok_off = tok_cum[doc_off]
        local = np.repeat(np.arange(b1 - b0), np.diff(doc_off))
        flags = np.asarray(flags)
        seq_lens, seq_docs, seq_off = lens, doc_ids[docs], doc_off
        if self.rows == "separate":  # a pair's two sides are two documents: chosen, then rejected
            on_chosen = ((flags & R.CHOSEN_FLAG) != 0).astype(np.int64)
            chosen = np.add.reduceat(on_chosen, tok_cum[:-1]) if len(lens) else lens
            seq_lens = np.stack([chosen, lens - chosen], axis=1).reshape(-1)
            seq_docs, seq_off = np.repeat(seq_docs, 2), doc_off * 2
        cols = [
            _list_array(tok_off, numpy_array(ids, pa.int32())),
            _list_array(tok_off, numpy_array(r, pa.uint8())),
            _list_array(seq_off, numpy_array(seq_lens.astype(np.int32), pa.int32())),
            _list_array(seq_off, numpy_array(seq_docs.astype(np.int64), pa.int64())),
            _list_array(tok_off, numpy_array((flags & R.UNTRAINED_FLAG) == 0, pa.bool_())),
        ]
        if self.forced:
            cols.append(_list_array(tok_off, numpy_array((flags & R.FORCED_FLAG) != 0, pa.bool_())))
        if self.kind == "pairs":
            cols.append(_list_array(tok_off, numpy_array(pair_branches(flags, tok_cum), pa.uint8())))
        elif self.kind == "kto":
            desirable = (flags[tok_cum[:-1]] & R.DESIRABLE_FLAG) != 0 if len(lens) else np.zeros(0, bool)
            cols.append(_list_array(doc_off, numpy_array(desirable, pa.bool_())))
        for mask in strategy_masks(r, flags, self.strategies).values():
            cols.append(_list_array(tok_off, numpy_array(mask, pa.bool_())))
        return pa.RecordBatch.from_arrays(cols, schema=self.schema), len(ids), local, tok_cum[:-1] - tok_off[local]

    def write_shard(
        self, number: int, r0: int, r1: int, tokens: TokenSource, doc_lengths: np.ndarray, doc_ids: np.ndarray,
        order: np.ndarray, row_offsets: np.ndarray,
    ) -> tuple[ShardInfo, np.ndarray, np.ndarray]:
        """Write rows ``r0:r1`` as shard ``number``; its info, and for each of its documents (in row order:
        ``order[row_offsets[r0]:row_offsets[r1]]``) its row in the shard and its offset in the row."""
        path = self.out / self.pattern.format(number)
        n_tokens = 0
        rows, offsets = [], []
        stream = self.version >= STREAM_VERSION
        index: tuple[list[int], list[int]] = ([], [])

        def write(tmp: Path) -> None:
            nonlocal n_tokens, index
            new = pa.ipc.new_stream if stream else pa.ipc.new_file
            with pa.OSFile(str(tmp), "wb") as sink, new(sink, self.schema) as writer:
                for b0 in range(r0, r1, BATCH_ROWS):
                    b1 = min(r1, b0 + BATCH_ROWS)
                    batch, n, local, off = self._record_batch(b0, b1, tokens, doc_lengths, doc_ids, order,
                                                              row_offsets)
                    writer.write_batch(batch)
                    n_tokens += n
                    rows.append((local + (b0 - r0)).astype(np.int32))
                    offsets.append(off.astype(np.int32))
            if stream:  # the batch index, read back from the bytes written (pyarrow's writer tells no offsets)
                with pa.memory_map(str(tmp)) as source:
                    index = message_offsets(source)[:2]

        write_atomic(path, write)
        info = ShardInfo(path.name, r1 - r0, n_tokens, path.stat().st_size, file_sha256(path), *index)
        empty = np.zeros(0, np.int32)
        return info, np.concatenate(rows) if rows else empty, np.concatenate(offsets) if offsets else empty


#: rows per record batch of documents.arrow
DOCUMENT_BATCH_ROWS = 64 * 1024


def write_documents(
    path: Path,
    columns: Mapping[str, Sequence | np.ndarray | pa.Array | Callable[[int, int], pa.Array]],
    n_rows: int | None = None,
) -> None:
    """Write ``documents.arrow`` (one row per input record).

    A column is a sequence (``None`` for null), an Arrow array, or a function
    ``(start, stop) -> pa.Array`` giving those rows (then ``n_rows`` is needed): the file is written
    :data:`DOCUMENT_BATCH_ROWS` rows at a time, so a function column is never
    whole in memory.
    """
    schema = documents_schema(list(columns))
    n = len(columns["doc_id"]) if n_rows is None else n_rows  # type: ignore[arg-type]

    def chunk(name: str, a: int, b: int) -> pa.Array:
        col = columns[name]
        if callable(col):
            return col(a, b)
        if isinstance(col, pa.Array):
            return col.slice(a, b - a)
        return pa.array(col[a:b], type=schema.field(name).type)

    def write(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for a in range(0, n, DOCUMENT_BATCH_ROWS):
                b = min(n, a + DOCUMENT_BATCH_ROWS)
                writer.write_batch(pa.RecordBatch.from_arrays([chunk(name, a, b) for name in schema.names],
                                                              schema=schema))
            if n == 0:
                writer.write_table(schema.empty_table())

    write_atomic(path, write)


def __getattr__(name: str) -> Any:
    # gather_index and ArrayTokens moved to packer.output.gather (numba): imports of them from here still work
    if name in ("gather_index", "ArrayTokens"):
        from . import gather

        return getattr(gather, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
