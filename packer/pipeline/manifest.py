"""The manifest of a build: what was built, from what, with which options, and every file's checksum.

``manifest.json`` is written last (:func:`write_manifest`), so an output with
a manifest is complete; a rebuild with the same :func:`build key <up_to_date>`
is a no-op. Its fields are described in ``schemas/manifest.schema.json``::

    {"format": {"name": "packer-shards", "version": 1}, "seq_len": 4096,
     "counts": {"records": 191, "packed": 185, "truncated": 0, "rejected": {"empty_output": 6}, ...},
     "tokens": {"total": 20480, "per_role": {...}, "loss": {"instruction_tuning": 9140, ...}},
     "shards": [{"file": "shard-00000.arrow", "rows": 6, "tokens": 20480, "bytes": ..., "sha256": ...}], ...}

``counts`` are of all records; ``packing``, ``tokens`` and ``shards`` describe the train split. With an
eval split, ``eval`` describes its options and its documents, rows, tokens and shards the same way::

    "eval": {"fraction": 0.05, "records": null, "seed": 0, "documents": 9, "leaked_duplicates": 0,
             "packing": {...}, "tokens": {...}, "shards": [{"file": "eval-shard-00000.arrow", ...}]}

With a mixture (``--mix``), ``counts.unsampled`` counts the records it used 0 times
(``records == packed + sum(rejected) + unsampled``; ``packed`` counts records, not copies) and ``mix``
describes the train split by input, copies included::

    "mix": {"seed": 0, "inputs": [{"path": "a.jsonl", "weight": 1.0, "records": 100, "documents": 98,
                                   "tokens": 9000, "token_share": 0.6}, ...]}
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import fsio
from .._version import __version__
from ..output import roles as R
from ..output.layout import (
    DOCUMENTS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    REJECTED_FILE,
    ShardError,
    check_file_name,
    file_sha256,
    manifest_files,
    output_file,
    output_splits,
    split_shards,
    write_atomic,
)
from ..tokens.loader import TokenizerInfo
from ..tokens.templates import ChatTemplate
from .combine import Combined, SplitRows
from .pack import efficiency, lower_bound
from .write import TokenTotals, Written


def up_to_date(out: Path | str, manifest: dict, key: dict) -> bool:
    """Whether ``manifest`` describes a complete output built with the same key, in this packer's format version.

    Re-running the same command then succeeds without --overwrite; other
    options still need it. ``out`` may be a URI (:mod:`packer.fsio`).
    """
    if manifest.get("build_key") != key or manifest.get("format", {}).get("version") != FORMAT_VERSION:
        return False
    shards = [s for split in output_splits(manifest) for s in split_shards(manifest, split)]
    try:  # a manifest naming a file outside the output (edited) describes no output of ours
        for name in manifest_files(manifest):
            check_file_name(name)
        paths = [Path(output_file(out, s["file"])) for s in shards] if not fsio.is_uri(out) else []
    except ShardError:
        return False
    if fsio.is_uri(out):
        return fsio.sizes(str(out), [s["file"] for s in shards]) == [s["bytes"] for s in shards]
    for path, shard in zip(paths, shards, strict=True):
        if not path.is_file() or path.stat().st_size != shard["bytes"]:
            return False
    return True


def make_manifest(
    out: Path, c: Combined, w: Written, *, tok: TokenizerInfo, tpl: ChatTemplate, key: dict, inputs: list[str],
    strategy_table: dict[str, tuple[str, ...]], seq_len: int, packing: str, overlong: str, seconds: float,
) -> dict:
    """The manifest of the output in ``out`` (its files written)."""
    rejected = c.rejected()
    written = sum(t.total for t in w.split_totals.values())
    if written != c.tokens:
        raise RuntimeError(f"internal error: {written} tokens written, {c.tokens} kept")
    train = c.splits[0]
    held_out = {}
    if c.eval_split is not None:
        held_out["eval"] = {
            **c.eval_split.key(),
            "documents": len(c.splits[1].members),
            "leaked_duplicates": c.eval_leaked,
            "packing": _packing(c, c.splits[1], seq_len),
            "tokens": _tokens(w.split_totals["eval"]),
            "shards": [vars(s) for s in w.split_shards["eval"]],
        }
    manifest = {
        "format": {"name": FORMAT_NAME, "version": w.version},
        "packer_version": __version__,
        "seq_len": seq_len,
        "tokenizer": {
            "source": tok.hub_name or tok.source,
            # the source as typed is relative to where the build ran; readers elsewhere look here too (a Hub id:
            # its snapshot in the Hub cache)
            "resolved": str(Path(tok.source).resolve()),
            # a Hub id: the repository and the commit of the files (what a reader elsewhere finds in its cache)
            **({"repo_id": tok.repo_id, "revision": tok.revision} if tok.repo_id else {}),
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
            "loader_difference": c.loader_difference,
        },
        "template": {"name": tpl.name, "sha256": tpl.sha256, "source": tpl.source, "system": tpl.system,
                     "refuses_system": tpl.refuses_system},
        "packing": {"algorithm": packing, **({"scope": "part"} if c.pack_scope == "part" else {}),
                    **_packing(c, train, seq_len), "overlong": overlong},
        "roles": dict(R.ROLES),
        "strategies": {k: list(v) for k, v in strategy_table.items()},
        "inputs": [
            {"path": path, "sha256": sha, "format": fmt, "records": records}
            for path, sha, (records, fmt) in zip(inputs, key["inputs"], c.inputs, strict=True)
        ],
        "counts": {
            "records": c.records,
            "packed": c.packed,
            "truncated": c.truncated,
            "rejected": dict(sorted(rejected.items())),
            "dropped_turns": dict(sorted(c.dropped_turns.items())),
            "system_policy": dict(sorted(c.system_policy.items())),
            "duplicates": c.duplicates,
            **({"unsampled": c.unsampled} if c.mix is not None else {}),
            **({"split": c.split, "split_pieces": c.split_pieces} if overlong == "split" else {}),
        },
        "tokens": {**_tokens(w.totals), "control_absorbed_chars": c.absorbed},
        "shards": [vars(s) for s in w.shards],
        "documents": {"file": DOCUMENTS_FILE, "sha256": file_sha256(out / DOCUMENTS_FILE)},
        "rejected": {"file": REJECTED_FILE, "records": w.rejection_lines},
        **held_out,
        **({"mix": _mix(c, inputs)} if c.mix is not None else {}),
        "build_key": key,
        "build_seconds": round(seconds, 3),
    }
    counts = manifest["counts"]
    assert counts["records"] == counts["packed"] + sum(rejected.values()) + counts.get("unsampled", 0)
    return manifest


def _mix(c: Combined, inputs: list[str]) -> dict:
    """The manifest's ``mix``: per input, its weight and what the train split packs of it."""
    assert c.mix is not None
    counts = c.mix_counts(c.splits[0])
    total = sum(t for _, t in counts)
    return {"seed": int(c.mix.seed), "inputs": [
        {"path": path, "weight": float(w), "records": records, "documents": d, "tokens": t,
         "token_share": round(t / total, 6) if total else 0.0}
        for path, w, (records, _), (d, t) in zip(inputs, c.mix.weights, c.inputs, counts, strict=True)]}


