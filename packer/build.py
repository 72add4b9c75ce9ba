"""``packer build`` as a Python API: records -> segments -> tokens -> rows -> shards.

    >>> from packer import build
    >>> manifest = build(["data.json"], "shards/", tokenizer="path/to/model", seq_len=4096)
    >>> manifest["counts"]
    {'records': 1000, 'packed': 997, 'truncated': 0, 'rejected': {'empty_output': 3}, ...}

Every input record ends up in the shards or in ``rejected.jsonl`` with its
reason: ``records == packed + sum(rejected.values())``.

Output is atomic and nothing of the user's is lost: the build writes into a
staging directory beside the target and swaps it in when the manifest is
written (:mod:`packer.outdir`), so a failed or killed build leaves the target
as it was, and only packer's own files are ever replaced. Everything that can
be checked before writing (inputs, tokenizer, template, options, the target)
is checked first.

Memory does not grow with the input beyond a few dozen bytes a record: the
tokens of kept documents and the rejection lines are spilled to files in the
output directory as each batch is done (:mod:`packer.spill`), per-record facts
are numpy columns (:mod:`packer.doctable`), packing needs only the lengths, and
shards are written a record batch at a time from the spill. The tokenizer (Rust,
GIL released, all cores) encodes batch k+1 in a worker thread while this thread
labels batch k and reads and renders the next; batches are taken back in order,
so the output does not depend on the batch size or the timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import __version__
from . import roles as R
from .doctable import NULL, Columns, SeenTable
from .formats import RecordReader, check_inputs
from .loader import loader_difference, loaders_may_differ
from .options import (
    ALGORITHMS,
    BLANK_TURN_POLICIES,
    DEFAULT_SHARD_BYTES,
    LOADERS,
    OVERLONG_POLICIES,
    SYSTEM_POLICIES,
    TEMPLATE_CHOICES,
    WARN_LOST_SHARE,
)
from .outdir import Staging, check_target, checkpoint
from .pack import efficiency, lower_bound, pack, rows_from_bins
from .records import REASONS, BuildError, Conversation, Rejection, Source
from .shards import (
    DOCUMENTS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    REJECTED_FILE,
    ShardWriter,
    file_sha256,
    write_atomic,
    write_documents,
)
from .spill import RejectionSpill, TokenSpillReader, TokenSpillWriter, remove_spill
from .templates import ChatTemplate, Rendered, TemplateDrift
from .tokenize import (
    TokenizerInfo,
    batch_chars,
    byte_lengths,
    byte_values,
    char_codes,
    control_lut,
    encode_texts,
    encode_texts_fast,
    label_batch,
    label_batch_bytes,
    load_tokenizer,
)


@dataclass
class BuildEvents:
    """Hooks the CLI uses for progress and messages; all optional."""

    on_records: Callable[[int, int], None] | None = None  # (records read, tokens so far)
    on_rejection: Callable[[Rejection], None] | None = None
    on_notice: Callable[[str], None] | None = None
    #: (phase, done, total): "reading" in bytes of input, then "packing", then "writing" in documents
    on_progress: Callable[[str, int, int], None] | None = None
    #: every check passed and the build starts writing (its staging folder): a failure before is one error
    on_start: Callable[[], None] | None = None

    def progress(self, phase: str, done: int, total: int) -> None:
        if self.on_progress:
            self.on_progress(phase, done, total)

    def notice(self, message: str) -> None:
        if self.on_notice:
            self.on_notice(message)


#: status codes of documents.arrow's ``status`` column: "" (not decided yet), then these
STATUSES: tuple[str, ...] = ("", "packed", "truncated", *REASONS)
_STATUS_CODE = {name: code for code, name in enumerate(STATUSES)}
_PACKED, _TRUNCATED = _STATUS_CODE["packed"], _STATUS_CODE["truncated"]
_PROMPT_LUT = R.role_lut(R.PROMPT_ROLES)
#: batches handed to the tokenizer thread and not yet taken back, beyond the one being labelled: the
#: tokenizer encodes batch k+1 while this thread labels batch k and reads and renders batch k+2
#: (an encoding takes ~150 bytes a token, so more in flight costs memory and gains nothing)
_IN_FLIGHT = 1
#: a batch is also cut at this many characters, so a few huge records cannot make it huge (2M characters:
#: ~20 MB less peak memory than 4M on ShareGPT, no slower)
_BATCH_CHARS = 1 << 21
#: rendered texts of the first batch that the other tokenizer loader encodes too, to say whether the two differ
_LOADER_SAMPLE = 64


def _words(conv: Conversation) -> tuple[int, int, int]:
    # the IM paper's count: whitespace-split words of each message, +1 per message
    prompt = response = turns = 0
    for m in conv.messages:
        n = len(m.content.split()) + len(m.input.split()) + 1
        if m.role == "assistant":
            response += n
        else:
            prompt += n
        turns += m.role != "system"
    return prompt, response, turns


def _digest(conv: Conversation) -> bytes:
    # 16 bytes a conversation: collisions are negligible, memory stays small
    # every part followed by a NUL, hashed in one call
    text = "".join(f"{m.role}\x00{m.content}\x00{m.input}\x00" for m in conv.messages)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _up_to_date(out: Path, manifest: dict, key: dict) -> bool:
    """Whether ``manifest`` describes a complete output built with the same key.

    Re-running the same command then succeeds without --overwrite; other
    options still need it.
    """
    if manifest.get("build_key") != key:
        return False
    for shard in manifest.get("shards", []):
        path = out / shard["file"]
        if not path.is_file() or path.stat().st_size != shard["bytes"]:
            return False
    return True


def resolve_template(name: str, tok: TokenizerInfo, *, system: str = "merge") -> ChatTemplate:
    """``auto``: the tokenizer's own chat template if it has one, else ``alpaca``."""
    if name == "auto":
        name = "tokenizer" if tok.chat_template else "alpaca"
    try:
        return ChatTemplate.named(name, tok, system=system)
    except ValueError as e:
        raise BuildError(str(e)) from None


