"""One huge record among normal ones (issue 24): wall time and peak RSS of ``packer build`` per --overlong policy
and tokenizer backend.

The input: the Alpaca demo's 127 records as JSON Lines with one record of MB megabytes of text in the middle
(words, numbers, "café", "你好", an emoji: Python holds it as a 4-bytes-a-character str). Run it from outside the
repository (a ``python -c`` child puts its working folder first on sys.path), with the code measured on PYTHONPATH:

    cd /tmp/bench && PYTHONPATH=REPO REPO/.venv/bin/python REPO/benchmarks/bench_huge.py [--mb 40] [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import run_measured

ROOT = Path(__file__).resolve().parents[1]
_CLI = "import sys; from packer.cli import main; sys.argv[0] = 'packer'; main()"


def make_input(path: Path, mb: float) -> None:
    records = json.loads((ROOT / "examples" / "alpaca_demo.json").read_text())
    words = ["word", "and", "more", "café", "naïve", "你好", "🤖", "the", "story", "goes", "on"]
    parts, n, i = [], 0, 0
    while n < mb * 1e6:
        w = f"{words[i % len(words)]}{i % 997}"
        parts.append(w)
        n += len(w.encode()) + 1
        i += 1
    huge = {"instruction": "Tell a very long story.", "input": "", "output": " ".join(parts)}
    with open(path, "w") as f:
        for k, r in enumerate(records):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            if k == len(records) // 2:
                f.write(json.dumps(huge, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=40)
    ap.add_argument("--tokenizer", default=str(ROOT.parent / "shared" / "tokenizers" / "qwen2.5-instruct"))
    ap.add_argument("--seq-len", default="8192")
    ap.add_argument("--overlong", nargs="+", default=["drop", "truncate", "split"])
    ap.add_argument("--backends", nargs="+", default=["auto", "tokenizers"])
    args = ap.parse_args()
    scratch = Path("/tmp/bench/huge")
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"huge{args.mb:g}.jsonl"
    if not path.exists():
        make_input(path, args.mb)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB), {Path(args.tokenizer).name}, seq_len {args.seq_len}")
    print("| --overlong | backend | wall s | peak RSS MB | huge record's line in rejected.jsonl |")
    print("|---|---|---|---|---|")
    for overlong in args.overlong:
        for backend in args.backends:
            out = scratch / f"out-{overlong}-{backend}"
            shutil.rmtree(out, ignore_errors=True)
            m = run_measured([sys.executable, "-c", _CLI, "build", str(path), "-o", str(out), "--tokenizer",
                              args.tokenizer, "--seq-len", args.seq_len, "--overlong", overlong,
                              "--tokenizer-backend", backend, "-q"])
            line = json.loads((out / "rejected.jsonl").read_text().splitlines()[0])
            print(f"| {overlong} | {backend} | {m.seconds:.1f} | {m.peak_rss_mb:.0f} | {line['detail'][:70]} |",
                  flush=True)


if __name__ == "__main__":
    main()
