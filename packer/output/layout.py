"""The layout of a build output: its file names, its manifest, and finding a row in it.

Every reader of an output folder (the dataset, ``show``, ``inspect``, ``verify``) and the
build itself take these names and checks from here, so they agree::

    out/
      manifest.json        what was built, from what, and every file's size and sha256
      shard-00000.arrow    packed rows (schema: packer.output.shards)
      shard-00001.arrow
      eval-shard-00000.arrow  packed rows of the held-out eval split (only with --eval-*)
      documents.arrow      one row per input record: where it went (split, shard, row), or why it was rejected
      rejected.jsonl       one line per rejected or truncated record

An output has one or two splits (:data:`SPLITS`): ``train``, whose shards are the manifest's
``shards``, and, when built with an eval split, ``eval``, whose shards are ``manifest["eval"]["shards"]``
(:func:`split_shards`); both are described by the one manifest and the one documents.arrow.

The manifest names its files (``shards[].file``, ``documents.file``...): every such name is a plain file name
inside the output folder, which :func:`read_manifest` checks, and every reader opens the file through
:func:`output_file`, which also refuses a symbolic link leading out of the folder. A manifest edited to read
``../elsewhere/x.arrow`` or ``/etc/x`` is a broken output, never a way to read another folder's files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pyarrow.fs is imported by whoever passes one
    import pyarrow.fs as pafs

FORMAT_NAME = "packer-shards"
#: the format version of every output this packer writes: its shards are Arrow IPC *streams*
#: (:data:`STREAM_VERSION`, :mod:`packer.output.container`), which ``datasets.Dataset.from_file`` memory-maps;
#: whether they have the ``forced`` column, a pair's ``branch`` or KTO's ``labels`` is told by their columns and
#: the manifest's ``kind``, as the versions 2-4 below told it
FORMAT_VERSION = 5
#: the first format version whose shards are Arrow IPC streams, each shard's entry in the manifest giving the
#: byte offset and rows of each record batch (``batch_offsets``, ``batch_rows``); versions 1-4 are IPC files
STREAM_VERSION = 5
#: (IPC-file outputs) the version of one whose shards have the ``forced`` column (some message other than the
#: assistant's marked ``"training": true``), so a packer that predates the column refuses it; the others were 2
FORCED_VERSION = 3
#: (IPC-file outputs) the version of a preference output (pairs or KTO: a ``branch`` or ``labels`` column,
#: manifest ``kind``): a packer that predates them refuses it rather than read a pair row as a supervised one
PREFERENCE_VERSION = 4
SHARD_PATTERN = "shard-{:05d}.arrow"
EVAL_SHARD_PATTERN = "eval-shard-{:05d}.arrow"
#: the splits of an output: rows to train on, and the held-out eval rows (``build(eval_fraction=...)``)
SPLITS: tuple[str, ...] = ("train", "eval")
DOCUMENTS_FILE = "documents.arrow"
REJECTED_FILE = "rejected.jsonl"
MANIFEST_FILE = "manifest.json"


def file_sha256(path: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> str:
    """The sha256 of a file, local, on a pyarrow filesystem, or a URI (:mod:`packer.fsio`; read in 4 MiB
    blocks)."""
    h = hashlib.sha256()
    if filesystem is None and isinstance(path, str) and "://" in path:
        from ..fsio import is_uri, resolve

        if is_uri(path):
            filesystem, path = resolve(path)
    if filesystem is None:
        with open(Path(path), "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    else:
        with filesystem.open_input_stream(os.fspath(path)) as s:
            while block := s.read(1 << 22):
                h.update(block)
    return h.hexdigest()


#: manifest ``format.version`` values this packer reads
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1, 2, FORCED_VERSION, PREFERENCE_VERSION, STREAM_VERSION})


class ShardError(ValueError):
    """A build output that cannot be read as its manifest describes (the message names the file)."""


class MissingShardError(ShardError, FileNotFoundError):
    """The manifest, or a shard it lists, does not exist."""


# -- the manifest ---------------------------------------------------------------------------------


def _manifest_path(output: str | os.PathLike, filesystem: pafs.FileSystem | None) -> str:
    join = os.path.join if filesystem is None else posixpath.join  # pyarrow paths use "/" everywhere
    return join(os.fspath(output), MANIFEST_FILE)


def _load_manifest(output: str | os.PathLike, filesystem: pafs.FileSystem | None) -> dict:
    """The parsed manifest of ``output`` if it is a packer output of any version; else :class:`ShardError`."""
    root = os.fspath(output)
    where = _manifest_path(output, filesystem)
    try:
        if filesystem is None:
            with open(where, "rb") as f:
                data = f.read()
        else:
            with filesystem.open_input_stream(where) as s:
                data = s.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        raise MissingShardError(f"{root}: not a packer output: no {MANIFEST_FILE} (or its build did not finish)") from e
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise ShardError(f"{where}: not a packer output: not valid JSON ({e})") from e
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    name = fmt.get("name") if isinstance(fmt, dict) else None
    if name != FORMAT_NAME:
        raise ShardError(f"{where}: not a packer output: format {name!r} is not {FORMAT_NAME!r}")
    return manifest


def read_manifest(output: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> dict:
    """The manifest of the build output ``output`` (a local folder, or a folder within ``filesystem``).

    Raises :class:`MissingShardError` (a ``FileNotFoundError``) when there is no manifest, and
    :class:`ShardError` (a ``ValueError``) when it is not a packer manifest or of a version this packer
    does not read; the message names the path and says which::

        shards: not a packer output: no manifest.json (or its build did not finish)
        shards/manifest.json: not a packer output: not valid JSON (Expecting value: line 1 column 1 (char 0))
        shards/manifest.json: not a packer output: format 'other' is not 'packer-shards'
        shards/manifest.json: packer-shards version 99; this packer reads version 1, 2, 3, 4, 5 (...)
    """
    manifest = _load_manifest(output, filesystem)
    version = manifest["format"].get("version")
    where = _manifest_path(output, filesystem)
    if version not in SUPPORTED_VERSIONS:
        readable = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise ShardError(
            f"{where}: {FORMAT_NAME} version {version!r}; this packer reads version {readable} "
            "(rebuild the shards, or use the packer that wrote them)"
        )
    for name in manifest_files(manifest):
        check_file_name(name, where)
    return manifest


def check_batch_index(shard: dict, where: str) -> None:
    """A stream shard's entry (format version 5) has ``batch_offsets`` (where each record batch's message starts,
    ascending, then where the end-of-stream marker starts: one more than the batches) and ``batch_rows`` (each
    batch's rows, summing to the shard's ``rows``); else :class:`ShardError` naming ``where`` (the shard's path).

    >>> check_batch_index({"rows": 3, "batch_offsets": [312, 1000], "batch_rows": [3]}, "shard-00000.arrow")
    """
    offsets, rows = shard.get("batch_offsets"), shard.get("batch_rows")
    ints = (isinstance(offsets, list) and isinstance(rows, list)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (*offsets, *rows)))
    if not (ints and len(offsets) == len(rows) + 1 and all(a < b for a, b in itertools.pairwise(offsets))
            and sum(rows) == shard.get("rows")):
        raise ShardError(f"{where}: {MANIFEST_FILE} gives it no valid batch index (batch_offsets: one more "
                         "ascending byte offset than batch_rows, which sum to its rows): the manifest was edited or "
                         "damaged: rebuild the output")


def manifest_files(manifest: dict) -> list[object]:
    """Every file name ``manifest`` lists: the shards of both splits, documents.arrow, rejected.jsonl (as
    written there, unchecked; entries of the wrong shape are left to the reader that needs them)."""
    held_out = manifest.get("eval") if isinstance(manifest.get("eval"), dict) else {}
    shards = [*(manifest.get("shards") or []), *(held_out.get("shards") or [])]
    names: list[object] = [s.get("file") if isinstance(s, dict) else s for s in shards]
    for key in ("documents", "rejected"):
        if isinstance(manifest.get(key), dict) and "file" in manifest[key]:
            names.append(manifest[key]["file"])
    return names


def check_file_name(name: object, where: str = "the manifest") -> str:
    """``name`` if it is a plain file name inside the output folder, as packer writes them (``shard-00000.arrow``);
    else :class:`ShardError` naming ``where``: an absolute path, ``..``, a folder separator (``/`` or ``\\``) or a
    drive would read a file outside the output.

    >>> check_file_name("shard-00000.arrow")
    'shard-00000.arrow'
    >>> check_file_name("../elsewhere/x.arrow", "out/manifest.json")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    packer.output.layout.ShardError: out/manifest.json: lists file '../elsewhere/x.arrow', which is not a file ...
    """
    plain = (isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
             and PureWindowsPath(name).name == name)
    if not plain:
        raise ShardError(f"{where}: lists file {name!r}, which is not a file name inside the output folder (an "
                         "absolute path, '..' or a folder separator): the manifest was edited or damaged; packer "
                         "reads no file outside the output: rebuild it")
    return name  # type: ignore[return-value]


def output_file(root: str | os.PathLike, name: object, filesystem: pafs.FileSystem | None = None) -> str:
    """The path of the output's file ``name`` (a manifest's ``file``) in the folder ``root``, local or within
    ``filesystem``: the one place a reader turns a manifest's name into a path.

    :class:`ShardError` where ``name`` is not a plain file name (:func:`check_file_name`) or, on a local disk, the
    file is a symbolic link that resolves outside ``root``: an output reads only its own files.
    """
    check_file_name(name, f"{os.fspath(root)}/{MANIFEST_FILE}")
    local = filesystem is None or type(filesystem).__name__ == "LocalFileSystem"  # (no pyarrow.fs import here)
    join = os.path.join if filesystem is None else posixpath.join  # pyarrow paths use "/" everywhere
    path = join(os.fspath(root), str(name))
    if local:
        real_root, real = os.path.realpath(root), os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise ShardError(f"{path}: a symbolic link to {real}, outside the output folder {root}: packer reads no "
                             "file outside the output; put the file itself there, or rebuild the output")
    return path


def manifest_or_none(output: str | os.PathLike) -> dict | None:
    """The manifest of the local folder ``output`` if it is a packer output (of any version), else None.

    How a build tells its own earlier output, which it may replace, from a folder of the user's.
    """
    try:
        return _load_manifest(output, None)
    except (ShardError, OSError):
        return None


def shard_pattern(split: str) -> str:
    """The file name pattern of ``split``'s shards."""
    return {"train": SHARD_PATTERN, "eval": EVAL_SHARD_PATTERN}[split]