def build(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | TokenizerInfo,
    template: str = "auto",
    fmt: str | None = None,
    seq_len: int = 4096,
    strategies: Sequence[str] = (),
    packing: str = "bfd",
    overlong: str = "drop",
    overwrite: bool = False,
    strict: bool = False,
    dedupe: bool = False,
    max_rejected: float | None = None,
    tokenizer_loader: str = "file",
    system: str = "merge",
    blank_turns: str = "reject",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    batch_size: int = 512,
    events: BuildEvents | None = None,
) -> dict:
    """Build packed shards from instruction data; return the manifest.

    ``strategies`` adds user strategies (``"name=role,role"``) to the
    built-in ones. ``overlong``: a document longer than ``seq_len`` is
    dropped (``drop``) or cut to ``seq_len`` tokens (``truncate``; a cut
    document left with no response token is rejected as ``overlong_no_loss``).
    Exact duplicate conversations are kept and counted (``counts.duplicates``);
    with ``dedupe`` every copy after the first is rejected as ``duplicate``.
    ``max_rejected``: fail, writing nothing, when more than this share of
    the records is rejected or truncated, or of their tokens is cut (without
    it the build warns past :data:`~packer.options.WARN_LOST_SHARE`).
    ``output`` is replaced only if it is empty, a packer output built with
    the same key (then nothing is done) or, with ``overwrite``, any packer
    output; a folder holding anything else is refused.
    """
    t0 = time.perf_counter()
    ev = events or BuildEvents()
    # everything that can fail is checked before anything is written
    if not inputs:
        raise BuildError("no input files given")
    if seq_len < 2:
        raise BuildError(f"--seq-len must be at least 2, not {seq_len}")
    if packing not in ALGORITHMS:
        raise BuildError(f"unknown packing {packing!r}; choose {'|'.join(ALGORITHMS)}")
    if overlong not in OVERLONG_POLICIES:
        raise BuildError(f"unknown overlong policy {overlong!r}; choose {'|'.join(OVERLONG_POLICIES)}")
    if template not in TEMPLATE_CHOICES:
        raise BuildError(f"unknown template {template!r}; choose {'|'.join(TEMPLATE_CHOICES)}")
    for name, value, choices in (("--tokenizer-loader", tokenizer_loader, LOADERS), ("--system", system,
                                 SYSTEM_POLICIES), ("--blank-turns", blank_turns, BLANK_TURN_POLICIES)):  # fmt: skip
        if value not in choices:
            raise BuildError(f"unknown {name} {value!r}; choose {'|'.join(choices)}")
    if max_rejected is not None and not 0 <= max_rejected <= 1:
        raise BuildError(f"--max-rejected is a fraction from 0 to 1, not {max_rejected}")
    try:
        strategy_table = R.strategy_table(strategies)
    except ValueError as e:
        raise BuildError(str(e)) from None
    check_inputs([str(p) for p in inputs], fmt)
    target = check_target(output, inputs)
    tok = tokenizer if isinstance(tokenizer, TokenizerInfo) else load_tokenizer(tokenizer, loader=tokenizer_loader)
    tpl = resolve_template(template, tok, system=system)
    key = {
        "inputs": [file_sha256(Path(p)) for p in inputs],
        "format": fmt,
        "tokenizer": tok.sha256,
        "tokenizer_loader": [tok.loader, tok.transformers_version],
        "template": tpl.sha256,
        "system": system,
        "blank_turns": blank_turns,
        "seq_len": seq_len,
        "strategies": {k: list(v) for k, v in strategy_table.items()},
        "packing": packing,
        "overlong": overlong,
        "dedupe": dedupe,
        "shard_bytes": shard_bytes,
    }
    if target.manifest is not None and not overwrite:
        if _up_to_date(target.path, target.manifest, key):
            if ev.on_notice:
                ev.on_notice(f"{output}: already built from the same inputs and options; nothing to do")
            return target.manifest
        raise BuildError(f"{output}: holds an earlier packer output built from other inputs or options; "
                         "add --overwrite to replace it, or write to another folder with -o")  # fmt: skip

    def run(tpl: ChatTemplate, staging: Staging) -> dict:
        manifest = _Build(staging.path, tok, tpl, key, strategy_table, seq_len=seq_len, packing=packing,
                          overlong=overlong, strict=strict, dedupe=dedupe, max_rejected=max_rejected,
                          shard_bytes=shard_bytes, batch_size=batch_size, events=ev,
                          ).run([str(p) for p in inputs], fmt, blank_turns, t0)  # fmt: skip
        staging.commit()
        return manifest

    staging = Staging(target)
    if ev.on_start:
        ev.on_start()
    try:
        try:
            return run(tpl, staging)
        except TemplateDrift as e:
            # records assembled without Jinja may be wrong: start over with Jinja for every record
            # (events already sent for the first attempt are sent again)
            if ev.on_notice:
                ev.on_notice(f"{e}; building again with every record rendered by the template")
            staging.discard()
            staging = Staging(target)
            exact = resolve_template(template, tok, system=system)
            exact.assemble = False
            return run(exact, staging)
    except BaseException:
        staging.discard()
        raise


