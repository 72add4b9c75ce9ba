"""The output directory: what in it is packer's, and replacing it without losing anything.

A build never writes into its target while it runs. It builds into a staging
directory beside the target and swaps it in when the new manifest is written::

    parent/
      shards/                          the target: the old output, readable all along
      .shards.packer-staging-4242/     this build (pid 4242): marker, spill, new shards

    commit: rename(2) with RENAME_EXCHANGE swaps the two directories in one step,
            then the old output (now under the staging name) is deleted

So a crash at any moment leaves the old output or the new one at the target,
never neither, and a failed build leaves the old output byte for byte as it was.

One build at a time: a build holds ``flock(2)`` on ``parent/.shards.packer-lock`` (beside
the target, never inside it, so the target holds nothing of packer's but its output)
from the check of the target to the swap, with its PID in it; a second build of the same
target fails at once naming that PID, or waits for it (``--wait``) and then looks at
the target again. The lock file is removed when the build ends (the holder unlinks it
while holding it; a build that got the lock on a file unlinked meanwhile takes a new
one), and a lock left by a killed build is free, since the kernel drops a dead process's
locks. For ``-o .`` the lock file goes in the parent of the current folder; only where
that folder cannot be written (a mount point's root) does it go inside the target
(``.packer-lock``, which a build ignores). A staging folder is removed as a dead
build's only when its builder's PID is gone and no process holds ``flock`` on it (each
build holds its staging folder's), so a live build's staging folder is never removed,
not even by a build in another PID namespace.

Only packer's own files are ever deleted. A directory is a packer output when
it holds a packer ``manifest.json`` or the ``.packer-incomplete`` marker of a
build that died; packer's files in it are the ones whose names packer writes
(:func:`is_packer_file`). Any other file or folder in a non-empty target makes
the build refuse, naming it, before anything is written.

Where the target cannot be swapped as a whole (it is the current directory, a
mount point, or its parent is not writable), the staging directory is made
inside it and the files are moved in one by one, the old manifest first and
the new one last: a crash then leaves an incomplete output (no manifest, the
marker present), which the next build clears.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..output.layout import (
    DOCUMENTS_FILE,
    EVAL_SHARD_PATTERN,
    MANIFEST_FILE,
    REJECTED_FILE,
    SHARD_PATTERN,
    manifest_or_none,
)
from ..read.records import BuildError

#: present in a directory while packer writes it; a directory holding it and no manifest is a dead build
INCOMPLETE_MARKER = ".packer-incomplete"
#: the lock of a target whose parent cannot be written, inside it (else beside it: :func:`lock_path`)
LOCK_NAME = ".packer-lock"
_FIXED_NAMES = frozenset({MANIFEST_FILE, DOCUMENTS_FILE, REJECTED_FILE, INCOMPLETE_MARKER})
# shards of both splits, the temporary names of write_atomic, spill files and in-place staging folders
# (".packer-*")
_OUTPUT_NAMES = "|".join(
    [re.escape(pattern).replace(re.escape("{:05d}"), r"\d{5,}") for pattern in (SHARD_PATTERN, EVAL_SHARD_PATTERN)]
    + [re.escape(name) for name in (MANIFEST_FILE, DOCUMENTS_FILE, REJECTED_FILE)]
)
_PACKER_NAME = re.compile(rf"({_OUTPUT_NAMES})(\.tmp)?|\.packer-.+")
_STAGING_PREFIX = ".packer-staging-"


def is_packer_file(name: str) -> bool:
    """True for the names packer writes into an output directory."""
    return name in _FIXED_NAMES or _PACKER_NAME.fullmatch(name) is not None


def _staging_name(target: Path) -> str:
    return f".{target.name}{_STAGING_PREFIX}"


@dataclass(frozen=True)
class Target:
    """What the build's target directory holds now."""

    path: Path
    #: the manifest of a complete output there, or None
    manifest: dict | None


