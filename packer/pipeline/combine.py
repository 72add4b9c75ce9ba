"""The gather stage of a build: the parts' summaries -> one table of records, duplicates, packed rows.

:func:`combine` takes the :class:`~packer.pipeline.part.PartSummary` of every part (in
doc_id order, each starting where the previous ended), joins their per-record
columns, finds duplicate conversations across all of them by digest, rejects
every copy after the first with ``dedupe``, says what rejection and
truncation cost (failing past ``max_rejected``) and packs the kept documents::

    part 0: doc 0 packed (digest a), doc 1 packed (digest b)     spill: doc 0, doc 1
    part 1: doc 2 packed (digest a), doc 3 overlong (digest c)   spill: doc 2
    combined, dedupe:  duplicate_of = [-1, -1, 0, -1]
                       status       = [packed, packed, duplicate, overlong]
                       kept doc_ids = [0, 1]   spill index = [0, 1]   (doc 2's tokens stay unread)

With an eval split (:class:`EvalSplit`), the kept documents are then dealt to
``train`` or ``eval`` by record, before packing, and each split is packed on its
own. A record's split is drawn from a 64-bit hash of ``(seed, g)``, ``g`` the
doc_id of the first copy of its conversation (itself, unless it is an exact
duplicate), so every copy of a conversation lands in the same split::

    kept doc_ids   [0, 1, 2, 4]     duplicate_of [-1, -1, 0, -1]   ->  g = [0, 1, 0, 4]
    fraction 0.25: eval where hash(seed, g) < 0.25 * 2**64      (each record independently)
    records 2:     eval = the 2 smallest (hash(seed, g), doc_id)  (exactly 2; copies adjacent)

Rejected records never go to eval; they stay in rejected.jsonl and documents.arrow.

With a mixture (:class:`Mix`, one weight ``w`` per input), each kept record is then used
``floor(w)`` times, plus once more where another 64-bit hash of ``(seed, doc_id)`` falls under
``frac(w)``; a record used 0 times becomes ``unsampled`` (not a rejection), one used ``k > 1`` times is
packed as ``k`` documents (the kept arrays repeat it: its spilled tokens are read ``k`` times). The eval
split is drawn among the sampled records, and all copies of a record go to its split::

    kept doc_ids [0, 1, 2]   inputs [0, 0, 1]   weights [1.0, 2.5]
    copies       [1, 1, 3]   ->  kept doc_ids [0, 1, 2, 2, 2]    (doc 2 drew its extra copy)

The result is the same for any split of the input into parts: every decision
here is by doc_id, and the parts' own decisions do not depend on other parts.
"""

from __future__ import annotations

import itertools
import json
import numbers
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..options import WARN_LOST_SHARE
from ..output.doctable import NULL
from ..read.records import STATUS_CODE, STATUSES, UNSAMPLED, BuildError, Rejection, Source
from .pack import pack, rows_from_bins
from .part import SYSTEM_ACTIONS, MapSpec, PartSummary, rejected_line
from .spill import RejectionSpill, merged_lines, spill_path

_PACKED, _TRUNCATED, _DUPLICATE = STATUS_CODE["packed"], STATUS_CODE["truncated"], STATUS_CODE["duplicate"]
_OVERLONG, _NO_LOSS = STATUS_CODE["overlong"], STATUS_CODE["overlong_no_loss"]
_UNSAMPLED = STATUS_CODE[UNSAMPLED]
#: the per-record columns that documents.arrow has (the rest of a part's columns are for this stage)
DOCUMENT_STATS = ("tokens", "turns", "prompt_tokens", "response_tokens", "prompt_words", "response_words")
#: the per-record columns of a preference build: a pair's shared prefix and its two completions as stored, and a
#: KTO record's label (documents.arrow has them in those builds only: packer.output.shards.PAIR_DOCUMENT_COLUMNS)
PREFERENCE_STATS = ("shared_tokens", "chosen_tokens", "rejected_tokens", "label")
#: the tag of the spill file of duplicates' rejection lines
_TAG = "combined"
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class EvalSplit:
    """A held-out eval split: ``fraction`` of the kept records (by hash, so within sampling error), or
    exactly ``records`` of them; ``seed`` picks which."""

    fraction: float | None = None
    records: int | None = None
    seed: int = 0

    def check(self) -> None:
        """A :class:`BuildError` (one line) for values no build can use; the record count is checked later."""
        if self.fraction is not None and self.records is not None:
            raise BuildError("give --eval-fraction or --eval-records, not both")
        if self.fraction is not None and (not isinstance(self.fraction, numbers.Real)
                                          or isinstance(self.fraction, bool) or not 0 < self.fraction < 1):
            raise BuildError(f"--eval-fraction is a fraction between 0 and 1 (both excluded), not {self.fraction}")
        if self.records is not None and (not isinstance(self.records, numbers.Integral)
                                         or isinstance(self.records, bool) or self.records < 1):
            raise BuildError(f"--eval-records is a number of records, at least 1, not {self.records!r}")
        if not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool):
            raise BuildError(f"--seed is an integer, not {self.seed!r}")

    def key(self) -> dict:
        """Its part of the build key (and of the manifest)."""
        return {"fraction": None if self.fraction is None else float(self.fraction),
                "records": None if self.records is None else int(self.records), "seed": int(self.seed)}