class _TokenTotals:
    """Token counts of the kept documents for the manifest, added batch by batch."""

    def __init__(self, strategy_table: dict[str, tuple[str, ...]]) -> None:
        self.strategy_table = strategy_table
        self.role_counts = np.zeros(9, dtype=np.int64)
        self.luts = {name: R.role_lut(names) for name, names in strategy_table.items()}
        # last-turn strategies need the flag, so they cannot be derived from role counts
        self.last_loss = {name: 0 for name in strategy_table if name in R.LAST_TURN_STRATEGIES}

    def add(self, roles: np.ndarray, last: np.ndarray) -> None:
        self.role_counts += np.bincount(roles, minlength=9)[:9]
        for name in self.last_loss:
            self.last_loss[name] += int(np.count_nonzero(self.luts[name][roles] & last))

    @property
    def total(self) -> int:
        return int(self.role_counts.sum())

    def loss(self) -> dict[str, int]:
        out = {}
        for name in self.strategy_table:
            per_role = int(self.role_counts[self.luts[name][:9]].sum())
            out[name] = self.last_loss[name] if name in self.last_loss else per_role
        return out


@dataclass
class _Pending:
    """A batch handed to the tokenizer thread."""

    encodings: Future
    doc_ids: np.ndarray
    texts: list[str]
    chars: np.ndarray
    text_starts: np.ndarray
    #: per-byte values and byte starts when labelled by token byte lengths, else None
    by_bytes: tuple[np.ndarray, np.ndarray] | None


