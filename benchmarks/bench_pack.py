"""Benchmark packer.pipeline.pack on synthetic chat-like document lengths.

Two length distributions (``--lengths``):

- ``lognormal``: median ~300 tokens (``--sigma`` sets the tail), rounded and clipped
  to [1, seq_len], like a chat corpus after overlong documents were truncated.
- ``real``: drawn with replacement (seeded) from the token lengths of the documents
  of a real build: the ShareGPT V3 first 3,000 records plus the five Alpaca files of
  ``../shared/data`` with the Qwen2.5 tokenizer at ``--seq-len`` (overlong documents
  dropped, as the build does). The build runs once into ``--real-build`` and is reused
  from there (its ``documents.arrow`` ``tokens`` column).

Prints a markdown table, per algorithm: seconds, documents/s, rows, the lower
bound ceil(sum / seq_len), efficiency and rows / lower bound.

    python benchmarks/bench_pack.py --n 1000000 --seq-len 4096 --seed 0
    python benchmarks/bench_pack.py --n 10000000 --lengths real
"""

from __future__ import annotations

import argparse
import bisect
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from packer.pipeline.pack import ALGORITHMS, efficiency, lower_bound, pack


def synthetic_lengths(n: int, seq_len: int, seed: int, median: float, sigma: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.lognormal(np.log(median), sigma, n)), 1, seq_len).astype(np.int64)


ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def real_lengths(n: int, seq_len: int, seed: int, build_dir: Path) -> tuple[np.ndarray, int]:
    """``n`` lengths drawn with replacement from a real build's packed documents; also the pool size."""
    import pyarrow.ipc as ipc

    from packer import build

    docs = build_dir / "documents.arrow"
    manifest = build_dir / "manifest.json"
    if not manifest.is_file() or f'"seq_len": {seq_len},' not in manifest.read_text():
        data = SHARED / "data"
        inputs = [data / "sharegpt_v3_unfiltered_cleaned_split_first3000.json", *sorted(data.glob("alpaca_*.json"))]
        build([str(p) for p in inputs], build_dir, tokenizer=SHARED / "tokenizers" / "qwen2.5-instruct",
              seq_len=seq_len, overwrite=True)
    with ipc.open_file(docs) as r:
        tokens = r.read_all().column("tokens").drop_null().to_numpy().astype(np.int64)
    return np.random.default_rng(seed).choice(tokens, size=n, replace=True), len(tokens)


def python_best_fit(lengths: list[int], seq_len: int) -> int:
    """Plain-Python best-fit decreasing (sorted list + bisect); returns the row
    count. The baseline a numba-less implementation would start from."""
    rooms: list[tuple[int, int]] = []  # (remaining room, row), kept sorted
    n_rows = 0
    for size in sorted(lengths, reverse=True):
        i = bisect.bisect_left(rooms, (size, -1))
        if i == len(rooms):
            room, row = seq_len, n_rows
            n_rows += 1
        else:
            room, row = rooms.pop(i)
        if room - size > 0:
            bisect.insort(rooms, (room - size, row))
    return n_rows


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="number of documents")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--median", type=float, default=300.0, help="median document length in tokens")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma (tail weight)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per algorithm; the best is shown")
    parser.add_argument("--python-n", type=int, default=1_000_000, help="subsample size for the plain-Python best-fit")
    parser.add_argument("--lengths", choices=["lognormal", "real"], default="lognormal",
                        help="length distribution (see above)")
    parser.add_argument("--real-build", type=Path, default=Path("/tmp/bench/real-lengths"),
                        help="--lengths real: build output to draw lengths from (built there if missing)")
    args = parser.parse_args()

    if args.lengths == "real":
        lengths, pool = real_lengths(args.n, args.seq_len, args.seed, args.real_build)
        source = f"drawn with replacement from {pool:,} real document lengths ({args.real_build})"
    else:
        lengths = synthetic_lengths(args.n, args.seq_len, args.seed, args.median, args.sigma)
        source = f"lognormal(median {args.median:g}, sigma {args.sigma:g}) clipped to [1, {args.seq_len}]"
    print(f"documents {args.n:,}  seq_len {args.seq_len}  seed {args.seed}  {source}")
    print(
        f"lengths: median {np.median(lengths):.0f}  mean {lengths.mean():.1f}  "
        f"p99 {np.percentile(lengths, 99):.0f}  at seq_len {np.mean(lengths == args.seq_len):.2%}  "
        f"tokens {int(lengths.sum()):,}"
    )

    # Compile (or load from numba's cache) every kernel before timing.
    start = time.perf_counter()
    warm = lengths[:1000]
    for algorithm in ALGORITHMS:
        pack(warm, args.seq_len, algorithm)
    compile_s = time.perf_counter() - start
    print(f"warm-up (numba compile or cache load, excluded from timings): {compile_s:.2f} s")
    print(f"timings: whole pack() call incl. validation and sorting, best of {args.repeat}")
    print()
    print("| lengths | documents | algorithm | seconds | documents/s | rows | lower bound | efficiency "
          "| rows / lower bound |")
    print("|---|---|---|---|---|---|---|---|---|")

    def row(name: str, docs: np.ndarray, seconds: float, n_rows: int) -> None:
        lb = lower_bound(docs, args.seq_len)
        print(
            f"| {args.lengths} | {len(docs):,} | {name} | {seconds:.3f} | {len(docs) / seconds / 1e6:.3g} M | "
            f"{n_rows:,} | {lb:,} | {efficiency(docs, n_rows, args.seq_len):.6f} | {n_rows / lb:.6f} |",
            flush=True,
        )

    for algorithm in ALGORITHMS:
        seconds, bins = best_time(lambda a=algorithm: pack(lengths, args.seq_len, a), args.repeat)
        row(algorithm, lengths, seconds, int(bins.max()) + 1)

    sub = lengths[: min(args.n, args.python_n)]
    seconds, n_rows = best_time(lambda: python_best_fit(sub.tolist(), args.seq_len), 1)
    name = "python best-fit" + (" (sub)" if len(sub) < args.n else "")
    row(name, sub, seconds, n_rows)
    if len(sub) < args.n:
        seconds, bins = best_time(lambda: pack(sub, args.seq_len, "bfd"), args.repeat)
        row("bfd (same subsample)", sub, seconds, int(bins.max()) + 1)
        print(
            f"\nplain-Python best-fit ran once, on the first {len(sub):,} documents only (--python-n; "
            "its sorted-list inserts cost O(rows) each, too slow for the full set); "
            "compare it with the bfd row on the same subsample."
        )


if __name__ == "__main__":
    main()
