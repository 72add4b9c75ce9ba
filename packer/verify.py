"""``packer verify``: check a build output against its manifest and invariants.

Checks every shard's size and sha256, ``documents.arrow``'s sha256, and that
the data keeps its promises: roles are known codes; each mask equals its
strategy's role set (``last_turn``: a subset of it); ``seq_lens`` sum to the
row length; no row is over ``seq_len``; every packed document appears exactly
once across shards, as ``documents.arrow`` says; counts and token totals agree
with the manifest. An output with an eval split is checked split by split: each
split's shards hold exactly the documents ``documents.arrow`` puts in that split,
and no document is in both. An output built with a mixture (the manifest's ``mix``) holds a record
as many times as documents.arrow's ``copies`` says, all in one split; so does an output with
records split by ``--overlong split`` (their pieces).

:func:`check_output` returns a :class:`VerifyResult`: the problems found and
what was checked (for the command's success line); :func:`verify` returns the
problems only (an empty list means all is well).

    >>> verify("shards/")                                          # doctest: +SKIP
    []
    >>> check_output("shards/").summary()                          # doctest: +SKIP
    '3 shards, 120 rows, 5,000 documents, 1.2M tokens checked (sha256 of every shard and documents.arrow)'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from . import fsio
from . import roles as R
from .layout import DOCUMENTS_FILE, REJECTED_FILE, ShardError, file_sha256, output_splits, read_manifest, split_shards
from .shards import mask_column, shard_schema


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


def _flat(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list column."""
    arr = table.column(name).combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False), arr.offsets.to_numpy()


#: the roles a forced token may have: content of a message other than the assistant's
_FORCED_ROLES = ("system", "instruction", "input", "tool")