@dataclass(frozen=True)
class Mix:
    """A data mixture: one weight per input (in the order given), ``seed`` shared with the eval split."""

    weights: tuple[float, ...]
    seed: int = 0

    def check(self, n_inputs: int) -> None:
        """A :class:`BuildError` (one line) for weights no build can use."""
        if len(self.weights) != n_inputs:
            raise BuildError(f"--mix gives {len(self.weights)} weights for {n_inputs} inputs: give one weight per "
                             "input, in order")
        for w in self.weights:
            if (not isinstance(w, numbers.Real) or isinstance(w, bool) or not np.isfinite(float(w))
                    or float(w) < 0):
                raise BuildError(f"--mix weight {w!r}: a weight is a finite number >= 0 (1 = every record once)")
        if not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool):
            raise BuildError(f"--seed is an integer, not {self.seed!r}")

    def key(self) -> dict:
        """Its part of the build key."""
        return {"weights": [float(w) for w in self.weights], "seed": int(self.seed)}

    def copies(self, doc_ids: np.ndarray, input_of: np.ndarray) -> np.ndarray:
        """How many times each record ``doc_ids`` (of inputs ``input_of``) is used."""
        w = np.asarray(self.weights, dtype=np.float64)[input_of]
        whole = np.floor(w)
        frac = w - whole
        with np.errstate(over="ignore"):
            h = _mix(split_hash(doc_ids, self.seed) ^ np.uint64(_MIX_SALT))
        # frac * 2**64 as an exact threshold: h < t  <=>  h / 2**64 < frac (for frac in [0, 1))
        extra = h < np.array([min(int(f * 2.0**64), _U64) for f in frac.tolist()], dtype=np.uint64)
        return whole.astype(np.int64) + extra.astype(np.int64)