class _Build:
    """One build: read and render records while the tokenizer thread encodes the
    previous batch, spill kept tokens, then pack, write shards, documents,
    rejections and the manifest.

    Memory: a few numbers per record (:class:`~packer.doctable.Columns`), the
    duplicate table, and a few batches; tokens and rejection lines are on disk.
    """

    def __init__(
        self, out: Path, tok: TokenizerInfo, tpl: ChatTemplate, key: dict, strategy_table: dict[str, tuple[str, ...]],
        *, seq_len: int, packing: str, overlong: str, strict: bool, dedupe: bool, max_rejected: float | None,
        shard_bytes: int, batch_size: int, events: BuildEvents,
    ) -> None:  # fmt: skip
        self.out, self.tok, self.tpl, self.key = out, tok, tpl, key
        self.strategy_table = strategy_table
        self.seq_len, self.packing, self.overlong = seq_len, packing, overlong
        self.strict, self.dedupe, self.shard_bytes = strict, dedupe, shard_bytes
        self.max_rejected = max_rejected
        self.batch_size = max(1, batch_size)
        self.ev = events
        # per record, by doc_id; NULL where documents.arrow has a null
        self.docs = Columns(
            file=(np.int32, 0), record=(np.int64, 0), status=(np.uint8, 0),
            turns=(np.int32, NULL), prompt_words=(np.int32, NULL), response_words=(np.int32, NULL),
            tokens=(np.int32, NULL), prompt_tokens=(np.int32, NULL), response_tokens=(np.int32, NULL),
            duplicate_of=(np.int64, NULL),
        )  # fmt: skip
        # per kept document, in doc_id order (= the order of the token spill)
        self.kept = Columns(doc_id=(np.int64, 0), length=(np.int64, 0))
        self.files: dict[str, int] = {}  # input path as given -> index in file_paths
        self.file_paths: list[str] = []
        self.seen = SeenTable()  # conversation digest -> first doc_id
        self.duplicates = 0
        self.truncated = 0
        # overlong records dropped, the longest of them, and tokens not packed (dropped or cut off)
        self.overlong_dropped = self.longest_dropped = self.lost_tokens = 0
        self.dropped_turns: Counter[str] = Counter()
        self.system_policy: Counter[str] = Counter()  # records whose system message was merged or dropped
        self.reasons: Counter[str] = Counter()  # rejection reasons in the order first met
        self.totals = _TokenTotals(strategy_table)
        self.batch: list[tuple[int, Rendered]] = []
        self.batch_chars = 0
        self.pending: deque[_Pending] = deque()
        # byte-level BPE: spans from token byte lengths, so the tokenizer need not track offsets
        self.byte_lengths = byte_lengths(tok.tokenizer)
        # control tokens never take a content role; the content characters they absorbed are counted
        self.control = control_lut(tok)
        self.absorbed = 0
        # ids of the other tokenizer loader on the first batch, compared in a thread of its own where they
        # may differ (importing transformers, and torch with it, costs a build ~5 s and ~240 MB: BENCHMARKS.md)
        self.loader_check: Future | None = None

    # -- records ---------------------------------------------------------------

    def source(self, doc_id: int) -> Source:
        return Source(doc_id, self.file_paths[self.docs.file[doc_id]], int(self.docs.record[doc_id]))

    def reject(self, rej: Rejection, stage: int) -> None:
        self.docs.status[rej.source.doc_id] = _STATUS_CODE[rej.reason]
        self.reasons[rej.reason] += 1
        self.rejections.write(stage, _rejected_line(rej, "rejected"))
        if self.strict:
            if stage == RejectionSpill.READ:
                # earlier records are still with the tokenizer: one of them may be the first failure
                self.submit()
                while self.pending:
                    self.take()
            raise BuildError(f"{rej.message()} (--strict)")
        if self.ev.on_rejection:
            self.ev.on_rejection(rej)

    def add_record(self, item: Conversation | Rejection) -> None:
        src = item.source
        if src.doc_id != len(self.docs):  # the reader's contract; guard it
            raise BuildError(f"{src.where()}: internal error: records out of order")
        f = self.files.get(src.path)
        if f is None:
            f = self.files[src.path] = len(self.file_paths)
            self.file_paths.append(src.path)
        self.docs.add(file=f, record=src.index)
        if isinstance(item, Rejection):
            self.reject(item, RejectionSpill.READ)
            return
        first = self.seen.first(_digest(item), src.doc_id)
        if first >= 0:
            self.duplicates += 1
            self.docs.duplicate_of[src.doc_id] = first
            if self.dedupe:
                self.reject(Rejection(src, "duplicate", f"same conversation as {self.source(first).where()}"),
                            RejectionSpill.READ)  # fmt: skip
                return
        self.dropped_turns.update(item.dropped_turns)
        pw, rw, turns = _words(item)
        d = src.doc_id
        self.docs.prompt_words[d], self.docs.response_words[d], self.docs.turns[d] = pw, rw, turns
        rendered = self.tpl.render(item)
        if isinstance(rendered, Rejection):
            self.reject(rendered, RejectionSpill.READ)
            return
        if rendered.system:
            self.system_policy[rendered.system] += 1
            if rendered.system == "dropped":  # not trained on, so not in the prompt's words either
                self.docs.prompt_words[d] -= len(item.messages[0].content.split()) + 1
        self.batch.append((d, rendered))
        self.batch_chars += len(rendered.text)
        if len(self.batch) >= self.batch_size or self.batch_chars >= _BATCH_CHARS:
            self.submit()

    # -- tokenizing ------------------------------------------------------------

    def submit(self) -> None:
        """Hand the batch to the tokenizer thread; take back what is done beyond _IN_FLIGHT."""
        if self.batch:
            texts = [r.text for _, r in self.batch]
            chars, starts = batch_chars([r.seg_lengths for _, r in self.batch],
                                        [char_codes(r.seg_roles, r.seg_last) for _, r in self.batch])  # fmt: skip
            if chars.shape[0] != self.batch_chars:
                raise ValueError("segments do not tile the rendered texts")
            doc_ids = np.fromiter((d for d, _ in self.batch), dtype=np.int64, count=len(self.batch))
            by_bytes = None
            if self.byte_lengths is not None and self.byte_lengths.fits(texts):
                by_bytes = byte_values(chars, starts, texts)
            encode = encode_texts if by_bytes is None else encode_texts_fast
            if self.loader_check is None and loaders_may_differ(self.tok, self.byte_lengths is not None):
                self.loader_check = self.checker.submit(loader_difference, self.tok, texts[:_LOADER_SAMPLE])
            self.pending.append(_Pending(self.pool.submit(encode, self.tok.tokenizer, texts), doc_ids, texts,
                                         chars, starts, by_bytes))  # fmt: skip
            self.batch = []
            self.batch_chars = 0
        while len(self.pending) > _IN_FLIGHT:
            self.take()

    def take(self) -> None:
        """Label the oldest batch's tokens, decide each document, spill the kept tokens."""
        p = self.pending.popleft()
        checkpoint("tokens")
        tb = None
        if p.by_bytes is not None:
            assert self.byte_lengths is not None
            tb = label_batch_bytes(p.encodings.result(), *p.by_bytes, self.byte_lengths, self.control)
            if tb is None:  # a token of unknown length: tokenize again, with offsets
                p.encodings = self.pool.submit(encode_texts, self.tok.tokenizer, p.texts)
        if tb is None:
            tb = label_batch(p.encodings.result(), p.chars, p.text_starts, self.control)
        self.absorbed += tb.absorbed
        lengths = np.diff(tb.offsets)
        keep = np.ones(len(lengths), dtype=bool)
        keep_len = lengths.copy()
        for k in np.flatnonzero(lengths > self.seq_len).tolist():
            a, n, seq_len = int(tb.offsets[k]), int(lengths[k]), self.seq_len
            src = self.source(int(p.doc_ids[k]))
            keep[k] = False
            if self.overlong == "drop":
                self.overlong_dropped += 1
                self.longest_dropped = max(self.longest_dropped, n)
                self.lost_tokens += n
                self.reject(Rejection(src, "overlong", f"{n} tokens > seq_len {seq_len}"), RejectionSpill.TOKENS)
                continue
            if not np.isin(tb.roles[a : a + seq_len], (R.RESPONSE, R.END)).any():
                self.lost_tokens += n
                self.reject(
                    Rejection(src, "overlong_no_loss",
                              f"{n} tokens > seq_len {seq_len} and the first {seq_len} hold no response"),
                    RejectionSpill.TOKENS,
                )  # fmt: skip
                continue
            keep[k] = True
            keep_len[k] = seq_len
            self.docs.status[src.doc_id] = _TRUNCATED
            note = Rejection(src, "overlong", f"truncated from {n} to {seq_len} tokens")
            self.rejections.write(RejectionSpill.TOKENS, _rejected_line(note, "truncated"))
            self.reasons["overlong"] += 1
            self.truncated += 1
            self.lost_tokens += n - seq_len
        if keep.all() and (keep_len == lengths).all():
            ids, roles, last = tb.ids, tb.roles, tb.last
        else:
            keep_len[~keep] = 0
            pos = np.arange(len(tb.ids)) - np.repeat(tb.offsets[:-1], lengths)
            sel = pos < np.repeat(keep_len, lengths)
            ids, roles, last = tb.ids[sel], tb.roles[sel], tb.last[sel]
        kept_ids, kept_len = p.doc_ids[keep], keep_len[keep]
        self.spill.append(ids, roles, last)
        self.totals.add(roles, last)
        # per-document token stats now, while the tokens are at hand
        ends = np.cumsum(kept_len)
        starts = ends - kept_len
        for col, is_col in (("prompt_tokens", _PROMPT_LUT[roles]),
                            ("response_tokens", roles == R.RESPONSE)):  # fmt: skip
            cum = np.zeros(len(roles) + 1, dtype=np.int64)
            np.cumsum(is_col, out=cum[1:])
            getattr(self.docs, col)[kept_ids] = cum[ends] - cum[starts]
        self.docs.tokens[kept_ids] = kept_len
        status = self.docs.status
        status[kept_ids] = np.where(status[kept_ids] == _TRUNCATED, _TRUNCATED, _PACKED)
        self.kept.extend(doc_id=kept_ids, length=kept_len)
        if self.ev.on_records:
            self.ev.on_records(len(self.docs), self.totals.total)
        self.ev.progress("reading", self.reader.bytes_read, self.reader.total_bytes)

    def check_losses(self) -> None:
        """Say what rejection and truncation took; fail past ``max_rejected``; point at the way out."""
        n = len(self.docs)
        rejected = n - len(self.kept)  # truncated documents are kept
        lost_records = rejected + self.truncated
        record_share = lost_records / n if n else 0.0
        token_share = self.lost_tokens / (self.totals.total + self.lost_tokens) if self.lost_tokens else 0.0
        hints = []
        if self.overlong_dropped:
            hints.append(f"{self.overlong_dropped:,} records are longer than --seq-len {self.seq_len} (the longest "
                         f"has {self.longest_dropped:,} tokens): raise --seq-len, or --overlong truncate keeps their "
                         f"first {self.seq_len} tokens")  # fmt: skip
        if self.reasons["overlong_no_loss"]:
            hints.append(f"{self.reasons['overlong_no_loss']:,} records have no response in their first {self.seq_len} "
                         "tokens, so truncating them leaves nothing to learn: raise --seq-len")  # fmt: skip
        hint = "; ".join(hints)
        if not len(self.kept):
            detail = ", ".join(f"{k}: {v}" for k, v in self.reasons.most_common()) or "the inputs hold no records"
            raise BuildError(f"no record could be packed ({n} read; {detail})" + (f"; {hint}" if hint else ""))
        limit = WARN_LOST_SHARE if self.max_rejected is None else self.max_rejected
        what = ""
        if max(record_share, token_share) > limit:
            what = (f"{rejected:,} of {n:,} records rejected and {self.truncated:,} truncated ({record_share:.1%}), "
                    f"{self.lost_tokens:,} of their tokens not packed ({token_share:.1%} of those counted)"
                    )  # fmt: skip
        if what and self.max_rejected is not None:
            raise BuildError(f"{what}: more than --max-rejected {self.max_rejected}; nothing was written"
                             + (f"; {hint}" if hint else ""))  # fmt: skip
        if hint:
            self.ev.notice(hint)
        if what:
            self.ev.notice(f"{what}; the reasons are in rejected.jsonl; --max-rejected FRACTION fails such a build")

    # -- the whole build -------------------------------------------------------

    def run(self, inputs: list[str], fmt: str | None, blank_turns: str, t0: float) -> dict:
        out = self.out
        reader = self.reader = RecordReader(inputs, fmt, blank_turns=blank_turns)
        self.ev.progress("reading", 0, reader.total_bytes)
        self.spill = TokenSpillWriter(out)
        self.rejections = RejectionSpill(out)
        try:
            self.checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packer-loader-check")
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="packer-encode") as self.pool:
                try:
                    for item in reader:
                        self.add_record(item)
                    self.submit()
                    while self.pending:
                        self.take()
                except BaseException:
                    for p in self.pending:
                        p.encodings.cancel()
                    raise
            self.loader_difference = self.loader_check.result() if self.loader_check else None
        finally:
            self.checker.shutdown(wait=False, cancel_futures=True)
            self.spill.close()
            self.rejections.close()
        if self.loader_difference:
            self.ev.notice(f"the other tokenizer loader gives other ids: {self.loader_difference}; these shards "
                           f"follow --tokenizer-loader {self.tok.loader}: train and serve with the same")  # fmt: skip
        self.seen = SeenTable(capacity=1)  # the duplicate table is done with; free it before packing

        self.ev.progress("reading", reader.total_bytes, reader.total_bytes)
        n_records = len(self.docs)
        tpl = self.tpl
        self.check_losses()
        if tpl.missing_end:
            self.ev.notice(
                f"template {tpl.name!r} closes assistant turns with no special token of this tokenizer: "
                "the 'end' role is empty, so no strategy teaches the model to stop"
            )

        # -- pack and write shards: lengths only in memory, tokens from the spill -----------
        self.docs.trim()
        self.kept.trim()
        lengths, kept_ids = self.kept.length, self.kept.doc_id
        self.ev.progress("packing", 0, 1)
        order, row_offsets = rows_from_bins(pack(lengths, self.seq_len, self.packing))
        self.ev.progress("packing", 1, 1)
        checkpoint("packed")
        writer = ShardWriter(out, self.strategy_table, self.shard_bytes)
        tokens = TokenSpillReader(out, lengths)
        try:
            w_shard, w_row, w_off = writer.write(_Counted(tokens, len(lengths), self.ev), lengths, kept_ids, order,
                                                 row_offsets)  # fmt: skip
        finally:
            tokens.close()
        del order
        remove_spill(out, tokens_only=True)

        # -- documents.arrow and rejected.jsonl ---------------------------------------------
        where = {}
        for name, values in (("shard", w_shard), ("row", w_row), ("offset", w_off)):
            col = np.full(n_records, NULL, dtype=np.int32)
            col[kept_ids] = values
            where[name] = col
        del w_shard, w_row, w_off
        docs = self.docs
        paths = pa.array(self.file_paths, type=pa.string())
        statuses = pa.array(STATUSES, type=pa.string())
        write_documents(
            out / DOCUMENTS_FILE,
            {
                "doc_id": lambda a, b: pa.array(np.arange(a, b, dtype=np.int64)),
                "input": lambda a, b: paths.take(pa.array(docs.file[a:b])),
                "record": lambda a, b: pa.array(docs.record[a:b], type=pa.int64()),
                "status": lambda a, b: statuses.take(pa.array(docs.status[a:b])),
                **{name: _nullable(col) for name, col in where.items()},
                **{name: _nullable(getattr(docs, name)) for name in
                   ("tokens", "turns", "prompt_tokens", "response_tokens", "prompt_words", "response_words")},
                "duplicate_of": _nullable(docs.duplicate_of, pa.int64()),
            },
            n_rows=n_records,
        )  # fmt: skip

        def write_rejected(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(self.rejections.merged())

        write_atomic(out / REJECTED_FILE, write_rejected)
        n_rejection_lines = self.rejections.count
        remove_spill(out)

        # -- manifest -------------------------------------------------------------
        status_counts = np.bincount(docs.status, minlength=len(STATUSES))
        rejected = {STATUSES[c]: int(n) for c, n in enumerate(status_counts) if n and c not in (_PACKED, _TRUNCATED)}
        tok = self.tok
        n_rows = len(row_offsets) - 1
        role_counts = self.totals.role_counts
        manifest = {
            "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION},
            "packer_version": __version__,
            "seq_len": self.seq_len,
            "tokenizer": {
                "source": tok.source,
                "sha256": tok.sha256,
                "vocab_size": tok.vocab_size,
                "bos_token": tok.bos_token,
                "eos_token": tok.eos_token,
                "pad_token": tok.pad_token,
                "bos_id": tok.token_id(tok.bos_token),
                "eos_id": tok.token_id(tok.eos_token),
                "pad_id": tok.token_id(tok.pad_token),
                "loader": tok.loader,
                "transformers_version": tok.transformers_version,
                "loader_difference": self.loader_difference,
            },
            "template": {"name": tpl.name, "sha256": tpl.sha256, "source": tpl.source, "system": tpl.system,
                         "refuses_system": tpl.refuses_system},
            "packing": {
                "algorithm": self.packing,
                "rows": n_rows,
                "lower_bound_rows": lower_bound(lengths, self.seq_len),
                "efficiency": efficiency(lengths, n_rows, self.seq_len),
                "overlong": self.overlong,
            },
            "roles": dict(R.ROLES),
            "strategies": {k: list(v) for k, v in self.strategy_table.items()},
            "inputs": [
                {"path": i.path, "sha256": i.sha256, "format": i.format, "records": i.records} for i in reader.inputs
            ],
            "counts": {
                "records": n_records,
                "packed": len(self.kept),
                "truncated": self.truncated,
                "rejected": dict(sorted(rejected.items())),
                "dropped_turns": dict(sorted(self.dropped_turns.items())),
                "system_policy": dict(sorted(self.system_policy.items())),
                "duplicates": self.duplicates,
            },
            "tokens": {
                "total": self.totals.total,
                "per_role": {name: int(role_counts[code]) for name, code in R.ROLES.items()},
                "loss": self.totals.loss(),
                "control_absorbed_chars": self.absorbed,
            },
            "shards": [vars(s) for s in writer.shards],
            "documents": {"file": DOCUMENTS_FILE, "sha256": file_sha256(out / DOCUMENTS_FILE)},
            "rejected": {"file": REJECTED_FILE, "records": n_rejection_lines},
            "build_key": self.key,
            "build_seconds": round(time.perf_counter() - t0, 3),
        }
        assert manifest["counts"]["records"] == manifest["counts"]["packed"] + sum(rejected.values())

        checkpoint("manifest")

        def write_manifest(tmp: Path) -> None:
            tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

        write_atomic(out / MANIFEST_FILE, write_manifest)
        return manifest


class _Counted:
    """The token source of the shard writer, reporting the documents it has taken ("writing" progress)."""

    def __init__(self, source: TokenSpillReader, total: int, events: BuildEvents) -> None:
        self.source, self.total, self.events, self.done = source, total, events, 0

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        checkpoint("writing")
        got = self.source.gather(docs)
        self.done += len(docs)
        self.events.progress("writing", self.done, self.total)
        return got


def _rejected_line(rej: Rejection, action: str) -> str:
    line = {
        "doc_id": rej.source.doc_id, "input": rej.source.path, "record": rej.source.index,
        "action": action, "reason": rej.reason, "detail": rej.detail,
    }  # fmt: skip
    return json.dumps(line, ensure_ascii=False) + "\n"


def _nullable(values: np.ndarray, type: pa.DataType = pa.int32()) -> Callable[[int, int], pa.Array]:  # noqa: B008
    """An integer column of documents.arrow, NULL -> null (stored as 0, as pyarrow stores a None)."""

    def chunk(a: int, b: int) -> pa.Array:
        v = values[a:b]
        null = v == NULL
        return pa.array(np.where(null, 0, v).astype(type.to_pandas_dtype()), type=type, mask=null)

    return chunk
