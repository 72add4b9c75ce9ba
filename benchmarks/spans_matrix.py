"""The walk of token pieces against ``Encoding.offsets`` on every whole data file, for every SentencePiece-style
real tokenizer (issue 28).

Each (tokenizer, data file) pair is built twice with the same options: ``tokenizer_backend="offsets"`` (every
token labelled from ``Encoding.offsets``, the reference) and the default (``tokenizers``, which labels these
tokenizers from the walk of :mod:`packer.tokens.spans`). A pair is identical when every file is (the manifest
without ``build_seconds`` and ``tokenizer.backend``) and the default build did not fall back to offsets (a
checked record whose spans differ makes it start over from offsets, which would give identical bytes for
another reason: such a pair is reported ``no (fell back)``). Prints a markdown table and exits 1 if any pair is
not identical, with the first documents that differ.

    python benchmarks/spans_matrix.py                                   # all of ../shared/data x 4 tokenizers
    python benchmarks/spans_matrix.py --tokenizer gemma-2 --file 'alpaca_*'

Options as in ``benchmarks/tiktoken_matrix.py`` (seq_len 4096, ``overlong="truncate"``, ``blank_turns="drop"``,
one worker); preference files (DPO pairs, KTO) are built as such. Timings are wall seconds of one ``packer.build``
call each, after a warm-up build per tokenizer and path (imports, numba caches, out of the table).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiktoken_matrix import OPTIONS, SHARED, differences, digests

#: tokenizer directory -> the template its builds use (Llama 2's and Gemma 2's tokenizer.json have none here)
TOKENIZERS = {
    "mistral-7b-instruct-v0.1": "tokenizer",
    "phi-3-mini-instruct": "tokenizer",
    "llama-2": "chatml",
    "gemma-2": "chatml",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data")
    ap.add_argument("--tokenizers", type=Path, default=SHARED / "tokenizers")
    ap.add_argument("--tokenizer", action="append", choices=list(TOKENIZERS), help="only these (repeatable)")
    ap.add_argument("--file", action="append", help="only data files matching this glob (repeatable)")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--scratch", type=Path, default=None, help="where the outputs are built (default: a temp dir)")
    args = ap.parse_args()

    from packer import build
    from packer.pipeline.build import BuildEvents

    if not args.data.is_dir() or not args.tokenizers.is_dir():
        print(f"no data or tokenizers at {args.data} / {args.tokenizers}", file=sys.stderr)
        return 2
    files = sorted(p for p in args.data.iterdir() if p.suffix in (".json", ".jsonl")
                   and (not args.file or any(fnmatch.fnmatch(p.name, g) for g in args.file)))
    names = args.tokenizer or list(TOKENIZERS)
    scratch = Path(tempfile.mkdtemp(prefix="spans-matrix-", dir=args.scratch))
    warm = scratch / "warm.jsonl"
    warm.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"},
                                                     {"role": "assistant", "content": f"Hello {i}!"}]}) + "\n"
                            for i in range(20)))
    print(f"seq_len {args.seq_len}, {', '.join(f'{k} {v}' for k, v in OPTIONS.items())}, 1 worker; "
          f"{len(files)} files x {len(names)} tokenizers\n", flush=True)
    print("| tokenizer | file | records | packed tokens | offsets s | walk s | speed-up | identical |")
    print("|---|---|---:|---:|---:|---:|---:|---|", flush=True)
    failures: list[str] = []
    totals: dict[str, list[float]] = {}
    try:
        for name in names:
            kw = {"tokenizer": args.tokenizers / name, "template": TOKENIZERS[name], "seq_len": args.seq_len,
                  **OPTIONS}
            for backend in ("offsets", "tokenizers"):
                build([warm], scratch / "warm", tokenizer_backend=backend, overwrite=True, **kw)
            for f in files:
                ref, walk = scratch / f"{name}-offsets", scratch / f"{name}-walk"
                t0 = time.perf_counter()
                m = build([f], ref, tokenizer_backend="offsets", **kw)
                t_ref = time.perf_counter() - t0
                notices: list[str] = []
                t0 = time.perf_counter()
                build([f], walk, events=BuildEvents(on_notice=notices.append), **kw)
                t_walk = time.perf_counter() - t0
                (a, _), (b, backend) = digests(ref), digests(walk)
                if backend != "tokenizers":
                    same = "no (fell back)"
                    failures.append(f"{name} x {f.name}: the build fell back to offsets: {notices}")
                elif a != b:
                    same = "**no**"
                    failures.append(f"{name} x {f.name}:\n    " + "\n    ".join(
                        differences(ref, walk, names=("offsets", "walk"))))
                else:
                    same = "yes"
                tot = totals.setdefault(name, [0, 0, 0.0, 0.0])
                for i, v in enumerate((m["counts"]["records"], m["tokens"]["total"], t_ref, t_walk)):
                    tot[i] += v
                print(f"| {name} | {f.name} | {m['counts']['records']:,} | {m['tokens']['total']:,} | "
                      f"{t_ref:.2f} | {t_walk:.2f} | {t_ref / t_walk:.2f}x | {same} |", flush=True)
                shutil.rmtree(ref)
                shutil.rmtree(walk)
        for name, (records, tokens, t_ref, t_walk) in totals.items():
            print(f"| **{name}** | **all {len(files)} files** | {records:,} | {tokens:,} | {t_ref:.2f} | "
                  f"{t_walk:.2f} | {t_ref / t_walk:.2f}x | |", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print(f"\n{len(failures)} pair(s) NOT identical:", *failures, sep="\n")
        return 1
    print(f"\nall {len(totals) * len(files)} pairs identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
