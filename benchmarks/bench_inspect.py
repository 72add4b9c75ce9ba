"""Time and peak memory of ``packer inspect`` (``packer.inspect.report.inspect``) on outputs of many records.

The output is made without tokenizing anything: the demo data is built once for its manifest, then
``documents.arrow`` is replaced by one of ``N`` synthetic records (written by the build's own
``write_documents``: packed, truncated and rejected ones, 1-6 documents a row) and the manifest's counts
follow. Each measurement is a fresh child process reporting its seconds and peak RSS (``VmHWM``).

    python benchmarks/bench_inspect.py                 # 1M and 10M records
    python benchmarks/bench_inspect.py 100000 1000000
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import sys, time
from pathlib import Path
from packer.inspect.report import inspect
start = time.perf_counter()
r = inspect(sys.argv[1])
seconds = time.perf_counter() - start
hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
print(r["records"]["packed"], round(seconds, 2), int(hwm.split()[1]) // 1024)
"""


def make_output(out: Path, n: int) -> None:
    import pyarrow as pa

    from packer import build
    from packer.options import DEMO_TOKENIZER
    from packer.output.layout import DOCUMENTS_FILE, MANIFEST_FILE, file_sha256
    from packer.output.shards import write_documents

    m = build([ROOT / "examples" / "alpaca_demo.json"], out, tokenizer=DEMO_TOKENIZER, overwrite=True)
    rng = np.random.default_rng(0)
    status = rng.choice(np.array(["packed", "truncated", "empty_output", "overlong"]), n, p=[0.9, 0.02, 0.05, 0.03])
    kept = np.isin(status, ["packed", "truncated"])
    per_row = rng.integers(1, 7, n)
    row = np.repeat(np.arange(n), per_row)[:n]
    shard = row // 100_000
    prompt, response = rng.integers(5, 400, n), rng.integers(1, 800, n)

    def ints(values: np.ndarray, mask: np.ndarray, type: pa.DataType = pa.int32()):  # type: ignore[no-untyped-def]  # noqa: B008
        return lambda a, b: pa.array(values[a:b], type=type, mask=~mask[a:b])

    everywhere = np.ones(n, dtype=bool)
    write_documents(out / DOCUMENTS_FILE, {
        "doc_id": lambda a, b: pa.array(np.arange(a, b, dtype=np.int64)),
        "input": lambda a, b: pa.array(["data.json"] * (b - a)),
        "record": lambda a, b: pa.array(np.arange(a, b, dtype=np.int64)),
        "status": lambda a, b: pa.array(status[a:b]),
        "shard": ints(shard, kept), "row": ints(row % 100_000, kept), "offset": ints(np.zeros(n, int), kept),
        "tokens": ints(prompt + response, kept), "turns": ints(np.full(n, 2), everywhere),
        "prompt_tokens": ints(prompt, kept), "response_tokens": ints(response, kept),
        "prompt_words": ints(prompt * 3 // 4, everywhere), "response_words": ints(response * 3 // 4, everywhere),
        "duplicate_of": lambda a, b: pa.array([None] * (b - a), type=pa.int64()),
    }, n_rows=n)
    values, counts = np.unique(status, return_counts=True)
    c = dict(zip(values.tolist(), counts.tolist(), strict=True))
    m["counts"].update(records=n, packed=int(kept.sum()), truncated=c.get("truncated", 0),
                       rejected={k: v for k, v in c.items() if k not in ("packed", "truncated")})
    m["documents"]["sha256"] = file_sha256(out / DOCUMENTS_FILE)
    (out / MANIFEST_FILE).write_text(json.dumps(m, indent=2) + "\n")


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1_000_000, 10_000_000]
    print("| records | packed | seconds | peak RSS MB |\n|---|---|---|---|")
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "out"
            make_output(out, n)
            got = subprocess.run([sys.executable, "-c", CHILD, str(out)], check=True, capture_output=True,
                                 text=True, cwd=Path(__file__).resolve().parent)
            packed, seconds, peak = got.stdout.split()
            print(f"| {n:,} | {int(packed):,} | {seconds} | {peak} |", flush=True)


if __name__ == "__main__":
    main()
