"""Peak memory of ``packer build`` on a large JSONL, at 1/4, 1/2 and all of its size, and of streaming the rows.

The input is made from real records: the ShareGPT V3 first 3,000 records and the five Alpaca files of
``../shared/data``, as ``messages`` JSONL (ShareGPT roles mapped as in ``bench_peers.py``), repeated until the
file reaches ``--size-gb``; every copy after the first gets `` [copy N]`` appended to its first user message,
so no two records are exact duplicates (the build would still read them all, but a reader that deduplicated
would otherwise get off lightly). The 1/4 and 1/2 inputs are prefixes of the same record stream, so the three
builds differ only in how much they read. Files go under ``--work`` (default ``/tmp/bench/memory``), never in
the repository, and are reused while their size matches.

Each build runs ``packer build`` (Qwen2.5 tokenizer, seq_len 4096) as the child of a fresh waiter process
and reports the child's peak RSS (``ru_maxrss``, see ``_measure.py``) and wall time: memory that grows with
the input shows as a growing peak (target: under 2 GB at any size). Then a fresh process streams every row
of the largest build through ``packer.train.dataset.PackedDataset`` (strategy ``instruction_tuning``, shuffled)
and reports its peak RSS and, from ``/proc/self/status`` at the end, how much of it is anonymous memory and
how much is file pages of the memory-mapped shards (shared with the page cache, reclaimable).

    python benchmarks/bench_memory.py                       # 2 GB input (long: tens of minutes on 2 cores)
    python benchmarks/bench_memory.py --size-gb 0.5         # 128 MB, 256 MB, 512 MB
    python benchmarks/bench_memory.py --size-gb 2 --fractions 1   # the full size only
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from _measure import run_measured

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
            "bing": "assistant", "system": "system"}
#: stands for the copy number in a pre-serialized record; cannot occur in the data (checked)
MARK = "\ue000COPY\ue000"


def base_records() -> list[dict]:
    """The real records, as ``messages`` conversations that every pipeline accepts."""
    out = []
    for rec in json.loads((DATA / "sharegpt_v3_unfiltered_cleaned_split_first3000.json").read_text()):
        turns = rec.get("conversations") or []
        if any(t.get("from") not in ROLE_MAP or not str(t.get("value", "")).strip() for t in turns):
            continue
        msgs = [{"role": ROLE_MAP[t["from"]], "content": t["value"]} for t in turns]
        while msgs and msgs[0]["role"] != "user":
            msgs.pop(0)
        while msgs and msgs[-1]["role"] != "assistant":
            msgs.pop()
        if msgs and not any(m["role"] == "system" for m in msgs):
            out.append({"messages": msgs})
    for path in sorted(DATA.glob("alpaca_*.json")):
        for rec in json.loads(path.read_text()):
            prompt = rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")
            if prompt.strip() and rec["output"].strip():
                out.append({"messages": [{"role": "user", "content": prompt},
                                         {"role": "assistant", "content": rec["output"]}]})
    return out


def record_lines(records: list[dict]) -> Iterator[str]:
    """An endless stream of JSONL lines: the records, then copies of them with ``[copy N]`` appended."""
    templates = []
    for rec in records:
        first = rec["messages"][0]
        marked = {"messages": [{**first, "content": first["content"] + MARK}, *rec["messages"][1:]]}
        line = json.dumps(marked, ensure_ascii=False)
        assert line.count(MARK) == 1
        templates.append(line.split(MARK))  # serialize once; each copy is two string joins
    yield from (json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    copy = 1
    while True:
        tag = f" [copy {copy}]"
        for head, tail in templates:
            yield head + tag + tail + "\n"
        copy += 1


def make_inputs(work: Path, size_bytes: int, fractions: list[float]) -> dict[float, Path]:
    """One JSONL per fraction of ``size_bytes``, each a prefix of the same stream (reused if present)."""
    paths = {f: work / f"input-{size_bytes * f / 1e9:.3f}GB.jsonl" for f in fractions}
    meta = {f: p.with_suffix(".done") for f, p in paths.items()}
    if all(m.is_file() for m in meta.values()):
        return paths
    records = base_records()
    start = time.perf_counter()
    files = {f: open(p, "w", encoding="utf-8") for f, p in paths.items()}  # closed below
    try:
        written = 0
        targets = {f: int(size_bytes * f) for f in fractions}
        for line in record_lines(records):
            n = len(line.encode("utf-8"))
            open_files = [f for f in fractions if written < targets[f]]
            if not open_files:
                break
            for f in open_files:
                files[f].write(line)
            written += n
    finally:
        for fh in files.values():
            fh.close()
    for f, m in meta.items():
        m.write_text(str(paths[f].stat().st_size))
    print(f"wrote {len(paths)} inputs from {len(records):,} base records in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    return paths


def _status_kb() -> dict[str, int]:
    """The kB-valued fields of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    fields = (line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(v.split()[0]) for k, v in fields if v.strip().endswith("kB")}


