"""The tiktoken core against tokenizers on every whole data file, for every qualifying real tokenizer (issue 17).

Each (tokenizer, data file) pair is built twice, ``tokenizer_backend="tokenizers"`` and then ``"tiktoken"``,
with the same options, and the two outputs are compared file by file (the manifest without
``build_seconds`` and ``tokenizer.backend``). A pair is identical when every file is, and the tiktoken
build's manifest says ``backend: tiktoken`` (the core made the ids: a build whose sampled check finds a
difference falls back to tokenizers, which would give identical bytes for another reason; such a pair is
reported ``no (fell back)``). Prints a markdown table and exits 1 if any pair is not identical; for such a
pair it prints the first documents whose ids differ (file, record, token position, both id runs).

    python benchmarks/tiktoken_matrix.py                          # all of ../shared/data x 5 tokenizers
    python benchmarks/tiktoken_matrix.py --tokenizer gpt2 --file 'messages_*'   # a part of the matrix
    nohup python benchmarks/tiktoken_matrix.py > /tmp/matrix.md 2>&1 &          # the whole run: 10-20 min

Options of every build: ``seq_len`` 4096 (``--seq-len``), ``overlong="truncate"`` (a longer record is cut,
not dropped, so its text is still encoded and compared), ``blank_turns="drop"`` (a blank turn is dropped with
its answer instead of rejecting the record: more text encoded), one worker, and the template below
(``tokenizer``: the tokenizer's own chat template; GPT-2 has none and gets ``chatml``, whose markers it
encodes as plain text). Records a template refuses (Llama 3's templates render no tool calls) are rejected
by both builds alike; ``rejected.jsonl`` is one of the compared files.

Timings are wall seconds of one ``packer.build`` call each (tokenizer load, render, encode, pack, write),
single runs, after a warm-up build per tokenizer and backend, so the one-off work of a process (imports,
the tiktoken core's construction, which a fresh ``packer build`` pays once) is not in the table; that
construction is timed on its own and printed below the table. Speed-up = tokenizers s / tiktoken s.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc

from packer.output.container import read_table

SHARED = Path(__file__).resolve().parents[2] / "shared"
#: tokenizer directory -> the template its builds use
TOKENIZERS = {
    "qwen2.5-instruct": "tokenizer",
    "qwen3": "tokenizer",
    "llama-3-8b-instruct": "tokenizer",
    "llama-3-8b-instruct-initial": "tokenizer",
    "gpt2": "chatml",  # no chat template of its own
}
OPTIONS = {"overlong": "truncate", "blank_turns": "drop"}


def digests(out: Path) -> tuple[dict[str, str], str]:
    """(file name -> sha256, the manifest read without build_seconds and tokenizer.backend; that backend)."""
    files = {}
    backend = "tokenizers"
    for p in sorted(out.iterdir()):
        data = p.read_bytes()
        if p.name == "manifest.json":
            m = json.loads(data)
            m.pop("build_seconds", None)
            backend = m["tokenizer"].pop("backend", "tokenizers")
            data = json.dumps(m, sort_keys=True).encode()
        files[p.name] = hashlib.sha256(data).hexdigest()
    return files, backend


def documents(out: Path) -> dict[int, dict[str, np.ndarray]]:
    """doc_id -> that document's slice of every per-token column of the shards."""
    manifest = json.loads((out / "manifest.json").read_text())
    docs: dict[int, dict[str, np.ndarray]] = {}
    for shard in manifest["shards"]:
        table = read_table(out / shard["file"])
        cols = [c for c in table.column_names if c not in ("seq_lens", "doc_ids")]
        arrays = {c: table.column(c).to_pylist() for c in [*cols, "seq_lens", "doc_ids"]}
        for r in range(table.num_rows):
            pos = 0
            for length, doc_id in zip(arrays["seq_lens"][r], arrays["doc_ids"][r], strict=True):
                docs[doc_id] = {c: np.asarray(arrays[c][r][pos:pos + length]) for c in cols}
                pos += length
    return docs


def differences(hf: Path, tk: Path, limit: int = 5, names: tuple[str, str] = ("tokenizers", "tiktoken")) -> list[str]:
    """The differing files, then up to ``limit`` documents whose columns differ: record, column, first token
    (``names``: what made ``hf`` and ``tk``)."""
    a_files, _ = digests(hf)
    b_files, _ = digests(tk)
    out = [f"differing files: {sorted(k for k in set(a_files) | set(b_files) if a_files.get(k) != b_files.get(k))}"]
    table = ipc.open_file(hf / "documents.arrow").read_all().select(["doc_id", "record"]).to_pylist()
    record = {r["doc_id"]: r["record"] for r in table}
    a, b = documents(hf), documents(tk)
    if set(a) != set(b):
        out.append(f"documents in one output only: {sorted(set(a) ^ set(b))[:limit]}")
    shown = 0
    for doc_id in sorted(set(a) & set(b)):
        for col, x in a[doc_id].items():
            y = b[doc_id][col]
            if len(x) != len(y) or (x != y).any():
                at = next((i for i in range(min(len(x), len(y))) if x[i] != y[i]), min(len(x), len(y)))
                out.append(f"record {record.get(doc_id, '?')} (doc_id {doc_id}): {col} differs from token {at} of "
                           f"{len(x)}/{len(y)}: {names[0]} {x[max(0, at - 2):at + 8].tolist()} "
                           f"{names[1]} {y[max(0, at - 2):at + 8].tolist()}")
                shown += 1
                break
        if shown >= limit:
            break
    return out


