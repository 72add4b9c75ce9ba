"""Benchmark cold start: the wall time of each command in a fresh process, and where a one-record build's goes.

Commands, each run as the ``packer`` console script in a new process (``benchmarks/_measure.py``), ``--repeat``
times, median kept: ``--help``; ``inspect``, ``verify`` and ``show --row 0`` on a small output (the two demo files,
built by the same code); a one-record ``build`` with the demo tokenizer and with real tokenizers from
``../shared/tokenizers`` where present. Then the same one-record build through the API in a probe process that
times its parts: ``import packer.build`` (numpy, pyarrow, numba, tokenizers, jinja2 and packer's modules), loading
the tokenizer, numba's first calls (``Dispatcher._compile_for_args``: typing the arguments, then loading each kernel
from numba's cache or compiling it) and the rest of the build. Last, the one-record build with an empty numba cache
(``NUMBA_CACHE_DIR`` a fresh folder each run: what the first build after an install or an edit costs).

Each ``--code NAME=DIR`` is a checkout whose ``packer/`` is put first on ``PYTHONPATH``; with several, every
repetition runs each in turn (so they share the machine's noise), and the last column is the last code's median
over the first's. One warm-up run of everything first fills numba's cache and the page cache.

    python benchmarks/bench_cold.py                                       # this checkout
    git worktree add /tmp/before HEAD                                     # the code before, beside it
    python benchmarks/bench_cold.py --code before=/tmp/before --code after=.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _measure import run_measured

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT.parent / "shared" / "tokenizers"
EXAMPLES = ROOT / "examples"
SCRATCH = Path("/tmp/bench/cold")
#: real tokenizers timed when ../shared/tokenizers has them: a large vocabulary each (Qwen 152k, Llama 3 128k)
REAL_TOKENIZERS = ("qwen2.5-instruct", "llama-3-8b-instruct")
CONSOLE = Path(sys.executable).parent / "packer"

#: the one-record build through the API, timing its parts; argv: input, output, tokenizer; prints JSON
_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import packer.pipeline.build
t1 = time.perf_counter()
from packer.tokens.tokenize import load_tokenizer
tok = load_tokenizer(sys.argv[3])
t2 = time.perf_counter()
from numba.core.dispatcher import Dispatcher
original, spent, seen = Dispatcher._compile_for_args, [0.0], set()
def timed(self, *args, **kws):
    start = time.perf_counter()
    try:
        return original(self, *args, **kws)
    finally:
        spent[0] += time.perf_counter() - start
        seen.add(self)
Dispatcher._compile_for_args = timed
sys.modules["packer.pipeline.build"].build([sys.argv[1]], sys.argv[2], tokenizer=tok, seq_len=4096)
t3 = time.perf_counter()
hits = sum(sum(d.stats.cache_hits.values()) for d in seen)
misses = sum(sum(d.stats.cache_misses.values()) for d in seen)
print(json.dumps({"imports": t1 - t0, "tokenizer": t2 - t1, "numba": spent[0], "rest": t3 - t2 - spent[0],
                  "total": t3 - t0, "hits": hits, "misses": misses}))
"""


def demo_tokenizer(code: Path) -> Path:
    """The demo tokenizer of a checkout (it moved from examples/ into the package)."""
    for d in (code / "packer" / "demo_tokenizer", code / "examples" / "demo-tokenizer",
              ROOT / "packer" / "demo_tokenizer", ROOT / "examples" / "demo-tokenizer"):
        if (d / "tokenizer.json").is_file():
            return d
    raise SystemExit(f"no demo tokenizer in {code} or {ROOT}")


def fresh(name: str) -> Path:
    """A new, not yet existing output path under the scratch folder."""
    return Path(tempfile.mkdtemp(prefix=name + "-", dir=SCRATCH)) / "out"


class Code:
    """One checkout under test: runs the console script and the probe with its ``packer/`` first on the path."""

    def __init__(self, name: str, path: str | Path) -> None:
        self.name, self.path = name, Path(path).resolve()
        self.env = {"PYTHONPATH": str(self.path)}
        self.tokenizer = demo_tokenizer(self.path)
        self.output: Path | None = None

    def packer(self, *args: str, env: dict[str, str] | None = None) -> float:
        return run_measured([sys.executable, str(CONSOLE), *args], env={**self.env, **(env or {})}).seconds

    def probe(self, one: Path, tokenizer: Path) -> dict:
        cmd = [sys.executable, "-c", _PROBE, str(one), str(fresh("probe")), str(tokenizer)]
        return json.loads(run_measured(cmd, env=self.env).stdout.strip().splitlines()[-1])


