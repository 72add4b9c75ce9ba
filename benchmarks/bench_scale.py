"""Scaling a build past one process: wall time, CPU seconds and peak RSS per engine and worker count, and
the driver's memory and time at 10M and 100M documents.

    python benchmarks/bench_scale.py build --sets sharegpt3k,sharegpt17k --workers 1,2 [--ray]
    python benchmarks/bench_scale.py driver --docs 10000000,100000000

``build``: each configuration runs in a fresh child process (benchmarks/_measure.py: wall time from start
to exit, imports included; CPU seconds and peak RSS of the child and every worker process it waited for;
Ray's workers belong to the Ray cluster, so its CPU seconds cover the driver only). ``in-process`` is the
default build (one part); ``pool N`` is ``--workers N`` (parts of ``--part-mb``). Every output is checked
byte for byte against the in-process one (manifest less its build_seconds). Speed-up: in-process wall time
over the configuration's, measured in the same run.

``driver``: what the driver of a parallel build holds and does per document, at sizes no test input has: the
per-record columns of the parts' summaries, the duplicate search over their digests, and packing (BFD) of
lognormal lengths (median 300, seq_len 4096), in a child process per size, with its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _measure import run_measured

from tests.helpers import output_files

SHARED = Path(__file__).resolve().parents[2] / "shared"
SETS = {
    "sharegpt3k": SHARED / "data" / "sharegpt_v3_unfiltered_cleaned_split_first3000.json",
    # written by ../shared/tools/sharegpt-17k when missing
    "sharegpt17k": Path("/tmp/bench/sharegpt17k.json"),
    "alpaca": SHARED / "data" / "alpaca_gsm8k_train.json",
    "lima": SHARED / "data" / "messages_lima.jsonl",
}

_BUILD = """
import json, sys
from packer import build
args = json.loads(sys.argv[1])
if __name__ == "__main__":
    m = build(args["inputs"], args["out"], tokenizer=args["tokenizer"], seq_len=4096, **args["kw"])
    print(json.dumps({"records": m["counts"]["records"], "tokens": m["tokens"]["total"]}))
"""

_DRIVER = """
import json, sys, time
import numpy as np
from packer.pipeline.combine import _duplicate_of
from packer.pipeline.pack import pack, rows_from_bins
from packer.pipeline.part import new_columns
n = int(sys.argv[1])
t0 = time.perf_counter()
cols = new_columns()
arrays = {name: np.zeros(n, dtype=col.dtype) for name, col in cols._data.items()}
rng = np.random.default_rng(0)
arrays["has_digest"][:] = 1
arrays["digest_hi"][:] = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64)
arrays["digest_lo"][:] = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64)
lengths = np.clip(np.rint(rng.lognormal(np.log(300), 1.0, n)), 1, 4096).astype(np.int64)
made = time.perf_counter()
dup = _duplicate_of(arrays["has_digest"], arrays["digest_hi"], arrays["digest_lo"])
deduped = time.perf_counter()
order, offsets = rows_from_bins(pack(lengths, 4096, "bfd"))
packed = time.perf_counter()
bytes_per_doc = sum(a.itemsize for a in arrays.values())
print(json.dumps({"columns_s": made - t0, "dedupe_s": deduped - made, "pack_s": packed - deduped,
                  "rows": len(offsets) - 1, "bytes_per_doc": bytes_per_doc}))
"""


def bench_build(args: argparse.Namespace) -> None:
    tok = str(SHARED / "tokenizers" / args.tokenizer)
    configs: list[tuple[str, dict]] = [("in-process", {})]
    for w in args.workers:
        configs.append((f"pool {w}", {"workers": w, "part_size": args.part_mb}))
    if args.ray:
        configs.append((f"ray {args.ray}", {"engine": "ray", "workers": args.ray, "part_size": args.part_mb}))
    print(f"cores: {os.cpu_count()}, tokenizer: {args.tokenizer}, parts of {args.part_mb} MiB\n")
    print("| set | engine | records | tokens | wall s | CPU s | peak RSS MB | speed-up | same bytes |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for name in args.sets:
        path = SETS[name]
        if not path.exists():
            print(f"| {name} | (missing: {path}) |")
            continue
        tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
        base_wall, base_files = None, None
        try:
            for label, kw in configs:
                out = tmp / label.replace(" ", "-")
                job = json.dumps({"inputs": [str(path)], "out": str(out), "tokenizer": tok, "kw": kw})
                m = run_measured([sys.executable, "-c", _BUILD, job])
                got = json.loads(m.stdout.strip().splitlines()[-1])
                files = output_files(out)
                if base_files is None:
                    base_wall, base_files = m.seconds, files
                same = "yes" if files == base_files else "**NO**"
                cpu = f"{m.cpu_seconds:.1f}" + (" (driver)" if kw.get("engine") == "ray" else "")
                print(f"| {name} | {label} | {got['records']:,} | {got['tokens']:,} | {m.seconds:.2f} | {cpu} | "
                      f"{m.peak_rss_mb:.0f} | {base_wall / m.seconds:.2f}x | {same} |", flush=True)
                shutil.rmtree(out, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def bench_driver(args: argparse.Namespace) -> None:
    print("| documents | bytes/doc (columns) | columns s | duplicate search s | BFD pack s | rows | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.docs:
        m = run_measured([sys.executable, "-c", _DRIVER, str(n)])
        r = json.loads(m.stdout.strip().splitlines()[-1])
        print(f"| {n:,} | {r['bytes_per_doc']} | {r['columns_s']:.2f} | {r['dedupe_s']:.2f} | {r['pack_s']:.2f} | "
              f"{r['rows']:,} | {m.peak_rss_mb:,.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--sets", type=lambda s: s.split(","), default=["sharegpt3k", "sharegpt17k"])
    b.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    b.add_argument("--ray", type=int, default=0, metavar="N", help="also Ray with N workers (a local cluster)")
    b.add_argument("--part-mb", type=int, default=8, help="part size in MiB for the parallel configurations")
    b.add_argument("--tokenizer", default="qwen2.5-instruct")
    d = sub.add_parser("driver")
    d.add_argument("--docs", type=lambda s: [int(x) for x in s.split(",")], default=[10_000_000, 100_000_000])
    args = parser.parse_args()
    bench_build(args) if args.cmd == "build" else bench_driver(args)


if __name__ == "__main__":
    main()