def matrix_args(description: str, tokenizers: list[str]) -> argparse.Namespace:
    """The command line both matrices share."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", type=Path, default=SHARED / "data")
    ap.add_argument("--tokenizers", type=Path, default=SHARED / "tokenizers")
    ap.add_argument("--tokenizer", action="append", choices=tokenizers, help="only these (repeatable)")
    ap.add_argument("--file", action="append", help="only data files matching this glob (repeatable)")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--scratch", type=Path, default=None, help="where the outputs are built (default: a temp dir)")
    return ap.parse_args()


def run_matrix(
    args: argparse.Namespace, templates: dict[str, str], files: list[Path], sides: tuple[str, str],
    before: Callable[[str], str | None] = lambda name: None,
) -> int:
    """Build every (tokenizer, file) with ``tokenizer_backend`` ``sides[0]`` (the reference) and ``sides[1]``;
    print the table; 1 if a pair differs or the second build's manifest does not name ``sides[1]`` (it fell
    back). ``before(name)``: why a tokenizer cannot be compared, or None."""
    from packer import build
    from packer.pipeline.build import BuildEvents

    names = args.tokenizer or list(templates)
    scratch = Path(tempfile.mkdtemp(prefix="matrix-", dir=args.scratch))
    warm = scratch / "warm.jsonl"
    warm.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"},
                                                     {"role": "assistant", "content": f"Hello {i}!"}]}) + "\n"
                            for i in range(20)))
    print(f"seq_len {args.seq_len}, {', '.join(f'{k} {v}' for k, v in OPTIONS.items())}, 1 worker; "
          f"{len(files)} files x {len(names)} tokenizers\n", flush=True)
    print(f"| tokenizer | file | records | packed tokens | {sides[0]} s | {sides[1]} s | speed-up | identical |")
    print("|---|---|---:|---:|---:|---:|---:|---|", flush=True)
    failures: list[str] = []
    totals: dict[str, list[float]] = {}
    try:
        for name in names:
            why = before(name)
            if why is not None:
                failures.append(f"{name}: {why}")
                continue
            kw = {"tokenizer": args.tokenizers / name, "template": templates[name], "seq_len": args.seq_len,
                  **OPTIONS}
            for backend in sides:  # imports, tokenizer caches, the core (out of the timings)
                build([warm], scratch / "warm", tokenizer_backend=backend, overwrite=True, **kw)
            for f in files:
                ref, new = scratch / f"{name}-ref", scratch / f"{name}-new"
                t0 = time.perf_counter()
                m = build([f], ref, tokenizer_backend=sides[0], **kw)
                t_ref = time.perf_counter() - t0
                notices: list[str] = []
                t0 = time.perf_counter()
                build([f], new, tokenizer_backend=sides[1], events=BuildEvents(on_notice=notices.append), **kw)
                t_new = time.perf_counter() - t0
                (a, _), (b, backend) = digests(ref), digests(new)
                if backend != sides[1]:
                    same = "no (fell back)"
                    failures.append(f"{name} x {f.name}: the {sides[1]} build fell back to {backend}: {notices}")
                elif a != b:
                    same = "**no**"
                    failures.append(f"{name} x {f.name}:\n    " + "\n    ".join(differences(ref, new, names=sides)))
                else:
                    same = "yes"
                tot = totals.setdefault(name, [0, 0, 0.0, 0.0])
                for i, v in enumerate((m["counts"]["records"], m["tokens"]["total"], t_ref, t_new)):
                    tot[i] += v
                print(f"| {name} | {f.name} | {m['counts']['records']:,} | {m['tokens']['total']:,} | "
                      f"{t_ref:.2f} | {t_new:.2f} | {t_ref / t_new:.2f}x | {same} |", flush=True)
                shutil.rmtree(ref)
                shutil.rmtree(new)
        for name, (records, tokens, t_ref, t_new) in totals.items():
            print(f"| **{name}** | **all {len(files)} files** | {records:,} | {tokens:,} | {t_ref:.2f} | {t_new:.2f} | "
                  f"{t_ref / t_new:.2f}x | |", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print(f"\n{len(failures)} pair(s) NOT identical:", *failures, sep="\n")
        return 1
    print(f"\nall {len(totals) * len(files)} pairs identical")
    return 0


def data_files(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> list[Path]:
    """The data files the matrix builds: every JSON / JSON Lines file of ``--data`` (``--file`` globs)."""
    return sorted(p for p in args.data.iterdir() if p.suffix in (".json", ".jsonl") and not p.name.startswith(skip)
                  and (not args.file or any(fnmatch.fnmatch(p.name, g) for g in args.file)))


def main() -> int:
    args = matrix_args(__doc__.split("\n\n")[0], list(TOKENIZERS))
    from packer.tokens.tiktoken_core import qualify

    if not args.data.is_dir() or not args.tokenizers.is_dir():
        print(f"no data or tokenizers at {args.data} / {args.tokenizers}", file=sys.stderr)
        return 2
    construct: dict[str, float] = {}

    def qualifies(name: str) -> str | None:
        t0 = time.perf_counter()
        core = qualify(json.loads((args.tokenizers / name / "tokenizer.json").read_text()))
        construct[name] = time.perf_counter() - t0
        return f"does not qualify: {core}" if isinstance(core, str) else None

    # the tiktoken matrix keeps to supervised files (the preference files were refused before issue 27)
    files = data_files(args, skip=("llamafactory_dpo", "llamafactory_kto", "llamafactory_v1_dpo"))
    code = run_matrix(args, TOKENIZERS, files, ("tokenizers", "tiktoken"), before=qualifies)
    print("\nthe tiktoken core's one-off construction (qualify, once per process): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in construct.items()))
    return code


if __name__ == "__main__":
    sys.exit(main())