def _packing(c: Combined, split: SplitRows, seq_len: int) -> dict:
    lengths = c.kept_len[split.members]
    return {"rows": split.rows, "lower_bound_rows": lower_bound(lengths, seq_len),
            "efficiency": efficiency(lengths, split.rows, seq_len)}


def _tokens(totals: TokenTotals) -> dict:
    return {"total": totals.total, "per_role": {name: int(totals.role_counts[code]) for name, code in R.ROLES.items()},
            "loss": totals.loss(), "untrained": int(totals.untrained_counts.sum()),
            "untrained_per_role": {name: int(totals.untrained_counts[code]) for name, code in R.ROLES.items()
                                   if totals.untrained_counts[code]},
            # only where some message other than the assistant's is marked "training": true (format version 3)
            **({"forced": int(totals.forced_counts.sum()),
                "forced_per_role": {name: int(totals.forced_counts[code]) for name, code in R.ROLES.items()
                                    if totals.forced_counts[code]}} if totals.forced_counts.any() else {}),
            "last_turn_loss_per_role": {strategy: {name: int(counts[code]) for name, code in R.ROLES.items()
                                                   if counts[code]}
                                        for strategy, counts in totals.last_loss_per_role.items()}}


def write_manifest(out: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (atomically: it marks the output complete)."""

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    write_atomic(out / MANIFEST_FILE, write)
