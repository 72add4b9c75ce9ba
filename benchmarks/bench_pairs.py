"""Preference pairs (issue 27): tokens a DPO step computes, packer's packed pair rows against TRL's padded batches.

TRL's ``DPOTrainer`` (padding_free off, its default) runs every pair as two sequences, prompt + chosen and
prompt + rejected, each batch padded to its longest sequence: a batch of ``B`` pairs computes ``2 * B * longest``
tokens (with ``padding_free=True``, flash attention only, the two sides without padding: the prompt still
twice). packer stores each pair's common prefix once and packs whole pairs into rows of ``seq_len``; a batch of
rows computes ``rows * longest row`` tokens (the pair collator pads to the batch's longest row). Both see every
pair once, in one epoch; the figure is tokens computed per pair, and the share that is padding or a repeated
prompt. The sides' ids are transformers' ``apply_chat_template`` of each conversation (what TRL tokenizes), and
must equal packer's exactly (checked on every pair).

    PYTHONPATH=REPO REPO/.venv/bin/python REPO/benchmarks/bench_pairs.py \\
        [--data ../shared/data/llamafactory_dpo_en_demo.json] [--tokenizer ../shared/tokenizers/qwen2.5-instruct]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.ipc as ipc

from packer.output.container import read_table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def trl_tokens(lengths: list[tuple[int, int]], batch: int, seed: int) -> tuple[int, int]:
    """(tokens computed, real tokens) of one epoch of TRL's padded [chosen; rejected] batches, shuffled."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    computed = real = 0
    for i in range(0, len(order), batch):
        group = [lengths[k] for k in order[i : i + batch]]
        longest = max(max(c, r) for c, r in group)
        computed += 2 * len(group) * longest
        real += sum(c + r for c, r in group)
    return computed, real


def row_lengths(out: Path) -> list[int]:
    m = json.loads((out / "manifest.json").read_text())
    lengths = []
    for s in m["shards"]:
        lengths += [len(x) for x in read_table(out / s["file"]).column("input_ids").to_pylist()]
    return lengths


def packer_tokens(lengths: list[int], rows_per_batch: int, seed: int) -> int:
    """Tokens computed in one epoch of packer's pair rows, shuffled, each batch padded to its longest row."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    computed = 0
    for i in range(0, len(order), rows_per_batch):
        group = [lengths[k] for k in order[i : i + rows_per_batch]]
        computed += len(group) * max(group)
    return computed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED / "data" / "llamafactory_dpo_en_demo.json")
    p.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizers" / "qwen2.5-instruct")
    p.add_argument("--seq-len", type=int, default=8192)
    p.add_argument("--pairs-per-batch", type=int, default=8, help="TRL's per-device batch of pairs")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    from transformers import AutoTokenizer

    from packer import build
    from tests.test_pairs_build import load_records, oracle_sides, side_ids, units

    hf = AutoTokenizer.from_pretrained(str(a.tokenizer), local_files_only=True)
    records = load_records(a.data)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o"
        t0 = time.perf_counter()
        m = build([a.data], out, tokenizer=a.tokenizer, tokenizer_loader="transformers", seq_len=a.seq_len)
        seconds = time.perf_counter() - t0
        docs = {d["doc_id"]: d for d in ipc.open_file(out / "documents.arrow").read_all().to_pylist()}
        stored = units(out)
        lengths = []
        for doc_id, unit in stored.items():
            chosen, rejected = oracle_sides(records[docs[doc_id]["record"]])
            c = list(hf.apply_chat_template(chosen, tokenize=True, return_dict=False))
            r = list(hf.apply_chat_template(rejected, tokenize=True, return_dict=False))
            assert side_ids(unit) == (c, r), f"record {docs[doc_id]['record']}: sides differ from apply_chat_template"
            lengths.append((len(c), len(r)))
        trl_computed, trl_real = trl_tokens(lengths, a.pairs_per_batch, a.seed)
        rows = row_lengths(out)
        # as many rows a batch as hold, on average, TRL's batch of pairs
        rows_per_batch = max(1, round(a.pairs_per_batch * len(rows) / len(lengths)))
        pk_computed, pk_stored, n_rows = packer_tokens(rows, rows_per_batch, a.seed), sum(rows), len(rows)
    n = len(lengths)
    print(f"{a.data.name}: {n} pairs packed of {m['counts']['records']}, {a.tokenizer.name}, seq_len {a.seq_len}, "
          f"build {seconds:.1f} s")
    print(f"  two sides, every token once each:  {trl_real:>9,} tokens ({trl_real / n:,.0f} a pair)")
    print(f"  TRL, {a.pairs_per_batch} pairs a batch, padded: {trl_computed:>9,} tokens computed "
          f"({trl_computed / n:,.0f} a pair; {1 - trl_real / trl_computed:.1%} padding)")
    print(f"  TRL padding_free=True:            {trl_real:>9,} tokens computed (no padding; each prompt twice)")
    print(f"  packer, prefix once, stored:      {pk_stored:>9,} tokens ({pk_stored / n:,.0f} a pair; "
          f"{1 - pk_stored / trl_real:.1%} fewer than the two sides)")
    print(f"  packer, {n_rows} rows, {rows_per_batch} a batch:   {pk_computed:>9,} tokens computed "
          f"({pk_computed / n:,.0f} a pair; {1 - pk_stored / pk_computed:.1%} padding)")
    print(f"  tokens computed per pair, packer / TRL: {pk_computed / trl_computed:.3f} "
          f"({1 - pk_computed / trl_computed:.1%} saved)")


if __name__ == "__main__":
    main()
