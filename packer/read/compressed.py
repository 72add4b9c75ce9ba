"""Compressed input files: told by their first bytes, whatever their name, and read through pyarrow's
decompressing streams.

``chats.jsonl.gz``, ``alpaca.json.zst``, ``data.json.bz2`` (or ``data.json`` that is in fact gzip) are read
as the file they hold: JSON Lines or JSON by the name without the compression's extension, then by what the
decompressed bytes start with, with the same per-record messages. The file's own (compressed) bytes are what
is hashed (the manifest's sha256, the build key) and counted for progress. A compressed file is one part of
a parallel build: its records cannot be reached without decompressing all before them.

    >>> compression(b"\\x1f\\x8b\\x08\\x00"), compression(b"[{"), inner_suffix("s3://b/chats.JSONL.gz")
    ('gzip', None, '.JSONL')
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit

from .. import fsio
from .records import BuildError

__all__ = ["MAGIC", "READABLE", "compression", "inner_suffix", "open_decompressed"]

#: how each kind of compressed file begins (pyarrow's codec names), zip and xz only to be named in a message
MAGIC = {
    b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4",
    b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip",
}
#: the compressions packer reads
READABLE = ("gzip", "bz2", "zstd", "lz4")
_SUFFIXES = {".gz", ".gzip", ".bz2", ".zst", ".zstd", ".lz4", ".xz", ".zip"}


def compression(start: bytes) -> str | None:
    """The compression a file starting with ``start`` (its first 6 bytes) is in; None for none."""
    return next((name for magic, name in MAGIC.items() if start.startswith(magic)), None)


def inner_suffix(path: str) -> str:
    """The extension of the file a compressed file holds: ``.jsonl`` of ``chats.jsonl.gz``; the extension
    itself where it names no compression (a misnamed file)."""
    suffix = fsio.suffix(path)
    if suffix.lower() not in _SUFFIXES:
        return suffix
    name = urlsplit(path).path if fsio.is_uri(path) else path.replace("\\", "/")
    return PurePosixPath(name).with_suffix("").suffix


class _Counted(io.RawIOBase):
    """A file's bytes as they are read, each fed to ``consumed`` (hash and count: :mod:`packer.read.jsonvalues`)."""

    def __init__(self, f: BinaryIO, consumed) -> None:  # type: ignore[no-untyped-def]
        self._f, self._consumed = f, consumed

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        raw = self._f.read(len(buf))
        buf[: len(raw)] = raw
        self._consumed.update(raw)
        return len(raw)

    def drain(self) -> None:
        """Read the rest of the file (what follows the compressed stream is hashed too)."""
        while self.read(1 << 20):
            pass

    def close(self) -> None:
        self._f.close()
        super().close()


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of a pyarrow stream; a corrupt stream is a BuildError naming the file."""

    def __init__(self, path: str, counted: _Counted, codec: str) -> None:
        import pyarrow as pa

        self._path, self._codec, self.counted = path, codec, counted
        self._stream = pa.CompressedInputStream(pa.PythonFile(counted, mode="r"), codec)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        import pyarrow as pa

        try:
            data = self._stream.read(len(buf))
        except (pa.ArrowException, OSError) as e:
            raise BuildError(f"{self._path}: compressed input ({self._codec}) that cannot be decompressed: {e}; "
                             "is the file whole?") from None
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        self.counted.close()
        super().close()


def open_decompressed(path: str, f: BinaryIO, codec: str, consumed) -> io.BufferedReader:  # type: ignore[no-untyped-def]
    """The decompressed bytes of the file ``f`` (at its start) holds, buffered; every byte of ``f`` read
    goes to ``consumed``. Closing it closes ``f``. BuildError for a compression packer does not read."""
    if codec not in READABLE:
        raise BuildError(f"{path}: compressed input ({codec}), which packer does not read; decompress it first, "
                         f"or compress it with gzip, bzip2, zstd or lz4")
    return io.BufferedReader(_Decompressed(path, _Counted(f, consumed), codec), 1 << 16)
