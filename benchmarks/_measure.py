"""Run a command in a child process and measure its wall time and peak RSS.

The child is started by a fresh, small waiter process (the system ``python3``), which reports
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after the child exits. Why a waiter: a child forked (or vforked)
from a big benchmark process starts out sharing that process's pages, and Linux folds the pre-``exec``
high-water mark into the child's ``ru_maxrss``; from a ~10 MB waiter, that floor is negligible, and each
measurement has its own waiter, so runs do not inherit each other's peaks. The peak covers the child and
every descendant it waited for (``datasets`` worker processes, DataLoader workers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

#: the waiter: runs argv[1:], then prints the child's exit status, wall seconds and peak RSS (KiB) as JSON
_WAITER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.call(sys.argv[1:])
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "maxrss_kib": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime}),
      file=sys.stderr)
"""


@dataclass
class Measured:
    seconds: float  # wall time of the child, start to exit (imports included)
    peak_rss_mb: float  # MB = 10**6 bytes
    stdout: str
    #: user + system CPU seconds of the child and every descendant it waited for
    cpu_seconds: float = 0.0


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` under a fresh waiter; raise with its stderr if it fails."""
    waiter = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    proc = subprocess.run(
        [waiter, "-c", _WAITER, *cmd], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    lines = proc.stderr.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"{cmd[0]}: no measurement; stderr:\n{proc.stderr[-4000:]}") from None
    if report["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({report['rc']}); stderr:\n{proc.stderr[-4000:]}")
    return Measured(report["wall"], report["maxrss_kib"] * 1024 / 1e6, proc.stdout, report.get("cpu", 0.0))
