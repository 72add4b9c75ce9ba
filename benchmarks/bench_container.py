"""The cost of the shard container: an output of format version 2-4 (Arrow IPC files) against the same build of
format version 5 (Arrow IPC streams), each read by the packer that wrote it.

For each output, a fresh child process (``PYTHONPATH``: the checkout that wrote it) measures

- the open of its first shard, as packer's local reader does it: memory map, open the container, every record
  batch (the median of 200 opens);
- how Hugging Face ``datasets`` gets it: ``Dataset.from_file`` of each shard (streams; maps, no copy) or
  ``load_dataset("arrow")`` (files; ``from_file`` cannot read them: a copy into a fresh cache), its seconds and
  the bytes it writes to the cache;
- ``PackedDataset`` (``instruction_tuning``, shuffled) over every row once: rows, tokens and tokens/s.

::

    git worktree add /tmp/old <commit> && (cd /tmp/old && python benchmarks/identity.py build /tmp/id-old sg3k)
    python benchmarks/identity.py build /tmp/id-new sg3k
    python benchmarks/bench_container.py /tmp/id-old/sg3k /tmp/id-new/sg3k --old-pythonpath /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, statistics, sys, tempfile, time
from pathlib import Path
import pyarrow as pa, pyarrow.ipc as ipc

out = Path(sys.argv[1])
m = json.loads((out / "manifest.json").read_text())
paths = [out / s["file"] for s in m["shards"]]
stream = not paths[0].read_bytes()[:6] == b"ARROW1"

def open_all(path):
    source = pa.memory_map(str(path))
    if stream:
        return list(ipc.open_stream(source))
    f = ipc.open_file(source)
    return [f.get_batch(b) for b in range(f.num_record_batches)]

batches = len(open_all(paths[0]))
times = []
for _ in range(200):
    t = time.perf_counter()
    open_all(paths[0])
    times.append(time.perf_counter() - t)
result = {"version": m["format"]["version"], "container": "stream" if stream else "file", "shards": len(paths),
          "bytes": sum(p.stat().st_size for p in paths), "batches_shard0": batches,
          "open_us": statistics.median(times) * 1e6}

import datasets
with tempfile.TemporaryDirectory() as cache:
    t = time.perf_counter()
    if stream:
        ds = datasets.concatenate_datasets([datasets.Dataset.from_file(str(p)) for p in paths])
    else:
        ds = datasets.load_dataset("arrow", data_files=[str(p) for p in paths], split="train", cache_dir=cache)
    result["hf_seconds"] = time.perf_counter() - t
    result["hf_rows"] = ds.num_rows
    result["hf_cache_bytes"] = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())

from packer.train.dataset import PackedDataset
ds = PackedDataset(out, strategy="instruction_tuning", shuffle=True, seed=0)
rows = tokens = 0
t = time.perf_counter()
for item in ds:
    rows += 1
    tokens += int(item["input_ids"].numel())
seconds = time.perf_counter() - t
result.update(rows=rows, tokens=tokens, read_seconds=seconds, tokens_per_s=tokens / seconds)
print(json.dumps(result))
"""


def measure(output: Path, pythonpath: Path) -> dict:
    # run from benchmarks/: with "-c" the working directory comes first on sys.path, and the repository root
    # would shadow a PYTHONPATH checkout with its own packer/
    env = {**os.environ, "PYTHONPATH": str(pythonpath.resolve())}
    done = subprocess.run([sys.executable, "-c", CHILD, str(output.resolve())], check=True, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path, help="an output of format version 2-4 (IPC files)")
    ap.add_argument("new", type=Path, help="the same build of format version 5 (IPC streams)")
    ap.add_argument("--old-pythonpath", type=Path, required=True, help="the checkout that wrote OLD")
    args = ap.parse_args()
    here = Path(__file__).resolve().parent.parent
    rows = [measure(args.old, args.old_pythonpath), measure(args.new, here)]
    print("| version | container | shards | MB | batches (shard 0) | open shard 0 µs | datasets s | datasets cache MB "
          "| rows | tokens | PackedDataset s | tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['version']} | {r['container']} | {r['shards']} | {r['bytes'] / 1e6:.1f} | {r['batches_shard0']} "
              f"| {r['open_us']:.0f} | {r['hf_seconds']:.2f} | {r['hf_cache_bytes'] / 1e6:.1f} | {r['rows']:,} "
              f"| {r['tokens']:,} | {r['read_seconds']:.2f} | {r['tokens_per_s'] / 1e6:.2f}M |")


if __name__ == "__main__":
    main()
