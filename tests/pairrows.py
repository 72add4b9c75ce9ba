"""Pair rows made by hand, as the contract lays them out, for the training tests (until the build writes them;
later tests compare these with real build output).

Each side is tokenized whole (``apply_chat_template(prompt + side)``, or taken from an SFT build of that
conversation for its real roles and masks); the shared prefix is the longest common token prefix, capped so each
side keeps >= 1 token; the row is ``[prefix][chosen suffix][rejected suffix]`` with ``branch`` 0/1/2 and one
``seq_lens`` entry per pair (``--pairs shared``), or ``[chosen][rejected]`` with branch 1s then 2s and two
entries (``--pairs separate``). A "side" here is a dict of per-token numpy columns (``input_ids``, ``roles``,
``trainable``, ``mask_<strategy>``...).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from packer.output import roles as R

Side = dict[str, np.ndarray]
#: the masks of the hand-made sides: ``full`` every token, ``completion`` what TRL scores (after the prompt)
HAND_STRATEGIES = ("full", "completion")


def chat_ids(tok, messages: list[dict], **kwargs) -> list[int]:  # type: ignore[no-untyped-def]
    """``tok.apply_chat_template(messages)`` token ids (transformers 4 returns a list, 5 a BatchEncoding)."""
    out = tok.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(out["input_ids"] if isinstance(out, Mapping) else out)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of ``a`` and ``b``, capped so each keeps >= 1 token."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return min(n, len(a) - 1, len(b) - 1)


def hand_side(ids: Sequence[int], prompt_len: int) -> Side:
    """A side from its ids: tokens before ``prompt_len`` are the prompt (role instruction), the rest the completion
    (role response); masks ``full`` and ``completion`` (TRL's completion mask)."""
    n = len(ids)
    completion = np.arange(n) >= prompt_len
    return {
        "input_ids": np.asarray(ids, dtype=np.int32),
        "roles": np.where(completion, R.RESPONSE, R.INSTRUCTION).astype(np.uint8),
        "trainable": np.ones(n, dtype=bool),
        "mask_full": np.ones(n, dtype=bool),
        "mask_completion": completion,
    }


def chat_sides(tok, prompt: list[dict], chosen: list[dict], rejected: list[dict]) -> tuple[Side, Side]:  # type: ignore[no-untyped-def]
    """Both sides of a conversational pair, tokenized whole; the prompt is where TRL puts it (the common prefix of
    ``apply_chat_template(prompt, add_generation_prompt=True)`` and each side)."""
    full_c, full_r = chat_ids(tok, prompt + chosen), chat_ids(tok, prompt + rejected)
    gen = chat_ids(tok, prompt, add_generation_prompt=True)
    # uncapped, as TRL's common_prefix_length: a sentinel on each list
    prompt_len = min(common_prefix([*gen, -1], [*full_c, -2]), common_prefix([*gen, -1], [*full_r, -2]))
    return hand_side(full_c, prompt_len), hand_side(full_r, prompt_len)


def shared_unit(chosen: Side, rejected: Side, doc_id: int) -> dict[str, np.ndarray]:
    """One pair laid out ``[prefix][chosen suffix][rejected suffix]`` (``--pairs shared``)."""
    p = common_prefix(chosen["input_ids"].tolist(), rejected["input_ids"].tolist())
    cols = {k: np.concatenate([chosen[k][:p], chosen[k][p:], rejected[k][p:]]) for k in chosen}
    n_c, n_r = len(chosen["input_ids"]) - p, len(rejected["input_ids"]) - p
    cols["branch"] = np.repeat(np.array([R.PREFIX, R.CHOSEN, R.REJECTED], np.uint8), [p, n_c, n_r])
    cols["seq_lens"] = np.array([p + n_c + n_r], np.int32)
    cols["doc_ids"] = np.array([doc_id], np.int64)
    return cols


def separate_unit(chosen: Side, rejected: Side, doc_id: int) -> dict[str, np.ndarray]:
    """One pair as two whole documents ``[chosen][rejected]`` (``--pairs separate``)."""
    cols = {k: np.concatenate([chosen[k], rejected[k]]) for k in chosen}
    n_c, n_r = len(chosen["input_ids"]), len(rejected["input_ids"])
    cols["branch"] = np.repeat(np.array([R.CHOSEN, R.REJECTED], np.uint8), [n_c, n_r])
    cols["seq_lens"] = np.array([n_c, n_r], np.int32)
    cols["doc_ids"] = np.array([doc_id, doc_id], np.int64)
    return cols


def pack(units: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Units (pairs, or documents) concatenated into one row."""
    return {k: np.concatenate([u[k] for u in units]) for k in units[0]}


def pair_rows(pairs: Sequence[tuple[Side, Side]], per_row: Sequence[int], separate: bool = False) -> list[dict]:
    """``pairs`` packed into rows of ``per_row[i]`` pairs each (doc_id = the pair's index)."""
    assert sum(per_row) == len(pairs)
    unit = separate_unit if separate else shared_unit
    units = [unit(c, r, i) for i, (c, r) in enumerate(pairs)]
    starts = np.cumsum([0, *per_row])
    return [pack(units[a:b]) for a, b in itertools.pairwise(starts)]


# -- shards by hand ---------------------------------------------------------------------------------------------


def write_output(dst: Path, rows: Sequence[Mapping[str, np.ndarray]], strategies: Sequence[str], kind: str,
                 pad_id: int = 0, pairs: str | None = None) -> Path:
    """A minimal packer output of ``rows`` in one shard, with the contract's columns (``branch`` list<uint8> per
    token for pair rows, ``labels`` list<bool> per document for KTO rows) and a manifest PackedDataset reads."""
    dst.mkdir(parents=True, exist_ok=True)
    types = {"input_ids": pa.int32(), "roles": pa.uint8(), "seq_lens": pa.int32(), "doc_ids": pa.int64(),
             "trainable": pa.bool_(), "branch": pa.uint8(), "labels": pa.bool_()}
    names = ["input_ids", "roles", "seq_lens", "doc_ids", "trainable",
             *[f"mask_{s}" for s in strategies], *[c for c in ("branch", "labels") if c in rows[0]]]
    table = pa.table({n: pa.array([np.asarray(r[n]).tolist() for r in rows], pa.list_(types.get(n, pa.bool_())))
                      for n in names}).replace_schema_metadata({"format": "packer-shards", "version": "2"})
    path = dst / "shard-00000.arrow"
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    manifest = {
        "format": {"name": "packer-shards", "version": 2},
        "kind": kind,
        "tokenizer": {"pad_id": pad_id},
        "strategies": {s: list(R.BUILTIN_STRATEGIES.get(s, R.ROLES)) for s in strategies},
        "shards": [{"file": path.name, "rows": len(rows), "tokens": int(sum(len(r["input_ids"]) for r in rows)),
                    "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}],
    }
    if pairs is not None:
        manifest["pairs"] = pairs
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst


def built_sides(conversations: Sequence[list[dict]], tokenizer: str | Path, tmp: Path, **options) -> list[Side]:  # type: ignore[no-untyped-def]
    """Each conversation as an SFT ``packer build`` tokenizes it: its ids with their real roles and every strategy's
    mask (the build's per-token columns of that document), in the order given."""
    from packer import build

    from .helpers import read_documents

    tmp.mkdir(parents=True, exist_ok=True)
    src = tmp / "sides.jsonl"
    src.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    build([src], tmp / "out", tokenizer=str(tokenizer), seq_len=4096, **options)
    docs = read_documents(tmp / "out")
    assert sorted(docs) == list(range(len(conversations))), "a side was rejected by the build"
    return [docs[i] for i in range(len(conversations))]


def packed_by_length(units: Sequence[Mapping[str, np.ndarray]], seq_len: int) -> list[dict]:
    """Units packed in order into rows of at most ``seq_len`` tokens (first fit of the next unit, no sorting)."""
    rows: list[list] = [[]]
    used = 0
    for u in units:
        n = len(u["input_ids"])
        if n > seq_len:
            continue
        if used + n > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(u)
        used += n
    return [pack(r) for r in rows if r]
