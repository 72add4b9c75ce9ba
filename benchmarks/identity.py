"""Build the byte-identity configurations into a folder, or compare two such folders.

A change that must not change outputs (a refactor, a faster kernel) is checked by building every
configuration below with the old code and with the new one and comparing every file; the manifest is
compared without ``build_seconds`` (a wall time), ``packer_version`` and ``tokenizer.resolved`` (the
tokenizer's absolute path, which differs between two checkouts).

    git worktree add /tmp/old <commit> && (cd /tmp/old && python benchmarks/identity.py build /tmp/id-old)
    python benchmarks/identity.py build /tmp/id-new
    python benchmarks/identity.py compare /tmp/id-old /tmp/id-new
    python benchmarks/identity.py build /tmp/id-pool --workers 2 --part-kb 64   # the same bytes from 2 workers
    python benchmarks/identity.py compare-columns /tmp/id-old /tmp/id-new   # across a format change

Configurations that need ``../shared`` (real data and tokenizers) are skipped, named, where it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# paths relative to the checkout (the script runs there), so two checkouts write the same manifests
ROOT = Path(".")
SHARED = Path("..") / "shared"
DATA = SHARED / "data"
TOKS = SHARED / "tokenizers"
DEMO_TOK = ROOT / "packer" / "demo_tokenizer"
DEMO = [ROOT / "examples" / "alpaca_demo.json", ROOT / "examples" / "sharegpt_demo.json"]
#: the bad inputs that fail a build of their own (tests/test_bad_inputs.py FAILS): the rest go into one build
FAILS_A_BUILD = {"empty.json", "broken_array_unknown.json", "two_arrays.json", "preference_pairs.jsonl",
                 "kto_labels.json"}
BAD = sorted(p for p in (Path(__file__).resolve().parent.parent / "tests" / "bad_inputs").iterdir()
             if p.suffix in (".json", ".jsonl") and p.name not in FAILS_A_BUILD)
BAD = [ROOT / "tests" / "bad_inputs" / p.name for p in BAD]
SG3K = DATA / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"
LIMA = DATA / "messages_lima.jsonl"
GSM = DATA / "alpaca_gsm8k_train.json"
ALPACAS = sorted(DATA.glob("alpaca_*.json"))


def configurations() -> dict[str, tuple[list[Path], dict]]:
    """name -> (inputs, keyword arguments of packer.build)."""
    demo = {"tokenizer": DEMO_TOK}
    qwen = {"tokenizer": TOKS / "qwen2.5-instruct"}
    llama3 = {"tokenizer": TOKS / "llama-3-8b-instruct"}
    gpt2 = {"tokenizer": TOKS / "gpt2", "template": "tulu"}
    out: dict[str, tuple[list[Path], dict]] = {
        "demo": (DEMO, demo),
        "demo-dedupe": (DEMO, {**demo, "dedupe": True}),
        "demo-truncate": (DEMO, {**demo, "seq_len": 96, "overlong": "truncate"}),
        "demo-small-shards": (DEMO, {**demo, "seq_len": 256, "shard_size": 20_000 / 2**20}),
        "demo-batch7": (DEMO, {**demo, "batch_size": 7}),
        "bad": (BAD, {**demo, "seq_len": 512}),
        "bad-dedupe": (BAD, {**demo, "seq_len": 512, "dedupe": True}),
        "bad-truncate": (BAD, {**demo, "seq_len": 64, "overlong": "truncate", "blank_turns": "drop"}),
        "sg3k": ([SG3K], qwen),
        "sg3k-lima-truncate-dedupe": ([SG3K, LIMA], {**qwen, "seq_len": 2048, "overlong": "truncate",
                                                      "dedupe": True}),
        "lima-twice-ffd": ([LIMA, LIMA], {**qwen, "packing": "ffd"}),
        "lima-gsm-llama3-nextfit-custom": ([LIMA, GSM], {**llama3, "packing": "nextfit",
                                                          "strategy": ["mine=instruction,response,end"]}),
        "alpacas-llama3": (ALPACAS, llama3),
        # plain Alpaca records take the map stage's columnar path (packer.pipeline.flat): a template that pastes
        # (Qwen2.5's), one with an input field, one that trims (llama3's, above), a SentencePiece tokenizer
        "alpacas-qwen": (ALPACAS, qwen),
        "alpacas-qwen-alpaca-truncate-batch64": (ALPACAS, {**qwen, "template": "alpaca", "seq_len": 512,
                                                           "overlong": "truncate", "batch_size": 64}),
        "alpacas-mistral": (ALPACAS, {"tokenizer": TOKS / "mistral-7b-instruct-v0.1"}),
    }
    # SentencePiece-style tokenizers: labelled from the walk of their pieces (packer.tokens.spans)
    mistral = {"tokenizer": TOKS / "mistral-7b-instruct-v0.1"}
    phi3 = {"tokenizer": TOKS / "phi-3-mini-instruct"}
    out |= {
        "sg3k-mistral": ([SG3K], mistral),
        "lima-gsm-phi3-truncate": ([LIMA, GSM], {**phi3, "seq_len": 1024, "overlong": "truncate"}),
        "sg3k-gemma2-chatml-split": ([SG3K], {"tokenizer": TOKS / "gemma-2", "template": "chatml",
                                              "overlong": "split", "seq_len": 2048}),
        "alpacas-llama2": (ALPACAS, {"tokenizer": TOKS / "llama-2", "template": "alpaca"}),
        "toolcall-glaive-phi3": ([DATA / "sharegpt_glaive_toolcall_en_demo.json"], phi3),
        "dpo-phi3": ([DATA / "llamafactory_dpo_en_demo.json"], phi3),
        "kto-mistral": ([DATA / "llamafactory_kto_en_demo.json"], mistral),
    }
    for path in sorted(DATA.glob("*.json*")):
        out[f"gpt2-tulu-{path.stem}"] = ([path], gpt2)
    return out


def build_all(dest: Path, only: list[str], workers: int = 1, part_kb: int | None = None) -> int:
    from packer import BuildError, build

    dest = dest.resolve()
    os.chdir(Path(__file__).resolve().parent.parent)
    dest.mkdir(parents=True, exist_ok=True)
    missing = []
    for name, (inputs, kwargs) in configurations().items():
        if only and name not in only:
            continue
        needs = [*inputs, kwargs["tokenizer"]]
        if not all(Path(p).exists() for p in needs):
            missing.append(name)
            continue
        t0 = time.perf_counter()
        try:
            # the same bytes for any workers and parts
            extra = {"workers": workers, **({"part_size": part_kb / 1024} if part_kb else {})}
            m = build(inputs, dest / name, **kwargs, **extra, overwrite=True)
        except BuildError as e:  # an input this packer cannot read yet: the failure is compared too
            (dest / name).mkdir(exist_ok=True)
            (dest / name / "error.txt").write_text(f"{e}\n", encoding="utf-8")
            print(f"{name}: {e}", flush=True)
            continue
        print(f"{name}: {m['counts']['records']} records, {m['packing']['rows']} rows, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    if missing:
        print(f"skipped (no ../shared): {', '.join(missing)}", file=sys.stderr)
    return 0


def _manifest(path: Path) -> dict:
    m = json.loads(path.read_text(encoding="utf-8"))
    m.pop("build_seconds", None)
    m.pop("packer_version", None)
    m.get("tokenizer", {}).pop("resolved", None)
    return m


def compare(a: Path, b: Path) -> int:
    bad = 0
    names = sorted({p.name for p in a.iterdir()} & {p.name for p in b.iterdir()})
    files = 0
    for name in names:
        fa, fb = sorted(p.name for p in (a / name).glob("*")), sorted(p.name for p in (b / name).glob("*"))
        if fa != fb:
            print(f"{name}: files differ: {fa} vs {fb}")
            bad += 1
            continue
        for f in fa:
            files += 1
            if f == "manifest.json":
                same = _manifest(a / name / f) == _manifest(b / name / f)
            else:
                same = (a / name / f).read_bytes() == (b / name / f).read_bytes()
            if not same:
                print(f"{name}/{f}: differs")
                bad += 1
    print(f"{len(names)} configurations, {files} files compared, {bad} differences")
    return 1 if bad else 0


def _manifest_sans_container(path: Path) -> dict:
    """The manifest less what a change of container changes: the format version and each shard's bytes,
    sha256 and batch index (format version 5)."""
    m = _manifest(path)
    m["format"].pop("version", None)
    for shard in [*m.get("shards", []), *(m.get("eval") or {}).get("shards", [])]:
        for key in ("bytes", "sha256", "batch_offsets", "batch_rows"):
            shard.pop(key, None)
    return m


def compare_columns(a: Path, b: Path) -> int:
    """Across a format change: every Arrow column of ``a``'s files equal in ``b``'s (columns ``b`` adds are
    not compared, and shards are read whole, so shards cut at other rows still compare), rejected.jsonl and
    the manifests' counts equal; the fields of the manifests that differ besides the container's (format
    version, shards' bytes, sha256 and batch index) are named (a difference when the columns are the same)."""
    import pyarrow as pa

    from packer.output.container import read_table  # either container: an IPC file or stream

    bad = 0
    names = sorted(p.name for p in a.iterdir() if (p / "manifest.json").exists())
    for name in names:
        if not (b / name / "manifest.json").exists():
            print(f"{name}: no output in {b}")
            bad += 1
            continue
        for kind in ("shard-*.arrow", "eval-shard-*.arrow", "documents.arrow"):
            ta, tb = ([read_table(p) for p in sorted((d / name).glob(kind))] for d in (a, b))
            if not ta and not tb:
                continue
            ta_, tb_ = pa.concat_tables(ta), pa.concat_tables(tb)
            for col in ta_.column_names:
                if col not in tb_.column_names or not ta_.column(col).equals(tb_.column(col)):
                    print(f"{name}/{kind} {col}: differs")
                    bad += 1
        ra, rb = (d / name / "rejected.jsonl" for d in (a, b))
        if (ra.read_text() if ra.exists() else "") != (rb.read_text() if rb.exists() else ""):
            print(f"{name}/rejected.jsonl: differs")
            bad += 1
        counts = [json.loads((d / name / "manifest.json").read_text())["counts"] for d in (a, b)]
        if counts[0] != counts[1]:
            print(f"{name}: counts differ")
            bad += 1
        ma, mb = (_manifest_sans_container(d / name / "manifest.json") for d in (a, b))
        for key in sorted(set(ma) | set(mb)):
            if ma.get(key) != mb.get(key):
                print(f"{name}/manifest.json {key}: differs besides the container")
                bad += 1
    print(f"{len(names)} configurations compared column by column, {bad} differences")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("dest", type=Path)
    b.add_argument("only", nargs="*")
    b.add_argument("--workers", type=int, default=1, help="build with this many worker processes")
    b.add_argument("--part-kb", type=int, default=None, help="cut the input into parts of this many KiB")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    cc = sub.add_parser("compare-columns", help="across a format change: the columns of the old outputs equal")
    cc.add_argument("a", type=Path)
    cc.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "build":
        return build_all(args.dest, args.only, args.workers, args.part_kb)
    return compare(args.a, args.b) if args.cmd == "compare" else compare_columns(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
