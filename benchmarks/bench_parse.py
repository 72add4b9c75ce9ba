"""Per-record cost of the record parsers (JSON already decoded: the work :mod:`packer.read.normalise` does), and of
rendering the parsed records with the tokenizer's own template, on real files.

Run it in two checkouts back to back to compare them (the machine is shared and noisy: quote ratios of one
run, best of ``--repeat``)::

    python benchmarks/bench_parse.py
    (cd /tmp/old && PYTHONPATH=. python /path/to/benchmarks/bench_parse.py)
"""

from __future__ import annotations

import argparse
import json
import timeit
from pathlib import Path

from packer.read import formats as F
from packer.read import normalise as N
from packer.read.records import Conversation
from packer.read.turnfields import _Reject
from packer.tokens.loader import load_tokenizer
from packer.tokens.templates import ChatTemplate

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SETS = {
    "sharegpt3k": ("sharegpt_v3_unfiltered_cleaned_split_first3000.json", "_parse_sharegpt"),
    "gsm8k (alpaca)": ("alpaca_gsm8k_train.json", "_parse_alpaca"),
    "glaive (sharegpt, tools)": ("sharegpt_glaive_toolcall_en_demo.json", "_parse_sharegpt"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--tokenizer", default="qwen3")
    args = ap.parse_args()
    tok = load_tokenizer(SHARED / "tokenizers" / args.tokenizer)
    print("| set | records | parse us/record | render us/record |\n|---|---|---|---|")
    for name, (file, parser) in SETS.items():
        records = json.loads((SHARED / "data" / file).read_text())
        parse = getattr(N, parser)

        def parse_all(records: list = records, parse=parse) -> list:  # type: ignore[no-untyped-def]
            out = []
            for r in records:
                try:
                    out.append(parse(r))
                except _Reject:
                    pass
            return out

        t_parse = min(timeit.repeat(parse_all, number=1, repeat=args.repeat)) / len(records)
        convs = [c for c in F.RecordReader([SHARED / "data" / file]) if isinstance(c, Conversation)]

        def render_all(convs: list = convs) -> None:
            tpl = ChatTemplate.named("tokenizer", tok)  # a fresh one: learning the shapes is part of the cost
            for c in convs:
                tpl.render(c)

        t_render = min(timeit.repeat(render_all, number=1, repeat=args.repeat)) / max(1, len(convs))
        print(f"| {name} | {len(records):,} | {t_parse * 1e6:.1f} | {t_render * 1e6:.1f} |")


if __name__ == "__main__":
    main()