def check_target(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> Target:
    """Refuse, naming the reason, a target packer may not write; touch nothing.

    A target may be missing, empty, a dead build (marker, no manifest), or a
    complete packer output (whether that may be replaced is the caller's
    decision: ``--overwrite``, or an up-to-date output). Anything else in it
    is the user's, and so is a folder holding an input, ``/`` or the home folder.
    """
    given = Path(output)
    path = given.resolve()
    if path == Path(path.anchor):
        raise BuildError(f"{given}: refusing to write the output into the root directory; name a new folder with -o")
    if path == Path.home().resolve():
        raise BuildError(f"{given}: refusing to write the output into your home directory; name a new folder with -o")
    if path.exists() and not path.is_dir():
        raise BuildError(f"{given}: exists and is not a directory; name a new folder with -o")
    for p in map(Path, inputs):
        if path in p.resolve().parents:
            raise BuildError(f"{given}: holds the input {p}; write the output to another folder with -o")
    if not path.is_dir() or not any(c.name != LOCK_NAME for c in path.iterdir()):
        return Target(path, None)
    manifest = manifest_or_none(path)
    foreign = _foreign_child(path, manifest)
    if foreign is not None:
        what = "symbolic link" if foreign.is_symlink() else "folder" if foreign.is_dir() else "file"
        raise BuildError(
            f"{given}: holds {what} {foreign.name!r}, which packer did not write; packer replaces only its own "
            "outputs: move it away, or write the output to another folder with -o"
        )
    return Target(path, manifest if not (path / INCOMPLETE_MARKER).exists() else None)


def _foreign_child(path: Path, manifest: dict | None, skip: Path | None = None) -> Path | None:
    """The first entry of ``path`` that packer did not write, or None. Packer makes no symbolic links, so one is
    never packer's, whatever its name (removing it as a staging folder would fail half-way through a swap)."""
    children = [c for c in sorted(path.iterdir()) if c != skip and c.name != LOCK_NAME]
    # packer's names count as packer's only in a packer output: a manifest, a dead build's marker, or a
    # staging folder of an in-place build that was killed
    ours = manifest is not None or any(c.name == INCOMPLETE_MARKER or c.name.startswith(_STAGING_PREFIX)
                                       for c in children)
    for child in children:
        if not ours or not is_packer_file(child.name) or child.is_symlink() or (
                child.is_dir() and not child.name.startswith(".packer-")):
            return child
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_stagings(target: Path) -> list[Path]:
    """Staging folders of builds of ``target`` whose process is gone (killed: nothing else leaves one)."""
    found = []
    for where, prefix in ((target.parent, _staging_name(target)), (target, _STAGING_PREFIX)):
        if not where.is_dir():
            continue
        for p in where.iterdir():
            pid = p.name[len(prefix) :].removesuffix("-old")
            if p.name.startswith(prefix) and pid.isdigit() and is_dead_staging(p, int(pid)):
                found.append(p)
    return found


def is_dead_staging(path: Path, pid: int) -> bool:
    """Whether the staging folder ``path`` of the build with PID ``pid`` is a dead build's: a real folder (not a
    symbolic link, which packer never makes), its PID gone, and no process holding ``flock`` on it (a live build
    holds its own: :func:`hold_folder`; that also covers a build whose PID this process cannot see)."""
    if path.is_symlink() or not path.is_dir() or _pid_alive(pid):
        return False
    try:
        fd = _flock_folder(path)
    except BlockingIOError:  # a live build holds it
        return False
    except OSError as e:  # not openable: leave it; no flock here (some network filesystems): the PID decides
        return not isinstance(e, _CannotOpen)
    os.close(fd)
    return True


def hold_folder(path: Path) -> int | None:
    """An open descriptor of the folder ``path`` holding ``flock`` on it, which says "a live build's" to
    :func:`is_dead_staging` until it is closed (or the process dies); None where flock cannot be had."""
    try:
        return _flock_folder(path)
    except OSError:
        return None


class _CannotOpen(OSError):
    """The folder could not be opened (as opposed to: opened, but flock refused)."""


def _flock_folder(path: Path) -> int:
    """An open descriptor of ``path`` holding an exclusive ``flock`` without waiting; _CannotOpen where the
    folder does not open, BlockingIOError where another process holds the lock, OSError where flock fails."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise _CannotOpen(str(e)) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def release_folder(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def lock_path(target: Path) -> Path:
    """Where the lock of the (resolved) ``target`` lives: ``parent/.NAME.packer-lock`` beside it, or, where that
    parent cannot be written (then the build fills the target in place), ``target/.packer-lock``."""
    parent = target.parent
    if target.is_dir() and parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        return target / LOCK_NAME
    return parent / f".{target.name}.packer-lock"


class TargetLock:
    """``flock(2)`` on a target's lock file (:func:`lock_path`), from the check of the target to the end of the
    build; :meth:`release` (or the end of the process) frees it and removes the file.

    A second build fails at once with :class:`BuildError` naming the holder's PID, or with ``wait`` waits for it
    (``on_wait(message)`` says so first). Parent folders the lock needed are made, and removed again by
    :meth:`release` if the build left them empty."""

    def __init__(self, target: Path, *, wait: bool = False, on_wait: Callable[[str], None] | None = None,
                 shown: str | None = None) -> None:
        self.path = lock_path(target)
        self._fd: int | None = None
        self._made = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        shown = shown or str(target)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = self._acquire(shown, wait, on_wait)
        except BuildError:
            self._remove_made()
            raise
        except OSError as e:
            self._remove_made()
            raise BuildError(f"{shown}: cannot write there (the lock file {self.path}: {e.strerror or e}); "
                             "write the output to another folder with -o") from None

    def _acquire(self, shown: str, wait: bool, on_wait: Callable[[str], None] | None) -> int | None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    busy = f"{shown} is being built by {_holder(fd)}"
                    if not wait:
                        raise BuildError(f"{busy}; add --wait to build after it, or write to another folder "
                                         "with -o") from None
                    if on_wait is not None:
                        on_wait(f"{busy}; waiting for it to finish (--wait)")
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return None  # no flock on this filesystem: builds into the target at once go undetected
                raise
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder before us may have removed the file we waited on: then lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {_host()}\n".encode(), 0)
                return fd
            os.close(fd)

    def release(self) -> None:
        """Free the lock and remove its file (while still holding it, so that no waiter's file is removed)."""
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        self._remove_made()

    def _remove_made(self) -> None:
        for d in self._made:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break

    def __enter__(self) -> TargetLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _host() -> str:
    import socket

    return socket.gethostname()


def _holder(fd: int) -> str:
    """``process PID`` (``on HOST`` if another machine's) from a held lock file; it may take the holder a moment
    to write it."""
    import time

    for _ in range(20):
        words = os.pread(fd, 200, 0).decode(errors="replace").split()
        if words and words[0].isdigit():
            return f"process {words[0]}" + (f" on {words[1]}" if len(words) > 1 and words[1] != _host() else "")
        time.sleep(0.05)
    return "another process"


#: roughly the room a build needs, as a multiple of its inputs' size: the spilled tokens (6 bytes a token) and
#: the shards (about as much again) side by side, at 2-4 bytes of input a token
ROOM_PER_INPUT_BYTE = 3


def disk_full(e: BaseException, staging: Path, inputs: Sequence[str], output: str | os.PathLike,
              target: str | os.PathLike) -> BuildError | None:
    """The error to raise for ``e`` where it is a full disk (or quota) met while writing into the staging folder
    ``staging``: one line naming the file, the free space, what the build had written and about how much it
    needs; None for any other error. ``target``: the resolved output (a local one that exists is "as it was")."""
    if not isinstance(e, OSError) or e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    from .. import fsio

    existed = not fsio.is_uri(target) and os.path.lexists(target)
    where = Path(e.filename) if isinstance(e.filename, (str, os.PathLike)) else staging
    try:
        free = shutil.disk_usage(staging if staging.exists() else staging.parent).free
    except OSError:
        free = None
    written = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file()) if staging.is_dir() else 0
    size = 0
    for p in inputs:
        try:
            size += fsio.size(p)
        except OSError:
            pass
    what = "no space left on the device" if e.errno == errno.ENOSPC else "disk quota exceeded"
    room = f"{_bytes(free)} free there" if free is not None else "the free space there unknown"
    after = f"; {output} is as it was before this build" if existed else ""
    return BuildError(
        f"{where}: {what} while the build wrote it ({room}; the build had written {_bytes(written)} and needs "
        f"roughly {_bytes(ROOM_PER_INPUT_BYTE * size)}, {ROOM_PER_INPUT_BYTE}x its inputs' {_bytes(size)}): free "
        f"space on that disk, or build on another one (-o, or --scratch for an output URI); nothing was written{after}"
    )


def _bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _in_place(target: Path) -> bool:
    """Whether the target must be filled file by file rather than swapped as a directory."""
    if not target.is_dir():
        return False
    return (
        target == Path.cwd().resolve()
        or os.path.ismount(target)
        or not os.access(target.parent, os.W_OK | os.X_OK)
    )


class StagingFolder:
    """A folder a build writes into, held (:func:`hold_folder`) while it does; what both kinds of staging share
    (:class:`Staging` here, :class:`packer.pipeline.publish.RemoteStaging` for a URI)."""

    path: Path
    _held: int | None

    def discard(self) -> None:
        """Remove the staging folder; the target stays as it was."""
        release_folder(self._held)
        self._held = None
        shutil.rmtree(self.path, ignore_errors=True)

    def _finished(self) -> None:
        """The build is written (its manifest last): the folder is no longer incomplete."""
        if not (self.path / MANIFEST_FILE).is_file():
            raise RuntimeError("commit before the manifest was written")
        (self.path / INCOMPLETE_MARKER).unlink()


class Staging(StagingFolder):
    """The directory a build writes into, swapped in by :meth:`commit` or removed by :meth:`discard`.

    >>> st = Staging(check_target("shards", ["data.json"]))        # doctest: +SKIP
    >>> build_into(st.path); st.commit()                             # doctest: +SKIP
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        for stale in _stale_stagings(target.path):
            if stale.name.endswith("-old") and not target.path.exists():
                # killed between the two renames of a swap without exchange: the old output comes back
                os.rename(stale, target.path)
            else:
                shutil.rmtree(stale, ignore_errors=True)
        self.in_place = _in_place(target.path)
        if self.in_place:
            self.path = target.path / f"{_STAGING_PREFIX}{os.getpid()}"
        else:
            target.path.parent.mkdir(parents=True, exist_ok=True)
            self.path = target.path.parent / f"{_staging_name(target.path)}{os.getpid()}"
        try:
            if self.path.exists():  # a build of this process that failed half-way through discard
                shutil.rmtree(self.path)
            self.path.mkdir()
            self._held = hold_folder(self.path)
            (self.path / INCOMPLETE_MARKER).touch()
        except OSError as e:
            raise BuildError(f"{target.path}: cannot write there (the staging folder {self.path.name}: "
                             f"{e.strerror or e})") from None

    def commit(self) -> None:
        """Put the finished staging directory in the target's place (its manifest is written)."""
        self._finished()
        target = self.target.path
        # the user may have put a file into the target while the build ran: refuse now rather than lose it
        if target.is_dir():
            foreign = _foreign_child(target, manifest_or_none(target), skip=self.path)
            if foreign is not None:
                raise BuildError(f"{target}: {foreign.name!r} appeared in the output folder during the build; "
                                 "the earlier output there is left as it was")
        checkpoint("swap")
        release_folder(self._held)
        self._held = None
        if self.in_place:
            self._move_in()
        elif not target.exists():
            os.rename(self.path, target)
        else:
            _copy_mode(target, self.path)
            if _exchange(self.path, target):
                checkpoint("swapped")
                shutil.rmtree(self.path)  # the old output, now under the staging name
            else:  # no atomic exchange here: two renames, with the old output kept until the second is done
                old = self.path.with_name(self.path.name + "-old")
                os.rename(target, old)
                checkpoint("swapped")
                os.rename(self.path, target)
                shutil.rmtree(old)

    def _move_in(self) -> None:
        target = self.target.path
        marker = target / INCOMPLETE_MARKER
        # first the old manifest goes, so no manifest ever points at a mix of old and new files
        marker.touch()
        (target / MANIFEST_FILE).unlink(missing_ok=True)
        new = {p.name for p in self.path.iterdir()}
        for child in target.iterdir():
            if child != self.path and child.name not in new and child.name not in (INCOMPLETE_MARKER, LOCK_NAME):
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        for name in sorted(new - {MANIFEST_FILE}):
            os.replace(self.path / name, target / name)
        checkpoint("swapped")
        os.replace(self.path / MANIFEST_FILE, target / MANIFEST_FILE)
        self.path.rmdir()
        marker.unlink()


def _copy_mode(src: Path, dst: Path) -> None:
    try:
        os.chmod(dst, stat.S_IMODE(src.stat().st_mode))
    except OSError:
        pass


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


#: the phases of a build where the crash tests kill it, in order: a batch of tokens taken back from the
#: tokenizer, the rows packed, a batch of rows being written, the manifest about to be written (all in the
#: staging folder), then the swap about to start and half done
PHASES = ("tokens", "packed", "writing", "manifest", "swap", "swapped")


def checkpoint(phase: str) -> None:
    """Where the crash tests stop a build: ``PACKER_TEST_KILL_AT=phase`` sends this process SIGKILL there
    (the first time it gets there; see :data:`PHASES`; with ``PACKER_TEST_KILL_ONCE=file``, only the first
    process of a build's workers to create that file); ``PACKER_TEST_PAUSE_AT=phase`` creates the file
    ``PACKER_TEST_PAUSED`` names and waits there (up to a minute) for the test's Ctrl-C or SIGTERM, or until the
    test removes that file (then the build goes on).

    Timing a signal by phase rather than by a sleep hits the same moment however busy the machine is.
    """
    if os.environ.get("PACKER_TEST_KILL_AT") == phase:
        import signal

        once = os.environ.get("PACKER_TEST_KILL_ONCE")  # a file: only the process that creates it dies
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("PACKER_TEST_PAUSE_AT") == phase:
        import time

        os.environ.pop("PACKER_TEST_PAUSE_AT")  # once
        paused = Path(os.environ["PACKER_TEST_PAUSED"])
        paused.touch()
        deadline = time.monotonic() + 60
        while paused.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
