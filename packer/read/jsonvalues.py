"""Reading input files into JSON values: bytes in, one value per record out.

:class:`FileValues` reads one input file and yields its records, in file order,
as the values :mod:`json` decodes them to (a Parquet row as a dict), or a
:class:`~packer.read.jsonstream.BadValue` in place of a record it could not decode: the rejection reason
and where in the file it broke. On the way it works out the container, strips a
BOM, refuses what is not UTF-8 JSON or Parquet, counts the bytes read (the
build's progress) and hashes them (the manifest's sha256). It knows nothing of
record formats: :mod:`packer.read.formats` turns the values into conversations.

Worked example, a JSON array cut short in its third record::

    >>> import hashlib, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "cut.json")
    >>> with open(path, "w") as f:
    ...     _ = f.write('[{"a": 1},\\n {"b": [2, 3]},\\n {"c"')
    >>> values = FileValues(path)
    >>> for v in values:
    ...     print(f"{v.reason}: {v.detail}" if isinstance(v, BadValue) else v)
    {'a': 1}
    {'b': [2, 3]}
    malformed_json: line 3 column 6: Expecting ':' delimiter; the file ends inside this record (4 bytes from its start)
    >>> values.sha256 == hashlib.sha256(open(path, "rb").read()).hexdigest(), values.consumed.n
    (True, 32)

The file starts with ``[``, so it is a JSON array; decoding it whole fails, so it
is decoded element by element (:mod:`packer.read.jsonstream`): the two complete records come out as they are,
and the break becomes ONE bad value that says where (line 3, column 6, counted
as an editor does): the file ends inside that record. All 32 bytes were read and hashed.

Containers (by extension, then by content)
    ``.jsonl`` / ``.ndjson``: JSON Lines; blank lines are skipped and are not
    records; a broken line is a ``malformed_json`` value, an undecodable one
    ``invalid_utf8``, and reading goes on. ``.json``: an array (``[``) is streamed and
    parsed record by record (memory: a chunk plus a record, whatever the file's
    size), so a truncated array keeps every complete record before the cut and
    ends with ONE ``malformed_json`` value (a trailing comma too); after a broken
    element the reader reads on at the next element it can verify
    (:mod:`packer.read.resync`: the skipped bytes are ``malformed_json`` values, and
    a stretch that may hide an unknown number of records is a BuildError, as is
    more data after the closing ``]`` that may hold records); an object (``{``)
    is one record if the whole file is one JSON value, else the file is read as
    JSON Lines. ``.parquet``: one record per row.
    ``.arrow``: an Arrow IPC stream (an HF ``datasets`` cache file, or a data file of
    a ``save_to_disk`` folder) or IPC file, one record per row, read a record batch at
    a time; a folder written by ``Dataset.save_to_disk`` (``state.json``) stands for
    its data files, in order (:func:`packer.read.inputs.expand_inputs`).
    Other extensions are sniffed (``PAR1``, Arrow magic, ``[``, ``{``). A UTF-8 BOM is
    ignored. A missing, empty, UTF-16, non-JSON or (array/object) non-UTF-8
    file, a directory, is a :class:`~packer.read.records.BuildError`: one line that
    names the file, the line and column where there is one, and the way out (what
    a file that is not JSON starts with and what packer reads: :data:`SUPPORTED`).
    Line and column count characters from 1, as an editor does. An empty array,
    JSON Lines file or Parquet file yields no values; :attr:`FileValues.empty`
    says how to report that.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .. import fsio
from ..options import FORMATS
from .compressed import compression, inner_suffix, open_decompressed
from .jsonstream import _DECODER, _JSON_CHUNK, _WS, BadValue, _Consumed, _json_array_values, _line_col, _TextWindow
from .records import BuildError

__all__ = ["RECORD_FORMATS", "SUPPORTED", "WHOLE", "FileValues", "Piece", "container"]

_BOM = b"\xef\xbb\xbf"
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
#: how an Arrow IPC stream (what HF datasets writes) and an Arrow IPC file begin
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
_ARROW_FILE_MAGIC = b"ARROW1"
_PARQUET_BATCH_ROWS = 2048
_WS_BYTES = re.compile(rb"[ \t\n\r]*")
#: bytes of JSON Lines read at a time (the reader's progress moves a block at a time)
_JSONL_BLOCK = 1 << 20
#: check_inputs (``head_only``) reads a file this much at a time: it needs the first records, not the first megabytes
_CHECK_CHUNK = 1 << 16

#: what each record format's records hold, for the messages that list them (here: a file that is not JSON is
#: told what packer reads, record formats included)
_FORMAT_KEYS = {
    "alpaca": "instruction/input/output",
    "sharegpt": "conversations of {from, value}",
    "messages": "OpenAI role/content",
    "prompt_completion": "prompt/completion or prompt/response",
    "text": "text",
    "preference": "prompt/chosen/rejected",
    "preference_implicit": "chosen/rejected conversations",
    "ranking": "conversations + chosen/rejected turns",
    "ranking_messages": "chosen_messages/rejected_messages",
    "kto": "prompt/completion/label",
    "kto_messages": "messages/label",
}
RECORD_FORMATS = ", ".join(f"{name} ({_FORMAT_KEYS[name]})" for name in FORMATS)
SUPPORTED = (
    "supported: JSON (an array of records, or one object), JSON Lines, Parquet, Arrow (HF datasets: a "
    f"save_to_disk folder or a cache .arrow file); record formats {RECORD_FORMATS}"
)

def _jsonl_values(
    f: BinaryIO, consumed: _Consumed | None, block: int = 0, lineno: int = 0, offset: int = 0
) -> Iterator[object]:
    """Values of a JSON Lines stream; one per non-blank line. Lines come about ``block`` bytes
    (default _JSONL_BLOCK) at a time, so that ``consumed`` counts a block, not a line, at a time
    (each line is hashed as it is reached). ``lineno``/``offset``: lines and bytes of the file before
    the stream (a part of the file: messages name the file's line and byte).

    ``{"a": 1}\\n\\n{"b"\\n`` -> ``{"a": 1}``, then BadValue(malformed_json, "line 3 column 5: ...")
    """
    hasher = consumed.hasher if consumed is not None else None
    while lines := f.readlines(block or _JSONL_BLOCK):
        if consumed is not None:
            consumed.n += sum(map(len, lines))
        for raw in lines:
            lineno += 1
            if hasher is not None:
                hasher.update(raw)
            line = raw[3:] if lineno == 1 and raw.startswith(_BOM) else raw
            start, offset = offset, offset + len(raw)
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                at = start + len(raw) - len(line) + e.start
                yield BadValue("invalid_utf8", f"line {lineno}: invalid UTF-8 at byte {at} of the file")
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                yield BadValue("malformed_json", f"line {lineno} {_line_error(text, e)}")
                continue
            except RecursionError:
                yield BadValue("malformed_json", f"line {lineno}: nested too deeply")
                continue
            del text  # not held while the record is built (a 40 MB line holding an emoji: a 150 MB str)
            yield value


def _line_error(text: str, error: json.JSONDecodeError) -> str:
    """``"column C: message"`` of the JSON error in one line of JSON Lines (C counts characters from 1).

    json numbers a position past the line break as the next line's column 1, and a record cut short
    fails only there: such an error is decoded again without the break, for the column where the
    line ends (or, for an unfinished string, where the string starts).
    """
    body = text.rstrip("\r\n")
    if error.pos >= len(body):
        try:
            json.loads(body)
        except json.JSONDecodeError as e:
            error = e
        except RecursionError:
            pass
    return f"column {min(error.pos, len(body)) + 1}: {error.msg}"

def _first_lines(data: bytes, n: int, pos: int = 0) -> list[bytes]:
    """The first ``n`` non-blank lines of ``data[pos:]`` (without copying the rest)."""
    lines: list[bytes] = []
    while pos < len(data) and len(lines) < n:
        nl = data.find(b"\n", pos)
        nl = len(data) if nl < 0 else nl
        if data[pos:nl].strip():
            lines.append(data[pos:nl])
        pos = nl + 1
    return lines


def _parses_alone(line: bytes) -> bool:
    try:
        json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return True


def _object_file_values(path: str, data: bytes, start: int, skipped: int) -> Iterator[object]:
    """A file starting with ``{``: one JSON object, or JSON Lines.

    JSON Lines wins when the whole file is not one value and one of its first
    two lines is a JSON value by itself; otherwise it is a broken single object
    (a pretty-printed record never has a complete value on a line of its own).
    """
    error = ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        error = f"invalid UTF-8 at byte {skipped + e.start}"
    else:
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as e:
            error = f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        except RecursionError:
            error = "invalid JSON: nested too deeply"
        else:
            end = _WS.match(text, end).end()
            if end == len(text):
                yield value
                return
            error = f"invalid JSON at {_line_col(text, end)}: extra data after the first value"
        del text
    if any(_parses_alone(line) for line in _first_lines(data, 2, start)):
        yield from _jsonl_values(io.BytesIO(data), None)
        return
    raise BuildError(f"{path}: {error} (neither one JSON object nor JSON Lines)")


def _json_file_values(
    path: str, f: BinaryIO, consumed: _Consumed, chunk: int, head_only: bool = False,
    opener: Callable[[], BinaryIO] | None = None,
) -> Iterator[object]:
    """Values of a ``.json`` (or sniffed) file: an array streamed, anything else read whole (with
    ``head_only``, JSON Lines are streamed too)."""
    head = b""
    while True:  # up to the first character that is not blank (and past a BOM)
        raw = f.read(chunk)
        consumed.update(raw)
        head += raw
        skipped = 3 if head.startswith(_BOM) else 0
        start = _WS_BYTES.match(head, skipped).end()
        if not raw or (len(head) >= 3 and start < len(head)):
            break
    first = head[start : start + 1]
    if not first:
        raise BuildError(f"{path}: empty file, no records")
    if first == b"[":
        win = _TextWindow(f, path, consumed, head[skipped:], skipped, chunk, opener)
        del head
        yield from _json_array_values(win, start - skipped)
        win.finish()
        return
    if first != b"{":
        raise BuildError(_not_json(path, head[start : start + 256]))
    if head_only and f.seekable() and _line_parses_alone(f, start, len(head)):
        # the reader reads such a file as JSON Lines or (nothing but blanks after that line) as the one
        # object of that line: the same values either way, and JSON Lines need not be read to the end
        f.seek(skipped)
        yield from _jsonl_values(f, consumed, chunk)
        return
    rest = f.read()
    consumed.update(rest)
    data = head[skipped:] + rest
    del head, rest
    yield from _object_file_values(path, data, start - skipped, skipped)


def _line_parses_alone(f: BinaryIO, start: int, end: int) -> bool:
    """Whether the line at byte ``start`` of ``f`` is a JSON value by itself; leaves ``f`` at ``end``."""
    f.seek(start)
    alone = _parses_alone(f.readline())
    f.seek(end)
    return alone


def _not_json(path: str, start: bytes) -> str:
    """The message for a file that is neither JSON, Parquet nor Arrow; ``start``: its first bytes that are not
    blank."""
    return f"{path}: not JSON, JSON Lines, Parquet or Arrow: it starts with {_shown(start)}; {SUPPORTED}"


def _shown(data: bytes, n: int = 40) -> str:
    """The first ``n`` characters of ``data`` as printable text on one line: ``'instruction,input\\nhi...'``."""
    text = data[: 4 * n].decode("utf-8", "replace")
    return repr(text[:n]) + ("..." if len(text) > n else "")


def _check_encoding(path: str, start: bytes) -> None:
    """BuildError for a file in UTF-16: a byte order mark, or an ASCII character next to a NUL (UTF-8
    JSON never starts with a NUL; a gzip or zip header has no ASCII-NUL pair there)."""
    utf16 = start.startswith((b"\xff\xfe", b"\xfe\xff")) or (
        len(start) >= 2 and ((0 < start[0] < 0x80 and start[1] == 0) or (start[0] == 0 and 0 < start[1] < 0x80))
    )
    if utf16:
        raise BuildError(f"{path}: the file is UTF-16 encoded; convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")


def _parquet_values(path: str, consumed: _Consumed, row_groups: range | None = None) -> Iterator[object]:
    """Rows of a Parquet file (of ``row_groups`` only, if given). pyarrow reads the file its own way,
    so once the rows of a row group are out the file is hashed (and counted as read) up to that
    group's share of its size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source, filesystem = fsio.arrow_source(path)  # a URI: read through its pyarrow filesystem
        pf = pq.ParquetFile(source, filesystem=filesystem)
        meta = pf.metadata
        chosen = range(meta.num_row_groups) if row_groups is None else row_groups
        groups = [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in chosen]
        total = sum(b for _, b in groups) or 1
        with fsio.open_input(path) as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            rows = group = done = 0  # rows out; groups, and their bytes, all out
            batches = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=list(chosen))
            for batch in batches:
                yield from batch.to_pylist()
                rows += batch.num_rows
                while group < len(groups) and rows >= groups[group][0]:
                    rows -= groups[group][0]
                    done += groups[group][1]
                    group += 1
                    consumed.read_to(f, size * done // total)
            consumed.read_to(f, -1)
    except (pa.ArrowException, OSError) as e:  # ArrowException: bad file; OSError: unreadable
        raise BuildError(f"{path}: not a readable Parquet file: {e}") from None


def _arrow_values(path: str, consumed: _Consumed) -> Iterator[object]:
    """Rows of an Arrow IPC stream (HF datasets' ``.arrow`` files) or IPC file, a record batch at a time
    from a memory map (a URI: ranged reads; never the whole table); the file is hashed (and counted as
    read) up to the end of each batch once its rows are out."""
    import pyarrow as pa

    try:
        with fsio.open_arrow(path) as src, fsio.open_input(path) as f:
            size = src.size()
            if src.read(len(_ARROW_FILE_MAGIC)) == _ARROW_FILE_MAGIC:
                reader = pa.ipc.open_file(src)
                n = reader.num_record_batches
                batches = ((reader.get_batch(i), size * (i + 1) // n) for i in range(n))
            else:
                src.seek(0)
                stream = pa.ipc.open_stream(src)
                batches = ((batch, src.tell()) for batch in stream)
            for batch, end in batches:
                for start in range(0, batch.num_rows, _PARQUET_BATCH_ROWS):
                    yield from batch.slice(start, _PARQUET_BATCH_ROWS).to_pylist()
                consumed.read_to(f, min(end, size))
            consumed.read_to(f, -1)
    except (pa.ArrowException, OSError) as e:  # ArrowException: bad file; OSError: unreadable
        raise BuildError(f"{path}: not a readable Arrow file (an IPC stream, as HF datasets writes): {e}") from None


@dataclass(frozen=True)
class Piece:
    """A part of one input file that a worker reads alone (:mod:`packer.read.plan` cuts them).

    ``kind``: ``file`` (all of it), ``lines`` (the JSON Lines bytes ``start:end``, whole lines),
    ``array`` (the elements of a JSON array that lie in bytes ``start:end``, from the first
    element's first byte to the last one's last) or ``row_groups`` (Parquet row groups
    ``start:end``). ``first_record``: the file's records before the piece; ``first_line``: its lines
    before ``start`` (JSON Lines), so that a message names the record and line of the whole file.
    """

    kind: str = "file"
    start: int = 0
    end: int = -1
    first_record: int = 0
    first_line: int = 0


#: all of a file
WHOLE = Piece()


class _Range(io.RawIOBase):
    """Bytes ``start:end`` of a file as a stream, with ``head`` before them and ``tail`` after."""

    def __init__(self, path: str, start: int, end: int, head: bytes = b"", tail: bytes = b"") -> None:
        self._f = fsio.open_input(path)
        self._f.seek(start)
        self._left = end - start
        self._extra = [head, tail]

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        if self._extra[0]:
            n = min(len(buf), len(self._extra[0]))
            buf[:n] = self._extra[0][:n]
            self._extra[0] = self._extra[0][n:]
            return n
        if self._left > 0:
            n = self._f.readinto(memoryview(buf)[: min(len(buf), self._left)])
            if n:
                self._left -= n
                return n
            self._left = 0
        n = min(len(buf), len(self._extra[1]))
        buf[:n] = self._extra[1][:n]
        self._extra[1] = self._extra[1][n:]
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def container(path: str) -> str:
    """How a file holds its records: ``jsonl``, ``json`` (an array or an object), ``parquet``, ``arrow`` or
    ``compressed`` (:mod:`packer.read.compressed`); decided as :class:`FileValues` decides (extension, then the first
    bytes; compression by the first bytes alone)."""
    suffix = fsio.suffix(path).lower()
    with fsio.open_input(path, buffer_size=1 << 12) as f:  # a URI: one small ranged read
        magic = f.read(6)
    if compression(magic):
        return "compressed"  # read whole, as one part
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    magic = magic[:4]
    if suffix == ".arrow" or magic in (_ARROW_STREAM_MAGIC, _ARROW_FILE_MAGIC[:4]):
        return "arrow"
    return "parquet" if suffix == ".parquet" or magic == b"PAR1" else "json"


class FileValues:
    """Iterate the raw values (or BadValue) of one file; ``sha256`` is set once the
    iteration is exhausted, ``empty`` says how to report a file with no values,
    ``consumed.n`` counts the bytes read so far. ``head_only`` (check_inputs) hashes
    nothing and reads a small chunk at a time. ``piece``: read only that part of the file
    (hashing nothing: the build hashes whole files for its key)."""

    def __init__(self, path: str, head_only: bool = False, piece: Piece = WHOLE) -> None:
        self.path = path
        self.sha256 = ""
        self.empty = "empty file, no records"
        self.consumed = _Consumed(hashing=not head_only and piece.kind == "file")
        self._head_only = head_only
        self.piece = piece

    def __iter__(self) -> Generator[object, None, None]:
        try:
            yield from self._values()
        except FileNotFoundError:
            raise BuildError(f"{self.path}: no such file") from None
        except OSError as e:
            raise BuildError(f"{self.path}: cannot read: {e.strerror or e}") from None

    def _values(self) -> Iterator[object]:
        path, piece = self.path, self.piece
        if piece.kind == "lines":
            with io.BufferedReader(_Range(path, piece.start, piece.end), _JSONL_BLOCK) as f:
                yield from _jsonl_values(f, self.consumed, _JSONL_BLOCK, piece.first_line, piece.start)
            return
        if piece.kind == "array":  # checked whole by the plan: the elements, as an array of their own
            with io.BufferedReader(_Range(path, piece.start, piece.end, b"[", b"]"), _JSON_CHUNK) as f:
                win = _TextWindow(f, path, self.consumed, b"", 0, _JSON_CHUNK)
                yield from _json_array_values(win, win.skip_ws(0), resync=False)
            return
        if piece.kind == "row_groups":
            yield from _parquet_values(path, self.consumed, range(piece.start, piece.end))
            return
        suffix = fsio.suffix(path).lower()
        with fsio.open_input(path) as f:
            magic = f.read(6)
            f.seek(0)
            codec = compression(magic)
            if codec is not None:
                yield from self._decompressed(f, codec)
                return
            magic = magic[:4]
            jsonl = suffix in _JSONL_SUFFIXES
            arrow = not jsonl and (suffix == ".arrow" or magic in (_ARROW_STREAM_MAGIC, _ARROW_FILE_MAGIC[:4]))
            if arrow:
                self.empty = "no records (the Arrow file has no rows)"
                yield from _arrow_values(path, self.consumed)
                self.sha256 = self.consumed.hexdigest()
                return
            if jsonl or not (suffix == ".parquet" or magic == b"PAR1"):
                _check_encoding(path, magic)
                if jsonl:  # streamed: JSON Lines files may be larger than memory
                    yield from _jsonl_values(f, self.consumed, _CHECK_CHUNK if self._head_only else _JSONL_BLOCK)
                else:
                    self.empty = "no records (an empty JSON array)"
                    chunk = _CHECK_CHUNK if self._head_only else _JSON_CHUNK
                    yield from _json_file_values(path, f, self.consumed, chunk, self._head_only)
                self.sha256 = self.consumed.hexdigest()
                return
        self.empty = "no records (the Parquet file has no rows)"
        yield from _parquet_values(path, self.consumed)
        self.sha256 = self.consumed.hexdigest()

    def _decompressed(self, raw: BinaryIO, codec: str) -> Iterator[object]:
        """Values of a compressed JSON or JSON Lines file (:mod:`packer.read.compressed`); its own bytes are hashed
        and counted as they are read."""
        path = self.path
        f = open_decompressed(path, raw, codec, self.consumed)
        inner = inner_suffix(path).lower()
        start = f.peek(6)[:6]
        if inner in (".parquet", ".arrow") or start[:4] in (b"PAR1", _ARROW_STREAM_MAGIC, _ARROW_FILE_MAGIC[:4]):
            raise BuildError(f"{path}: compressed input ({codec}) holding a Parquet or Arrow file; decompress it "
                             "first (Parquet compresses its columns itself)")
        _check_encoding(path, start)
        inside = _Consumed(hashing=False)  # the decompressed bytes: neither hashed nor counted
        if inner in _JSONL_SUFFIXES:
            yield from _jsonl_values(f, None, _CHECK_CHUNK if self._head_only else _JSONL_BLOCK)
        else:
            self.empty = "no records (an empty JSON array)"
            chunk = _CHECK_CHUNK if self._head_only else _JSON_CHUNK

            def reopen() -> BinaryIO:
                return open_decompressed(path, fsio.open_input(path), codec, _Consumed(hashing=False))

            yield from _json_file_values(path, f, inside, chunk, self._head_only, reopen)
        f.raw.counted.drain()  # type: ignore[attr-defined]
        self.sha256 = self.consumed.hexdigest()

