"""Faults that must be loud, bounded and leave nothing behind (issue 24).

A build killed with SIGKILL takes its worker processes with it; two builds into one folder at once never both
succeed; a full disk, an object store that fails, a symlink packer did not make are each one line that says
what happened, and the target is left as it was.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import CLI, DEMO_INPUTS, DEMO_TOKENIZER, cli, demo_variants, tree


def build_args(out: Path | str, *extra: str) -> list[str]:
    return [*map(str, DEMO_INPUTS), "-o", str(out), "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "512", "-q",
            *extra]


@pytest.fixture(scope="module")
def slow_input(tmp_path_factory) -> Path:
    """A build that runs for a few seconds."""
    return demo_variants(tmp_path_factory.mktemp("slow") / "slow.jsonl", 300)


@pytest.fixture(scope="module")
def other_input(tmp_path_factory) -> Path:
    """Inputs other than the demo's, for a build the test pauses (at a checkpoint: no need to be slow)."""
    return demo_variants(tmp_path_factory.mktemp("other") / "other.jsonl", 2)


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


# -- 2. one build of a target at a time -------------------------------------------------------------------


def _paused_build(out: str, cwd: Path, other_input: Path, paused: Path) -> subprocess.Popen:
    """A build of ``other_input`` into ``out`` that stops in its first batch of tokens until ``paused`` is removed."""
    env = {**os.environ, "PACKER_TEST_PAUSE_AT": "tokens", "PACKER_TEST_PAUSED": str(paused)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "build", str(other_input), "-o", out, "--tokenizer",
                             str(DEMO_TOKENIZER), "--seq-len", "512", "-q"], cwd=cwd, stderr=subprocess.PIPE,
                            text=True, env=env)
    _wait_for(paused, proc, "its first tokens")
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("where", ["new folder", "in place"])
def test_two_builds_into_one_folder_at_once_never_both_succeed(tmp_path, other_input, where):
    from packer.inspect.verify import verify

    here = tmp_path / "out"
    out, cwd = (str(here), tmp_path) if where == "new folder" else (".", here)
    here.mkdir(exist_ok=where == "in place")
    paused = tmp_path / "paused"
    first = _paused_build(out, cwd, other_input, paused)
    try:
        # a build of other inputs into the same folder while the first runs: one line, at once, nothing touched
        second = cli("build", *build_args(out), cwd=cwd, timeout=120)
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip() == (f"error: {out} is being built by process {first.pid}; add --wait to build "
                                          "after it, or write to another folder with -o")
    finally:
        paused.unlink()
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert verify(here) == []
    assert json.loads((here / "manifest.json").read_text())["inputs"][0]["path"] == str(other_input)
    # nothing left beside the output (the lock file is removed) or in it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not [p.name for p in here.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_wait_builds_after_the_build_under_way(tmp_path, other_input):
    from packer.inspect.verify import verify

    out = tmp_path / "out"
    paused = tmp_path / "paused"
    first = _paused_build(str(out), tmp_path, other_input, paused)
    log = tmp_path / "second.log"
    try:
        with open(log, "w") as err:
            second = subprocess.Popen([sys.executable, "-c", CLI, "build", *build_args(out, "--wait", "--overwrite")],
                                      stderr=err, stdout=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 90
        while "waiting for it to finish (--wait)" not in log.read_text():
            assert second.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the second build never said it waits"
            time.sleep(0.05)
        assert f"{out} is being built by process {first.pid}" in log.read_text()
        time.sleep(0.5)
        assert second.poll() is None and first.poll() is None, "the second build did not wait"
    finally:
        paused.unlink()
    assert first.wait(timeout=120) == 0
    assert second.wait(timeout=120) == 0, log.read_text()
    # the second build ran after the first, and replaced its output (--overwrite) with its own, whole
    assert verify(out) == []
    assert [i["path"] for i in json.loads((out / "manifest.json").read_text())["inputs"]] == list(map(str, DEMO_INPUTS))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "second.log"]


def test_a_second_build_in_this_process_is_refused_while_the_first_holds_the_target(tmp_path, demo_tok):
    from packer import build
    from packer.pipeline.outdir import TargetLock, check_target
    from packer.read.records import BuildError

    out = tmp_path / "out"
    with TargetLock(out.resolve()) as lock:
        assert lock.path == tmp_path / ".out.packer-lock"
        with pytest.raises(BuildError, match=rf"^{out} is being built by process {os.getpid()}; add --wait"):
            build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512)
        assert check_target(out, []).manifest is None
    assert not (tmp_path / ".out.packer-lock").exists() and not out.exists()
    build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_where_the_parent_cannot_be_written_the_lock_is_inside_and_ignored(tmp_path, demo_tok, monkeypatch):
    import packer.pipeline.outdir as od
    from packer.read.records import BuildError

    out = tmp_path / "mnt"
    out.mkdir()
    real = os.access
    monkeypatch.setattr(od.os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    assert od.lock_path(out) == out / od.LOCK_NAME
    with od.TargetLock(out):
        assert (out / od.LOCK_NAME).read_text().split()[0] == str(os.getpid())
        assert od.check_target(out, []).manifest is None  # the lock is neither a foreign file nor makes it non-empty
        with pytest.raises(BuildError, match="is being built by process"):
            od.TargetLock(out)
    assert list(out.iterdir()) == []


def test_a_live_builds_staging_folder_is_never_removed(tmp_path, demo_tok):
    """A staging folder whose PID looks dead (a build in another PID namespace) but which its build holds."""
    from packer import build
    from packer.pipeline.outdir import hold_folder, is_dead_staging, release_folder

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid = int(gone.stdout)
    out = tmp_path / "out"
    live = tmp_path / f".out.packer-staging-{pid}"
    live.mkdir()
    (live / "documents.arrow").write_bytes(b"being written")
    held = hold_folder(live)
    assert held is not None and not is_dead_staging(live, pid)
    build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512)
    assert (live / "documents.arrow").read_bytes() == b"being written"
    release_folder(held)
    assert is_dead_staging(live, pid)
    build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512, overwrite=True)
    assert not live.exists()


