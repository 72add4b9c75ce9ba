"""Benchmark start-up (issue 28): a one-record ``packer build`` against a bare Python process that loads the same
``tokenizer.json``, each in a fresh process, median of ``--repeat`` (5), and the gap between the two in seconds.

    bare   python -c "from tokenizers import Tokenizer; Tokenizer.from_file('TOKENIZER/tokenizer.json')"
    build  packer build one.json --tokenizer TOKENIZER -o OUT          (the CLI, in a new interpreter)

for each of :data:`TOKENIZERS` found in ``../shared/tokenizers`` (one that is absent is skipped, named). The one
record is the first of ``examples/alpaca_demo.json``. The runs alternate (build, bare, build, ...) so that both
share the machine's noise; one warm-up run of each first fills numba's cache, the kept tiktoken core
(``~/.cache/packer``) and the page cache. Every child imports from bytecode, as an installed packer does: this
script unsets ``PYTHONDONTWRITEBYTECODE`` for them and keeps their bytecode under its scratch folder
(``PYTHONPYCACHEPREFIX``).

Each ``--code NAME=DIR`` is a checkout whose ``packer/`` is put first on ``PYTHONPATH`` (default: this one); with
several, each repetition runs every one in turn, so their figures come from the same run::

    python benchmarks/bench_startup.py
    git worktree add /tmp/before main --detach
    python benchmarks/bench_startup.py --code before=/tmp/before --code after=.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _measure import run_measured

ROOT = Path(__file__).resolve().parents[1]
SHARED_TOKENIZERS = ROOT.parent / "shared" / "tokenizers"
#: Qwen2.5 (byte-level BPE, 152k tokens: the tiktoken core) and Mistral 7B v0.1 (SentencePiece-style BPE)
TOKENIZERS = ("qwen2.5-instruct", "mistral-7b-instruct-v0.1")
SCRATCH = Path(tempfile.gettempdir()) / "bench" / "startup"
#: the CLI as the console script runs it (``packer = "packer.cli:main"``), in a new interpreter
CLI = "import sys; from packer.cli import main; sys.exit(main(prog_name='packer'))"
BARE = "import sys; from tokenizers import Tokenizer; Tokenizer.from_file(sys.argv[1])"


def child_env(code: Path | None) -> dict[str, str]:
    """The environment of a child: bytecode kept under the scratch folder; ``code`` first on the path."""
    # (run_measured lays these over os.environ: an empty value is how to unset one there)
    env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(SCRATCH / "pycache")}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def build_once(code: Path, one: Path, tokenizer: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="out-", dir=SCRATCH)) / "out"
    seconds = run_measured([sys.executable, "-c", CLI, "build", str(one), "--tokenizer", str(tokenizer),
                            "-o", str(out)], env=child_env(code)).seconds
    shutil.rmtree(out.parent, ignore_errors=True)
    return seconds


def bare_once(tokenizer: Path) -> float:
    return run_measured([sys.executable, "-c", BARE, str(tokenizer / "tokenizer.json")], env=child_env(None)).seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                    help="a checkout to time (repeatable) [default: this checkout]")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each command (median kept)")
    args = ap.parse_args()
    codes = {n: Path(d).resolve() for n, d in (c.split("=", 1) for c in args.code)} or {"this": ROOT}
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    os.chdir(SCRATCH)  # ``python -c`` puts the working folder first on sys.path: not a checkout's packer/
    one = SCRATCH / "one.json"
    one.write_text(json.dumps(json.loads((ROOT / "examples" / "alpaca_demo.json").read_text())[:1]))

    found = []
    for name in TOKENIZERS:
        if (SHARED_TOKENIZERS / name / "tokenizer.json").is_file():
            found.append(SHARED_TOKENIZERS / name)
        else:
            print(f"skipped {name}: no {SHARED_TOKENIZERS / name / 'tokenizer.json'}", file=sys.stderr)
    if not found:
        print("no tokenizer to time: ../shared/tokenizers is absent", file=sys.stderr)
        return
    rows = []
    for tok in found:
        for code in codes.values():  # warm-up
            build_once(code, one, tok)
        bare_once(tok)
        builds: dict[str, list[float]] = {n: [] for n in codes}
        bare: list[float] = []
        for i in range(args.repeat):
            print(f"{tok.name}: repetition {i + 1}/{args.repeat}", file=sys.stderr)
            for n, code in codes.items():
                builds[n].append(build_once(code, one, tok))
            bare.append(bare_once(tok))
        b = statistics.median(bare)
        rows += [(tok.name, n, statistics.median(v), b) for n, v in builds.items()]

    print(f"\nmedian wall seconds of {args.repeat} fresh processes each, alternating\n")
    print("| tokenizer | code | one-record build | bare tokenizer load | gap |")
    print("|---|---|---|---|---|")
    for tok_name, n, build, bare_s in rows:
        print(f"| {tok_name} | {n} | {build:.2f} | {bare_s:.2f} | {build - bare_s:.2f} |")


if __name__ == "__main__":
    main()
