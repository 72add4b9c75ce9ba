"""The map stage of a build: one part of the input -> its labelled tokens (spilled) and a summary.

A part is all of the input (the single-process build) or a piece of one input
file (:mod:`packer.read.plan`), with the doc_id of its first record. Mapping it reads
and checks each record, renders it with the
chat template, tokenizes the rendered texts in a worker thread while the next
batch is read and rendered, labels every token with its role, decides each
document (kept, truncated, overlong, ...), appends the kept tokens to the
part's spill files and the rejection lines to its rejection spill, and
returns a :class:`PartSummary`: a few numbers per record. Nothing in it depends
on another part, so parts can be mapped in any order, in any process
(:class:`MapSpec` and :class:`Part`, of :mod:`packer.pipeline.partspec`, pickle;
:mod:`packer.pipeline.engine` runs them), and
:mod:`packer.pipeline.combine` puts them together::

    records of a.json (an array) and b.jsonl, in three parts (packer.read.plan):
      Part(input=0, piece=array bytes 1..30k,   first_doc_id=0,   tag=0) -> doc_ids 0..63    .packer-spill-0-*
      Part(input=0, piece=array bytes 30k..61k, first_doc_id=64,  tag=1) -> doc_ids 64..127  .packer-spill-1-*
      Part(input=1, piece=lines bytes 0..40k,   first_doc_id=128, tag=2) -> doc_ids 128..190 .packer-spill-2-*

    PartSummary.docs (one row per record):
      doc_id  status     turns  prompt_words  tokens  encoded  spilled  digest
      0       packed     1      9             31      31       1        9f1c...
      1       overlong   1      2300          -1      4702     0        03ab...

Duplicates are found across parts by :mod:`packer.pipeline.combine` from the digests;
with ``dedupe`` a part skips a copy of a conversation it has already met itself
(not tokenized, status ``duplicate``), and the rejection line of every
duplicate is written there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..output import roles as R
from ..output.doctable import NULL, SeenTable
from ..read.formats import RecordReader
from ..read.records import STATUS_CODE, BuildError, Conversation, Pair, Rejection, Source
from ..tokens.assembly import checked
from ..tokens.bound import TokenBound, token_bound
from ..tokens.loader import TokenizerInfo, loader_difference, loaders_may_differ
from ..tokens.templates import ChatTemplate, Rendered
from ..tokens.tiktoken_core import TokenizerDrift
from ..tokens.tokenize import Labeller, TextBatch, TokenizedBatch, char_codes
from ..tokens.words import count_words
from .flat import FlatMapper
from .outdir import checkpoint
from .pairs import PairMapper
from .partspec import MapSpec, Part, PartSummary, new_columns, parts_of, resolve_template
from .spill import RejectionSpill, TokenSpillWriter

_PACKED, _TRUNCATED, _DUPLICATE = STATUS_CODE["packed"], STATUS_CODE["truncated"], STATUS_CODE["duplicate"]
_PROMPT_LUT = R.role_lut(R.PROMPT_ROLES)
#: what the model writes in an assistant turn: a truncated record keeping none of it has no loss
_ASSISTANT_LUT = R.role_lut(R.ASSISTANT_ROLES)
#: what documents.arrow counts as a document's response: what the assistant writes, its end tokens aside
_WRITTEN_LUT = R.role_lut(("response", "tool_call", "reasoning"))
#: what a template's system policy did to a record (``Rendered.system``), coded per record
SYSTEM_ACTIONS: tuple[str | None, ...] = (None, "merged", "dropped")
_SYSTEM_CODE = {name: code for code, name in enumerate(SYSTEM_ACTIONS)}
#: batches handed to the tokenizer thread and not yet taken back, beyond the one being labelled: the
#: tokenizer encodes batch k+1 while this thread labels batch k and reads and renders batch k+2
#: (an encoding takes ~150 bytes a token, so more in flight costs memory and gains nothing)
_IN_FLIGHT = 1
#: a batch is also cut at this many characters, so a few huge records cannot make it huge (2M characters:
#: ~20 MB less peak memory than 4M on ShareGPT, no slower)
_BATCH_CHARS = 1 << 21
#: rendered texts of the build's first batch that the other tokenizer loader encodes too, to say whether
#: the two differ
_LOADER_SAMPLE = 64
#: a rendered text of more bytes than this (after normalization) that is surely longer than seq_len
#: (packer.tokens.bound) is not tokenized whole: rejected from the bound, or truncated or split from prefixes. Below
#: it, a text is tokenized whole (exact counts; ~150 MB of memory a MiB at most)
BOUNDED_ABOVE = 1 << 20
#: bytes of normalized text a truncation prefix holds beyond the seq_len tokens it must give (at least),
#: so that no pre-token or merge reaching over the prefix's end can touch them
_PREFIX_MARGIN = 1 << 14
#: a truncation prefix doubles until two prefixes give the same first seq_len tokens, up to this many times
_PREFIX_ROUNDS = 4
_INT32_MAX = (1 << 31) - 1
#: per tokenizer (sha256): its token bound, or why it has none
_BOUNDS: dict[str, TokenBound | str] = {}
#: what stands in the batch for a record too long to tokenize whole (its tokens are found in :meth:`take`)
_PLACEHOLDER = Rendered("", np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, bool))
_log = logging.getLogger("packer")
#: a record of more characters than this is counted and hashed text by text, never joined into one copy
JOIN_BELOW = 1 << 20
#: a document's (ids, roles, flags)
_Tokens = tuple[np.ndarray, np.ndarray, np.ndarray]


def words(conv: Conversation) -> tuple[int, int, int]:
    """Prompt words, response words and turns: the IM paper's count (whitespace-split words of each
    message, +1 per message)."""
    prompt: list[str] = []
    response: list[str] = []
    turns = 0
    for m in conv.messages:
        side = response if m.role == "assistant" else prompt
        side += (m.content, m.input, m.reasoning or "")
        turns += m.role != "system"
    # one count per side: texts joined by whitespace have the words of each (a huge record's texts are counted
    # one by one, the same sum, without a joined copy: 150 MB for 40 MB of text holding an emoji)
    if sum(map(len, prompt)) + sum(map(len, response)) <= JOIN_BELOW:
        return (count_words("\n".join(prompt)) + len(prompt) // 3,
                count_words("\n".join(response)) + len(response) // 3, turns)
    return sum(map(count_words, prompt)) + len(prompt) // 3, sum(map(count_words, response)) + len(response) // 3, turns


def digest(conv: Conversation | Pair) -> bytes:
    """16 bytes naming a conversation, or a pair of them (collisions are negligible, memory stays small)."""
    if isinstance(conv, Pair):
        return hashlib.blake2b(digest(conv.chosen) + digest(conv.rejected), digest_size=16).digest()
    # every part followed by a NUL, hashed in one call (a huge record's parts one by one: the same digest,
    # without a joined copy)
    parts = [x for m in conv.messages for x in (f"{m.role}\x00", m.content, "\x00", m.input, "\x00")]
    if conv.tools or any(not m.plain or not m.trained for m in conv.messages):
        # what else tells two conversations apart (plain ones keep the digest they always had)
        parts.append(json.dumps([[m.reasoning, [c.as_dict() for c in m.tool_calls], m.tool_call_id, m.name,
                                  m.trained] for m in conv.messages] + [list(conv.tools)],
                                ensure_ascii=False, sort_keys=True))
    if any(m.forced for m in conv.messages):  # a message marked "training": true trains: not the same record
        parts.append("\x00forced:" + "".join("1" if m.forced else "0" for m in conv.messages))
    if sum(map(len, parts)) <= JOIN_BELOW:
        return hashlib.blake2b("".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()
    h = hashlib.blake2b(digest_size=16)
    for x in parts:
        h.update(x.encode("utf-8", "surrogatepass"))
    return h.digest()


def rejected_line(rej: Rejection, action: str) -> str:
    """A line of rejected.jsonl: ``action`` is "rejected", "truncated" or "split"."""
    line = {
        "doc_id": rej.source.doc_id, "input": rej.source.path, "record": rej.source.index,
        "action": action, "reason": rej.reason, "detail": rej.detail,
    }
    return json.dumps(line, ensure_ascii=False) + "\n"


_LOADED: dict[MapSpec, tuple[TokenizerInfo, ChatTemplate]] = {}


def _loaded(spec: MapSpec) -> tuple[TokenizerInfo, ChatTemplate]:
    """The tokenizer and template of ``spec``, loaded once per worker process: a worker maps many parts.
    Sharing them is safe: what a template learns of a shape (its assembly) depends on the shape alone."""
    got = _LOADED.get(spec)
    if got is None:
        _LOADED.clear()
        got = _LOADED[spec] = spec.load()
    return got


#: rejections a part keeps to be echoed by the build where its events do not reach (another process)
ECHOED = 20


@dataclass
class _Pending:
    """A batch handed to the tokenizer thread."""

    encodings: Future
    doc_ids: np.ndarray
    batch: TextBatch


class PartMapper:
    """Maps one part (:meth:`run`); see the module's docstring.

    ``tok``/``tpl``: the tokenizer and template already loaded for ``spec`` (the
    single-process build passes its own), else loaded from the spec. ``events``:
    a :class:`packer.pipeline.build.BuildEvents` (progress, rejections), or None.
    """

    def __init__(
        self, spec: MapSpec, part: Part, workdir: Path, *, tok: TokenizerInfo | None = None,
        tpl: ChatTemplate | None = None, events=None,  # type: ignore[no-untyped-def]
    ) -> None:
        if tok is None:
            tok, tpl = _loaded(spec)
        elif tpl is None:
            tpl = spec.chat_template(tok)
        assert tpl is not None
        self.spec, self.part, self.out, self.tok, self.tpl, self.ev = spec, part, Path(workdir), tok, tpl, events
        self.docs = new_columns()
        self.files: dict[str, int] = {}
        self.file_paths: list[str] = []
        self.dropped: dict[int, dict[str, int]] = {}
        self.reasons: Counter[str] = Counter()
        self.echo: list[Rejection] = []
        # a part's own duplicates are not tokenized with --dedupe; combine finds those across parts
        self.seen = SeenTable() if spec.dedupe else None
        self.batch: list[tuple[int, Rendered]] = []
        self.batch_chars = 0
        self.pending: deque[_Pending] = deque()
        self.labeller = Labeller(tok, spec.backend)
        self.spilled_tokens = 0
        self.forced_tokens = 0
        self.spilled_lens: list[np.ndarray] = []
        #: with --overlong split, the conversations in flight (to split the overlong ones at their turns)
        self.convs: dict[int, Conversation] = {}
        #: records in flight too long to tokenize whole (:meth:`at_least`): doc_id -> (rendered, fewest tokens)
        self.big: dict[int, tuple[Rendered, int]] = {}
        self.unbounded_told = False
        # ids of the other tokenizer loader on the build's first batch, compared in a thread of its own where
        # they may differ (importing transformers, and torch with it, costs a build ~5 s and ~240 MB)
        self.loader_check: Future | None = None
        self.pairs = PairMapper(self) if spec.kind == "pairs" else None  # a preference build's (pipeline.pairs)
        self.flat = FlatMapper(self) if FlatMapper.applies(spec, tpl) else None  # plain Alpaca runs (pipeline.flat)

    # -- records ---------------------------------------------------------------

    def _row(self, doc_id: int) -> int:
        return doc_id - self.part.first_doc_id

    def source(self, doc_id: int) -> Source:
        i = self._row(doc_id)
        return Source(doc_id, self.file_paths[self.docs.file[i]], int(self.docs.record[i]))

    def reject(self, rej: Rejection, stage: str, action: str = "rejected") -> None:
        """Every outcome other than "packed" goes here: a rejection, or a truncation or split (``action``)."""
        i = self._row(rej.source.doc_id)
        if action == "split":  # packed as several documents: listed, not a loss
            self.rejections.write(stage, rej.source.doc_id, rejected_line(rej, action))
            return
        self.docs.status[i] = _TRUNCATED if action == "truncated" else STATUS_CODE[rej.reason]
        self.reasons[rej.reason] += 1
        self.rejections.write(stage, rej.source.doc_id, rejected_line(rej, action))
        if action == "truncated":
            return
        if self.spec.strict:
            if stage == RejectionSpill.READ:
                # earlier records are still with the tokenizer: one of them may be the first failure
                self.submit()
                while self.pending:
                    self.take()
            raise BuildError(f"{rej.message()} (--strict)")
        if self.ev is not None and self.ev.on_rejection:
            self.ev.on_rejection(rej)
        elif len(self.echo) < ECHOED:
            self.echo.append(rej)

    def add_record(self, item: Conversation | Pair | Rejection, doc_id: int) -> None:
        src = item.source
        if doc_id != self.part.first_doc_id + len(self.docs):  # the reader's contract; guard it
            raise BuildError(f"{src.where()}: internal error: records out of order")
        src = Source(doc_id, src.path, src.index)
        f = self.files.get(src.path)
        if f is None:
            f = self.files[src.path] = len(self.file_paths)
            self.file_paths.append(src.path)
        i = self.docs.add(file=f, record=src.index)
        if isinstance(item, Rejection):
            self.reject(Rejection(src, item.reason, item.detail), RejectionSpill.READ)
            return
        if item.source.doc_id != doc_id:
            item = replace(item, source=src)  # every field kept (tools!)
        d = digest(item)
        hi, lo = np.frombuffer(d, dtype="<i8").tolist()
        self.docs.has_digest[i], self.docs.digest_hi[i], self.docs.digest_lo[i] = 1, hi, lo
        if self.seen is not None:
            first = self.seen.first(d, doc_id)
            if first >= 0:
                self.docs.status[i] = _DUPLICATE  # its line is written when the parts are combined
                if self.spec.strict:
                    self.reject(Rejection(src, "duplicate", f"same conversation as {self.source(first).where()}"),
                                RejectionSpill.READ)
                return
        conv = item.chosen if isinstance(item, Pair) else item
        if conv.dropped_turns:
            self.dropped[doc_id] = dict(conv.dropped_turns)
        self.docs.prompt_words[i], self.docs.response_words[i], self.docs.turns[i] = words(conv)
        if isinstance(item, Pair):
            return self.pairs.add(item, src)  # type: ignore[union-attr]
        self.docs.label[i] = NULL if item.label is None else item.label
        rendered = self.tpl.render(item)
        if isinstance(rendered, Rejection):
            self.reject(rendered, RejectionSpill.READ)
            return
        if rendered.system:
            self.docs.system[i] = _SYSTEM_CODE[rendered.system]
            if rendered.system == "dropped":  # not trained on, so not in the prompt's words either
                self.docs.prompt_words[i] -= len(item.messages[0].content.split()) + 1
        at_least = self.at_least(rendered.text, src)
        if at_least:  # tokens found in take(), from the bound or prefixes; a placeholder keeps its place
            self.big[doc_id] = (rendered, at_least)
            rendered = _PLACEHOLDER
        self.batch.append((doc_id, rendered))
        if self.spec.overlong == "split":
            self.convs[doc_id] = item
        self.batch_chars += len(rendered.text)
        if len(self.batch) >= self.spec.batch_size or self.batch_chars >= _BATCH_CHARS:
            self.submit()

    # -- records too long to tokenize whole ---------------------------------------

    def token_bound(self) -> TokenBound | str:
        """The tokenizer's :class:`~packer.tokens.bound.TokenBound` (or why it has none), found once per process."""
        key = f"{self.tok.sha256}/{self.tok.loader}"
        got = _BOUNDS.get(key)
        if got is None:
            got = _BOUNDS[key] = token_bound(self.tok.tokenizer)
        return got

    def at_least(self, text: str, src: Source) -> int:
        """The fewest tokens ``text`` holds where it is too big to tokenize whole (over :data:`BOUNDED_ABOVE`
        bytes after normalization) and surely longer than seq_len (:mod:`packer.tokens.bound`); else 0."""
        if len(text) * 4 <= BOUNDED_ABOVE:  # 4 bytes a character at most: the common case, at once
            return 0
        bound = self.token_bound()
        if isinstance(bound, str):
            if not self.unbounded_told and len(text) > BOUNDED_ABOVE:
                self.unbounded_told = True
                self.notice(f"{src.where()}: {len(text):,} characters, tokenized whole (memory grows with the "
                            f"record): {self.tok.source} gives no cheap bound on its tokens: {bound}")
            return 0
        limit = max(BOUNDED_ABOVE, self.spec.seq_len * bound.max_bytes)
        if len(text) * 4 <= limit:
            return 0
        measured, _ = bound.measure(text)
        return min(bound.tokens_at_least(measured), _INT32_MAX) if measured > limit else 0

    def notice(self, message: str) -> None:
        if self.ev is not None:
            self.ev.notice(message)  # the CLI's hook, else the packer logger
        else:
            _log.warning(message)

    def label_one(self, r: Rendered, src: Source, nchars: int | None = None) -> _Tokens:
        """(ids, roles, flags) of the rendered text ``r`` (its first ``nchars`` characters), tokenized alone."""
        lengths, roles, last, train, forced = r.seg_lengths, r.seg_roles, r.seg_last, r.seg_train, r.seg_forced
        text = r.text
        if nchars is not None and nchars < len(text):
            text = text[:nchars]
            k = int(np.searchsorted(np.cumsum(lengths), nchars, side="left")) + 1  # segments reaching the cut
            lengths, roles, last = lengths[:k].copy(), roles[:k], last[:k]
            lengths[-1] -= int(lengths.sum()) - nchars
            train = None if train is None else train[:k]
            forced = None if forced is None else forced[:k]
        batch = self.labeller.prepare([lengths], [char_codes(roles, last, train, forced)], [text])
        # a piece of a checked record is checked too (the tiktoken core, the walk of pieces)
        encodings, reference = self._encode(batch, self._picks(np.array([src.doc_id])))
        tb = self.labeller.label(batch, encodings)
        self._verify(src, batch, tb, reference)
        return tb.ids, tb.roles, tb.flags

    def truncate_big(self, r: Rendered, src: Source, at_least: int) -> _Tokens | Rejection:
        """``--overlong truncate`` of a text too long to tokenize whole: its first seq_len tokens, from a prefix.

        A prefix's tokens differ from the whole text's only near the prefix's end, where a pre-token or a merge
        may reach over the cut. The first prefix passes ``seq_len * max_bytes`` bytes (normalized) by
        :data:`_PREFIX_MARGIN`, so it holds more than seq_len tokens and the margin after them; a prefix twice
        as long must give the same first seq_len tokens (ids, roles, flags), else the prefixes double again.
        A text whose first tokens no prefix settles (:data:`_PREFIX_ROUNDS`) is rejected, never guessed."""
        bound = self.token_bound()
        assert not isinstance(bound, str)
        seq_len = self.spec.seq_len
        need = seq_len * bound.max_bytes + _PREFIX_MARGIN
        before = None
        for _ in range(_PREFIX_ROUNDS + 1):
            _, nchars = bound.measure(r.text, stop=need)
            got = tuple(x[:seq_len] for x in self.label_one(r, src, nchars))
            if nchars >= len(r.text) or (before is not None and all(
                    np.array_equal(a, b) for a, b in zip(before, got, strict=True))):
                return got  # type: ignore[return-value]
            before, need = got, 2 * need
        return Rejection(src, "overlong", f"at least {at_least} tokens > seq_len {seq_len}, and prefixes of up to "
                         f"{nchars:,} characters disagree on its first {seq_len} tokens, so it is not truncated")

    # -- tokenizing ------------------------------------------------------------

    def submit(self) -> None:
        """Hand the batch to the tokenizer thread; take back what is done beyond _IN_FLIGHT."""
        if self.pairs is not None:
            self.pairs.flush()
        if self.batch:
            texts = [r.text for _, r in self.batch]
            if self.loader_check is None and self.part.first_doc_id == 0 and loaders_may_differ(
                self.tok, self.labeller.byte_lengths is not None
            ):
                self.loader_check = self.checker.submit(loader_difference, self.tok, texts[:_LOADER_SAMPLE])
            for a, b, fits in self.labeller.runs(texts):
                self._submit(self.batch[a:b], texts[a:b], fits)
            self.batch = []
            self.batch_chars = 0
        while len(self.pending) > _IN_FLIGHT:
            self.take()

    def _submit(self, docs: list[tuple[int, Rendered]], texts: list[str], fits: bool) -> None:
        rendered = [r for _, r in docs]
        batch = self.labeller.prepare([r.seg_lengths for r in rendered],
                                      [char_codes(r.seg_roles, r.seg_last, r.seg_train, r.seg_forced)
                                       for r in rendered], texts, fits)
        doc_ids = np.fromiter((d for d, _ in docs), dtype=np.int64, count=len(docs))
        # the records checked against tokenizers are encoded by both on the tokenizer thread
        self.pending.append(_Pending(self.pool.submit(self._encode, batch, self._picks(doc_ids)), doc_ids, batch))
        while len(self.pending) > _IN_FLIGHT + 1:  # a batch cut in runs: still two in flight at most
            self.take()

    def take(self) -> None:
        """Label the oldest batch's tokens, decide each document, spill the kept tokens."""
        p = self.pending.popleft()
        checkpoint("tokens")
        encodings, reference = p.encodings.result()
        tb = self.labeller.label(p.batch, encodings)
        self._verify(p.doc_ids, p.batch, tb, reference)
        rows = p.doc_ids - self.part.first_doc_id
        if tb.doc_absorbed is not None:
            self.docs.absorbed[rows] = tb.doc_absorbed
        lengths = np.diff(tb.offsets)
        self.docs.encoded[rows] = lengths
        keep_len, pieces = self._overlong(p.doc_ids, tb, rows, lengths)
        keep = keep_len > 0
        if (keep_len == lengths).all():
            ids, roles, last = tb.ids, tb.roles, tb.flags
        else:
            pos = np.arange(len(tb.ids)) - np.repeat(tb.offsets[:-1], lengths)
            sel = pos < np.repeat(keep_len, lengths)
            ids, roles, last = tb.ids[sel], tb.roles[sel], tb.flags[sel]
        for d in p.doc_ids.tolist():
            self.convs.pop(d, None)
        kept_rows, kept_len = rows[keep], keep_len[keep]
        self._count_kept(kept_rows, kept_len, roles)
        spilled_lens = kept_len.astype(np.int64)
        if pieces:  # the split records' pieces, in their doc_id's place among the kept documents
            ids, roles, last, spilled_lens = self._with_pieces(rows, keep, kept_len, pieces, (ids, roles, last))
            kept_rows = rows[keep | np.isin(np.arange(len(rows)), list(pieces))]
        self._spill(ids, roles, last, spilled_lens, kept_rows)

    def _overlong(
        self, doc_ids: np.ndarray, tb: TokenizedBatch, rows: np.ndarray, lengths: np.ndarray,
    ) -> tuple[np.ndarray, dict[int, list[_Tokens]]]:
        """Per document of the batch (``tb``, labelled), the tokens it keeps from its own (0: none, or its
        pieces), and the pieces (by place in the batch) of those packed from other tokens: a split record's, or
        a truncation of a record too long to tokenize whole."""
        keep_len = lengths.copy()
        seq_len = self.spec.seq_len
        pieces: dict[int, list[_Tokens]] = {}
        # records too long to tokenize whole stand in the batch as empty placeholders: counted from the bound
        big = [k for k, d in enumerate(doc_ids.tolist()) if d in self.big] if self.big else []
        for k in sorted([*np.flatnonzero(lengths > seq_len).tolist(), *big]):
            d = int(doc_ids[k])
            a, count = int(tb.offsets[k]), str(lengths[k])
            src = self.source(d)
            keep_len[k] = 0
            first = tb.roles[a : a + seq_len]
            if d in self.big:
                r, n = self.big.pop(d)
                count = f"at least {n}"
                self.docs.encoded[rows[k]] = n
                if self.spec.overlong == "truncate":
                    got = self.truncate_big(r, src, n)
                    if isinstance(got, Rejection):
                        self.reject(got, RejectionSpill.TOKENS)
                        continue
                    first = got[1]
                    if _ASSISTANT_LUT[first].any():
                        pieces[k] = [got]
            self._decide_overlong(k, src, count, first, keep_len, pieces)
        return keep_len, pieces

    def _decide_overlong(
        self, k: int, src: Source, count: str, first: np.ndarray, keep_len: np.ndarray,
        pieces: dict[int, list[_Tokens]],
    ) -> None:
        """What ``--overlong`` does to document ``k`` of the batch, longer than seq_len (``count`` tokens; the
        roles of its ``first`` seq_len): split it into ``pieces``, drop it, or keep its first seq_len tokens."""
        seq_len = self.spec.seq_len
        if self.spec.overlong == "split":
            got = self.split_record(self.convs[src.doc_id], src)
            if isinstance(got, Rejection):
                self.reject(got, RejectionSpill.TOKENS)
            else:
                pieces[k] = got
                self.reject(Rejection(src, "overlong", f"split {count} tokens into {len(got)} documents of "
                                      f"{', '.join(str(len(g[0])) for g in got)} tokens"),
                            RejectionSpill.TOKENS, action="split")
        elif self.spec.overlong == "drop":
            self.reject(Rejection(src, "overlong", f"{count} tokens > seq_len {seq_len}"), RejectionSpill.TOKENS)
        elif not _ASSISTANT_LUT[first].any():
            self.reject(Rejection(src, "overlong_no_loss",
                                  f"{count} tokens > seq_len {seq_len} and the first {seq_len} hold no response"),
                        RejectionSpill.TOKENS)
        else:
            keep_len[k] = 0 if k in pieces else seq_len
            self.reject(Rejection(src, "overlong", f"truncated from {count} to {seq_len} tokens"),
                        RejectionSpill.TOKENS, action="truncated")

    def _count_kept(self, kept_rows: np.ndarray, kept_len: np.ndarray, roles: np.ndarray) -> None:
        """Per-document token stats of the kept documents (``roles``: their tokens', adjacent), now, while the
        tokens are at hand."""
        ends = np.cumsum(kept_len)
        starts = ends - kept_len
        for col, is_col in (("prompt_tokens", _PROMPT_LUT[roles]),
                            ("response_tokens", _WRITTEN_LUT[roles])):
            cum = np.zeros(len(roles) + 1, dtype=np.int64)
            np.cumsum(is_col, out=cum[1:])
            getattr(self.docs, col)[kept_rows] = cum[ends] - cum[starts]
        self.docs.tokens[kept_rows] = kept_len
        self.docs.spilled[kept_rows] = 1
        self.docs.pieces[kept_rows] = 1

    def _with_pieces(
        self, rows: np.ndarray, keep: np.ndarray, kept_len: np.ndarray, pieces: dict[int, list[_Tokens]],
        kept: _Tokens,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The batch's tokens to spill: the ``kept`` tokens (of the ``keep`` documents, ``kept_len`` each) with
        each split record's ``pieces`` in its place; and the length of every document spilled. Counts the split
        records' tokens."""
        ends = np.cumsum(kept_len)
        seg: list[_Tokens] = []
        seg_lens: list[int] = []
        at = 0
        for k in range(len(rows)):
            if k in pieces:
                seg.extend(pieces[k])
                seg_lens.extend(len(g[0]) for g in pieces[k])
                r = int(rows[k])
                self.docs.tokens[r] = sum(len(g[0]) for g in pieces[k])
                self.docs.prompt_tokens[r] = sum(int(_PROMPT_LUT[g[1]].sum()) for g in pieces[k])
                self.docs.response_tokens[r] = sum(int(_WRITTEN_LUT[g[1]].sum()) for g in pieces[k])
                self.docs.spilled[r] = 1
                self.docs.pieces[r] = len(pieces[k])
            elif keep[k]:
                b, n = int(ends[at]), int(kept_len[at])
                seg.append(tuple(x[b - n : b] for x in kept))  # type: ignore[arg-type]
                seg_lens.append(n)
                at += 1
        ids, roles, last = (np.concatenate([g[j] for g in seg]) if seg else x[:0] for j, x in enumerate(kept))
        return ids, roles, last, np.array(seg_lens, dtype=np.int64)

    def _spill(
        self, ids: np.ndarray, roles: np.ndarray, last: np.ndarray, spilled_lens: np.ndarray, kept_rows: np.ndarray,
    ) -> None:
        """Append the batch's kept tokens to the part's spill; its kept documents are packed (or truncated)."""
        if self.spec.kind == "kto":  # a KTO record's label, on every token it spills
            last = last | np.repeat((self.docs.label[kept_rows] == 1) * np.uint8(R.DESIRABLE_FLAG), spilled_lens)
        self.spill.append(ids, roles, last)
        self.spilled_tokens += len(ids)
        self.forced_tokens += int(np.count_nonzero(last & R.FORCED_FLAG))
        self.spilled_lens.append(spilled_lens)
        status = self.docs.status
        status[kept_rows] = np.where(status[kept_rows] == _TRUNCATED, _TRUNCATED, _PACKED)
        if self.ev is not None:
            if self.ev.on_records:
                self.ev.on_records(self.part.first_doc_id + len(self.docs), self.spilled_tokens)
            self.ev.progress("reading", self.reader.bytes_read, self.reader.total_bytes)

    def _picks(self, doc_ids: np.ndarray) -> list[int]:
        """The texts of a batch (``doc_ids``: their records) :func:`checked` picks, if the labeller is checked."""
        return [k for k, d in enumerate(doc_ids.tolist()) if checked(d)] if self.labeller.checks else []

    def _encode(self, batch: TextBatch, picks: list[int]) -> tuple[list | tuple, dict[int, object]]:
        """The batch's encodings, and the ``picks`` as :meth:`Labeller.reference` encodes them (tokenizer thread)."""
        encodings = self.labeller.encode(batch)
        if not picks:
            return encodings, {}
        reference = self.labeller.reference([batch.texts[k] for k in picks])
        return encodings, dict(zip(picks, reference, strict=True))

    def _verify(self, where: np.ndarray | Source, batch: TextBatch, tb: TokenizedBatch, reference: dict) -> None:
        """The :meth:`_picks` texts as ``tokenizers`` encodes them: the core's ids, the walk's spans must agree (else
        :class:`TokenizerDrift`); ``where``: each text's doc_id, or the record a split piece is of."""
        for k, ref in reference.items():
            why = self.labeller.disagrees(batch, tb, k, ref)
            if why is not None:
                src = where if isinstance(where, Source) else self.source(int(where[k]))
                raise TokenizerDrift(f"{src.where()}: {why} for this record")

    def split_record(
        self, conv: Conversation, src: Source,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | Rejection:
        """``--overlong split``: the conversation as consecutive chunks of whole exchanges (the turns up to and
        including an assistant turn; turns after the last one join the last exchange), each chunk as many
        exchanges as fit in ``seq_len``, a leading system message at the head of every chunk; each chunk is
        rendered and tokenized as a conversation of its own. Its (ids, roles, last) per chunk, or a rejection
        (``overlong``) where one exchange alone is longer than ``seq_len``."""
        msgs = conv.messages
        head = msgs[:1] if msgs and msgs[0].role == "system" else ()
        exchanges: list[tuple] = []
        cur: list = []
        rest = msgs[len(head):]
        for k, m in enumerate(rest):
            cur.append(m)
            # an exchange ends at an assistant turn, but not between a tool call and its results
            if m.role == "assistant" and (k + 1 == len(rest) or rest[k + 1].role != "tool"):
                exchanges.append(tuple(cur))
                cur = []
        if cur:
            if not exchanges:
                return Rejection(src, "overlong", "no assistant turn to split the conversation at")
            exchanges[-1] += tuple(cur)
        seq_len = self.spec.seq_len

        def tokens(a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | Rejection | str:
            sub = Conversation(src, conv.kind, head + tuple(m for ex in exchanges[a:b] for m in ex), tools=conv.tools)
            r = self.tpl.render(sub)
            if isinstance(r, Rejection):
                return r
            at_least = self.at_least(r.text, src)  # each piece bounded too: never a huge text tokenized whole
            return f"at least {at_least}" if at_least else self.label_one(r, src)

        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        a = 0
        while a < len(exchanges):
            best = tokens(a, a + 1)
            if isinstance(best, Rejection):
                return best
            if isinstance(best, str) or len(best[0]) > seq_len:
                n = best if isinstance(best, str) else len(best[0])
                return Rejection(src, "overlong", f"exchange {a + 1} alone is {n} tokens > seq_len "
                                 f"{seq_len}, so the conversation cannot be split at its turns")
            b = a + 1
            while b < len(exchanges):
                t = tokens(a, b + 1)
                if isinstance(t, (Rejection, str)) or len(t[0]) > seq_len:
                    break
                best, b = t, b + 1
            out.append(best)
            a = b
        return out

    # -- the whole part --------------------------------------------------------

    def run(self) -> PartSummary:
        t0 = time.perf_counter()
        spec, part = self.spec, self.part
        if part.first_doc_id < 0:
            raise BuildError(f"internal error: part {part.tag} has no first doc_id")
        reader = self.reader = RecordReader(part.paths, spec.fmt, blank_turns=spec.blank_turns, columns=spec.columns,
                                            leading_assistant=spec.leading_assistant,
                                            piece=None if part.input is None else part.piece,
                                            file_format=part.fmt, flat=self.flat is not None)
        if self.ev is not None:
            self.ev.progress("reading", 0, reader.total_bytes)
        self.spill = TokenSpillWriter(self.out, part.tag)
        self.rejections = RejectionSpill(self.out, part.tag)
        self.input_records = [0] * len(part.inputs)
        difference = None
        try:
            self.checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packer-loader-check")
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="packer-encode") as self.pool:
                try:
                    for item in reader if self.flat is None else self.flat.records(reader):
                        # the file being read: the part's one input, or the files read to their end so far
                        self.input_records[len(reader.inputs) if part.input is None else part.input] += 1
                        # the reader counts the part's records from 0
                        self.add_record(item, part.first_doc_id + item.source.doc_id)
                    self.submit()
                    while self.pending:
                        self.take()
                except BaseException:
                    for p in self.pending:
                        p.encodings.cancel()
                    raise
            difference = self.loader_check.result() if self.loader_check else None
        finally:
            self.checker.shutdown(wait=False, cancel_futures=True)
            self.spill.close()
            self.rejections.close()
        if self.ev is not None:
            self.ev.progress("reading", reader.total_bytes, reader.total_bytes)
        self.docs.trim()
        formats: list[str | None] = [None] * len(part.inputs)
        for k, i in enumerate(reader.inputs):
            formats[k if part.input is None else part.input] = i.format
        if part.records >= 0 and len(self.docs) != part.records:
            raise BuildError(f"{part.paths[0]}: {len(self.docs)} records read where {part.records} were counted "
                             "before: did the file change while the build ran?")
        return PartSummary(
            part, self.file_paths, self.input_records, formats, self.docs, self.dropped, self.spilled_tokens,
            np.concatenate(self.spilled_lens) if self.spilled_lens else np.zeros(0, dtype=np.int64),
            self.rejections.count, difference, self.tpl.missing_end, time.perf_counter() - t0, self.reasons,
            self.echo, forced_tokens=self.forced_tokens,
        )


def map_part(
    spec: MapSpec, part: Part, workdir: str | Path, *, tok: TokenizerInfo | None = None,
    tpl: ChatTemplate | None = None, events=None,  # type: ignore[no-untyped-def]
) -> PartSummary:
    """Map one part into ``workdir`` (its spill files are tagged ``part.tag``); see the module's docstring.

    Raises :class:`~packer.tokens.templates.TemplateDrift` when the template's assembly is found wrong:
    the build then maps every part again with ``assemble=False``.
    """
    return PartMapper(spec, part, Path(workdir), tok=tok, tpl=tpl, events=events).run()


__all__ = ["MapSpec", "Part", "PartMapper", "PartSummary", "map_part", "parts_of", "resolve_template"]
