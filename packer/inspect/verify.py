"""``packer verify``: check a build output against its manifest and invariants.

Checks every shard's size and sha256, ``documents.arrow``'s sha256, and that
the data keeps its promises: roles are known codes; each mask equals its
strategy's role set (``last_turn``: a subset of it); ``seq_lens`` sum to the
row length; no row is over ``seq_len``; every packed document appears exactly
once across shards, as ``documents.arrow`` says; and every count the manifest
holds is recounted from the files (the table below). An output with an eval split is checked split by
split: each split's shards hold exactly the documents ``documents.arrow`` puts in that split,
and no document is in both. An output built with a mixture (the manifest's ``mix``) holds a record
as many times as documents.arrow's ``copies`` says, all in one split; so does an output with
records split by ``--overlong split`` (their pieces).

Every file name the manifest lists must be a plain name inside the output folder, and no file may be a
symbolic link leading out of it (:func:`packer.output.layout.output_file`, which every reader uses): such an
output fails here, and ``show``, ``inspect`` and :class:`packer.train.dataset.PackedDataset` refuse it.

The manifest's fields, and how each is checked ("the shards": the split's shards, read whole; a ``split``
field is checked for each split, ``eval.…`` as the same field at the top):

====================================================  =================================================================
manifest field                                        checked against
====================================================  =================================================================
``format.name``, ``format.version``                   read_manifest (a version this packer reads); the shards' schema
``seq_len``                                           no row longer; ``packing.lower_bound_rows`` and ``efficiency``
``roles``                                             each name has the code packer gives it
``strategies``                                        the shards' mask columns (schema), each mask recomputed from roles
``shards[].file``                                     a plain name in the folder, no link out of it; the file exists
``shards[].bytes``, ``.sha256``                       the file's size and sha256 (``--no-hashes``: size only)
``shards[].batch_offsets``, ``.batch_rows``           (version 5) each record batch's byte offset and rows in the
                                                      stream, its end marker's offset, the end of the file
``shards[].rows``, ``.tokens``                        rows and tokens in that shard
``packing.rows``                                      rows in the shards
``packing.lower_bound_rows``                          ``ceil(tokens in the shards / seq_len)``
``packing.efficiency``                                ``tokens in the shards / (rows × seq_len)`` (1.0: no rows)
``tokens.total``, ``.per_role``                       tokens, and tokens per role code, in the shards
``tokens.loss``                                       true values of each strategy's mask column in the shards
``tokens.untrained``, ``.untrained_per_role``         tokens (per role) whose ``trainable`` is false (version 2)
``tokens.last_turn_loss_per_role``                    per role, true values of each last-turn strategy's mask
``documents.file``, ``rejected.file``                 ``documents.arrow``, ``rejected.jsonl`` (the names readers open)
``documents.sha256``                                  the file's sha256
``counts.records``                                    documents.arrow's rows; the sum of ``inputs[].records``
``counts.packed``, ``.truncated``, ``.unsampled``     documents.arrow's statuses
``counts.rejected`` (per reason)                      documents.arrow's statuses; rejected.jsonl's ``rejected`` lines
``counts.duplicates``                                 documents.arrow's rows with a ``duplicate_of``
``counts.split``, ``.split_pieces``                   documents.arrow's ``copies`` over 1 (no mixture: copies are pieces
                                                      then); rejected.jsonl's ``split`` lines
``counts`` sum                                        ``records == packed + sum(rejected) + unsampled``
``rejected.records``                                  its lines (a ``truncated`` one per truncated document)
``inputs[].records``                                  their sum is ``counts.records``
``eval.documents``                                    documents.arrow's eval documents (copies included)
``eval.leaked_duplicates``                            conversations (``duplicate_of`` groups) packed in both splits
``eval.shards``, ``.packing``, ``.tokens``            as the top-level fields, on the eval shards
``mix.inputs[].records``                              ``inputs[].records``
``mix.inputs[].documents``, ``.tokens``               train-shard documents (and their tokens) from that input's doc_ids
``mix.inputs[].token_share``                          ``tokens / train tokens``, rounded to 6 places as the build does
``template.sha256``                                   the sha256 of ``template.source``
====================================================  =================================================================

Not checked, as the output holds nothing to check them against: the tokenizer's fields (``tokenizer.*``:
``show`` compares the sha256 with a tokenizer it loads), ``template.name``/``source``/``system``, ``inputs[].path``,
``.sha256``, ``.format`` (the inputs need not be at hand), the options (``packing.algorithm``, ``.overlong``,
``.scope``, ``eval.fraction``/``records``/``seed``, ``mix.seed``, ``mix.inputs[].weight``, ``columns``,
``build_key``), ``counts.dropped_turns`` and ``counts.system_policy`` (not recorded per record),
``tokens.control_absorbed_chars`` (characters of the inputs), ``packer_version`` and ``build_seconds``.
``tests/test_verify_faults.py`` changes every numeric field of a built manifest by one and expects a failure
for each but these.

:func:`check_output` returns a :class:`VerifyResult`: the problems found and
what was checked (for the command's success line); :func:`verify` returns the
problems only (an empty list means all is well).

    >>> verify("shards/")                                          # doctest: +SKIP
    []
    >>> check_output("shards/").summary()                          # doctest: +SKIP
    '3 shards, 120 rows, 5,000 documents, 1.2M tokens checked (sha256 of every shard and documents.arrow)'
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from .. import fsio
from ..output import roles as R
from ..output.container import END_OF_STREAM, container, is_stream, message_offsets, open_local
from ..output.layout import (
    DOCUMENTS_FILE,
    REJECTED_FILE,
    ShardError,
    file_sha256,
    output_file,
    output_splits,
    read_manifest,
    split_shards,
)
from ..output.shards import mask_column, shard_schema

#: documents.arrow statuses that are no rejection
_KEPT = ("packed", "truncated")
_NOT_REJECTED = (*_KEPT, "unsampled")


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`check_output` found and what it looked at.

    The counts cover what was read and checked: a shard that is missing, of the
    wrong size or hash, or unreadable counts as a problem, not in ``shards``,
    ``rows``, ``documents`` or ``tokens``.
    """

    #: problems found; empty: the output is sound
    problems: list[str]
    #: shards whose rows were checked
    shards: int
    #: packed rows in those shards
    rows: int
    #: packed documents in those shards (each a doc_id of documents.arrow)
    documents: int
    #: tokens in those rows
    tokens: int
    #: whether the sha256 of every shard and of documents.arrow was compared with the manifest
    hashes: bool

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """``3 shards, 120 rows, 5,000 documents, 1.2M tokens checked (sha256 of ...)``."""
        how = "sha256 of every shard and documents.arrow" if self.hashes else "sizes only, no sha256"
        return (
            f"{self.shards:,} shard{'s' * (self.shards != 1)}, {self.rows:,} rows, "
            f"{self.documents:,} documents, {_count(self.tokens)} tokens checked ({how})"
        )


