"""Experiment: what the tokenizer binding's per-token ``ids`` and ``offsets`` cost the build.

``--cost`` (default) times bringing ``Encoding.ids`` and ``Encoding.offsets`` into numpy, the way
``packer.tokens.tokenize.label_by_offsets`` does, against ``encode_batch`` itself, on the message contents of the first
``--n`` ShareGPT conversations (Qwen2.5 tokenizer). ``--fake-build`` runs ``bench_build.py`` (its other
arguments follow) with ``label_by_offsets`` given fake one-character offsets instead of ``Encoding.offsets``: the
roles are wrong, but the timing shows what the build would gain if labelling needed no offsets at all.

    python benchmarks/exp_offsets.py
    python benchmarks/exp_offsets.py --fake-build --sets sharegpt17k --repeat 2
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from itertools import chain
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAREGPT = ROOT.parent / "shared" / "data" / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"
QWEN = ROOT.parent / "shared" / "tokenizers" / "qwen2.5-instruct" / "tokenizer.json"


def cost(n: int) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(QWEN))
    records = json.loads(SHAREGPT.read_text(encoding="utf-8"))[:n]
    texts = ["".join(t["value"] for t in r["conversations"]) for r in records]
    start = time.perf_counter()
    encs = tok.encode_batch(texts, add_special_tokens=False)
    encode_s = time.perf_counter() - start
    tokens = sum(len(e) for e in encs)
    start = time.perf_counter()
    _ = [np.array(e.ids, dtype=np.int32) for e in encs]
    ids_s = time.perf_counter() - start
    start = time.perf_counter()
    _ = [np.fromiter(chain.from_iterable(e.offsets), np.int64, 2 * len(e)) for e in encs]
    offsets_s = time.perf_counter() - start
    print(
        f"{len(texts)} texts, {tokens:,} tokens: encode_batch {encode_s:.3f} s ({tokens / encode_s / 1e6:.2f}M/s), "
        f"ids {ids_s / tokens * 1e9:.0f} ns/token, offsets {offsets_s / tokens * 1e9:.0f} ns/token"
    )


def fake_build(argv: list[str]) -> None:
    import packer.tokens.tokenize
    from packer.tokens.tokenize import TokenizedBatch, token_roles

    def label_without_offsets(
        encs: list, chars: np.ndarray, text_starts: np.ndarray, control: np.ndarray | None = None
    ) -> TokenizedBatch:
        counts = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
        offsets = np.zeros(len(encs) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        ids = np.concatenate([np.array(e.ids, dtype=np.int32) for e in encs])
        starts = np.repeat(np.asarray(text_starts, dtype=np.int64), counts)
        roles, last, _ = token_roles(chars, starts, starts + 1)
        return TokenizedBatch(ids=ids, roles=roles, last=last, offsets=offsets)

    # a byte-level tokenizer is labelled by token byte widths: make it take the offsets path too
    packer.tokens.tokenize.label_by_offsets = label_without_offsets
    packer.tokens.tokenize.byte_lengths = lambda tok: None
    sys.argv = [str(ROOT / "benchmarks" / "bench_build.py"), *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    if "--fake-build" in sys.argv:
        fake_build([a for a in sys.argv[1:] if a != "--fake-build"])
    else:
        n = int(sys.argv[sys.argv.index("--n") + 1]) if "--n" in sys.argv else 1024
        cost(n)