def cases(one: Path, tokenizers: dict[str, Path | None]) -> dict[str, Callable[[Code], float]]:
    """Command label -> a function running it once with a code, returning seconds."""
    out: dict[str, Callable[[Code], float]] = {
        "python -c pass (the interpreter alone)": lambda c: run_measured([sys.executable, "-c", "pass"]).seconds,
        "packer --help": lambda c: c.packer("--help"),
        "packer inspect OUT": lambda c: c.packer("inspect", str(c.output)),
        "packer verify OUT": lambda c: c.packer("verify", str(c.output)),
        "packer show OUT --row 0": lambda c: c.packer("show", str(c.output), "--row", "0"),
    }
    for label, tok in tokenizers.items():

        def run(c: Code, tok: Path | None = tok) -> float:
            return c.packer("build", str(one), "-o", str(fresh("build")), "--tokenizer", str(tok or c.tokenizer), "-q")

        out[f"packer build (1 record, {label})"] = run
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                    help="a checkout to time (repeatable) [default: now=this checkout]")
    ap.add_argument("--repeat", type=int, default=7, help="runs per command and code (median kept)")
    ap.add_argument("--cold-repeat", type=int, default=3, help="runs of the build with an empty numba cache")
    args = ap.parse_args()
    codes = [Code(*spec.split("=", 1)) for spec in args.code] if args.code else [Code("now", ROOT)]
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)

    # one record: the first of the demo Alpaca file
    one = SCRATCH / "one.json"
    one.write_text(json.dumps(json.loads((EXAMPLES / "alpaca_demo.json").read_text())[:1]))
    tokenizers: dict[str, Path | None] = {"demo tokenizer": None}
    for name in REAL_TOKENIZERS:
        if (TOKENIZERS / name / "tokenizer.json").is_file():
            tokenizers[name] = TOKENIZERS / name
    for c in codes:  # the small output the read commands look at; this also fills numba's cache
        c.output = fresh(f"demo-{c.name}")
        c.packer("build", str(EXAMPLES / "alpaca_demo.json"), str(EXAMPLES / "sharegpt_demo.json"),
                 "-o", str(c.output), "--tokenizer", str(c.tokenizer), "-q")

    table = cases(one, tokenizers)
    for c in codes:  # warm-up
        for run in table.values():
            run(c)
        for tok in tokenizers.values():
            c.probe(one, tok or c.tokenizer)
    times: dict[str, dict[str, list[float]]] = {label: {c.name: [] for c in codes} for label in table}
    parts: dict[str, dict[str, list[dict]]] = {label: {c.name: [] for c in codes} for label in tokenizers}
    for i in range(args.repeat):
        print(f"repetition {i + 1}/{args.repeat}", file=sys.stderr)
        for label, run in table.items():
            for c in codes:
                times[label][c.name].append(run(c))
        for label, tok in tokenizers.items():
            for c in codes:
                parts[label][c.name].append(c.probe(one, tok or c.tokenizer))
    cold: dict[str, list[float]] = {c.name: [] for c in codes}
    for _ in range(args.cold_repeat):
        for c in codes:
            cache = Path(tempfile.mkdtemp(prefix="numba-", dir=SCRATCH))
            cold[c.name].append(c.packer("build", str(one), "-o", str(fresh("cold")), "--tokenizer", str(c.tokenizer),
                                         "-q", env={"NUMBA_CACHE_DIR": str(cache)}))

    names = [c.name for c in codes]
    ratio = len(codes) > 1
    print(f"\nmedian wall seconds of {args.repeat} fresh processes ({args.cold_repeat} for the empty cache)\n")
    head = "| command | " + " | ".join(names) + (f" | {names[-1]} / {names[0]} |" if ratio else " |")
    print(head + "\n" + "|---" * (len(names) + 1 + ratio) + "|")
    rows = {label: {n: statistics.median(v) for n, v in by.items()} for label, by in times.items()}
    rows["packer build (1 record, demo tokenizer), empty numba cache"] = {
        n: statistics.median(v) for n, v in cold.items()
    }
    for label, med in rows.items():
        cells = " | ".join(f"{med[n]:.2f}" for n in names)
        print(f"| {label} | {cells}" + (f" | {med[names[-1]] / med[names[0]]:.2f} |" if ratio else " |"))

    print("\none-record build through the API, median seconds of its parts (numba: first calls, cache hits/misses)\n")
    keys = ("imports", "tokenizer", "numba", "rest", "total")
    print("| tokenizer | code | import packer.build | load tokenizer | numba first calls | rest of build | total |")
    print("|---" * 7 + "|")
    for label in tokenizers:
        for n in names:
            runs = parts[label][n]
            med = {k: statistics.median(r[k] for r in runs) for k in keys}
            cache = f"{runs[-1]['hits']}/{runs[-1]['misses']}"
            print(f"| {label} | {n} | {med['imports']:.2f} | {med['tokenizer']:.2f} | {med['numba']:.2f} ({cache}) | "
                  f"{med['rest']:.2f} | {med['total']:.2f} |")


if __name__ == "__main__":
    main()
