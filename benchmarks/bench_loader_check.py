"""The loader comparison's cost (issue 28): a small build with a SentencePiece-family tokenizer, in a fresh process.

A ``file``-loader build of Mistral, Phi-3 or Llama 2 compares its ids with transformers 5's on its first texts.
Each run builds ``--data`` (one small file) in a new Python process and prints its wall time, its peak RSS and
whether transformers or torch were imported in it: once with an empty cache folder (the comparison's tokenizer is
made by a child process and kept), then ``--repeat`` times with that copy kept. Give ``PYTHONPATH`` to measure
another checkout the same way (an older one imports transformers in the build's own process).

    PYTHONPATH=REPO REPO/.venv/bin/python REPO/benchmarks/bench_loader_check.py [--tokenizer DIR] [--data FILE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
_CHILD = """import resource, sys, time
t = time.perf_counter()
from packer import build
build([sys.argv[1]], sys.argv[2], tokenizer=sys.argv[3], seq_len=4096)
print(f"{time.perf_counter() - t:.2f}", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
      "transformers" in sys.modules, "torch" in sys.modules)
"""


def run(data: Path, tokenizer: Path, out: Path, cache: Path) -> list[str]:
    env = {**os.environ, "PACKER_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(data), str(out), str(tokenizer)], env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizers" / "mistral-7b-instruct-v0.1")
    p.add_argument("--data", type=Path, default=SHARED / "data" / "sharegpt_axolotl_fixture_conversation.json")
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    print("| run | seconds | peak RSS MB | transformers imported | torch imported |\n|---|---:|---:|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for k in range(1 + a.repeat):
            got = run(a.data, a.tokenizer, Path(tmp) / f"o{k}", cache)
            print(f"| {'empty cache' if k == 0 else 'kept'} | {' | '.join(got)} |")


if __name__ == "__main__":
    main()