def _check_shard(path: Path, m: dict, problems: list[str]) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Row invariants of one shard; returns (doc_ids, per-role token counts, rows)."""
    try:
        table = ipc.open_file(path).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        problems.append(f"{path.name}: not a readable Arrow IPC file: {e}")
        return None
    strategies = m["strategies"]
    version = int(m["format"]["version"])
    if not table.schema.equals(shard_schema(list(strategies), version), check_metadata=False):
        problems.append(f"{path.name}: schema differs from the one the manifest's strategies imply")
        return None
    roles, tok_off = _flat(table, "roles")
    ids, ids_off = _flat(table, "input_ids")
    seq_lens, seq_off = _flat(table, "seq_lens")
    doc_ids, _ = _flat(table, "doc_ids")
    row_len = np.diff(tok_off)
    if not np.array_equal(ids_off, tok_off):
        problems.append(f"{path.name}: input_ids and roles differ in length in some row")
    if (row_len > m["seq_len"]).any():
        problems.append(f"{path.name}: {(row_len > m['seq_len']).sum()} rows longer than seq_len {m['seq_len']}")
    sums = np.add.reduceat(seq_lens, seq_off[:-1]) if len(seq_lens) else np.zeros(0)
    if len(seq_lens) and not np.array_equal(sums, row_len):
        bad = int(np.flatnonzero(sums != row_len)[0])
        problems.append(f"{path.name}: row {bad}: seq_lens sum to {sums[bad]}, the row has {row_len[bad]} tokens")
    known = np.isin(roles, list(R.ROLES.values()))
    if not known.all():
        problems.append(f"{path.name}: {(~known).sum()} tokens with an unknown role code")
    if len(ids) and (ids < 0).any():
        problems.append(f"{path.name}: negative token ids")
    forced = _flat(table, "forced")[0] if "forced" in table.schema.names else None
    if forced is not None and not np.isin(roles[forced], R.role_codes(_FORCED_ROLES)).all():
        problems.append(f"{path.name}: forced tokens outside the content of a message other than the assistant's")
    for name, role_names in strategies.items():
        column = mask_column(name)
        mask, off = _flat(table, column)
        if not np.array_equal(off, tok_off):
            problems.append(f"{path.name}: {column} differs in length from the rows")
            continue
        expected = np.isin(roles, R.role_codes(role_names))
        if "trainable" in table.schema.names and name not in R.UNFLAGGED_STRATEGIES:
            expected &= _flat(table, "trainable")[0]
        if forced is not None:
            expected |= forced
        ok = (mask <= expected).all() if name in R.LAST_TURN_STRATEGIES else np.array_equal(mask, expected)
        if not ok:
            problems.append(f"{path.name}: {column} does not match roles {', '.join(role_names)}")
    return doc_ids, np.bincount(roles, minlength=256)[: R.N_ROLES], len(row_len)


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
    seen: dict[str, list[np.ndarray]] = {}
    per_role: dict[str, np.ndarray] = {}
    n_shards = n_rows = 0

    def result() -> VerifyResult:
        documents = sum(len(d) for ds in seen.values() for d in ds)
        tokens = sum(int(r.sum()) for r in per_role.values())
        return VerifyResult(problems, n_shards, n_rows, documents, tokens, hashes)

    out = Path(output)
    try:
        m = read_manifest(out)
    except ShardError as e:  # not a packer output, or of a version this packer does not read
        problems.append(str(e))
        return result()

    splits = output_splits(m)
    for split in splits:
        seen[split], per_role[split] = [], np.zeros(R.N_ROLES, dtype=np.int64)
    for split, shard in [(name, s) for name in splits for s in split_shards(m, name)]:
        path = out / shard["file"]
        if not path.is_file():
            problems.append(f"{shard['file']}: missing")
            continue
        size = path.stat().st_size
        if size != shard["bytes"]:
            problems.append(f"{shard['file']}: {size} bytes, the manifest records {shard['bytes']} (truncated?)")
            continue
        if hashes and file_sha256(path) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 differs from the manifest (corrupt)")
            continue
        checked = _check_shard(path, m, problems)
        if checked is not None:
            seen[split].append(checked[0])
            per_role[split] += checked[1]
            n_rows += checked[2]
            n_shards += 1

    docs_path = out / DOCUMENTS_FILE
    if not docs_path.is_file():
        problems.append(f"{DOCUMENTS_FILE}: missing")
        return result()
    if hashes and file_sha256(docs_path) != m["documents"]["sha256"]:
        problems.append(f"{DOCUMENTS_FILE}: sha256 differs from the manifest (corrupt)")
        return result()
    docs = ipc.open_file(docs_path).read_all()
    status = np.asarray(docs.column("status").to_pylist(), dtype=object)
    is_packed = np.isin(status, ["packed", "truncated"])
    doc_ids = docs.column("doc_id").to_numpy()
    packed_ids = doc_ids[is_packed]
    # outputs written before the eval split have no split column: every packed document is train's
    split_col = (np.asarray(docs.column("split").to_pylist(), dtype=object) if "split" in docs.column_names
                 else np.where(is_packed, "train", None))
    copies = None
    # a mixture's copies, and a split record's pieces (--overlong split): documents per record
    if m.get("mix") is not None or "copies" in docs.column_names:
        if "copies" not in docs.column_names:
            problems.append(f"{DOCUMENTS_FILE}: no copies column, though the manifest describes a mixture")
            return result()
        copies = docs.column("copies").to_numpy(zero_copy_only=False).astype(np.int64)
        if ((copies > 0) != is_packed).any():
            bad = doc_ids[(copies > 0) != is_packed][:10].tolist()
            problems.append(f"{DOCUMENTS_FILE}: documents whose copies do not match their status: {bad}")
    all_seen = np.concatenate([d for ds in seen.values() for d in ds] or [np.zeros(0, dtype=np.int64)])
    uniq, counts = np.unique(all_seen, return_counts=True)
    if copies is None and (counts > 1).any():
        problems.append(f"documents packed more than once (in one split or both): {uniq[counts > 1][:10].tolist()}")
    elif copies is not None:
        known = np.isin(uniq, doc_ids)
        wrong = uniq[~known | (counts != copies[np.searchsorted(doc_ids, uniq).clip(0, len(doc_ids) - 1)])]
        if len(wrong):
            problems.append(f"documents packed another number of times than {DOCUMENTS_FILE}'s copies says: "
                            f"{wrong[:10].tolist()}")
    if (is_packed != np.isin(split_col, splits)).any():
        bad = doc_ids[is_packed != np.isin(split_col, splits)][:10].tolist()
        problems.append(f"{DOCUMENTS_FILE}: documents whose split does not match their status: {bad}")
    for split in splits if not problems else ():
        got = np.sort(np.concatenate(seen.get(split) or [np.zeros(0, dtype=np.int64)]))
        expected = doc_ids[split_col == split]
        if copies is not None:
            expected = np.repeat(expected, copies[split_col == split])
        if not np.array_equal(expected, got):
            missing = np.setdiff1d(expected, got)[:10].tolist()
            extra = np.setdiff1d(got, expected)[:10].tolist()
            problems.append(f"{split} shards and {DOCUMENTS_FILE} disagree: in the split but absent {missing}, "
                            f"present but not in the split {extra}")

    c = m["counts"]
    if c["records"] != c["packed"] + sum(c["rejected"].values()) + c.get("unsampled", 0):
        problems.append(f"manifest counts: records {c['records']} != packed {c['packed']} + rejected + unsampled")
    if len(status) == c["records"] and int((status == "unsampled").sum()) != c.get("unsampled", 0):
        problems.append(f"{DOCUMENTS_FILE} has {int((status == 'unsampled').sum())} unsampled, the manifest "
                        f"counts {c.get('unsampled', 0)}")
    if len(status) != c["records"]:
        problems.append(f"{DOCUMENTS_FILE} has {len(status)} rows, the manifest counts {c['records']} records")
    if len(packed_ids) != c["packed"]:
        problems.append(f"{DOCUMENTS_FILE} has {len(packed_ids)} packed, the manifest counts {c['packed']}")
    n_eval = int((split_col == "eval").sum() if copies is None else copies[split_col == "eval"].sum())
    if m.get("eval") and n_eval != m["eval"]["documents"]:
        problems.append(f"{DOCUMENTS_FILE} has {n_eval} eval documents, the manifest counts {m['eval']['documents']}")
    for split in splits if not problems else ():
        tokens = m["tokens"] if split == "train" else m["eval"]["tokens"]
        # an older format's manifest lists the roles it had (version 1: none of tool_call, reasoning, tool)
        recount = {name: int(per_role[split][code]) for name, code in R.ROLES.items()
                   if name in tokens["per_role"] or per_role[split][code]}
        if recount != tokens["per_role"]:
            problems.append(f"tokens per role in the {split} shards {recount} differ from the manifest")
    if m.get("mix") is not None and not problems:
        in_mix = sum(i["documents"] for i in m["mix"]["inputs"])
        if in_mix != int(sum(len(d) for d in seen.get("train", []))):
            problems.append(f"manifest mix: {in_mix} documents, the train shards hold "
                            f"{sum(len(d) for d in seen.get('train', []))}")
        if sum(i["tokens"] for i in m["mix"]["inputs"]) != m["tokens"]["total"]:
            problems.append("manifest mix: tokens per input do not sum to the train split's tokens")
    rejected = out / REJECTED_FILE
    if not rejected.is_file():
        problems.append(f"{REJECTED_FILE}: missing")
    else:
        with open(rejected, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n != m["rejected"]["records"]:
            problems.append(f"{REJECTED_FILE}: {n} lines, the manifest records {m['rejected']['records']}")
    return result()