def split_shards(manifest: dict, split: str = "train", where: str = "the output") -> list[dict]:
    """The shard entries (``file``, ``rows``, ``bytes``, ``sha256``...) of ``split`` in ``manifest``.

    ``ValueError`` for a split that is not one of :data:`SPLITS`; :class:`ShardError` (a ``ValueError``)
    when the output was built without an eval split and ``split="eval"``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose {' or '.join(SPLITS)}")
    if split == "train":
        return manifest["shards"]
    held_out = manifest.get("eval")
    if not held_out:
        raise ShardError(f"{where}: has no eval split (build it with --eval-fraction F or --eval-records N)")
    return held_out["shards"]


def output_splits(manifest: dict) -> list[str]:
    """The splits ``manifest`` describes: ``["train"]`` or ``["train", "eval"]``."""
    return [s for s in SPLITS if s == "train" or manifest.get("eval")]


# -- finding a row --------------------------------------------------------------------------------


def row_starts(row_counts: Sequence[int]) -> np.ndarray:
    """The first global row of each part (shard, or record batch) and, last, the total: the cumulative
    sum of ``row_counts`` after a 0.

    >>> row_starts([3, 0, 2]).tolist()
    [0, 3, 3, 5]
    """
    starts = np.zeros(len(row_counts) + 1, dtype=np.int64)
    np.cumsum(row_counts, out=starts[1:])
    return starts


def locate_row(starts: np.ndarray, row: int, where: str = "the output") -> tuple[int, int]:
    """``(part, row within it)`` of global row ``row``, parts having the :func:`row_starts` ``starts``; a
    negative ``row`` counts from the end. Empty parts are skipped. An ``IndexError`` says how many rows
    ``where`` has.

    >>> starts = row_starts([3, 0, 2])                # shard 0: rows 0-2, shard 1 empty, shard 2: rows 3-4
    >>> locate_row(starts, 3), locate_row(starts, -1)
    ((2, 0), (2, 1))
    >>> locate_row(starts, 5)
    Traceback (most recent call last):
    IndexError: row 5 out of range: the output has 5 rows (rows 0..4)
    """
    total = int(starts[-1])
    index = row + total if row < 0 else row
    if not 0 <= index < total:
        have = f"rows 0..{total - 1}" if total else "no rows"
        raise IndexError(f"row {row} out of range: {where} has {total} rows ({have})")
    part = int(np.searchsorted(starts, index, side="right")) - 1
    return part, index - int(starts[part])


def write_atomic(path: Path, write, private: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Run ``write(tmp_path)``, fsync, then rename onto ``path``; the temporary file is removed if that fails.

    ``tmp_path`` is ``NAME.tmp`` beside ``path`` (in packer's own folders, a name
    ``packer.pipeline.outdir.is_packer_file`` knows); ``private``: ``.NAME.PID.tmp``, for a file packer writes into
    a folder of the user's (``packer export``), where ``NAME.tmp`` might be a file of theirs."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" if private else path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
