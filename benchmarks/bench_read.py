"""Peak memory and time of reading a JSON array file record by record (``packer.read.formats.RecordReader``).

Each run is a fresh child process that iterates every record of ``FILE`` and reports its own peak RSS
(``VmHWM``) and seconds. Give ``PYTHONPATH`` of an older checkout's ``packer/`` to measure that one (see
``BENCHMARKS.md``). Default file: the ShareGPT 17k JSON array (``bench_build.py`` writes it).

    python benchmarks/bench_read.py
    python benchmarks/bench_read.py /tmp/bench/sharegpt17k.json
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = """
import sys, time
from pathlib import Path
from packer.read.formats import RecordReader
start = time.perf_counter()
n = sum(1 for _ in RecordReader([sys.argv[1]]))
seconds = time.perf_counter() - start
hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
print(n, round(seconds, 2), int(hwm.split()[1]) // 1024)
"""


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench/sharegpt17k.json")
    # run from benchmarks/: with "-c" the working directory comes first on sys.path, and the repository root
    # would shadow a PYTHONPATH checkout with its own packer/
    out = subprocess.run([sys.executable, "-c", CHILD, str(path.resolve())], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent)
    records, seconds, peak = out.stdout.split()
    size = path.stat().st_size / 1e6
    print("| file | MB | records | seconds | peak RSS MB |\n|---|---|---|---|---|")
    print(f"| {path.name} | {size:,.0f} | {int(records):,} | {seconds} | {peak} |")


if __name__ == "__main__":
    main()
