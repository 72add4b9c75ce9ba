"""Files by local path or by URI: one place that knows which is which.

An input or an output may be a local path or any URI that ``pyarrow.fs.FileSystem.from_uri``
reads (``s3://bucket/key``, ``gs://bucket/key``, ``hdfs://host/path``, ``file:///path``). A
local path goes to the plain ``open`` / ``os`` calls, exactly as before (nothing here imports
``pyarrow.fs`` for it); a URI goes to its pyarrow filesystem, made once per scheme, bucket (host)
and query and kept for the life of the process::

    open_input("data.jsonl")                     open(path, "rb")
    open_input("s3://bkt/data.jsonl")            the object, seekable and buffered (range reads)
    size("s3://bkt/data.jsonl")                  its size, from one HEAD
    expand(["s3://bkt/in/*.jsonl", "a.json"])    ["s3://bkt/in/x.jsonl", "s3://bkt/in/y.jsonl", "a.json"]

A URI stays the string it was given everywhere (messages, manifests, documents.arrow name it).
Options of a filesystem go in the query (``s3://bkt/key?region=eu-west-1&endpoint_override=host:9000
&scheme=http``), or, for S3, in the usual ``AWS_*`` environment variables (``AWS_ENDPOINT_URL``
points every S3 URI at another server: MinIO, moto, a local gateway).

    >>> is_uri("s3://bkt/a.jsonl"), is_uri("data/a.jsonl"), is_uri("C:\\\\data\\\\a.jsonl")
    (True, False, False)
    >>> join("s3://bkt/out?region=eu-west-1", "manifest.json")
    's3://bkt/out/manifest.json?region=eu-west-1'
    >>> suffix("s3://bkt/a.JSONL?region=eu-west-1"), suffix("data/a.json")
    ('.JSONL', '.json')
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import io
import os
import posixpath
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:  # imported on first use of a URI: a local build never loads pyarrow.fs
    import pyarrow.fs as pafs

__all__ = [
    "arrow_source", "expand", "is_uri", "join", "kind", "list_dir", "local_copy", "open_arrow", "open_input",
    "read_bytes", "resolve", "size", "sizes", "suffix",
]

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: bytes a remote file is read ahead (one ranged GET each): JSON Lines read a line at a time go through it
REMOTE_BUFFER = 1 << 22


def is_uri(path: object) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path (a ``Path`` never is)."""
    return isinstance(path, str) and _URI.match(path) is not None


def _parts(uri: str) -> tuple[str, str, str, str]:
    """(scheme, authority, path, query) of a URI; the path without a trailing ``/``."""
    s = urlsplit(uri)
    path = s.path.rstrip("/")
    return s.scheme.lower(), s.netloc, path, s.query


@functools.lru_cache(maxsize=64)
def _filesystem(scheme: str, netloc: str, query: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of one scheme + authority + query, and the path of that authority's root in it."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(f"{scheme}://{netloc}/" + (f"?{query}" if query else ""))
    return fs, root


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path within it) of a URI: ``s3://bkt/a%20b.json`` -> (S3FileSystem, ``bkt/a b.json``)."""
    scheme, netloc, path, query = _parts(uri)
    fs, root = _filesystem(scheme, netloc, query)
    inner = unquote(path)
    if root.endswith("/"):
        inner = root + inner.lstrip("/")
    else:
        inner = root + inner if inner.startswith("/") or not inner else f"{root}/{inner}"
    return fs, (inner.rstrip("/") or "/")


def join(base: str | os.PathLike, *names: str) -> str:
    """``base/name/...``: ``os.path.join`` for a local path; for a URI, within its path (before its query)."""
    text = os.fspath(base)
    if not is_uri(text):
        return os.path.join(text, *names)
    head, sep, query = text.partition("?")
    return posixpath.join(head.rstrip("/"), *names) + (sep + query if sep else "")


def suffix(path: str | os.PathLike) -> str:
    """The extension of a path or URI (``.jsonl``), as ``Path.suffix`` gives it; a URI's query is not part of it."""
    text = os.fspath(path)
    if not is_uri(text):
        return Path(text).suffix
    return Path(_parts(text)[2]).suffix


def kind(path: str | os.PathLike) -> tuple[str, int]:
    """(``file`` | ``dir`` | ``missing`` | ``other``, size in bytes: 0 unless a file) of a path or URI.

    A local path that cannot be looked at raises the ``OSError`` of ``os.stat``.
    """
    text = os.fspath(path)
    if not is_uri(text):
        import stat

        try:
            st = os.stat(text)
        except FileNotFoundError:
            return "missing", 0
        if stat.S_ISDIR(st.st_mode):
            return "dir", 0
        return ("file", st.st_size) if stat.S_ISREG(st.st_mode) else ("other", 0)
    import pyarrow.fs as pafs

    fs, inner = resolve(text)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.File:
        return "file", int(info.size)
    return {pafs.FileType.Directory: "dir", pafs.FileType.NotFound: "missing"}.get(info.type, "other"), 0


def size(path: str | os.PathLike) -> int:
    """The size of a file (local or URI); ``FileNotFoundError`` where there is none."""
    text = os.fspath(path)
    if not is_uri(text):
        return os.path.getsize(text)
    what, n = kind(text)
    if what != "file":
        raise FileNotFoundError(2, "no such file" if what == "missing" else f"not a file ({what})", text)
    return n


