"""Faults that must be loud, bounded and leave nothing behind (issue 24).

A build killed with SIGKILL takes its worker processes with it; two builds into one folder at once never both
succeed; a full disk, an object store that fails, a symlink packer did not make are each one line that says
what happened, and the target is left as it was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import DEMO_INPUTS, DEMO_TOKENIZER, demo_variants

CLI = "import sys; from packer.cli import main; sys.argv[0] = 'packer'; main()"


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, check=False, **kw)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def build_args(out: Path | str, *extra: str) -> list[str]:
    return [*map(str, DEMO_INPUTS), "-o", str(out), "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "512", "-q",
            *extra]


@pytest.fixture(scope="module")
def slow_input(tmp_path_factory) -> Path:
    """A build that runs for a few seconds."""
    return demo_variants(tmp_path_factory.mktemp("slow") / "slow.jsonl", 300)


def _wait_for(path: Path, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the build exited ({proc.returncode}) before {what}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"the build never got to {what}"
        time.sleep(0.02)


# -- 1. SIGKILL of the driver takes its workers with it -----------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, from /proc; None where it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every process below ``pid`` (children, their children, ...)."""
    parents: dict[int, int] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = st[1]
            starts[int(entry.name)] = st[2]
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def _alive(procs: dict[int, int]) -> list[int]:
    """Those of ``procs`` still running (the same process: same start time; a zombie is dead)."""
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[0] not in "ZX":
            out.append(pid)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="walks /proc to find the build's processes")
def test_sigkill_of_the_driver_ends_every_process_it_started(tmp_path, slow_input):
    paused = tmp_path / "paused"
    # a worker waits in its first batch of tokens (mid-map) until the driver is gone
    env = {**os.environ, "PACKER_TEST_PAUSE_AT": "tokens", "PACKER_TEST_PAUSED": str(paused)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "build", str(slow_input), "-o", str(tmp_path / "out"),
                             "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "512", "-q", "--workers", "2",
                             "--part-size", "1"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for(paused, proc, "its first tokens in a worker")
        started = _descendants(proc.pid)
        assert len(started) >= 3, f"expected two workers and the resource tracker, found {started}"
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = _alive(started)
        for pid in alive:  # the test's own clean-up, so that a failure leaves nothing running either
            os.kill(pid, signal.SIGKILL)
        assert not alive, f"processes of the killed build still run 15 s later: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