# -- 3. a full disk, a symbolic link packer did not make ---------------------------------------------------


class _FullDisk:
    """A file whose writes fail as on a full disk once ``limit`` bytes are written."""

    def __init__(self, f, limit: int) -> None:  # type: ignore[no-untyped-def]
        self._f, self._left = f, limit

    def write(self, data: bytes) -> int:
        if len(data) > self._left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._f, name)


@pytest.mark.parametrize("existed", [True, False])
def test_a_full_disk_names_the_file_the_free_space_and_the_room_needed(tmp_path, demo_output, demo_tok, monkeypatch,
                                                                        existed):
    import builtins
    import shutil

    import packer.pipeline.spill
    from packer import build
    from packer.read.records import BuildError

    out = tmp_path / "out"
    if existed:
        shutil.copytree(demo_output, out)
    before = tree(out) if existed else None

    def full_after_a_while(path, mode="r", *args, **kw):  # type: ignore[no-untyped-def]
        f = builtins.open(path, mode, *args, **kw)
        return _FullDisk(f, 5_000) if str(path).endswith("-ids") else f

    monkeypatch.setattr(packer.pipeline.spill, "open", full_after_a_while, raising=False)
    with pytest.raises(BuildError) as e:
        build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512, overwrite=True, batch_size=16)
    message = str(e.value)
    staging = f"{tmp_path}/.out.packer-staging-{os.getpid()}/.packer-spill-0-ids"
    assert message.startswith(f"{staging}: no space left on the device while the build wrote it ("), message
    assert " free there; the build had written " in message and "and needs roughly " in message, message
    assert "3x its inputs' 87.2 KB): free space on that disk, or build on another one" in message, message
    assert message.endswith(f"nothing was written; {out} is as it was before this build" if existed else
                            "nothing was written"), message
    assert (tree(out) == before) if existed else not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existed else [])


@pytest.mark.slow
@pytest.mark.parametrize("where", ["in place", "beside"])
def test_a_symbolic_link_packer_did_not_make_is_refused_before_anything_is_touched(tmp_path, where):
    here = tmp_path / "here"
    here.mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    assert cli("build", *build_args("."), cwd=here).returncode == 0
    if where == "in place":  # a link with a name only packer's staging folders have, inside the output
        link = here / ".packer-staging-999999999"
    else:  # beside the output, with the name of a dead build's staging folder of it
        link = tmp_path / ".here.packer-staging-999999999"
    link.symlink_to(mine)
    before = tree(here)
    res = cli("build", *build_args(".", "--seq-len", "256", "--overwrite"), cwd=here)
    assert "Traceback" not in res.stderr and "rmtree" not in res.stderr, res.stderr
    if where == "in place":
        assert res.returncode == 1
        assert res.stderr.strip() == ("error: .: holds symbolic link '.packer-staging-999999999', which packer did "
                                      "not write; packer replaces only its own outputs: move it away, or write the "
                                      "output to another folder with -o")
        assert tree(here) == before
    else:  # not the target's: left alone
        assert res.returncode == 0, res.stderr
    assert link.is_symlink() and (mine / "keep.txt").read_text() == "mine"


# -- 4. what an interrupted build says ---------------------------------------------------------------------


@pytest.mark.slow
def test_an_interrupted_build_into_a_new_folder_does_not_call_it_as_it_was(tmp_path, other_input):
    paused = tmp_path / "paused"
    out = tmp_path / "new" / "out"
    env = {**os.environ, "PACKER_TEST_PAUSE_AT": "tokens", "PACKER_TEST_PAUSED": str(paused)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "build", str(other_input), "-o", str(out), "--tokenizer",
                             str(DEMO_TOKENIZER), "--seq-len", "512", "-q"], stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(paused, proc, "its first tokens")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "interrupted: nothing was written"
    paused.unlink()
    assert list(tmp_path.iterdir()) == [], "the build left a folder (or its lock) behind"


def test_wait_is_a_build_option_everywhere(tmp_path):
    import inspect

    from packer import build
    from packer.cli import build_cmd
    from packer.options import BuildOptions
    from packer.pipeline.engine import _fatal
    from packer.recipe import load_recipe

    assert "options" in inspect.signature(build).parameters and BuildOptions().wait is False
    assert "wait" in [p.name for p in build_cmd.params]
    recipe = tmp_path / "r.toml"
    recipe.write_text('tokenizer = "t"\nwait = true\n[[inputs]]\npath = "a.jsonl"\n')
    assert load_recipe(recipe)["wait"] is True
    # a full disk stays full: a task that met it is not run again
    assert _fatal(OSError(errno.ENOSPC, "No space left on device")) and not _fatal(OSError(errno.EIO, "I/O"))