#: decorrelates the mixture's draw from the eval split's (both hash (seed, doc_id))
_MIX_SALT = 0x6D69782D73616C74


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise over uint64 (wrapping)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def split_hash(doc_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uint64 hash of each ``(seed, doc_id)``: uniform, and the same whatever else is in the input.

    >>> split_hash(np.array([0, 1]), 0).tolist() == split_hash(np.array([5, 0, 1]), 0)[1:].tolist()
    True
    """
    with np.errstate(over="ignore"):
        s = _mix(np.array([int(seed) & _U64], dtype=np.uint64))
        return _mix(np.asarray(doc_ids).astype(np.uint64) ^ s)


def assign_eval(kept_ids: np.ndarray, duplicate_of: np.ndarray, split: EvalSplit) -> tuple[np.ndarray, int]:
    """Which kept documents go to eval (a mask over ``kept_ids``), and how many conversations end up with
    copies in both splits (only where ``split.records`` cuts a group of exact duplicates).

    Raises :class:`BuildError` when ``records`` leaves no record to train on.
    """
    n = len(kept_ids)
    group = np.where(duplicate_of[kept_ids] == NULL, kept_ids, duplicate_of[kept_ids])
    h = split_hash(group, split.seed)
    if split.records is not None:
        if split.records >= n:
            raise BuildError(f"--eval-records {split.records}: only {n:,} records can be packed, and at least one "
                             f"must stay for training (choose at most {n - 1:,}); nothing was written")
        in_eval = np.zeros(n, dtype=bool)
        in_eval[np.lexsort((kept_ids, h))[: split.records]] = True
    else:
        assert split.fraction is not None
        in_eval = h < np.uint64(min(int(split.fraction * 2.0**64), _U64))
        if in_eval.all():
            raise BuildError(f"--eval-fraction {split.fraction}: every one of the {n:,} packable records fell "
                             "into eval, none is left for training; lower the fraction; nothing was written")
    leaked = len(np.intersect1d(group[in_eval], group[~in_eval]))
    return in_eval, leaked


@dataclass
class SplitRows:
    """One split's packing: its documents (positions in :attr:`Combined.kept_ids`), in row order, and
    where each row starts in that order."""

    name: str
    order: np.ndarray
    row_offsets: np.ndarray
    #: the split's documents, positions in the kept arrays, in doc_id order
    members: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.row_offsets) - 1


@dataclass
class Combined:
    """All records of a build, by doc_id, and what to write: see the module's docstring."""

    #: per record: file (code into ``files``), record, status, duplicate_of and :data:`DOCUMENT_STATS`
    docs: dict[str, np.ndarray]
    files: list[str]
    #: per input, in the order given: (records, format)
    inputs: list[tuple[int, str | None]]
    #: the kept documents (both splits) in doc_id order: doc_id, length, and place among the spilled documents
    #: (with a mixture, a record used k times is k adjacent kept documents)
    kept_ids: np.ndarray
    kept_len: np.ndarray
    spill_index: np.ndarray
    #: tokens of every spilled document, in spill order, and the parts' tags (spill files)
    spilled_len: np.ndarray
    tags: list[int]
    #: the packing of each split: ``train`` first, then ``eval`` when there is an eval split
    splits: list[SplitRows]
    #: the rejection spill files, and a mask of the doc_ids whose lines in the parts' files are
    #: replaced by a duplicate's (read by :meth:`rejected_lines`)
    rejection_files: list[Path]
    replaced: np.ndarray
    rejection_lines: int
    duplicates: int
    truncated: int
    dropped_turns: dict[str, int]
    system_policy: dict[str, int]
    absorbed: int
    loader_difference: str | None
    #: the eval split asked for, and conversations with exact copies in both splits (see :func:`assign_eval`)
    eval_split: EvalSplit | None = None
    eval_leaked: int = 0
    #: the mixture asked for, and per record how many documents it is packed as: its copies times its pieces
    #: (``None`` without a mixture or a split record)
    mix: Mix | None = None
    copies: np.ndarray | None = None
    #: per record, the index of its input (in the order given)
    input_of: np.ndarray | None = None
    #: ``--overlong split``: records packed as several documents (pieces), and the pieces they make
    split: int = 0
    split_pieces: int = 0
    #: ``global``, or ``part``: each part of the input packed alone (``build(pack_scope="part")``)
    pack_scope: str = "global"

    @property
    def order(self) -> np.ndarray:
        """The train split's documents in row order (positions in the kept arrays)."""
        return self.splits[0].order

    @property
    def row_offsets(self) -> np.ndarray:
        return self.splits[0].row_offsets

    def split_of(self) -> np.ndarray:
        """Per kept document (in :attr:`kept_ids` order), the index of its split in :attr:`splits`."""
        out = np.zeros(len(self.kept_ids), dtype=np.int8)
        for k, s in enumerate(self.splits):
            out[s.members] = k
        return out

    @property
    def records(self) -> int:
        return len(self.docs["status"])

    @property
    def packed(self) -> int:
        """Records packed (or truncated), each counted once however many copies a mixture made."""
        if self.copies is None:
            return len(self.kept_ids)
        return int(np.count_nonzero(self.copies))

    @property
    def unsampled(self) -> int:
        return int(np.count_nonzero(self.docs["status"] == _UNSAMPLED))

    def first_copies(self) -> np.ndarray:
        """A mask over the kept documents: the first of each record's copies (all of them without a mixture)."""
        first = np.ones(len(self.kept_ids), dtype=bool)
        first[1:] = self.kept_ids[1:] != self.kept_ids[:-1]
        return first

    def mix_counts(self, split: SplitRows) -> list[tuple[int, int]]:
        """Per input: (documents, tokens) a split packs, copies included."""
        assert self.input_of is not None
        n = len(self.inputs)
        src = self.input_of[self.kept_ids[split.members]]
        docs = np.bincount(src, minlength=n)
        tokens = np.bincount(src, weights=self.kept_len[split.members], minlength=n)
        return [(int(d), int(t)) for d, t in zip(docs.tolist(), tokens.tolist(), strict=True)]

    @property
    def tokens(self) -> int:
        return int(self.kept_len.sum())

    def rejected(self) -> dict[str, int]:
        """Records rejected, per reason (sorted)."""
        counts = np.bincount(self.docs["status"], minlength=len(STATUSES))
        return {STATUSES[c]: int(n) for c, n in enumerate(counts) if n and c not in (_PACKED, _TRUNCATED, _UNSAMPLED)}

    def rejected_lines(self) -> Iterator[str]:
        """rejected.jsonl's lines in doc_id order (the last file holds the duplicates' lines)."""
        last = len(self.rejection_files) - 1
        replaced = self.replaced
        return merged_lines(self.rejection_files, lambda k, d: k != last and bool(replaced[d]))


def _expand(members: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Positions ``members`` of records used ``k`` times each -> the positions of all their copies, when
    record ``i``'s copies are the ``k[i]`` adjacent positions from ``sum(k[:i])``."""
    start = np.cumsum(k) - k
    n = k[members]
    first = np.repeat(start[members], n)
    within = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    return (first + within).astype(np.int64)


#: buckets of the table that finds records whose digest may recur (16 MB of bools)
_TABLE_BITS = 1 << 24


def _duplicate_of(has: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Per record, the doc_id of the first record with the same digest, or NULL (the first itself,
    and records without a digest)."""
    out = np.full(len(has), NULL, dtype=np.int64)
    docs = np.flatnonzero(has)
    if not len(docs):
        return out
    # only records whose high half of the digest recurs can have a copy: find those with a sort of the values
    # (an argsort, or a three-key lexsort, of every record takes 6-25x as long: 4.3 s / 35 s at 10M records),
    # then sort just them by (digest, doc_id)
    sorted_hi = np.sort(hi[docs])
    recurring = np.unique(sorted_hi[1:][sorted_hi[1:] == sorted_hi[:-1]])
    del sorted_hi
    if not len(recurring):
        return out
    # a table of the recurring values' low bits picks the few records that may hold one (a gather, where a binary
    # search of every record costs 2 s at 10M), then the exact check on those
    table = np.zeros(_TABLE_BITS, dtype=bool)
    table[recurring & (_TABLE_BITS - 1)] = True
    docs = docs[table[hi[docs] & (_TABLE_BITS - 1)]]
    at = np.searchsorted(recurring, hi[docs])
    at[at == len(recurring)] = 0
    docs = docs[recurring[at] == hi[docs]]
    order = np.lexsort((docs, lo[docs], hi[docs]))
    d, h, low = docs[order], hi[docs][order], lo[docs][order]
    new = np.ones(len(d), dtype=bool)
    new[1:] = (h[1:] != h[:-1]) | (low[1:] != low[:-1])
    first = d[np.flatnonzero(new)][np.cumsum(new) - 1]
    copy = ~new
    out[d[copy]] = first[copy]
    return out


def combine(
    summaries: Sequence[PartSummary], spec: MapSpec, workdir: Path, *, packing: str,
    max_rejected: float | None = None, eval_split: EvalSplit | None = None, mix: Mix | None = None,
    events=None, pack_scope: str = "global",  # type: ignore[no-untyped-def]
) -> Combined:
    """Join the parts, decide duplicates, check the losses, pack; see the module's docstring. ``pack_scope``:
    ``global`` packs all documents of a split together; ``part`` packs each part's documents alone (rows never
    mix parts), the rows of part 0 first."""
    parts = _in_order(summaries)
    files, docs = _join(parts)
    status = docs["status"]
    dropped = {d: c for s in parts for d, c in s.dropped_turns.items()}
    reasons: Counter[str] = Counter()
    for s in parts:
        reasons.update(s.reasons)
    dups = np.flatnonzero(docs["duplicate_of"] != NULL)
    replaced, n_lines = _reject_duplicates(parts, docs, files, dups, spec, workdir, reasons, dropped, events)
    rejection_files = _rejection_files(parts, workdir)
    kept_ids = np.flatnonzero((status == _PACKED) | (status == _TRUNCATED)).astype(np.int64)
    docs.pop("spilled")
    # a record's first document in the spill (a split record spills its pieces, adjacent)
    pieces = docs.pop("pieces").astype(np.int64)
    spill_start = np.cumsum(pieces) - pieces
    # a duplicate dropped here keeps its tokens in the spill: the parts hold every spilled document's length
    spilled_len = np.concatenate([s.spilled_lens for s in parts]).astype(np.int64)
    counts_by_input, formats = _inputs(parts)
    system_codes = np.bincount(docs.pop("system"), minlength=len(SYSTEM_ACTIONS))
    absorbed = int(docs.pop("absorbed").sum())
    _check_lost(spec, status, docs.pop("encoded"), docs["tokens"][kept_ids].astype(np.int64), reasons,
                max_rejected=max_rejected, events=events,
                first_rejections=lambda: _first_rejections(rejection_files, replaced))

    input_of = copies = None
    if mix is not None:
        kept_ids, copies, input_of = _sample(mix, kept_ids, status, counts_by_input)
    groups, leaked = _eval_groups(kept_ids, docs["duplicate_of"], eval_split, events)
    n_pieces = pieces[kept_ids]
    split_records = int((n_pieces > 1).sum())
    split_pieces = int(n_pieces[n_pieces > 1].sum())
    spill_index = spill_start[kept_ids]
    if copies is not None or split_records:
        groups, kept_ids, spill_index, copies = _as_documents(groups, kept_ids, spill_index, n_pieces, copies,
                                                              len(status))
    if events is not None:
        events.progress("packing", 0, 1)
    kept_len = spilled_len[spill_index]
    firsts = np.array([s.part.first_doc_id for s in parts], dtype=np.int64)
    splits = [_pack_split(name, members, kept_ids, kept_len, firsts if pack_scope == "part" else None,
                          spec.seq_len, packing) for name, members in groups]
    if events is not None:
        events.progress("packing", 1, 1)
    return Combined(
        docs=docs, files=files, inputs=list(zip(counts_by_input, formats, strict=True)), kept_ids=kept_ids,
        kept_len=kept_len, spill_index=spill_index, spilled_len=spilled_len,
        tags=[s.part.tag for s in parts], splits=splits, rejection_files=rejection_files,
        replaced=replaced, rejection_lines=n_lines, duplicates=len(dups), truncated=int((status == _TRUNCATED).sum()),
        dropped_turns=_count_dropped(dropped),
        system_policy={SYSTEM_ACTIONS[c]: int(n) for c, n in enumerate(system_codes) if c and n},
        absorbed=absorbed, loader_difference=next((s.loader_difference for s in parts if s.part.first_doc_id == 0),
                                                  None),
        eval_split=eval_split, eval_leaked=leaked, mix=mix, copies=copies, input_of=input_of,
        split=split_records, split_pieces=split_pieces, pack_scope=pack_scope,
    )


def _in_order(summaries: Sequence[PartSummary]) -> list[PartSummary]:
    """The parts in doc_id order; a :class:`BuildError` where one does not start where the one before ends."""
    parts = sorted(summaries, key=lambda s: s.part.first_doc_id)
    if not parts:
        raise BuildError("internal error: no part to combine")
    at = 0
    for s in parts:
        if s.part.first_doc_id != at:
            raise BuildError(f"internal error: part {s.part.tag} starts at doc_id {s.part.first_doc_id}, not {at}")
        at += len(s)
    return parts


def _count_dropped(dropped: dict[int, dict[str, int]]) -> dict[str, int]:
    """Content turns dropped by a documented policy, per reason (sorted), from the counts per record."""
    counts: Counter[str] = Counter()
    for c in dropped.values():
        counts.update(c)
    return dict(sorted(counts.items()))


def _rejection_files(parts: Sequence[PartSummary], workdir: Path) -> list[Path]:
    """The rejection spill files (:meth:`Combined.rejected_lines`): each part's two, then the duplicates'."""
    files = [spill_path(workdir, s.part.tag, stage) for s in parts
             for stage in (RejectionSpill.READ, RejectionSpill.TOKENS)]
    return [*files, spill_path(workdir, _TAG, "duplicates")]


def _inputs(parts: Sequence[PartSummary]) -> tuple[list[int], list[str | None]]:
    """Per input, in the order given: its records, and its record format (None where no part read it to its end)."""
    counts = [sum(s.input_records[k] for s in parts) for k in range(len(parts[0].part.inputs))]
    return counts, [next((s.formats[k] for s in parts if s.formats[k] is not None), None) for k in range(len(counts))]


def _join(parts: Sequence[PartSummary]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The input files, in the order records first name them, and the parts' per-record columns joined:
    ``file`` coded into those files, ``duplicate_of`` (:func:`_duplicate_of`) in place of the digests."""
    files: list[str] = []
    code: dict[str, int] = {}
    file_col = []
    for s in parts:
        remap = np.array([code.setdefault(p, len(code)) for p in s.files] or [0], dtype=np.int32)
        files.extend(p for p in s.files if p not in files)
        file_col.append(remap[s.docs.file])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(s.docs, name) for s in parts])

    docs = {name: cat(name) for name in ("record", "status", *DOCUMENT_STATS, *PREFERENCE_STATS, "encoded", "spilled",
                                          "pieces", "system",
                                          "absorbed", "has_digest", "digest_hi", "digest_lo")}
    docs["file"] = np.concatenate(file_col)
    docs["duplicate_of"] = _duplicate_of(docs.pop("has_digest"), docs.pop("digest_hi"), docs.pop("digest_lo"))
    return files, docs