def _count(n: int) -> str:
    """``987,654`` below a million, then ``1.2M``, ``3.4B``."""
    for scale, suffix in ((10**9, "B"), (10**6, "M")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return f"{n:,}"


@dataclass
class _Held:
    """What the shards of one split hold, recounted (added shard by shard)."""

    doc_ids: list[np.ndarray] = field(default_factory=list)
    seq_lens: list[np.ndarray] = field(default_factory=list)
    per_role: np.ndarray = field(default_factory=lambda: np.zeros(R.N_ROLES, dtype=np.int64))
    untrained: np.ndarray = field(default_factory=lambda: np.zeros(R.N_ROLES, dtype=np.int64))
    forced: np.ndarray = field(default_factory=lambda: np.zeros(R.N_ROLES, dtype=np.int64))
    loss: Counter = field(default_factory=Counter)
    last_turn: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0
    shards: int = 0
    #: every shard of the split was read (else its totals are not compared: the missing shard is the problem)
    whole: bool = True

    @property
    def tokens(self) -> int:
        return int(self.per_role.sum())

    def ids(self) -> np.ndarray:
        return np.concatenate(self.doc_ids or [np.zeros(0, dtype=np.int64)])

    def lengths(self) -> np.ndarray:
        return np.concatenate(self.seq_lens or [np.zeros(0, dtype=np.int64)])


def _flat(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list column."""
    arr = table.column(name).combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False), arr.offsets.to_numpy()


def _bincount(roles: np.ndarray) -> np.ndarray:
    return np.bincount(roles, minlength=256)[: R.N_ROLES].astype(np.int64)


def _read_shard(path: Path, shard: dict, m: dict, problems: list[str]) -> pa.Table | None:
    """The shard's table if it reads, as the container its version implies, with the schema the manifest's
    strategies imply, and (a stream shard) its record batches are where the manifest's batch index says."""
    name, version = shard["file"], int(m["format"]["version"])
    try:
        with pa.memory_map(str(path)) as source:
            stream = is_stream(version)
            if stream and not _batch_index_matches(source, shard, name, problems):
                return None
            source.seek(0)
            schema, batches = open_local(source, stream)
            table = pa.Table.from_batches(batches, schema)
    except (pa.ArrowInvalid, OSError) as e:
        problems.append(f"{name}: not a readable {container(version)}: {e}")
        return None
    # a stream shard has the forced column as its build had forced tokens (the recount checks they are there)
    expected = shard_schema(list(m["strategies"]), version, m.get("kind", "sft"), "forced" in table.schema.names)
    if not table.schema.equals(expected, check_metadata=False):
        problems.append(f"{name}: schema differs from the one the manifest's strategies imply")
        return None
    return table


def _batch_index_matches(source: pa.NativeFile, shard: dict, name: str, problems: list[str]) -> bool:
    """Whether the stream's record batches start at the manifest's ``batch_offsets`` with its ``batch_rows``, and
    it ends with the end-of-stream marker there."""
    offsets, rows, end = message_offsets(source)
    size = source.size()
    if offsets != shard.get("batch_offsets") or rows != shard.get("batch_rows"):
        problems.append(f"{name}: record batches at bytes {offsets} of {rows} rows, the manifest records "
                        f"{shard.get('batch_offsets')} of {shard.get('batch_rows')} rows")
        return False
    if end != size or end != offsets[-1] + len(END_OF_STREAM):
        problems.append(f"{name}: the stream ends at byte {offsets[-1]} without its end marker, or {size - end} "
                        "bytes follow it")
        return False
    return True


#: the roles a forced token may have: content of a message other than the assistant's
_FORCED_ROLES = ("system", "instruction", "input", "tool")


def _check_rows(name: str, table: pa.Table, m: dict, problems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row invariants of one shard: (roles, token offsets of the rows)."""
    roles, tok_off = _flat(table, "roles")
    ids, ids_off = _flat(table, "input_ids")
    seq_lens, seq_off = _flat(table, "seq_lens")
    row_len = np.diff(tok_off)
    if not np.array_equal(ids_off, tok_off):
        problems.append(f"{name}: input_ids and roles differ in length in some row")
    if (row_len > m["seq_len"]).any():
        problems.append(f"{name}: {(row_len > m['seq_len']).sum()} rows longer than seq_len {m['seq_len']}")
    sums = np.add.reduceat(seq_lens, seq_off[:-1]) if len(seq_lens) else np.zeros(0)
    if len(seq_lens) and not np.array_equal(sums, row_len):
        bad = int(np.flatnonzero(sums != row_len)[0])
        problems.append(f"{name}: row {bad}: seq_lens sum to {sums[bad]}, the row has {row_len[bad]} tokens")
    known = np.isin(roles, list(R.ROLES.values()))
    if not known.all():
        problems.append(f"{name}: {(~known).sum()} tokens with an unknown role code")
    if len(ids) and (ids < 0).any():
        problems.append(f"{name}: negative token ids")
    return roles, tok_off


def _check_pairs(name: str, table: pa.Table, m: dict, problems: list[str]) -> None:
    """A pair row's invariants: each pair is its prefix, then its chosen, then its rejected tokens (branch 0s,
    1s, 2s), each side at least one token; with ``pairs="separate"`` each document is one side, a pair's two
    adjacent, chosen first. A KTO row has a label per document."""
    if m.get("kind") == "kto":
        off = _flat(table, "labels")[1]
        if not np.array_equal(off, _flat(table, "doc_ids")[1]):
            problems.append(f"{name}: labels and doc_ids differ in length in some row")
        return
    if m.get("kind") != "pairs":
        return
    branch = _flat(table, "branch")[0]
    seq_lens, doc_ids = _flat(table, "seq_lens")[0], _flat(table, "doc_ids")[0]
    starts = np.concatenate([[0], np.cumsum(seq_lens)[:-1]]).astype(np.int64)
    if m.get("pairs") == "separate":
        ok = len(seq_lens) % 2 == 0 and (branch[starts] == np.tile([1, 2], len(seq_lens) // 2)).all() and \
            np.array_equal(doc_ids[::2], doc_ids[1::2])
        same = (np.add.reduceat(branch.astype(np.int64), starts) == branch[starts] * seq_lens).all() if len(starts) \
            else True
        if not (ok and same):
            problems.append(f"{name}: pairs=separate rows whose documents are not a pair's chosen then rejected side")
        return
    pair_of = np.repeat(np.arange(len(seq_lens)), seq_lens)
    order_ok = (np.diff(branch.astype(np.int16))[np.diff(pair_of) == 0] >= 0).all() if len(branch) else True
    has = [np.bincount(pair_of[branch == b], minlength=len(seq_lens)) for b in (1, 2)]
    if not (order_ok and np.isin(branch, [0, 1, 2]).all() and (has[0] > 0).all() and (has[1] > 0).all()):
        problems.append(f"{name}: pair rows not laid out prefix, chosen, rejected with a token on each side")


def _check_shard(path: Path, shard: dict, m: dict, held: _Held, problems: list[str]) -> None:
    """Row and mask invariants of one shard, its rows and tokens against its manifest entry; its counts are
    added to ``held``."""
    name = shard["file"]
    table = _read_shard(path, shard, m, problems)
    if table is None:
        held.whole = False
        return
    roles, tok_off = _check_rows(name, table, m, problems)
    _check_pairs(name, table, m, problems)
    trainable = _flat(table, "trainable")[0].astype(bool) if "trainable" in table.schema.names else None
    forced = _flat(table, "forced")[0].astype(bool) if "forced" in table.schema.names else None
    if forced is not None and not np.isin(roles[forced], R.role_codes(_FORCED_ROLES)).all():
        problems.append(f"{name}: forced tokens outside the content of a message other than the assistant's")
    for strategy, role_names in m["strategies"].items():
        column = mask_column(strategy)
        mask, off = _flat(table, column)
        mask = mask.astype(bool)
        if not np.array_equal(off, tok_off):
            problems.append(f"{name}: {column} differs in length from the rows")
            continue
        try:
            expected = np.isin(roles, R.role_codes(role_names))
        except ValueError as e:
            problems.append(f"manifest strategies: {strategy}: {e}")
            continue
        if trainable is not None and strategy not in R.UNFLAGGED_STRATEGIES:
            expected &= trainable
        if forced is not None:
            expected |= forced
        ok = (mask <= expected).all() if strategy in R.LAST_TURN_STRATEGIES else np.array_equal(mask, expected)
        if not ok:
            problems.append(f"{name}: {column} does not match roles {', '.join(role_names)}")
        held.loss[strategy] += int(mask.sum())
        if strategy in R.LAST_TURN_STRATEGIES:
            held.last_turn[strategy] = held.last_turn.get(strategy, 0) + _bincount(roles[mask])
    if trainable is not None:
        held.untrained += _bincount(roles[~trainable])
    if forced is not None:
        held.forced += _bincount(roles[forced])
    rows, tokens = len(tok_off) - 1, len(roles)
    if rows != shard["rows"] or tokens != shard.get("tokens", tokens):
        problems.append(f"{name}: {rows} rows and {tokens} tokens, the manifest records {shard['rows']} rows "
                        f"and {shard.get('tokens')} tokens")
    held.doc_ids.append(_flat(table, "doc_ids")[0])
    held.seq_lens.append(_flat(table, "seq_lens")[0])
    held.per_role += _bincount(roles)
    held.rows += rows
    held.shards += 1


def _check_split_files(out: Path, m: dict, split: str, hashes: bool, problems: list[str]) -> _Held:
    """Each shard of ``split``: its path, size, sha256, then its rows (:func:`_check_shard`)."""
    held = _Held()
    for shard in split_shards(m, split):
        try:
            path = Path(output_file(out, shard["file"]))
        except ShardError as e:
            problems.append(str(e))
            held.whole = False
            continue
        if not path.is_file():
            problems.append(f"{shard['file']}: missing")
        elif (size := path.stat().st_size) != shard["bytes"]:
            problems.append(f"{shard['file']}: {size} bytes, the manifest records {shard['bytes']} (truncated?)")
        elif hashes and file_sha256(path) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 differs from the manifest (corrupt)")
        else:
            _check_shard(path, shard, m, held, problems)
            continue
        held.whole = False
    return held


def _differ(field_name: str, recorded: object, recounted: object, where: str, problems: list[str]) -> None:
    if recorded != recounted:
        problems.append(f"manifest {field_name}: {recorded!r}, but {where} {recounted!r}")


def _check_totals(m: dict, split: str, held: _Held, problems: list[str]) -> None:
    """The split's ``tokens`` and ``packing`` against what its shards hold."""
    top = m if split == "train" else m["eval"]
    pre = "" if split == "train" else "eval."
    where = f"the {split} shards hold"
    tokens = top["tokens"]
    _differ(f"{pre}tokens.total", tokens["total"], held.tokens, where, problems)
    # an older format's manifest lists the roles it had (version 1: none of tool_call, reasoning, tool)
    recount = {name: int(held.per_role[code]) for name, code in R.ROLES.items()
               if name in tokens["per_role"] or held.per_role[code]}
    _differ(f"{pre}tokens.per_role", tokens["per_role"], recount, where, problems)
    _differ(f"{pre}tokens.loss", tokens["loss"], {s: held.loss[s] for s in m["strategies"]}, where, problems)
    if "untrained" in tokens:
        _differ(f"{pre}tokens.untrained", tokens["untrained"], int(held.untrained.sum()), where, problems)
    if "untrained_per_role" in tokens:
        per_role = {name: int(held.untrained[code]) for name, code in R.ROLES.items() if held.untrained[code]}
        _differ(f"{pre}tokens.untrained_per_role", tokens["untrained_per_role"], per_role, where, problems)
    if "forced" in tokens or held.forced.any():
        _differ(f"{pre}tokens.forced", tokens.get("forced"), int(held.forced.sum()), where, problems)
        per_role = {name: int(held.forced[code]) for name, code in R.ROLES.items() if held.forced[code]}
        _differ(f"{pre}tokens.forced_per_role", tokens.get("forced_per_role"), per_role, where, problems)
    if "last_turn_loss_per_role" in tokens:
        last = {s: {name: int(counts[code]) for name, code in R.ROLES.items() if counts[code]}
                for s, counts in ((s, held.last_turn.get(s, np.zeros(R.N_ROLES, np.int64)))
                                  for s in m["strategies"] if s in R.LAST_TURN_STRATEGIES)}
        _differ(f"{pre}tokens.last_turn_loss_per_role", tokens["last_turn_loss_per_role"], last, where, problems)
    packing, seq_len = top["packing"], m["seq_len"]
    _differ(f"{pre}packing.rows", packing["rows"], held.rows, where, problems)
    # as packer.pipeline.pack.lower_bound and efficiency compute them, from the same integers
    _differ(f"{pre}packing.lower_bound_rows", packing["lower_bound_rows"], -(-held.tokens // seq_len),
            f"ceil({held.tokens} tokens / seq_len {seq_len}) is", problems)
    eff = held.tokens / (held.rows * seq_len) if held.rows > 0 else 1.0
    _differ(f"{pre}packing.efficiency", packing["efficiency"], eff,
            f"{held.tokens} tokens / ({held.rows} rows x seq_len {seq_len}) is", problems)


@dataclass(frozen=True)
class _Docs:
    """documents.arrow's columns that verify reads."""

    doc_ids: np.ndarray
    status: np.ndarray  # object: str
    split: np.ndarray  # object: str or None
    duplicate_of: np.ndarray | None  # int64, -1 where null
    copies: np.ndarray | None  # int64

    @property
    def packed(self) -> np.ndarray:
        return np.isin(self.status, _KEPT)


def _read_documents(out: Path, m: dict, hashes: bool, problems: list[str]) -> _Docs | None:
    try:
        path = Path(output_file(out, DOCUMENTS_FILE))
    except ShardError as e:
        problems.append(str(e))
        return None
    if not path.is_file():
        problems.append(f"{DOCUMENTS_FILE}: missing")
        return None
    if hashes and file_sha256(path) != m["documents"]["sha256"]:
        problems.append(f"{DOCUMENTS_FILE}: sha256 differs from the manifest (corrupt)")
        return None
    docs = ipc.open_file(path).read_all()
    status = np.asarray(docs.column("status").to_pylist(), dtype=object)
    packed = np.isin(status, _KEPT)
    # outputs written before the eval split have no split column: every packed document is train's
    split = (np.asarray(docs.column("split").to_pylist(), dtype=object) if "split" in docs.column_names
             else np.where(packed, "train", None))
    dup = (docs.column("duplicate_of").fill_null(-1).to_numpy().astype(np.int64)
           if "duplicate_of" in docs.column_names else None)
    copies = (docs.column("copies").to_numpy(zero_copy_only=False).astype(np.int64)
              if "copies" in docs.column_names else None)
    return _Docs(docs.column("doc_id").to_numpy(), status, split, dup, copies)


def _check_placement(docs: _Docs, held: dict[str, _Held], m: dict, problems: list[str]) -> None:
    """Every packed document in the shards of its split as many times as documents.arrow says (once, or its
    ``copies``), no other document in them."""
    doc_ids, packed, copies = docs.doc_ids, docs.packed, docs.copies
    if m.get("mix") is not None and copies is None:
        problems.append(f"{DOCUMENTS_FILE}: no copies column, though the manifest describes a mixture")
        return
    if copies is not None and ((copies > 0) != packed).any():
        bad = doc_ids[(copies > 0) != packed][:10].tolist()
        problems.append(f"{DOCUMENTS_FILE}: documents whose copies do not match their status: {bad}")
    uniq, counts = np.unique(np.concatenate([h.ids() for h in held.values()]), return_counts=True)
    if copies is None and (counts > 1).any():
        problems.append(f"documents packed more than once (in one split or both): {uniq[counts > 1][:10].tolist()}")
    elif copies is not None:
        known = np.isin(uniq, doc_ids)
        wrong = uniq[~known | (counts != copies[np.searchsorted(doc_ids, uniq).clip(0, len(doc_ids) - 1)])]
        if len(wrong):
            problems.append(f"documents packed another number of times than {DOCUMENTS_FILE}'s copies says: "
                            f"{wrong[:10].tolist()}")
    if (packed != np.isin(docs.split, list(held))).any():
        bad = doc_ids[packed != np.isin(docs.split, list(held))][:10].tolist()
        problems.append(f"{DOCUMENTS_FILE}: documents whose split does not match their status: {bad}")
    for split, h in held.items() if not problems else ():
        got = np.sort(h.ids())
        expected = doc_ids[docs.split == split]
        if copies is not None:
            expected = np.repeat(expected, copies[docs.split == split])
        if not np.array_equal(expected, got):
            missing = np.setdiff1d(expected, got)[:10].tolist()
            extra = np.setdiff1d(got, expected)[:10].tolist()
            problems.append(f"{split} shards and {DOCUMENTS_FILE} disagree: in the split but absent {missing}, "
                            f"present but not in the split {extra}")


def _check_counts(docs: _Docs, m: dict, problems: list[str]) -> None:
    """The manifest's ``counts``, ``inputs[].records`` and ``eval.documents``/``leaked_duplicates`` against
    documents.arrow."""
    c, status, where = m["counts"], docs.status, f"{DOCUMENTS_FILE} has"
    if c["records"] != c["packed"] + sum(c["rejected"].values()) + c.get("unsampled", 0):
        problems.append(f"manifest counts: records {c['records']} != packed {c['packed']} + rejected + unsampled")
    _differ("counts.records", c["records"], len(status), f"{where} rows:", problems)
    _differ("sum of inputs[].records", sum(i["records"] for i in m["inputs"]), len(status), f"{where} rows:",
            problems)
    _differ("counts.packed", c["packed"], int(docs.packed.sum()), f"{where} packed and truncated:", problems)
    _differ("counts.truncated", c["truncated"], int((status == "truncated").sum()), f"{where} truncated:", problems)
    _differ("counts.unsampled", c.get("unsampled", 0), int((status == "unsampled").sum()), f"{where} unsampled:",
            problems)
    reasons = Counter(status[~np.isin(status, _NOT_REJECTED)].tolist())
    _differ("counts.rejected", {k: v for k, v in c["rejected"].items() if v}, dict(sorted(reasons.items())),
            f"{where} rejected:", problems)
    if docs.duplicate_of is not None:
        _differ("counts.duplicates", c["duplicates"], int((docs.duplicate_of >= 0).sum()),
                f"{where} duplicates:", problems)
    if "split" in c and m.get("mix") is None:  # with a mixture, copies count copies x pieces
        pieces = docs.copies if docs.copies is not None else np.ones(len(status), np.int64)
        split = pieces[docs.packed & (pieces > 1)]
        _differ("counts.split", c["split"], len(split), f"{where} records packed as pieces:", problems)
        _differ("counts.split_pieces", c["split_pieces"], int(split.sum()), f"{where} pieces:", problems)
    held_out = m.get("eval")
    if held_out:
        in_eval = docs.split == "eval"
        n_eval = int(in_eval.sum() if docs.copies is None else docs.copies[in_eval].sum())
        _differ("eval.documents", held_out["documents"], n_eval, f"{where} eval documents:", problems)
        if docs.duplicate_of is not None and "leaked_duplicates" in held_out:
            group = np.where(docs.duplicate_of < 0, docs.doc_ids, docs.duplicate_of)
            leaked = len(np.intersect1d(group[in_eval], group[docs.packed & (docs.split == "train")]))
            _differ("eval.leaked_duplicates", held_out["leaked_duplicates"], leaked,
                    f"{where} conversations packed in both splits:", problems)


def _check_rejected(out: Path, m: dict, docs: _Docs | None, problems: list[str]) -> None:
    """rejected.jsonl: its lines, and their actions and reasons, against the manifest and documents.arrow."""
    try:
        path = Path(output_file(out, REJECTED_FILE))
    except ShardError as e:
        problems.append(str(e))
        return
    if not path.is_file():
        problems.append(f"{REJECTED_FILE}: missing")
        return
    actions: dict[str, list[int]] = {"rejected": [], "truncated": [], "split": []}
    reasons: Counter = Counter()
    n = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                entry = json.loads(line)
                actions[entry["action"]].append(int(entry["doc_id"]))
                if entry["action"] == "rejected":
                    reasons[entry["reason"]] += 1
            except (ValueError, KeyError, TypeError):
                problems.append(f"{REJECTED_FILE}: line {n} is not a rejection line of packer's")
                return
    if n != m["rejected"]["records"]:
        problems.append(f"{REJECTED_FILE}: {n} lines, the manifest records {m['rejected']['records']}")
    c = m["counts"]
    _differ("counts.rejected", {k: v for k, v in c["rejected"].items() if v}, dict(sorted(reasons.items())),
            f"{REJECTED_FILE}'s rejected lines say", problems)
    if docs is not None:  # a mixture keeps the line of a record truncated or split, then sampled 0 times
        unlisted = np.setdiff1d(docs.doc_ids[docs.status == "truncated"], actions["truncated"])
        if len(unlisted):
            problems.append(f"{REJECTED_FILE}: no truncated line for the truncated documents {unlisted[:10].tolist()}")
    if "split" in c and m.get("mix") is None:
        _differ("counts.split", c["split"], len(actions["split"]), f"{REJECTED_FILE} has split lines:", problems)


def _check_mix(m: dict, train: _Held, problems: list[str]) -> None:
    """``mix.inputs``: per input, its records, and the train split's documents and tokens from it (an input's
    records are a run of doc_ids, in the order of ``inputs``)."""
    mix = m["mix"]["inputs"]
    if len(mix) != len(m["inputs"]):
        problems.append(f"manifest mix: {len(mix)} inputs, the manifest has {len(m['inputs'])}")
        return
    starts = np.cumsum([0, *(i["records"] for i in m["inputs"])])
    which = np.searchsorted(starts, train.ids(), side="right") - 1
    documents = np.bincount(which, minlength=len(mix))
    tokens = np.bincount(which, weights=train.lengths(), minlength=len(mix)).astype(np.int64)
    total = int(tokens.sum())
    for k, entry in enumerate(mix):
        where = f"the train shards hold from input {k}"
        _differ(f"mix.inputs[{k}].records", entry["records"], m["inputs"][k]["records"], "inputs[].records is",
                problems)
        _differ(f"mix.inputs[{k}].documents", entry["documents"], int(documents[k]), f"{where} documents:", problems)
        _differ(f"mix.inputs[{k}].tokens", entry["tokens"], int(tokens[k]), f"{where} tokens:", problems)
        share = round(int(tokens[k]) / total, 6) if total else 0.0
        _differ(f"mix.inputs[{k}].token_share", entry["token_share"], share, f"{where} a token share:", problems)


def _check_fields(m: dict, problems: list[str]) -> None:
    """The manifest's names and codes: the files readers open, the role codes, the template's sha256."""
    _differ("documents.file", m["documents"].get("file"), DOCUMENTS_FILE, "readers open", problems)
    _differ("rejected.file", m["rejected"].get("file"), REJECTED_FILE, "readers open", problems)
    wrong = {k: v for k, v in m["roles"].items() if R.ROLES.get(k) != v}
    if wrong:
        problems.append(f"manifest roles: {wrong}, but packer's role codes are {dict(R.ROLES)}")
    template = m.get("template") or {}
    if isinstance(template.get("source"), str) and "sha256" in template:
        import hashlib

        digest = hashlib.sha256(template["source"].encode("utf-8")).hexdigest()
        _differ("template.sha256", template["sha256"], digest, "its source's sha256 is", problems)


def verify(output: str | os.PathLike, *, hashes: bool = True) -> list[str]:
    """Problems found in a build output (empty: it is sound); see :func:`check_output`."""
    return check_output(output, hashes=hashes).problems


def _check_remote(uri: str, hashes: bool) -> VerifyResult:
    """:func:`check_output` of an output URI, on a local copy of its files."""
    try:
        with fsio.local_copy(uri) as local:
            result = check_output(local, hashes=hashes)
    except OSError as e:  # credentials, the server, the network
        return VerifyResult([f"{uri}: cannot read: {e}"], 0, 0, 0, 0, hashes)
    return replace(result, problems=[p.replace(str(local), uri) for p in result.problems])


def check_output(output: str | os.PathLike, *, hashes: bool = True) -> VerifyResult:
    """Check a build output: the problems found, and how many shards, rows,
    documents and tokens were checked. ``hashes=False`` skips the sha256 of
    the files (sizes are still compared with the manifest).

    ``output`` may be a URI (``s3://bucket/shards``; :mod:`packer.fsio`): its files are copied into a
    temporary local folder first, and checked there (the problems name the URI).
    """
    if fsio.is_uri(output):
        return _check_remote(str(output), hashes)
    problems: list[str] = []
    held: dict[str, _Held] = {}

    def result() -> VerifyResult:
        return VerifyResult(problems, sum(h.shards for h in held.values()), sum(h.rows for h in held.values()),
                            sum(len(h.ids()) for h in held.values()), sum(h.tokens for h in held.values()), hashes)

    out = Path(output)
    try:
        m = read_manifest(out)
    except ShardError as e:  # not a packer output, of a version this packer does not read, or naming a path
        problems.append(str(e))
        return result()
    _check_fields(m, problems)
    for split in output_splits(m):
        held[split] = _check_split_files(out, m, split, hashes, problems)
    for split, h in held.items():
        if h.whole:
            _check_totals(m, split, h, problems)
    if m.get("mix") is not None and held["train"].whole:
        _check_mix(m, held["train"], problems)
    docs = _read_documents(out, m, hashes, problems)
    if docs is not None:
        _check_placement(docs, held, m, problems)
        _check_counts(docs, m, problems)
    _check_rejected(out, m, docs, problems)
    return result()
