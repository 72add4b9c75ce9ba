"""Benchmark streaming a ``packer build`` output through ``PackedDataset`` and a DataLoader.

Builds the ShareGPT sample in ``../shared/data`` with the Qwen2.5 tokenizer at seq_len 4096 into a
temporary directory (the bundled demo data and tokenizer where ``../shared`` is absent), or takes an
existing output with ``--shards``. Then, for each ``--workers`` count, a fresh Python process reads every
row through ``DataLoader(batch_size=8)`` with packer's ``collate_padded``, shuffled, for ``--passes`` epochs,
and prints rows/s, tokens/s (the best pass), the time to the first batch and the peak RSS of the main
process and of its workers (``resource.getrusage``; it counts the shards' memory-mapped pages that were
touched, which the page cache shares between processes). "replay" rows run the same DataLoader over the
same items precomputed in memory: the cost of the DataLoader, the collate and the worker -> main transfer
alone, to tell it from the dataset's.

    python benchmarks/bench_stream.py
    python benchmarks/bench_stream.py --shards shards/ --workers 0 2 4 --strategy instruction_modelling
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from packer.train.collate import collate_padded
from packer.train.dataset import PackedDataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHAREGPT = SHARED / "data" / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"
QWEN = SHARED / "tokenizers" / "qwen2.5-instruct"
DEMO = [ROOT / "examples" / "alpaca_demo.json", ROOT / "examples" / "sharegpt_demo.json"]
DEMO_TOKENIZER = ROOT / "packer" / "demo_tokenizer"


def build_default(out: Path) -> str:
    """Build the default shards in a child process: Linux keeps a process's peak RSS across exec, so a
    build in this process would show up as the peak of every reader process started from it."""
    if SHAREGPT.is_file() and QWEN.is_dir():
        inputs, tokenizer, what = [SHAREGPT], QWEN, f"{SHAREGPT.name} with {QWEN.name}"
    else:
        inputs, tokenizer, what = DEMO, DEMO_TOKENIZER, "the bundled demo data (../shared is absent)"
    code = (
        "import sys, json; from packer import build; "
        "m = build(json.loads(sys.argv[1]), sys.argv[2], tokenizer=sys.argv[3], seq_len=4096); "
        "print(m['packing']['rows'])"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps([str(p) for p in inputs]), str(out), str(tokenizer)],
        check=True, capture_output=True, text=True,
    )
    rows = done.stdout.strip().splitlines()[-1]
    return f"built {what} at seq_len 4096 in {time.perf_counter() - start:.1f} s: {rows} rows"


class _Replay(IterableDataset):
    """The same items, precomputed, dealt to workers as PackedDataset deals them: what the DataLoader
    and the collate cost alone (worker -> main transfer included), for comparison."""

    def __init__(self, items: list[dict], batch_size: int) -> None:
        self.items, self.batch_size = items, batch_size

    def __iter__(self):
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info else (0, 1)
        for i, item in enumerate(self.items):
            if (i // self.batch_size) % n == w:
                yield item


def peak_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def own_peak_rss_mib() -> float:
    """This process's peak RSS since its exec (ru_maxrss would include the parent's peak before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mib(resource.RUSAGE_SELF)


def run_child(args: argparse.Namespace) -> None:
    """One configuration in this (fresh) process; prints one JSON line."""
    kw = {}
    if args.prompt_loss_weight is not None:
        kw["prompt_loss_weight"] = args.prompt_loss_weight
    if args.normalize:
        kw["normalize"] = args.normalize
    start = time.perf_counter()
    ds = PackedDataset(args.shards, args.strategy, seed=0, batch_size=args.batch_size, **kw)
    open_s = time.perf_counter() - start
    pad_id = ds.manifest["tokenizer"].get("pad_id") or 0
    source: IterableDataset = _Replay(list(ds), args.batch_size) if args.replay else ds
    dl = DataLoader(
        source, batch_size=args.batch_size, num_workers=args.child, collate_fn=partial(collate_padded, pad_id=pad_id),
        persistent_workers=args.child > 0,
    )
    passes = []
    first_batch_s = None
    for epoch in range(args.passes):
        ds.set_epoch(epoch)
        rows = tokens = 0
        start = time.perf_counter()
        for batch in dl:
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - start
            rows += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum())
        passes.append((time.perf_counter() - start, rows, tokens))
    best_s, rows, tokens = min(passes)
    # workers count in RUSAGE_CHILDREN once they have exited and been reaped: shut them down first
    del dl
    gc.collect()
    print(
        json.dumps(
            {
                "workers": args.child,
                "replay": args.replay,
                "rows": rows,
                "tokens": tokens,
                "best_s": best_s,
                "open_s": open_s,
                "first_batch_s": first_batch_s,
                "rss_main_mib": own_peak_rss_mib(),
                "rss_workers_mib": peak_rss_mib(resource.RUSAGE_CHILDREN) if args.child else 0.0,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, help="an existing build output (default: build one)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to try")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--passes", type=int, default=5, help="epochs per configuration; the best is shown")
    parser.add_argument("--strategy", default="instruction_tuning")
    parser.add_argument("--prompt-loss-weight", type=float, default=None)
    parser.add_argument("--normalize", choices=["sequence"], default=None)
    parser.add_argument("--no-replay", action="store_true", help="skip the DataLoader-alone comparison")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--replay", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_child(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        if args.shards is None:
            args.shards = Path(tmp) / "shards"
            print(build_default(args.shards))
        manifest = json.loads((args.shards / "manifest.json").read_text())
        size = sum(s["bytes"] for s in manifest["shards"]) / 2**20
        print(
            f"{args.shards}: {manifest['packing']['rows']} rows, {manifest['tokens']['total']:,} tokens, "
            f"seq_len {manifest['seq_len']}, {len(manifest['shards'])} shard(s), {size:.1f} MiB; "
            f"strategy {args.strategy}, batch_size {args.batch_size}, shuffled, best of {args.passes} passes"
        )
        print(
            f"{'workers':>14} {'rows/s':>10} {'tokens/s':>12} {'pass s':>8} {'open s':>7} {'1st batch s':>11} "
            f"{'RSS main MiB':>12} {'RSS worker MiB':>14}"
        )
        runs = [(w, False) for w in args.workers] + ([] if args.no_replay else [(w, True) for w in args.workers])
        for workers, replay in runs:
            cmd = [sys.executable, __file__, "--shards", str(args.shards), "--child", str(workers)]
            cmd += ["--batch-size", str(args.batch_size), "--passes", str(args.passes), "--strategy", args.strategy]
            if args.prompt_loss_weight is not None:
                cmd += ["--prompt-loss-weight", str(args.prompt_loss_weight)]
            if args.normalize:
                cmd += ["--normalize", args.normalize]
            if replay:
                cmd += ["--replay"]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(line)
            label = f"{r['workers']} replay" if r["replay"] else str(r["workers"])
            print(
                f"{label:>14} {r['rows'] / r['best_s']:>10,.0f} {r['tokens'] / r['best_s']:>12,.0f} "
                f"{r['best_s']:>8.3f} {r['open_s']:>7.3f} {r['first_batch_s']:>11.3f} "
                f"{r['rss_main_mib']:>12.0f} {r['rss_workers_mib']:>14.0f}"
            )


if __name__ == "__main__":
    main()