def _reject_duplicates(
    parts: Sequence[PartSummary], docs: dict[str, np.ndarray], files: list[str], dups: np.ndarray, spec: MapSpec,
    workdir: Path, reasons: Counter[str], dropped: dict[int, dict[str, int]],
    events,  # type: ignore[no-untyped-def]
) -> tuple[np.ndarray, int]:
    """With ``--dedupe``, reject every copy ``dups`` after the first (a part skipped its own copies): their
    lines go to a spill of their own, ``docs``, ``reasons`` and ``dropped`` are updated. The mask of doc_ids
    whose lines in the parts' spills are replaced, and the lines rejected.jsonl will have."""
    status, dup_of = docs["status"], docs["duplicate_of"]

    def source(doc_id: int) -> Source:
        return Source(doc_id, files[docs["file"][doc_id]], int(docs["record"][doc_id]))

    replaced = np.zeros(len(status), dtype=bool)
    n_lines = sum(s.rejection_lines for s in parts)
    lines = RejectionSpill(workdir, _TAG, stages=("duplicates",))
    try:
        if spec.dedupe and len(dups):
            replaced[dups] = status[dups] != _DUPLICATE  # a part decided these: their lines go
            had_line = (status[dups] != _PACKED) | (docs["pieces"][dups] > 1)  # a split record has a line
            n_lines += len(dups) - int((replaced[dups] & had_line).sum())
            for d in dups.tolist():
                if replaced[d] and status[d] != _PACKED:  # a truncation counted as "overlong"
                    reasons["overlong" if status[d] == _TRUNCATED else STATUSES[status[d]]] -= 1
                rej = Rejection(source(d), "duplicate", f"same conversation as {source(int(dup_of[d])).where()}")
                lines.write("duplicates", d, rejected_line(rej, "rejected"))
                reasons["duplicate"] += 1
                if spec.strict:
                    raise BuildError(f"{rej.message()} (--strict)")
                if events is not None and events.on_rejection:
                    events.on_rejection(rej)
                dropped.pop(d, None)
            status[dups] = _DUPLICATE
            for name in (*DOCUMENT_STATS, *PREFERENCE_STATS[:3], "encoded"):
                docs[name][dups] = NULL
            docs["system"][dups] = 0
            docs["absorbed"][dups] = 0
    finally:
        lines.close()
    return replaced, n_lines


