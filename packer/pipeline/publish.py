"""An output on object storage: checked before the build, built on local scratch, uploaded after it.

``build(..., output="s3://bucket/shards")`` (any URI :mod:`packer.fsio` reads) works as a local
build does, with the staging folder on local disk instead of beside the target::

    $TMPDIR (or --scratch DIR)/
      .packer-staging-4242-x1y2/      this build (pid 4242): spill files, shards, documents, manifest
    s3://bucket/shards/               the target: not written until the build is done

    upload: put .packer-incomplete, delete the old manifest, delete the old output's other files
            (packer's own only), upload every new file, the new manifest LAST, delete the marker

Object storage has no rename, so the swap of a local build becomes this order: a reader that
finds a manifest finds every file it lists (``PackedDataset`` checks sizes), and an upload cut
short leaves no manifest and the marker, which the next build clears. As locally, a target
holding anything packer did not write is refused before anything is built (and again before
the upload), an up-to-date output is "nothing to do", and ``overwrite`` replaces a packer output.

:func:`check_output_target` and :func:`make_staging` stand in for :func:`packer.pipeline.outdir.check_target`
and :class:`packer.pipeline.outdir.Staging`, and give exactly those for a local output.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import fsio
from ..output.layout import MANIFEST_FILE, ShardError, _load_manifest
from ..read.records import BuildError
from .outdir import (
    INCOMPLETE_MARKER,
    Staging,
    StagingFolder,
    Target,
    TargetLock,
    check_target,
    checkpoint,
    hold_folder,
    is_dead_staging,
    is_packer_file,
    release_folder,
)

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["RemoteStaging", "RemoteTarget", "check_output_target", "hold_output", "make_staging", "upload"]

#: local staging folders under the scratch directory: ``.packer-staging-<pid>-<random>``
_SCRATCH_PREFIX = ".packer-staging-"
_SCRATCH_NAME = re.compile(r"\.packer-staging-(\d+)-.+")
#: files uploaded at once (the manifest waits for all of them)
UPLOAD_THREADS = 8


@dataclass(frozen=True)
class RemoteTarget:
    """What an output URI holds now (the counterpart of :class:`packer.pipeline.outdir.Target`)."""

    #: the output URI, as given
    path: str
    #: the manifest of a complete output there, or None
    manifest: dict | None


def check_output_target(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> Target | RemoteTarget:
    """:func:`packer.pipeline.outdir.check_target` for a local output; for a URI the same checks, on its filesystem:
    refuse (touching nothing) an object where the folder should be, a folder holding an input or anything
    packer did not write, a bucket that does not exist."""
    if not fsio.is_uri(output):
        return check_target(output, inputs)
    uri = str(output)
    try:
        return _check_remote(uri, inputs)
    except OSError as e:  # credentials, the server, the network
        raise BuildError(f"{uri}: cannot look at the output there: {e}") from None


@contextlib.contextmanager
def hold_output(target: Target | RemoteTarget, output: str | os.PathLike, inputs: Sequence[str | os.PathLike], *,
                wait: bool = False, on_wait: Callable[[str], None] | None = None) -> Iterator[Target | RemoteTarget]:
    """Hold the lock of a local target (:class:`packer.pipeline.outdir.TargetLock`) for the block, and give the
    target as it is once the lock is held (another build may have changed it meanwhile). An output URI has no lock:
    object storage has none, and pyarrow's filesystems cannot create an object only where there is none, so two builds
    into one URI at once are not told apart (:func:`upload` notices one that finished first)."""
    if isinstance(target, RemoteTarget):
        yield target
        return
    with TargetLock(target.path, wait=wait, on_wait=on_wait, shown=str(output)):
        yield check_target(output, inputs)


def _check_remote(uri: str, inputs: Sequence[str | os.PathLike]) -> RemoteTarget:
    fs, root = fsio.resolve(uri)
    what, _ = fsio.kind(uri)
    if what in ("file", "other"):
        raise BuildError(f"{uri}: exists and is not a folder; name a new folder with -o")
    scheme = uri.split("://", 1)[0].lower()
    for p in inputs:
        if fsio.is_uri(p) and str(p).split("://", 1)[0].lower() == scheme:
            inner = fsio.resolve(str(p))[1]
            if inner.startswith(root.rstrip("/") + "/"):
                raise BuildError(f"{uri}: holds the input {p}; write the output to another folder with -o")
    if what == "missing":
        bucket = root.strip("/").split("/")[0]
        if scheme in ("s3", "gs", "gcs") and bucket and fs.get_file_info(bucket).type.name == "NotFound":
            raise BuildError(f"{uri}: the bucket {bucket!r} does not exist; create it, or name another with -o")
        return RemoteTarget(uri, None)
    children = fsio.list_dir(uri)
    if not children:
        return RemoteTarget(uri, None)
    manifest = _manifest_or_none(uri, children)
    foreign = _foreign(children, manifest)
    if foreign is not None:
        raise BuildError(
            f"{uri}: holds {foreign[1]} {foreign[0]!r}, which packer did not write; packer replaces only its own "
            "outputs: move it away, or write the output to another folder with -o"
        )
    incomplete = any(name == INCOMPLETE_MARKER for name, _ in children)
    return RemoteTarget(uri, None if incomplete else manifest)


def _manifest_or_none(uri: str, children: list[tuple[str, str]]) -> dict | None:
    """The packer manifest listed in ``children`` of ``uri``, or None where none is listed or it is not packer's.
    A manifest that is there but cannot be read (the server failed) is a :class:`BuildError` saying so: taken for
    missing, it would make the output look like files packer did not write."""
    if (MANIFEST_FILE, "file") not in children:
        return None
    fs, root = fsio.resolve(uri)
    try:
        return _load_manifest(root, fs)
    except (ShardError, FileNotFoundError):
        return None
    except OSError as e:
        raise BuildError(f"{uri}: could not read {MANIFEST_FILE} there (the request failed: {e}); nothing was "
                         "written: try again") from None


def _foreign(children: list[tuple[str, str]], manifest: dict | None) -> tuple[str, str] | None:
    """(name, ``file`` | ``folder``) of the first entry packer did not write, or None (as
    :func:`packer.pipeline.outdir._foreign_child` decides for a local folder)."""
    ours = manifest is not None or any(name == INCOMPLETE_MARKER for name, _ in children)
    for name, what in children:
        if not ours or not is_packer_file(name) or (what == "dir" and not name.startswith(".packer-")):
            return name, "folder" if what == "dir" else "file"
    return None


def make_staging(target: Target | RemoteTarget, scratch: str | os.PathLike | None = None) -> Staging | RemoteStaging:
    """Where the build writes: :class:`packer.pipeline.outdir.Staging` beside a local target (``scratch`` unused), a
    :class:`RemoteStaging` under ``scratch`` (default: ``tempfile.gettempdir()``) for an output URI."""
    if isinstance(target, RemoteTarget):
        return RemoteStaging(target, scratch)
    return Staging(target)


class RemoteStaging(StagingFolder):
    """A local folder under ``scratch`` the build writes into; :meth:`commit` uploads it to the target URI
    (:func:`upload`), :meth:`discard` removes it. Staging folders of builds that were killed are removed
    when the next one starts."""

    def __init__(self, target: RemoteTarget, scratch: str | os.PathLike | None = None) -> None:
        self.target = target
        where = Path(scratch) if scratch is not None else Path(tempfile.gettempdir())
        try:
            where.mkdir(parents=True, exist_ok=True)
            for stale in where.iterdir():
                m = _SCRATCH_NAME.fullmatch(stale.name)
                if m and is_dead_staging(stale, int(m.group(1))):
                    shutil.rmtree(stale, ignore_errors=True)
            self.path = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-", dir=where))
            self._held = hold_folder(self.path)
            (self.path / INCOMPLETE_MARKER).touch()
        except OSError as e:
            raise BuildError(f"--scratch {where}: cannot write there ({e.strerror or e}); the build stages its "
                             "files there before uploading them") from None

    # discard(): the target stays as it was (or, after an upload cut short, without a manifest and with the
    # marker, for the next build to clear)

    def commit(self) -> None:
        """Upload the finished build (its manifest is written) to the target, manifest last."""
        self._finished()
        try:
            upload(self.path, self.target.path, found=self.target.manifest)
        except OSError as e:  # looking at the target before writing to it (a failed write is upload's BuildError)
            raise BuildError(f"{self.target.path}: the upload failed: {e}; the output there is left as it "
                             "was") from None
        release_folder(self._held)
        self._held = None
        shutil.rmtree(self.path, ignore_errors=True)


def upload(staged: str | os.PathLike, uri: str, found: dict | bool | None = False) -> None:
    """Put the files of the local folder ``staged`` at the folder ``uri``: refuse if something packer did not
    write appeared there, or (``found``: the manifest there when the build looked, None for none) another build
    wrote an output there meanwhile, then mark it incomplete, delete the old manifest and the old output's other files
    (packer's own only), upload every file, ``manifest.json`` last, and remove the mark."""
    fs, root = fsio.resolve(uri)
    staged = Path(staged)
    names = sorted(p.name for p in staged.iterdir() if p.is_file() and p.name != INCOMPLETE_MARKER)
    if MANIFEST_FILE not in names:
        raise RuntimeError(f"{staged}: no {MANIFEST_FILE} to upload")
    children = fsio.list_dir(uri)
    manifest = _manifest_or_none(uri, children)
    foreign = _foreign(children, manifest) if children else None
    if foreign is not None:
        raise BuildError(f"{uri}: {foreign[0]!r} appeared in the output folder during the build; the earlier "
                         "output there is left as it was")
    complete = manifest if not any(name == INCOMPLETE_MARKER for name, _ in children) else None
    if found is not False and complete != found:
        raise BuildError(f"{uri}: another build wrote an output there while this one ran; nothing of this build "
                         "was uploaded (object storage has no lock: run one build of an output at a time)")
    checkpoint("swap")
    _replace(fs, root, staged, names, {name: what for name, what in children if name != INCOMPLETE_MARKER}, uri)


#: bytes an uploaded file is read and written at a time
COPY_BYTES = 8 << 20


def _replace(fs: pafs.FileSystem, root: str, staged: Path, names: list[str], old: dict[str, str], uri: str) -> None:
    """The writing half of :func:`upload`. A request that fails is one :class:`BuildError` naming the request (as
    the object store's client reports it) and what the target holds after it."""
    state = "the output there is left as it was"

    def at(name: str) -> str:
        return posixpath.join(root, name)

    def put(name: str) -> None:
        out = fs.open_output_stream(at(name), compression=None)
        try:
            with open(staged / name, "rb") as src:
                while chunk := src.read(COPY_BYTES):
                    out.write(chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                out.close()  # here, not when it is collected, where Arrow prints "Error ignored ..." to stderr
            raise
        out.close()  # the last part goes up here: its failure is raised, not printed

    try:
        with fs.open_output_stream(at(INCOMPLETE_MARKER), compression=None):
            pass
        state = "the output there is marked incomplete (.packer-incomplete) until a build completes"
        if MANIFEST_FILE in old:  # first: no manifest ever lists a mix of old and new files
            fs.delete_file(at(MANIFEST_FILE))
        state = "the output there is incomplete (no manifest) until a build completes"
        for name, what in old.items():
            if name == MANIFEST_FILE or name in names:  # a file of the new output replaces it
                continue
            if what == "dir":
                fs.delete_dir(at(name))
            else:
                fs.delete_file(at(name))
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(pool.map(put, [n for n in names if n != MANIFEST_FILE]))
        checkpoint("swapped")
        put(MANIFEST_FILE)
        state = (f"the new output is there ({MANIFEST_FILE} is written), but still marked incomplete: delete "
                 f"{INCOMPLETE_MARKER} there, or build again")
        fs.delete_file(at(INCOMPLETE_MARKER))
    except OSError as e:
        raise BuildError(f"{uri}: the upload failed: {e}; {state}") from None
