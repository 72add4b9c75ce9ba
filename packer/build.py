"""``packer build`` as a Python API: records -> segments -> tokens -> rows -> shards.

    >>> from packer import build
    >>> manifest = build(["data.json"], "shards/", tokenizer="path/to/model", seq_len=4096)
    >>> manifest["counts"]
    {'records': 1000, 'packed': 997, 'truncated': 0, 'rejected': {'empty_output': 3}, ...}

Every input record ends up in the shards or in ``rejected.jsonl`` with its
reason: ``records == packed + sum(rejected.values())``.

Output is atomic: the manifest is written last, and a directory holding a
``.packer-incomplete`` marker (a build that died) is cleared by the next build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from . import roles as R
from .formats import RecordReader
from .pack import ALGORITHMS, efficiency, lower_bound, pack, rows_from_bins
from .records import BuildError, Conversation, Rejection, Source
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
from .templates import BUILTIN_TEMPLATES, ChatTemplate, Rendered
from .tokenize import TokenizerInfo, char_codes, load_tokenizer, tokenize_batch

OVERLONG_POLICIES = ("drop", "truncate")
INCOMPLETE_MARKER = ".packer-incomplete"
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024


@dataclass
class BuildEvents:
    """Hooks the CLI uses for progress and messages; all optional."""

    on_records: Callable[[int, int], None] | None = None  # (records read, tokens so far)
    on_rejection: Callable[[Rejection], None] | None = None
    on_notice: Callable[[str], None] | None = None


@dataclass
class _Docs:
    """Per-record accumulators, indexed by doc_id."""

    source: list[Source] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    turns: list[int | None] = field(default_factory=list)
    prompt_words: list[int | None] = field(default_factory=list)
    response_words: list[int | None] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    # packed documents only, in doc_id order
    packed_ids: list[int] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)
    roles: list[np.ndarray] = field(default_factory=list)
    last: list[np.ndarray] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


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
    h = hashlib.blake2b(digest_size=16)
    for m in conv.messages:
        for part in (m.role, m.content, m.input):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
    return h.digest()


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BuildError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        incomplete = (out / INCOMPLETE_MARKER).exists()
        if not (overwrite or incomplete):
            raise BuildError(f"{out}: output directory is not empty (use --overwrite to replace it)")
        # the manifest goes first, so a crash from here on leaves no manifest
        # that points at files being removed
        (out / MANIFEST_FILE).unlink(missing_ok=True)
        (out / INCOMPLETE_MARKER).touch()
        for child in out.iterdir():
            if child.name == INCOMPLETE_MARKER:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE_MARKER).touch()


def _up_to_date(out: Path, key: dict) -> dict | None:
    """The manifest of a complete output built with the same key, else None.

    Re-running the same command (after a crash that came too late to matter,
    say) then succeeds without --overwrite; other options still need it.
    """
    try:
        manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if (out / INCOMPLETE_MARKER).exists() or manifest.get("build_key") != key:
        return None
    for shard in manifest.get("shards", []):
        path = out / shard["file"]
        if not path.is_file() or path.stat().st_size != shard["bytes"]:
            return None
    return manifest


def resolve_template(name: str, tok: TokenizerInfo) -> ChatTemplate:
    """``auto``: the tokenizer's own chat template if it has one, else ``alpaca``."""
    if name == "auto":
        name = "tokenizer" if tok.chat_template else "alpaca"
    try:
        return ChatTemplate.named(name, tok)
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
    """
    t0 = time.perf_counter()
    ev = events or BuildEvents()
    if not inputs:
        raise BuildError("no input files given")
    if seq_len < 2:
        raise BuildError(f"--seq-len must be at least 2, not {seq_len}")
    if packing not in ALGORITHMS:
        raise BuildError(f"unknown packing {packing!r}; choose {'|'.join(ALGORITHMS)}")
    if overlong not in OVERLONG_POLICIES:
        raise BuildError(f"unknown overlong policy {overlong!r}; choose {'|'.join(OVERLONG_POLICIES)}")
    if template not in ("auto", "tokenizer", *BUILTIN_TEMPLATES):
        raise BuildError(f"unknown template {template!r}; choose auto|tokenizer|{'|'.join(BUILTIN_TEMPLATES)}")
    try:
        strategy_table = R.strategy_table(strategies)
    except ValueError as e:
        raise BuildError(str(e)) from None
    for p in inputs:
        if not Path(p).is_file():
            raise BuildError(f"{p}: no such input file")
    tok = tokenizer if isinstance(tokenizer, TokenizerInfo) else load_tokenizer(tokenizer)
    tpl = resolve_template(template, tok)
    out = Path(output)
    key = {
        "inputs": [file_sha256(Path(p)) for p in inputs],
        "format": fmt,
        "tokenizer": tok.sha256,
        "template": tpl.sha256,
        "seq_len": seq_len,
        "strategies": {k: list(v) for k, v in strategy_table.items()},
        "packing": packing,
        "overlong": overlong,
        "dedupe": dedupe,
        "shard_bytes": shard_bytes,
    }
    done = _up_to_date(out, key) if not overwrite else None
    if done is not None:
        if ev.on_notice:
            ev.on_notice(f"{out}: already built from the same inputs and options; nothing to do")
        return done
    _prepare_output(out, overwrite)

    reader = RecordReader([str(p) for p in inputs], fmt)
    docs = _Docs()
    dropped_turns: Counter[str] = Counter()
    truncated = 0
    # exact duplicates: conversation -> the first record that had it
    seen: dict[bytes, Source] = {}
    duplicates = 0
    batch: list[tuple[int, Rendered]] = []
    n_tokens = 0

    def reject(rej: Rejection) -> None:
        docs.status[rej.source.doc_id] = rej.reason
        docs.rejections.append(rej)
        if strict:
            raise BuildError(f"{rej.message()} (--strict)")
        if ev.on_rejection:
            ev.on_rejection(rej)

    def flush() -> None:
        nonlocal truncated, n_tokens
        if not batch:
            return
        tb = tokenize_batch(
            tok.tokenizer,
            [r.text for _, r in batch],
            [r.seg_lengths for _, r in batch],
            [char_codes(r.seg_roles, r.seg_last) for _, r in batch],
        )
        for k, (doc_id, _r) in enumerate(batch):
            a, b = int(tb.offsets[k]), int(tb.offsets[k + 1])
            src = docs.source[doc_id]
            if b - a > seq_len:
                if overlong == "drop":
                    reject(Rejection(src, "overlong", f"{b - a} tokens > seq_len {seq_len}"))
                    continue
                kept = tb.roles[a : a + seq_len]
                if not np.isin(kept, (R.RESPONSE, R.END)).any():
                    reject(
                        Rejection(
                            src, "overlong_no_loss",
                            f"{b - a} tokens > seq_len {seq_len} and the first {seq_len} hold no response",
                        )
                    )  # fmt: skip
                    continue
                docs.status[doc_id] = "truncated"
                docs.rejections.append(Rejection(src, "overlong", f"truncated from {b - a} to {seq_len} tokens"))
                truncated += 1
                b = a + seq_len
            else:
                docs.status[doc_id] = "packed"
            docs.packed_ids.append(doc_id)
            docs.ids.append(tb.ids[a:b])
            docs.roles.append(tb.roles[a:b])
            docs.last.append(tb.last[a:b])
            docs.lengths.append(b - a)
            n_tokens += b - a
        batch.clear()
        if ev.on_records:
            ev.on_records(len(docs.source), n_tokens)

    for item in reader:
        src = item.source
        if src.doc_id != len(docs.source):  # the reader's contract; guard it
            raise BuildError(f"{src.where()}: internal error: records out of order")
        docs.source.append(src)
        docs.status.append("")
        if isinstance(item, Rejection):
            for lst in (docs.turns, docs.prompt_words, docs.response_words):
                lst.append(None)
            reject(item)
            continue
        first = seen.setdefault(_digest(item), src)
        if first is not src:
            duplicates += 1
            if dedupe:
                for lst in (docs.turns, docs.prompt_words, docs.response_words):
                    lst.append(None)
                reject(Rejection(src, "duplicate", f"same conversation as {first.where()}"))
                continue
        dropped_turns.update(item.dropped_turns)
        pw, rw, turns = _words(item)
        docs.prompt_words.append(pw)
        docs.response_words.append(rw)
        docs.turns.append(turns)
        rendered = tpl.render(item)
        if isinstance(rendered, Rejection):
            reject(rendered)
            continue
        batch.append((src.doc_id, rendered))
        if len(batch) >= batch_size:
            flush()
    flush()

    n_records = len(docs.source)
    if not docs.packed_ids:
        reasons = Counter(r.reason for r in docs.rejections)
        detail = ", ".join(f"{k}: {v}" for k, v in reasons.most_common()) or "the inputs hold no records"
        raise BuildError(f"no record could be packed ({n_records} read; {detail})")
    if tpl.missing_end and ev.on_notice:
        ev.on_notice(
            f"template {tpl.name!r} closes assistant turns with no special token of this tokenizer: "
            "the 'end' role is empty, so no strategy teaches the model to stop"
        )

    # -- pack ---------------------------------------------------------------
    lengths = np.asarray(docs.lengths, dtype=np.int64)
    bins = pack(lengths, seq_len, packing)
    order, row_offsets = rows_from_bins(bins)
    ids = np.concatenate(docs.ids)
    roles = np.concatenate(docs.roles)
    last = np.concatenate(docs.last)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    packed_ids = np.asarray(docs.packed_ids, dtype=np.int64)

    writer = ShardWriter(out, strategy_table, shard_bytes)
    w_shard, w_row, w_off = writer.write(ids, roles, last, starts, lengths, packed_ids, order, row_offsets)

    # -- documents.arrow and rejected.jsonl -------------------------------------
    is_prompt = np.isin(roles, R.role_codes(R.PROMPT_ROLES))
    bounds = starts
    prompt_tokens = np.add.reduceat(is_prompt.astype(np.int64), bounds)
    response_tokens = np.add.reduceat((roles == R.RESPONSE).astype(np.int64), bounds)
    col: dict[str, list] = {name: [None] * n_records for name in
                            ("shard", "row", "offset", "tokens", "prompt_tokens", "response_tokens")}  # fmt: skip
    for name, values in (
        ("shard", w_shard), ("row", w_row), ("offset", w_off), ("tokens", lengths),
        ("prompt_tokens", prompt_tokens), ("response_tokens", response_tokens),
    ):  # fmt: skip
        target = col[name]
        for doc_id, v in zip(docs.packed_ids, values.tolist(), strict=True):
            target[doc_id] = v
    write_documents(
        out / DOCUMENTS_FILE,
        {
            "doc_id": list(range(n_records)),
            "input": [s.path for s in docs.source],
            "record": [s.index for s in docs.source],
            "status": docs.status,
            "turns": docs.turns,
            "prompt_words": docs.prompt_words,
            "response_words": docs.response_words,
            **col,
        },
    )

    def write_rejected(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for rej in sorted(docs.rejections, key=lambda r: r.source.doc_id):
                action = "truncated" if docs.status[rej.source.doc_id] == "truncated" else "rejected"
                line = {
                    "doc_id": rej.source.doc_id, "input": rej.source.path, "record": rej.source.index,
                    "action": action, "reason": rej.reason, "detail": rej.detail,
                }  # fmt: skip
                f.write(json.dumps(line, ensure_ascii=False) + "\n")

    write_atomic(out / REJECTED_FILE, write_rejected)

    # -- manifest -------------------------------------------------------------
    rejected = Counter(s for s in docs.status if s not in ("packed", "truncated"))
    role_counts = np.bincount(roles, minlength=9)
    loss = {}
    for name, names in strategy_table.items():
        lut = np.zeros(9, dtype=bool)
        lut[list(R.role_codes(names))] = True
        per_role = int(role_counts[lut].sum())
        loss[name] = int((lut[roles] & last).sum()) if name in R.LAST_TURN_STRATEGIES else per_role
    n_rows = len(row_offsets) - 1
    manifest = {
        "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION},
        "packer_version": __version__,
        "seq_len": seq_len,
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
        },
        "template": {"name": tpl.name, "sha256": tpl.sha256, "source": tpl.source},
        "packing": {
            "algorithm": packing,
            "rows": n_rows,
            "lower_bound_rows": lower_bound(lengths, seq_len),
            "efficiency": efficiency(lengths, n_rows, seq_len),
            "overlong": overlong,
        },
        "roles": dict(R.ROLES),
        "strategies": {k: list(v) for k, v in strategy_table.items()},
        "inputs": [
            {"path": i.path, "sha256": i.sha256, "format": i.format, "records": i.records} for i in reader.inputs
        ],
        "counts": {
            "records": n_records,
            "packed": len(docs.packed_ids),
            "truncated": truncated,
            "rejected": dict(sorted(rejected.items())),
            "dropped_turns": dict(sorted(dropped_turns.items())),
            "duplicates": duplicates,
        },
        "tokens": {
            "total": len(roles),
            "per_role": {name: int(role_counts[code]) for name, code in R.ROLES.items()},
            "loss": loss,
        },
        "shards": [vars(s) for s in writer.shards],
        "documents": {"file": DOCUMENTS_FILE, "sha256": file_sha256(out / DOCUMENTS_FILE)},
        "rejected": {"file": REJECTED_FILE, "records": len(docs.rejections)},
        "build_key": key,
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    assert manifest["counts"]["records"] == manifest["counts"]["packed"] + sum(rejected.values())

    def write_manifest(tmp: Path) -> None:
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    write_atomic(out / MANIFEST_FILE, write_manifest)
    (out / INCOMPLETE_MARKER).unlink()
    return manifest
