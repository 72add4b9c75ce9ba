"""What checking a kept tiktoken core costs (issue 24): qualifying a tokenizer from scratch, loading its kept
core (cache version 2: the ranks are compared with the tokenizer's vocabulary, the rest read from the tokenizer),
and the check's part of that load. Best of N, in one process, with a cache folder of its own::

    python benchmarks/bench_kept_core.py [qwen2.5-instruct llama-3-8b-instruct ...]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from packer.tokens import tiktoken_core as tc
from packer.tokens.tokenize import load_tokenizer

TOKENIZERS = Path(__file__).resolve().parents[2] / "shared" / "tokenizers"


def best(f: Callable[[], object], n: int = 7) -> float:
    out = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        f()
        out = min(out, time.perf_counter() - t)
    return out


def main(names: list[str]) -> None:
    os.environ["PACKER_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-kept-core-")  # not the user's cache
    for name in names:
        tok = load_tokenizer(TOKENIZERS / name)
        qualify = best(lambda: tc.qualify(json.loads(tok.tokenizer.to_str())), 2)  # noqa: B023
        tc._CORES.clear()
        tc.core_of(tok)  # keep it
        (kept,) = Path(os.environ["PACKER_CACHE_DIR"]).glob(f"tiktoken-core-*-{tok.sha256[:40]}.npz")
        with np.load(kept) as z:
            blob, lengths, ids = z["blob"].tobytes(), z["lengths"], z["ids"]

        def load() -> None:
            tc._CORES.clear()
            tc.core_of(tok)  # noqa: B023

        def check() -> None:
            frame = tc._frame(tc._frame_spec(tok.tokenizer))  # noqa: B023
            assert not isinstance(frame, str)
            vocab = tok.tokenizer.get_vocab(with_added_tokens=False)  # noqa: B023
            assert tc._ranks_disagree(blob, lengths, ids, vocab, frame.special) is None  # noqa: B023

        print(f"{name}: qualify {qualify:.3f} s, load the kept core {best(load):.3f} s, "
              f"of which the check {best(check):.3f} s")


if __name__ == "__main__":
    main(sys.argv[1:] or ["qwen2.5-instruct", "llama-3-8b-instruct"])