def stream_child(shards: str) -> None:
    """Run in a fresh process: read every row once; print counts and /proc/self/status memory (kB)."""
    from packer.train.dataset import PackedDataset

    # resident after the imports (torch alone is a few hundred MB): the part streaming cannot change
    baseline = _status_kb()["VmRSS"]
    start = time.perf_counter()
    ds = PackedDataset(shards, "instruction_tuning", shuffle=True, seed=0)
    rows = tokens = 0
    for item in ds:
        rows += 1
        tokens += int(item["input_ids"].numel())
    kb = {k: v for k, v in _status_kb().items() if k in ("VmHWM", "RssAnon", "RssFile")}
    print(json.dumps({"rows": rows, "tokens": tokens, "seconds": time.perf_counter() - start, "baseline": baseline,
                      **kb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of the largest input (GB = 10**9 bytes)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizers" / "qwen2.5-instruct")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench/memory"))
    parser.add_argument("--packer", default=str(Path(sys.executable).parent / "packer"), help="packer entry point")
    parser.add_argument("--keep", action="store_true", help="keep the build outputs (the largest is always streamed)")
    parser.add_argument("--no-stream", action="store_true", help="skip the PackedDataset measurement")
    parser.add_argument("--stream-child", help=argparse.SUPPRESS)  # internal: the streaming child process
    args = parser.parse_args()
    if args.stream_child:
        stream_child(args.stream_child)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    fractions = sorted(args.fractions)
    inputs = make_inputs(args.work, int(args.size_gb * 1e9), fractions)

    lines = ["| input | records | tokens packed | rows | wall s | tokens/s | peak RSS MB | peak RSS / input size |",
             "|---|---|---|---|---|---|---|---|"]
    largest = None
    for f in fractions:
        path = inputs[f]
        out = args.work / f"out-{f:g}"
        shutil.rmtree(out, ignore_errors=True)
        m = run_measured([args.packer, "build", str(path), "--tokenizer", str(args.tokenizer),
                          "--seq-len", str(args.seq_len), "-o", str(out), "-q"])
        manifest = json.loads((out / "manifest.json").read_text())
        size = path.stat().st_size
        tokens = manifest["tokens"]["total"]
        lines.append(
            f"| {size / 1e9:.3f} GB ({f:g}) | {manifest['counts']['records']:,} | {tokens:,} | "
            f"{manifest['packing']['rows']:,} | {m.seconds:.0f} | {tokens / m.seconds / 1e6:.3f} M | "
            f"{m.peak_rss_mb:,.0f} | {m.peak_rss_mb * 1e6 / size:.2f} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
        if largest is not None and not args.keep:
            shutil.rmtree(largest, ignore_errors=True)
        largest = out
    print("\n".join(lines))

    if not args.no_stream and largest is not None:
        m = run_measured([sys.executable, __file__, "--stream-child", str(largest)])
        r = json.loads(m.stdout.strip().splitlines()[-1])
        shard_bytes = sum(p.stat().st_size for p in largest.glob("shard-*.arrow"))
        print("\n| streamed | rows | tokens | seconds | rows/s | peak RSS MB | RSS after imports MB "
              "| anon MB (end) | file-backed MB (end) | shards MB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        anon, file_mb = r.get("RssAnon", 0) / 1e3, r.get("RssFile", 0) / 1e3  # kB -> MB
        print(f"| {largest.name} (PackedDataset, instruction_tuning, shuffled) | {r['rows']:,} | {r['tokens']:,} | "
              f"{r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | {m.peak_rss_mb:,.0f} | "
              f"{r['baseline'] / 1e3:,.0f} | {anon:,.0f} | {file_mb:,.0f} | {shard_bytes / 1e6:,.0f} |")
    if not args.keep and largest is not None:
        shutil.rmtree(largest, ignore_errors=True)


if __name__ == "__main__":
    main()
