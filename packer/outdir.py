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
import os
import re
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .layout import DOCUMENTS_FILE, EVAL_SHARD_PATTERN, MANIFEST_FILE, REJECTED_FILE, SHARD_PATTERN, manifest_or_none
from .records import BuildError

#: present in a directory while packer writes it; a directory holding it and no manifest is a dead build
INCOMPLETE_MARKER = ".packer-incomplete"
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
    if not path.is_dir() or not any(path.iterdir()):
        return Target(path, None)
    manifest = manifest_or_none(path)
    foreign = _foreign_child(path, manifest)
    if foreign is not None:
        what = "folder" if foreign.is_dir() else "file"
        raise BuildError(
            f"{given}: holds {what} {foreign.name!r}, which packer did not write; packer replaces only its own "
            "outputs: move it away, or write the output to another folder with -o"
        )
    return Target(path, manifest if not (path / INCOMPLETE_MARKER).exists() else None)


def _foreign_child(path: Path, manifest: dict | None, skip: Path | None = None) -> Path | None:
    """The first entry of ``path`` that packer did not write, or None."""
    children = [c for c in sorted(path.iterdir()) if c != skip]
    # packer's names count as packer's only in a packer output: a manifest, a dead build's marker, or a
    # staging folder of an in-place build that was killed
    ours = manifest is not None or any(c.name == INCOMPLETE_MARKER or c.name.startswith(_STAGING_PREFIX)
                                       for c in children)
    for child in children:
        if not ours or not is_packer_file(child.name) or (child.is_dir() and not child.name.startswith(".packer-")):
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
            if p.name.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)) and p.is_dir():
                found.append(p)
    return found


def _in_place(target: Path) -> bool:
    """Whether the target must be filled file by file rather than swapped as a directory."""
    if not target.is_dir():
        return False
    return (
        target == Path.cwd().resolve()
        or os.path.ismount(target)
        or not os.access(target.parent, os.W_OK | os.X_OK)
    )


class Staging:
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
            (self.path / INCOMPLETE_MARKER).touch()
        except OSError as e:
            raise BuildError(f"{target.path}: cannot write there (the staging folder {self.path.name}: "
                             f"{e.strerror or e})") from None

    def discard(self) -> None:
        """Remove the staging directory; the target stays as it was."""
        shutil.rmtree(self.path, ignore_errors=True)

    def commit(self) -> None:
        """Put the finished staging directory in the target's place (its manifest is written)."""
        if not (self.path / MANIFEST_FILE).is_file():
            raise RuntimeError("commit before the manifest was written")
        (self.path / INCOMPLETE_MARKER).unlink()
        target = self.target.path
        # the user may have put a file into the target while the build ran: refuse now rather than lose it
        if target.is_dir():
            foreign = _foreign_child(target, manifest_or_none(target), skip=self.path)
            if foreign is not None:
                raise BuildError(f"{target}: {foreign.name!r} appeared in the output folder during the build; "
                                 "the earlier output there is left as it was")
        checkpoint("swap")
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
            if child != self.path and child.name not in new and child.name != INCOMPLETE_MARKER:
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
    ``PACKER_TEST_PAUSED`` names and waits there (up to a minute) for the test's Ctrl-C or SIGTERM.

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
        Path(os.environ["PACKER_TEST_PAUSED"]).touch()
        time.sleep(60)