def _check_lost(
    spec: MapSpec, status: np.ndarray, encoded: np.ndarray, kept_len: np.ndarray, reasons: Counter[str], *,
    max_rejected: float | None, events,  # type: ignore[no-untyped-def]
    first_rejections: Callable[[], list[str]],
) -> None:
    """:func:`_check_losses` of the records' ``status`` and ``encoded`` tokens, ``kept_len`` those of the kept."""
    truncated = status == _TRUNCATED
    over = status == _OVERLONG
    lost = int(encoded[over | (status == _NO_LOSS)].sum()) + int((encoded[truncated] - spec.seq_len).sum())
    _check_losses(
        spec, records=len(status), kept=len(kept_len), truncated=int(truncated.sum()), lost_tokens=lost,
        kept_tokens=int(kept_len.sum()), overlong_dropped=int(over.sum()),
        longest_dropped=int(encoded[over].max()) if over.any() else 0, reasons=reasons,
        max_rejected=max_rejected, events=events, first_rejections=first_rejections,
    )


def _sample(
    mix: Mix, kept_ids: np.ndarray, status: np.ndarray, counts_by_input: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mixture's draw: the records sampled (the rest become ``unsampled`` in ``status``), each record's
    copies, and each record's input."""
    input_of = np.repeat(np.arange(len(counts_by_input), dtype=np.int64), counts_by_input)
    k = mix.copies(kept_ids, input_of[kept_ids])
    status[kept_ids[k == 0]] = _UNSAMPLED
    copies = np.zeros(len(status), dtype=np.int64)
    copies[kept_ids] = k
    kept_ids = kept_ids[k > 0]
    if not len(kept_ids):
        raise BuildError(f"--mix {' '.join(f'{w:g}' for w in mix.weights)}: no record was sampled (every "
                         "weight 0, or too small for these inputs); nothing was written")
    return kept_ids, copies, input_of


def _eval_groups(
    kept_ids: np.ndarray, dup_of: np.ndarray, eval_split: EvalSplit | None,
    events,  # type: ignore[no-untyped-def]
) -> tuple[list[tuple[str, np.ndarray]], int]:
    """Each split's members (positions in ``kept_ids``): ``train`` alone, or ``train`` and ``eval``
    (:func:`assign_eval`, telling what went amiss); and the conversations with copies in both."""
    if eval_split is None:
        return [("train", np.arange(len(kept_ids), dtype=np.int64))], 0
    in_eval, leaked = assign_eval(kept_ids, dup_of, eval_split)
    if events is not None:
        if not in_eval.any():
            events.notice(f"--eval-fraction {eval_split.fraction}: none of the {len(kept_ids):,} packable "
                          "records fell into eval; the eval split is empty: raise the fraction, or use "
                          "--eval-records N")
        if leaked:
            events.notice(f"{leaked:,} conversations have exact copies in both train and eval (--eval-records "
                          "cut a group of duplicates); --dedupe rejects the copies")
    return [("train", np.flatnonzero(~in_eval)), ("eval", np.flatnonzero(in_eval))], leaked


def _as_documents(
    groups: list[tuple[str, np.ndarray]], kept_ids: np.ndarray, spill_index: np.ndarray, n_pieces: np.ndarray,
    copies: np.ndarray | None, records: int,
) -> tuple[list[tuple[str, np.ndarray]], np.ndarray, np.ndarray, np.ndarray]:
    """Each kept record as ``k`` adjacent documents (its copies times its pieces): the splits' members, the
    kept doc_ids and their places in the spill, per document; and per record (of ``records``) its ``k``."""
    k = n_pieces if copies is None else copies[kept_ids] * n_pieces
    groups = [(name, _expand(members, k)) for name, members in groups]
    within = np.arange(int(k.sum()), dtype=np.int64) - np.repeat(np.cumsum(k) - k, k)
    spill_index = np.repeat(spill_index, k) + within % np.repeat(n_pieces, k)
    if copies is None:
        copies = np.zeros(records, dtype=np.int64)
    copies[kept_ids] = k
    return groups, np.repeat(kept_ids, k), spill_index, copies


def _pack_split(
    name: str, members: np.ndarray, kept_ids: np.ndarray, kept_len: np.ndarray, firsts: np.ndarray | None,
    seq_len: int, packing: str,
) -> SplitRows:
    """Pack a split's ``members`` (positions in the kept arrays) into rows: all together, or with ``firsts``
    (each part's first doc_id; ``pack_scope="part"``) each part's alone, the rows of part 0 first."""
    if firsts is None:
        local, row_offsets = rows_from_bins(pack(kept_len[members], seq_len, packing))
        return SplitRows(name, members[local].astype(np.int64), row_offsets, members)
    # members are in doc_id order, so each part's are a run of them
    part_of = np.searchsorted(firsts, kept_ids[members], side="right") - 1
    cuts = np.flatnonzero(np.diff(part_of)) + 1
    orders, offsets = [], [np.zeros(1, dtype=np.int64)]
    for run in np.split(members, cuts) if len(members) else []:
        local, ro = rows_from_bins(pack(kept_len[run], seq_len, packing))
        orders.append(run[local])
        offsets.append(ro[1:] + offsets[-1][-1])
    order = np.concatenate(orders) if orders else members[:0]
    return SplitRows(name, order.astype(np.int64), np.concatenate(offsets), members)


#: rejections a build that packs nothing names in its error (rejected.jsonl is not written then)
FIRST_REJECTIONS = 3


def _first_rejections(files: Sequence[Path], replaced: np.ndarray, n: int = FIRST_REJECTIONS) -> list[str]:
    """The messages of the first ``n`` lines rejected.jsonl would have (file, record, reason, detail)."""
    last = len(files) - 1
    out = []
    for line in itertools.islice(merged_lines(files, lambda k, d: k != last and bool(replaced[d])), n):
        r = json.loads(line)
        detail = r["detail"] if len(r["detail"]) <= 300 else r["detail"][:300] + "..."
        out.append(f"{r['input']}: record {r['record']}: {r['reason']}: {detail}")
    return out


def _check_losses(
    spec: MapSpec, *, records: int, kept: int, truncated: int, lost_tokens: int, kept_tokens: int,
    overlong_dropped: int, longest_dropped: int, reasons: Counter[str], max_rejected: float | None,
    events,  # type: ignore[no-untyped-def]
    first_rejections: Callable[[], list[str]] | None = None,
) -> None:
    """Say what rejection and truncation took; fail past ``max_rejected``; point at the way out. A build that
    packs nothing fails naming its first rejections (``first_rejections``), since it writes no rejected.jsonl."""
    n, seq_len = records, spec.seq_len
    rejected = n - kept  # truncated documents are kept
    lost_records = rejected + truncated
    record_share = lost_records / n if n else 0.0
    token_share = lost_tokens / (kept_tokens + lost_tokens) if lost_tokens else 0.0
    hints = []
    if overlong_dropped:
        keeps = "cuts both completions of a pair to fit" if spec.kind == "pairs" else \
            f"keeps their first {seq_len} tokens"
        hints.append(f"{overlong_dropped:,} records are longer than --seq-len {seq_len} (the longest "
                     f"has {longest_dropped:,} tokens): raise --seq-len, or --overlong truncate {keeps}")
    if reasons["overlong_no_loss"]:
        hints.append(f"{reasons['overlong_no_loss']:,} records have no response in their first {seq_len} "
                     "tokens, so truncating them leaves nothing to learn: raise --seq-len")
    hint = "; ".join(hints)
    if not kept:
        detail = ", ".join(f"{k}: {v}" for k, v in reasons.most_common() if v) or "the inputs hold no records"
        first = first_rejections() if first_rejections is not None and n else []
        shown = f"; first rejected: {' | '.join(first)}" if first else ""
        raise BuildError(f"no record could be packed ({n} read; {detail})" + (f"; {hint}" if hint else "") + shown)
    limit = WARN_LOST_SHARE if max_rejected is None else max_rejected
    what = ""
    if max(record_share, token_share) > limit:
        what = (f"{rejected:,} of {n:,} records rejected and {truncated:,} truncated ({record_share:.1%}), "
                f"{lost_tokens:,} of their tokens not packed ({token_share:.1%} of those counted)")
    if what and max_rejected is not None:
        raise BuildError(f"{what}: more than --max-rejected {max_rejected}; nothing was written"
                         + (f"; {hint}" if hint else ""))
    if events is not None:
        if hint:
            events.notice(hint)
        if what:
            events.notice(f"{what}; the reasons are in rejected.jsonl; --max-rejected FRACTION fails such a build")
