"""Benchmark ``packer build`` against peers' SFT preprocessing on the same data and tokenizer.

Peer: Hugging Face TRL, what ``SFTTrainer`` runs before training with ``assistant_only_loss=True,
packing=True, packing_strategy="bfd"``, ``max_length`` = ``--seq-len`` (see ``_peer_trl.py``). It runs in its own
venv (``--peers-python``; TRL is a benchmark-only dependency, never in the project's pyproject):

    python3 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install torch==2.13.0      # first: the CPU wheel; any other spec pulls CUDA
    /tmp/peers-venv/bin/pip install trl

Data: the ShareGPT V3 first 3,000 records (``../shared/data``) and the 17,671-record dump (made by
``../shared/tools/sharegpt-17k`` if missing), converted once to the OpenAI ``messages`` JSONL both sides read:
roles mapped (human/user -> user, gpt/chatgpt/bard/bing -> assistant, system -> system), leading assistant
turns and trailing non-assistant turns dropped, and records left with an empty turn, an unknown role, a system
turn after the first or no user/assistant turn skipped (TRL would fail on some of these; packer rejects them).

Each side runs ``--repeat`` times as a child of a fresh waiter process (see ``_measure.py``), packer through
its command line (``packer build``, fresh output directory each run); the best wall time is kept, imports
included, and the peak RSS of that run. Tokens/s = tokens in the packed rows / wall seconds. Both sides run
back to back in one invocation, so their ratio is meaningful on a shared, noisy machine.

    python benchmarks/bench_peers.py
    python benchmarks/bench_peers.py --sets sharegpt3k --repeat 1
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _measure import Measured, run_measured

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHAREGPT_3K = SHARED / "data" / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"
SHAREGPT_17K_TOOL = SHARED / "tools" / "sharegpt-17k"
ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
            "bing": "assistant", "system": "system"}


def to_messages(src: Path, dst: Path) -> tuple[int, int]:
    """Convert a ShareGPT JSON array into a ``messages`` JSONL; returns (records read, records written)."""
    records = json.loads(src.read_text(encoding="utf-8"))
    kept = 0
    with open(dst, "w", encoding="utf-8") as f:
        for rec in records:
            turns = rec.get("conversations") or []
            if any(t.get("from") not in ROLE_MAP or not str(t.get("value", "")).strip() for t in turns):
                continue
            msgs = [{"role": ROLE_MAP[t["from"]], "content": t["value"]} for t in turns]
            system = msgs[:1] if msgs and msgs[0]["role"] == "system" else []
            body = msgs[len(system) :]
            while body and body[0]["role"] != "user":  # a split chat that starts mid-conversation
                body.pop(0)
            while body and body[-1]["role"] != "assistant":  # nothing to learn after the last answer
                body.pop()
            if not body or any(m["role"] == "system" for m in body):
                continue
            f.write(json.dumps({"messages": system + body}, ensure_ascii=False) + "\n")
            kept += 1
    return len(records), kept


def run_packer(packer: str, data: Path, tokenizer: Path, seq_len: int, work: Path) -> tuple[Measured, dict]:
    out = Path(tempfile.mkdtemp(prefix="peers-packer-", dir=work))
    try:
        m = run_measured([packer, "build", str(data), "--tokenizer", str(tokenizer), "--seq-len", str(seq_len),
                          "-o", str(out), "--overwrite", "-q"])
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["_overlong_dropped"] = manifest["counts"]["rejected"].get("overlong", 0)
        return m, manifest
    finally:
        shutil.rmtree(out, ignore_errors=True)


def best(runs: list[tuple[Measured, dict]]) -> tuple[Measured, dict]:
    return min(runs, key=lambda r: r[0].seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sets", nargs="+", default=["sharegpt3k", "sharegpt17k"], choices=["sharegpt3k", "sharegpt17k"]
    )
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizers" / "qwen2.5-instruct")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=2, help="runs per side; the fastest is reported")
    parser.add_argument("--peers-python", default="/tmp/peers-venv/bin/python")
    parser.add_argument("--packer", default=str(Path(sys.executable).parent / "packer"), help="packer entry point")
    parser.add_argument("--sharegpt17k", type=Path, default=Path("/tmp/bench/sharegpt17k.json"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    helper = Path(__file__).with_name("_peer_trl.py")

    rows = []
    versions: dict = {}
    for name in args.sets:
        if name == "sharegpt3k":
            src = SHAREGPT_3K
        else:
            src = args.sharegpt17k
            if not src.is_file():
                subprocess.run([sys.executable, str(SHAREGPT_17K_TOOL), str(src)], check=True)
        data = args.work / f"{name}.messages.jsonl"
        n_read, n_kept = to_messages(src, data)
        print(f"{name}: {n_read:,} records -> {n_kept:,} conversations in {data}", file=sys.stderr)

        runs = []
        for _ in range(args.repeat):
            m = run_measured([args.peers_python, str(helper), str(data), str(args.tokenizer),
                              "--max-length", str(args.seq_len)])
            runs.append((m, json.loads(m.stdout.strip().splitlines()[-1])))
        trl_m, trl = best(runs)
        versions = trl["versions"]
        pk_m, pk = best([run_packer(args.packer, data, args.tokenizer, args.seq_len, args.work)
                         for _ in range(args.repeat)])

        def line(tool: str, m: Measured, inner_s: float, tokens: int, n_rows: int, docs: int, trunc: int,
                 dropped: int, name: str = name, n_kept: int = n_kept) -> dict:
            return {"set": name, "conversations": n_kept, "tool": tool, "seconds": m.seconds, "inner": inner_s,
                    "tokens": tokens, "rows": n_rows, "docs": docs, "truncated": trunc, "dropped": dropped,
                    "rss": m.peak_rss_mb}

        t = line("TRL SFTTrainer", trl_m, trl["seconds"], trl["tokens"], trl["rows"], trl["documents"],
                 trl["truncated"], 0)
        p = line("packer build", pk_m, pk["build_seconds"], pk["tokens"]["total"], pk["packing"]["rows"],
                 pk["counts"]["packed"], pk["counts"]["truncated"], pk["_overlong_dropped"])
        rows += [t, p]
        tps = {r["tool"]: r["tokens"] / r["seconds"] for r in (t, p)}
        print(f"{name}: packer/TRL tokens/s {tps['packer build'] / tps['TRL SFTTrainer']:.2f}x, "
              f"peak RSS {p['rss'] / t['rss']:.2f}x TRL's", file=sys.stderr)

    print(f"\nTRL {versions.get('trl')}, transformers {versions.get('transformers')}, datasets "
          f"{versions.get('datasets')}, tokenizers {versions.get('tokenizers')}; seq_len {args.seq_len}; "
          f"best of {args.repeat}; tokenizer {args.tokenizer.name}\n")
    print("| set (conversations) | tool | seconds (in-process) | tokens/s | tokens | rows | lower bound | "
          "efficiency | documents packed | truncated | dropped (overlong) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lb = math.ceil(r["tokens"] / args.seq_len)
        eff = r["tokens"] / (r["rows"] * args.seq_len)
        print(f"| {r['set']} ({r['conversations']:,}) | {r['tool']} | {r['seconds']:.1f} ({r['inner']:.1f}) | "
              f"{r['tokens'] / r['seconds'] / 1e6:.3f} M | {r['tokens']:,} | {r['rows']:,} | {lb:,} | {eff:.4f} | "
              f"{r['docs']:,} | {r['truncated']:,} | {r['dropped']:,} | {r['rss']:,.0f} |")
    print()
    for t, p in zip(rows[::2], rows[1::2], strict=True):
        speed = (p["tokens"] / p["seconds"]) / (t["tokens"] / t["seconds"])
        eff_p, eff_t = (r["tokens"] / (r["rows"] * args.seq_len) for r in (p, t))
        print(f"- {t['set']}: packer {speed:.2f}x TRL's tokens/s (target >= 2.5x); peak RSS "
              f"{p['rss'] / t['rss']:.2f}x TRL's (target <= 0.5x); efficiency {eff_p:.4f} vs {eff_t:.4f}")


if __name__ == "__main__":
    main()