def sizes(uri: str, names: Sequence[str]) -> list[int | None]:
    """The size of each file ``names`` in the folder ``uri`` (None where it is missing or not a file), in one
    request to its filesystem."""
    import pyarrow.fs as pafs

    fs, inner = resolve(uri)
    infos = fs.get_file_info([posixpath.join(inner, n) for n in names])
    return [int(i.size) if i.type == pafs.FileType.File else None for i in infos]


class _Remote(io.RawIOBase):
    """A pyarrow ``RandomAccessFile`` as a raw Python stream, for an ``io.BufferedReader`` (``readline``,
    ``readlines``, ``peek``: pyarrow's files have none of these that buffer)."""

    def __init__(self, native) -> None:  # type: ignore[no-untyped-def]
        self._native = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        return self._native.readinto(buf)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._native.seek(offset, whence)

    def tell(self) -> int:
        return self._native.tell()

    def close(self) -> None:
        if not self.closed:
            self._native.close()
        super().close()


def open_input(path: str | os.PathLike, buffer_size: int = REMOTE_BUFFER) -> BinaryIO:
    """A binary, seekable file object to read: ``open(path, "rb")`` for a local path; for a URI its
    filesystem's ``open_input_file``, buffered ``buffer_size`` bytes at a time. A missing object raises
    ``FileNotFoundError`` either way."""
    text = os.fspath(path)
    if not is_uri(text):
        return open(text, "rb")
    fs, inner = resolve(text)
    return io.BufferedReader(_Remote(fs.open_input_file(inner)), buffer_size)  # type: ignore[return-value]


def arrow_source(path: str | os.PathLike) -> tuple[str, pafs.FileSystem | None]:
    """``(source, filesystem)`` for a pyarrow reader that takes both (``pq.ParquetFile(source,
    filesystem=fs)``): the path itself and None for a local path, so pyarrow opens it as it always has."""
    text = os.fspath(path)
    if not is_uri(text):
        return text, None
    fs, inner = resolve(text)
    return inner, fs


def open_arrow(path: str | os.PathLike):  # type: ignore[no-untyped-def]
    """A pyarrow file to read an Arrow IPC file or stream from: a memory map of a local file, the
    filesystem's ``open_input_file`` (ranged reads) of a URI."""
    import pyarrow as pa

    text = os.fspath(path)
    if not is_uri(text):
        return pa.memory_map(text)
    fs, inner = resolve(text)
    return fs.open_input_file(inner)


def read_bytes(path: str | os.PathLike) -> bytes:
    """All bytes of a (small) file, local or URI."""
    with open_input(path) as f:
        return f.read()


def expand(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The paths as strings, each URI with a ``*`` in its path replaced by the files it matches, sorted
    (``*`` matches within one name, as in a shell; a URI matching nothing raises ``FileNotFoundError``).
    Local paths are left as they are: the shell expands their globs."""
    out: list[str] = []
    for p in paths:
        text = os.fspath(p) if isinstance(p, os.PathLike) else str(p)
        out.extend(_glob(text) if is_uri(text) and "*" in _parts(text)[2] else [text])
    return out


def _glob(uri: str) -> list[str]:
    import pyarrow.fs as pafs

    _, sep, query = uri.partition("?")
    scheme, netloc, path, _ = _parts(uri)
    names = path.split("/")
    fixed = next(i for i, n in enumerate(names) if "*" in n)
    pattern = names[fixed:]
    base = f"{scheme}://{netloc}" + "/".join(names[:fixed]) + (sep + query if sep else "")
    fs, inner = resolve(base)
    selector = pafs.FileSelector(inner, recursive=len(pattern) > 1, allow_not_found=True)
    found = []
    for info in fs.get_file_info(selector):
        rel = info.path[len(inner) :].lstrip("/").split("/") if inner != "/" else info.path.lstrip("/").split("/")
        if info.type == pafs.FileType.File and len(rel) == len(pattern) and all(
            fnmatch.fnmatchcase(name, unquote(pat)) for name, pat in zip(rel, pattern, strict=True)
        ):
            found.append(join(base, *rel))
    if not found:
        raise FileNotFoundError(2, "no file matches the pattern", uri)
    return sorted(found)


def list_dir(uri: str) -> list[tuple[str, str]]:
    """(name, ``file`` | ``dir`` | ``other``) of each entry in the folder ``uri`` (none where it is missing)."""
    import pyarrow.fs as pafs

    fs, inner = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=False, allow_not_found=True))
    kinds = {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}
    return sorted((posixpath.basename(i.path.rstrip("/")), kinds.get(i.type, "other")) for i in infos)


@contextlib.contextmanager
def local_copy(uri: str, names: Sequence[str] | None = None) -> Iterator[Path]:
    """The files of the folder ``uri`` (those of ``names`` that exist, or all files in it) copied into a
    temporary local folder, removed on exit; a local path is yielded as it is, copying nothing."""
    if not is_uri(uri):
        yield Path(uri)
        return
    import pyarrow.fs as pafs

    fs, inner = resolve(uri)
    wanted = [n for n, k in list_dir(uri) if k == "file" and (names is None or n in names)]
    with tempfile.TemporaryDirectory(prefix="packer-copy-") as tmp:
        for name in wanted:
            pafs.copy_files(posixpath.join(inner, name), os.path.join(tmp, name), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())
        yield Path(tmp)
