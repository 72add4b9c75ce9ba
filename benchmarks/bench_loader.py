"""Tokens/s per loader worker of every collator (issue 29): 8 packed rows of 4096 tokens a batch.

Builds the ShareGPT sample in ``../shared/data`` with the Qwen2.5 tokenizer at seq_len 4096 (as
``bench_stream.py``; the bundled demo where ``../shared`` is absent), or takes ``--shards``. Reads the first
``--batches`` batches of ``PackedDataset(strategy="instruction_tuning", batch_size=8)`` and, for every
collator, measures in this one run (the machine's 2 cores shared: the DataLoader's worker and this process
compete with other jobs):

- **collate**: the collate function alone in this process over those items in memory (best of
  ``--repeat``): what one loader worker spends per batch beyond reading rows;
- **DataLoader, 1 worker**: ``DataLoader(ds, batch_size=8, num_workers=1, collate_fn=...)`` reading the
  shards, collating in the worker and handing the batch to this process, ``--loader-batches`` batches
  (``--batches`` for ``collate_4d``) timed from the first batch on: the worker's start is not counted;
- **MB/batch**: what the batch holds (what crosses from the worker, and is copied to the GPU).

Tokens are the rows' real tokens (padding not counted). Last, what the step then spends making the mask
from ``collate_docs``'s ids on this CPU (on a GPU it is a few kernels; not measured here).

    python benchmarks/bench_loader.py [--shards DIR] [--batches 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from bench_stream import build_default  # the sibling benchmark (python puts benchmarks/ on sys.path)
from torch.utils.data import DataLoader

from packer.train.collate import collate_4d, collate_docs, collate_flat, collate_flex, collate_padded
from packer.train.dataset import PackedDataset
from packer.train.masks import flex_block_mask, packed_attention_mask

BATCH = 8


def collators(pad_id: int) -> dict[str, Callable]:
    return {
        "collate_flat": collate_flat,
        "collate_docs": partial(collate_docs, pad_id=pad_id),
        "collate_flex": partial(collate_flex, pad_id=pad_id),
        "collate_flat pad_multiple=16": partial(collate_flat, pad_id=pad_id, pad_multiple=16),
        "collate_docs pad_multiple=16": partial(collate_docs, pad_id=pad_id, pad_multiple=16),
        "collate_padded (one doc a row only)": partial(collate_padded, pad_id=pad_id),
        "collate_4d bool": partial(collate_4d, pad_id=pad_id, dtype=torch.bool),
        "collate_4d float32": partial(collate_4d, pad_id=pad_id, dtype=torch.float32),
    }


def nbytes(batch: dict) -> int:
    return sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))


def collate_only(collate: Callable, batches: list[list[dict]], repeat: int) -> tuple[float, int]:
    """(best seconds over all batches, MB of one batch)."""
    size = nbytes(collate(batches[0]))  # also the warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for items in batches:
            collate(items)
        best = min(best, time.perf_counter() - start)
    return best, size


class Counted:
    """``collate``, returning the items' real tokens with the batch (counted in the worker)."""

    def __init__(self, collate: Callable) -> None:
        self.collate = collate

    def __call__(self, items: list[dict]) -> tuple[int, dict]:
        return sum(len(x["input_ids"]) for x in items), self.collate(items)


def through_loader(shards: Path, collate: Callable, n_batches: int) -> tuple[float, int]:
    """(seconds for batches 2..n+1, their real tokens) through a DataLoader with one worker."""
    ds = PackedDataset(shards, "instruction_tuning", seed=0, batch_size=BATCH)
    dl = DataLoader(ds, batch_size=BATCH, num_workers=1, collate_fn=Counted(collate))
    it = iter(dl)
    next(it)  # the worker is up and has read the first rows
    tokens, start = 0, time.perf_counter()
    for _ in range(n_batches):
        tokens += next(it)[0]
    seconds = time.perf_counter() - start
    del it, dl
    return seconds, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=Path, help="an existing build output (default: build the ShareGPT sample)")
    ap.add_argument("--batches", type=int, default=12, help="batches collated in memory (and read by collate_4d)")
    ap.add_argument("--loader-batches", type=int, default=80, help="batches read through the DataLoader")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)  # one loader worker is one core
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        if a.shards is None:
            a.shards = Path(tmp) / "shards"
            print(build_default(a.shards))
        run(a)


def run(a: argparse.Namespace) -> None:
    ds = PackedDataset(a.shards, "instruction_tuning", seed=0, batch_size=BATCH, shuffle=False)
    pad_id = ds.manifest["tokenizer"].get("pad_id") or 0
    items = [item for _, item in zip(range(BATCH * (a.batches + 1)), ds, strict=False)]
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    real = sum(len(x["input_ids"]) for b in batches[: a.batches] for x in b)
    longest = max(len(x["input_ids"]) for x in items)
    print(f"{len(items)} rows, {BATCH} a batch, longest row {longest}, "
          f"{real / a.batches / BATCH:.0f} real tokens a row; torch {torch.__version__}, 1 thread")
    print("| collator | collate only, M tokens/s | ms/batch | DataLoader 1 worker, M tokens/s | MB/batch |")
    print("|---|---:|---:|---:|---:|")
    results = {}
    for name, collate in collators(pad_id).items():
        seconds, size = collate_only(collate, batches[: a.batches], a.repeat)
        n = a.batches if name.startswith("collate_4d") else a.loader_batches  # 4d: 0.5-1.5 s a batch
        loader_s, loader_tokens = through_loader(a.shards, collate, n)
        results[name] = real / seconds
        print(f"| {name} | {real / seconds / 1e6:.2f} | {seconds / a.batches * 1e3:.1f} | "
              f"{loader_tokens / loader_s / 1e6:.2f} | {size / 1e6:.1f} |")
    base = results["collate_4d float32"]
    print("collate-only ratios to collate_4d float32: " + ", ".join(
        f"{k} {v / base:.0f}x" for k, v in results.items() if not k.startswith("collate_4d float32")))
    ids = collate_docs(batches[0], pad_id=pad_id)["attention_mask"]
    for label, make in (("packed_attention_mask bool", lambda: packed_attention_mask(ids, dtype=torch.bool)),
                        ("packed_attention_mask float32", lambda: packed_attention_mask(ids)),
                        ("flex_block_mask", lambda: flex_block_mask(collate_flex(batches[0])["attention_mask"]))):
        make()
        start = time.perf_counter()
        make()
        print(f"step side on this CPU: {label} {1e3 * (time.perf_counter() - start):.0f} ms a batch")


if __name__ == "__main__":
    sys.exit(main())
