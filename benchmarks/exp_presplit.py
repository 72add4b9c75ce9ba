"""Experiment (issue 28, dropped): SentencePiece-style tokenizers with a ``Split`` pre-tokenizer cut before each ``▁``,
and how ids reach numpy.

No vocabulary token of Mistral, Phi-3, Llama 2 or Gemma 2 holds a ``▁`` after another character, so cutting the
normalized text before every ``▁`` run cannot change the ids; the cut lets ``tokenizers`` cache words. This checks
both claims on the ShareGPT 3k conversations (each one text, turns joined by newlines) and times
``encode_batch_fast`` with and without the cut (it came out ~1.3x slower with the cut, so the build does not use
it). ``--ids`` also times bringing the ids into numpy: ``np.array`` of one list against ``np.fromiter`` with the
count (what ``packer.tokens.tokenize`` does).

    python benchmarks/exp_presplit.py
    python benchmarks/exp_presplit.py --ids
"""

from __future__ import annotations

import json
import re
import sys
import time
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, pre_tokenizers

SHARED = Path(__file__).resolve().parents[2] / "shared"
NAMES = ["mistral-7b-instruct-v0.1", "phi-3-mini-instruct", "llama-2", "gemma-2"]


def main() -> int:
    data = SHARED / "data" / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"
    if not data.is_file():
        print(f"{data}: the shared data is needed", file=sys.stderr)
        return 2
    texts = ["\n".join(t["value"] for t in r["conversations"]) for r in json.loads(data.read_text())]
    for name in NAMES:
        path = SHARED / "tokenizers" / name / "tokenizer.json"
        vocab = json.loads(path.read_text())["model"]["vocab"]
        inner = [t for t in vocab if re.search(r"[^\u2581]\u2581", t)]
        tok, cut = Tokenizer.from_file(str(path)), Tokenizer.from_file(str(path))
        cut.pre_tokenizer = pre_tokenizers.Split(Regex("\u2581+[^\u2581]*|[^\u2581]+"), behavior="isolated")
        t0 = time.perf_counter()
        a = tok.encode_batch_fast(texts, add_special_tokens=False)
        t1 = time.perf_counter()
        b = cut.encode_batch_fast(texts, add_special_tokens=False)
        t2 = time.perf_counter()
        same = sum(x.ids == y.ids for x, y in zip(a, b, strict=True))
        print(f"{name}: tokens with a ▁ after another character {len(inner)}; identical ids {same}/{len(texts)}; "
              f"encode_batch_fast {t1 - t0:.2f} s, with the cut {t2 - t1:.2f} s ({(t2 - t1) / (t1 - t0):.2f}x)")
        if "--ids" in sys.argv and name == NAMES[0]:
            n = sum(len(e) for e in a)
            t0 = time.perf_counter()
            np.array(list(chain.from_iterable(e.ids for e in a)), dtype=np.int32)
            t1 = time.perf_counter()
            np.fromiter(chain.from_iterable(e.ids for e in a), dtype=np.int32, count=n)
            t2 = time.perf_counter()
            print(f"  ids into numpy, {n:,} tokens: np.array(list) {(t1 - t0) / n * 1e9:.0f} ns a token, "
                  f"np.fromiter {(t2 - t1) / n * 1e9:.0f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
