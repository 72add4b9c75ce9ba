"""Readers for instruction-tuning data: files in, normalised records out.

:class:`RecordReader` streams the records of several files, in order, as
:class:`~packer.records.Conversation` or :class:`~packer.records.Rejection`,
exactly one per input record, and fills :attr:`RecordReader.inputs` with one
:class:`InputSummary` per file once that file has been read to its end::

    >>> reader = RecordReader(["a.json", "b.jsonl"])          # doctest: +SKIP
    >>> for item in reader: ...                                # doctest: +SKIP
    >>> reader.inputs[0]                                       # doctest: +SKIP
    InputSummary(path='a.json', sha256='9f2c...', format='alpaca', records=999)

:func:`check_inputs` is the same reading of only the first records of each
file: a build runs it before it touches any output, so that a file the reader
would refuse fails at once, with the reader's message. :attr:`RecordReader.bytes_read`
out of :attr:`RecordReader.total_bytes` is the reader's progress.

Containers (by extension, then by content)
    ``.jsonl`` / ``.ndjson``: JSON Lines; blank lines are skipped and are not
    records; a broken line is a ``malformed_json`` rejection, an undecodable one
    ``invalid_utf8``, and reading goes on. ``.json``: an array (``[``) is streamed and
    parsed record by record (memory: a chunk plus a record, whatever the file's
    size), so a truncated or broken array keeps every complete record
    before the break and ends with ONE ``malformed_json`` rejection (a trailing
    comma too); an object (``{``) is one record if the whole file is one JSON
    value, else the file is read as JSON Lines. ``.parquet``: one record per row.
    Other extensions are sniffed (``PAR1`` magic, ``[``, ``{``). A UTF-8 BOM is
    ignored. A missing, empty, UTF-16, non-JSON or (array/object) non-UTF-8 file,
    a directory, is a :class:`~packer.records.BuildError`: one line that names
    the file, the line and column where there is one, and the way out (what a
    file that is not JSON starts with and what packer reads; the record formats
    and ``--format`` for a file whose format is not recognised). Line and
    column count characters from 1, as an editor does.

Formats
    ``fmt`` forces one format for every record. Otherwise each FILE's format is
    detected from its first record that :func:`detect_format` recognises; a
    record recognised as another format is a ``format_mismatch`` rejection, a
    record recognised as none is parsed as the file's format (and usually
    rejected as ``missing_field``).

Normalisation policy (roles are only system / user / assistant)
    alpaca
        ``instruction`` and ``output`` are required strings, ``input`` and
        ``system`` optional strings (null = absent); other keys are ignored.
        -> ``[system] user(instruction, input=input) assistant(output)``.
        Blank ``output`` -> ``empty_output``; blank instruction AND input ->
        ``empty_turn``. An empty ``system`` is no system message.
    sharegpt
        ``conversations``: ``[{"from", "value"}]`` (``role`` / ``content`` are
        accepted as the turn's keys too), plus an optional top-level ``system``
        that becomes a leading system message. Roles (case-insensitive):
        human, user -> user; gpt, assistant, chatgpt, bing, bard, function_call
        -> assistant (a function call is the model's output); observation, tool,
        function -> user (a tool result is context the model reads); system ->
        system.
    messages
        ``messages``: ``[{"role", "content"}]``; roles system, user, assistant,
        developer -> system, tool and function -> user. ``content`` is a string
        or an OpenAI list of ``{"type": "text", "text"}`` parts, joined without a
        separator (as HF chat templates concatenate them); other part types and
        null content (e.g. assistant tool_calls) are ``wrong_type``.
    Both conversation formats, after role mapping:
        * assistant turns before the first user turn are dropped
          (``dropped_turns["leading_assistant"]``): ShareGPT dumps split long
          chats into chunks that start mid-conversation with the model;
        * turns after the last assistant turn are dropped
          (``dropped_turns["trailing_non_assistant"]``): nothing learns from them;
        * nothing left to learn -> ``no_assistant_turn``;
        * dropped turns are checked for their role only; a kept turn whose content
          is not a string is ``wrong_type``, a blank one ``empty_output``
          (assistant) or ``empty_turn`` (system/user);
        * repeated roles and mid-conversation system turns are kept as they are
          (a template that cannot render them rejects the record later).
    Blank turns (``blank_turns="drop"``, ``--blank-turns drop``; the default
    ``"reject"`` rejects the record as above). Among the kept turns, runs of
    consecutive user turns and of assistant turns are paired, each user run
    with the assistant run answering it:
        * a blank turn in a run that also holds a non-blank turn (a message
          split in two, as ShareGPT dumps have) is dropped alone: the rest of the
          run still says it, the answer still answers it;
        * a run of blank turns only is dropped together with its partner: a
          blank user turn with the assistant turn(s) answering it, a blank
          assistant turn with the user turn(s) it answers;
        * a blank system turn is dropped alone;
        * each turn dropped so counts once in ``dropped_turns["blank_turn"]``
          (a blank turn and its answer: 2); turns then left after the last
          assistant turn are dropped as ``trailing_non_assistant``; a
          conversation left with no assistant turn is ``no_assistant_turn``.
    Alpaca records are not changed by it (a blank output or instruction leaves
    nothing to learn: ``empty_output`` / ``empty_turn`` as before).
    Content is never stripped or otherwise edited.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .options import BLANK_TURN_POLICIES, FORMATS
from .records import BuildError, Conversation, Message, MessageRole, Rejection, Source

_BOM = b"\xef\xbb\xbf"
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PARQUET_BATCH_ROWS = 2048
#: JSON whitespace, the same pattern the json module uses between values
_WS = re.compile(r"[ \t\n\r]*")
_WS_BYTES = re.compile(rb"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
#: bytes read at a time from a JSON array file
_JSON_CHUNK = 1 << 23
#: characters of one unfinished array element after which it counts as broken, not unfinished
_MAX_RECORD_CHARS = 1 << 26
#: bytes of JSON Lines read at a time (the reader's progress moves a block at a time)
_JSONL_BLOCK = 1 << 20
#: check_inputs reads a file this much at a time: it needs the first records, not the first megabytes
_CHECK_CHUNK = 1 << 16
#: check_inputs gives up on settling a file's format after this many values or bytes
_CHECK_RECORDS = 1000
_CHECK_BYTES = 1 << 23

#: what each record format's records hold, for the messages that list them
_FORMAT_KEYS = {
    "alpaca": "instruction/input/output",
    "sharegpt": "conversations of {from, value}",
    "messages": "OpenAI role/content",
}
_RECORD_FORMATS = ", ".join(f"{name} ({_FORMAT_KEYS[name]})" for name in FORMATS)
_SUPPORTED = (
    f"supported: JSON (an array of records, or one object), JSON Lines, Parquet; record formats {_RECORD_FORMATS}"
)

_SHAREGPT_ROLES: dict[str, MessageRole] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "user",
    "tool": "user",
    "function": "user",
}
_MESSAGES_ROLES: dict[str, MessageRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "user",
    "function": "user",
}


@dataclass(slots=True)
class InputSummary:
    """One input file as the manifest lists it: ``records`` counts every
    Conversation and Rejection the reader yielded for the file."""

    path: str
    sha256: str
    format: str
    records: int


def detect_format(record: dict) -> str | None:
    """The format a record's keys say it is in, or None.

    >>> detect_format({"instruction": "Add 2 and 3.", "input": "", "output": "5"})
    'alpaca'
    >>> detect_format({"conversations": []}), detect_format({"prompt": "x"})
    ('sharegpt', None)
    """
    if not isinstance(record, dict):
        return None
    if "conversations" in record:
        return "sharegpt"
    if "messages" in record:
        return "messages"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


# --------------------------------------------------------------------------- containers


class _Bad:
    """A record the container could not decode (becomes a Rejection)."""

    __slots__ = ("detail", "reason")

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _line_col(text: str, pos: int, before: tuple[int, int] = (0, 0)) -> str:
    """``"line L column C"`` of a str position, numbered as json's errors are; ``before`` is (newlines,
    characters after the last of them) of text that preceded ``text`` in the file."""
    line = before[0] + text.count("\n", 0, pos) + 1
    nl = text.rfind("\n", 0, pos)
    column = pos - nl if nl >= 0 else before[1] + pos + 1
    return f"line {line} column {column}"


class _Consumed:
    """The bytes of one file read so far: their count (the reader's progress) and, unless ``hashing`` is
    off (check_inputs reads only a file's beginning), their sha256."""

    __slots__ = ("hasher", "n")

    def __init__(self, hashing: bool = True) -> None:
        self.hasher = hashlib.sha256() if hashing else None
        self.n = 0

    def update(self, raw: bytes) -> None:
        if self.hasher is not None:
            self.hasher.update(raw)
        self.n += len(raw)

    def read_to(self, f: BinaryIO, end: int) -> None:
        """Read ``f`` up to byte ``end`` (-1: to its end) into the hash; without one, only count up to ``end``."""
        if self.hasher is None:
            self.n = max(self.n, end)
            return
        while end < 0 or self.n < end:
            raw = f.read(1 << 20 if end < 0 else min(1 << 20, end - self.n))
            if not raw:
                return
            self.update(raw)

    def hexdigest(self) -> str:
        return self.hasher.hexdigest() if self.hasher is not None else ""


def _jsonl_values(f: BinaryIO, consumed: _Consumed | None, block: int = 0) -> Iterator[object]:
    """Values of a JSON Lines stream; one per non-blank line. Lines come about ``block`` bytes
    (default _JSONL_BLOCK) at a time, so that ``consumed`` counts a block, not a line, at a time
    (each line is hashed as it is reached).

    ``{"a": 1}\\n\\n{"b"\\n`` -> ``{"a": 1}``, then _Bad(malformed_json, "line 3 column 5: ...")
    """
    hasher = consumed.hasher if consumed is not None else None
    lineno = offset = 0
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
                yield _Bad("invalid_utf8", f"line {lineno}: invalid UTF-8 at byte {at} of the file")
                continue
            try:
                yield json.loads(text)
            except json.JSONDecodeError as e:
                yield _Bad("malformed_json", f"line {lineno} {_line_error(text, e)}")
            except RecursionError:
                yield _Bad("malformed_json", f"line {lineno}: nested too deeply")


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


class _TextWindow:
    """The text of a UTF-8 file, decoded a chunk at a time, for a JSON array of any size.

    Memory is about one chunk plus the largest record (at most twice a record
    longer than a chunk), where decoding the whole file would hold all of it as
    one str (4 bytes a character once a single emoji is in it). ``text`` is the
    window: positions are indices into it, and the methods that read on
    (:meth:`skip_ws`, :meth:`decode`) drop what lies before the position they
    are given and return positions in the new window. :meth:`where` names a
    position's line and column in the whole file, numbered as json's errors
    are. Every byte read goes into ``consumed``, ``chunk`` bytes at a time.
    """

    def __init__(self, f: BinaryIO, path: str, consumed: _Consumed, head: bytes, fed: int, chunk: int) -> None:
        self._f, self._path, self._consumed, self._chunk = f, path, consumed, chunk
        self._dec = codecs.getincrementaldecoder("utf-8")()
        self._fed = fed  # bytes of the file before ``head`` (a BOM)
        self._dropped = 0  # characters dropped from the front
        self.text = ""
        self.eof = False
        self._feed(head, final=False)

    def _feed(self, raw: bytes, final: bool, asked: int = 0) -> None:
        try:
            text = self._dec.decode(raw, final)
        except UnicodeDecodeError as e:
            at = self._fed - len(self._dec.getstate()[0]) + e.start
            raise BuildError(f"{self._path}: invalid UTF-8 at byte {at}; the file must be UTF-8") from None
        self._fed += len(raw)
        self.text += text
        self.eof = final
        self._short = len(raw) < (asked or self._chunk)

    def _more(self, pos: int) -> int:
        """Drop ``text[:pos]``, append the next chunk; the new ``pos``, or -1 at the end of the file.

        A record longer than a chunk is parsed again after each read: reading as much as the
        window holds (doubling it) keeps that linear in the record's length, not quadratic.
        """
        if self.eof:
            return -1
        self._dropped += pos
        self.text = self.text[pos:]
        asked = max(self._chunk, len(self.text))
        raw = self._f.read(asked)
        self._consumed.update(raw)
        self._feed(raw, not raw, asked)
        return 0

    def at_end(self) -> bool:
        """Whether the window holds the rest of the file. After a short read (the file ended, as
        far as a regular file tells) one more read makes sure; a full chunk is not the end."""
        if not self.eof and self._short:
            raw = self._f.read(self._chunk)
            self._consumed.update(raw)
            self._feed(raw, final=not raw)
        return self.eof

    def where(self, pos: int) -> str:
        """``"line L column C"`` of ``text[pos]`` in the whole file (reads the file again: errors only)."""
        before = _prefix_lines(self._path, self._dropped) if self._dropped else (0, 0)
        return _line_col(self.text, pos, before)

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _WS.match(self.text, pos).end()
            if pos < len(self.text):
                return pos
            more = self._more(pos)
            if more < 0:
                return pos
            pos = more

    def decode(self, pos: int) -> tuple[object, int]:
        """The JSON value at ``pos`` and where it ends, reading on while it is unfinished."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, pos)
            except json.JSONDecodeError:
                # unfinished (it goes on in the next chunk) or broken: only more text tells
                if len(self.text) - pos > _MAX_RECORD_CHARS:
                    raise json.JSONDecodeError(
                        f"no complete record within {_MAX_RECORD_CHARS:,} characters", self.text, pos
                    ) from None
                more = self._more(pos)
                if more < 0:
                    raise
                pos = more
                continue
            if end == len(self.text) and not self.eof:
                pos = self._more(pos)  # a bare number or literal may go on in the next chunk
                continue
            return value, end

    def finish(self) -> None:
        """Read (and hash) what is left of the file."""
        while raw := self._f.read(self._chunk):
            self._consumed.update(raw)


def _prefix_lines(path: str, chars: int) -> tuple[int, int]:
    """Newlines in the first ``chars`` characters of a UTF-8 file (BOM skipped), and the characters after
    the last of them."""
    lines = col = 0
    dec = codecs.getincrementaldecoder("utf-8-sig")()
    with open(path, "rb") as f:
        while chars > 0:
            raw = f.read(_JSON_CHUNK)
            if not raw:
                break
            text = dec.decode(raw)[:chars]
            chars -= len(text)
            newlines = text.count("\n")
            lines += newlines
            col = len(text) - text.rfind("\n") - 1 if newlines else col + len(text)
    return lines, col


def _json_array_values(win: _TextWindow, pos: int) -> Iterator[object]:
    """Elements of the JSON array opening at ``win.text[pos] == "["``, decoded one
    at a time so that a break keeps every complete element before it.

    ``[{"a": 1}, {"b": 2}, {"c"`` -> two values, then one _Bad(malformed_json)
    """
    if win.at_end():
        # the whole file is in the window (a small file): one decode of the whole array is about twice
        # as fast as one per element; a broken array is read element by element, to keep the good ones
        try:
            values, end = _DECODER.raw_decode(win.text, pos)
        except (json.JSONDecodeError, RecursionError):
            pass
        else:
            if _WS.match(win.text, end).end() == len(win.text):
                values.reverse()
                while values:  # let go of each record once it is handed on
                    yield values.pop()
                return
    pos = win.skip_ws(pos + 1)
    if win.text.startswith("]", pos):
        yield from _after_array(win, pos + 1)
        return
    while True:
        try:
            value, pos = win.decode(pos)
        except json.JSONDecodeError as e:
            yield _broken(f"{win.where(e.pos)}: {e.msg}")
            return
        except RecursionError:
            yield _broken(f"{win.where(pos)}: nested too deeply")
            return
        yield value
        pos = win.skip_ws(pos)
        sep = win.text[pos : pos + 1]
        if sep == ",":
            pos = win.skip_ws(pos + 1)
            if win.text.startswith("]", pos):
                yield _Bad("malformed_json", f"{win.where(pos)}: trailing comma before ']'")
                return
        elif sep == "]":
            yield from _after_array(win, pos + 1)
            return
        elif pos >= len(win.text):
            yield _broken(f"{win.where(pos)}: the file ends before the array's closing ']'")
            return
        else:
            yield _broken(f"{win.where(pos)}: expecting ',' or ']' after a record")
            return


def _broken(where: str) -> _Bad:
    return _Bad("malformed_json", f"{where}; the rest of the file could not be read")


def _after_array(win: _TextWindow, pos: int) -> Iterator[_Bad]:
    pos = win.skip_ws(pos)
    if pos < len(win.text):
        yield _broken(f"{win.where(pos)}: extra data after the array's closing ']'")


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
    path: str, f: BinaryIO, consumed: _Consumed, chunk: int, head_only: bool = False
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
        win = _TextWindow(f, path, consumed, head[skipped:], skipped, chunk)
        del head
        yield from _json_array_values(win, start - skipped)
        win.finish()
        return
    if first != b"{":
        raise BuildError(_not_json(path, head[start : start + 256]))
    if head_only and _line_parses_alone(f, start, len(head)):
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
    """The message for a file that is neither JSON nor Parquet; ``start``: its first bytes that are not blank."""
    return f"{path}: not JSON, JSON Lines or Parquet: it starts with {_shown(start)}; {_SUPPORTED}"


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


def _parquet_values(path: str, consumed: _Consumed) -> Iterator[object]:
    """Rows of a Parquet file. pyarrow reads the file its own way, so once the rows of a row group
    are out the file is hashed (and counted as read) up to that group's share of its size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        groups = [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]
        total = sum(b for _, b in groups) or 1
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            rows = group = done = 0  # rows out; groups, and their bytes, all out
            for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
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


class _FileValues:
    """Iterate the raw values (or _Bad) of one file; ``sha256`` is set once the
    iteration is exhausted, ``empty`` says how to report a file with no values,
    ``consumed.n`` counts the bytes read so far. ``head_only`` (check_inputs) hashes
    nothing and reads a small chunk at a time."""

    def __init__(self, path: str, head_only: bool = False) -> None:
        self.path = path
        self.sha256 = ""
        self.empty = "empty file, no records"
        self.consumed = _Consumed(hashing=not head_only)
        self._head_only = head_only

    def __iter__(self) -> Generator[object, None, None]:
        try:
            yield from self._values()
        except FileNotFoundError:
            raise BuildError(f"{self.path}: no such file") from None
        except OSError as e:
            raise BuildError(f"{self.path}: cannot read: {e.strerror or e}") from None

    def _values(self) -> Iterator[object]:
        path = self.path
        suffix = Path(path).suffix.lower()
        with open(path, "rb") as f:
            magic = f.read(4)
            f.seek(0)
            jsonl = suffix in _JSONL_SUFFIXES
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


# --------------------------------------------------------------------------- normalisation


class _Reject(Exception):
    """Raised by the record parsers; becomes a Rejection of the record."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_JSON_TYPES = {str: "a string", list: "an array", dict: "an object", bool: "a boolean"}


def _type_name(value: object) -> str:
    """How a value's type reads in a message: ``'a number'``, ``'NaN'``, ``'null'``."""
    if value is None:
        return "null"
    name = _JSON_TYPES.get(type(value))
    if name:
        return name
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _keys(record: dict) -> str:
    keys = [str(k) for k in record]
    return ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")


def _blank(text: str) -> bool:
    # isspace() stops at the first non-space character: O(1) for real content
    return not text or text.isspace()


_ALPACA_FIELDS = (("instruction", True), ("output", True), ("input", False), ("system", False))


def _alpaca_type_error(record: dict) -> _Reject:
    """Why an Alpaca record's fields are not all strings (the slow path)."""
    for name, required in _ALPACA_FIELDS:
        if required and name not in record:
            return _Reject("missing_field", f"no {name!r} field (keys: {_keys(record)})")
    for name, required in _ALPACA_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) and (required or value is not None):
            return _Reject("wrong_type", f"{name!r} is {_type_name(value)}, expected a string")
    raise AssertionError("the record's Alpaca fields are fine")


def _parse_alpaca(record: dict, drop_blank: bool = False) -> tuple[tuple[Message, ...], dict[str, int]]:
    """Messages of an Alpaca record (raises _Reject). ``drop_blank`` changes nothing: a blank
    instruction or output leaves nothing to learn.

    >>> _parse_alpaca({"instruction": "Add", "input": "2 3", "output": "5"})[0]
    (Message(role='user', content='Add', input='2 3'), Message(role='assistant', content='5', input=''))
    """
    get = record.get
    instruction, output, inp, system = get("instruction"), get("output"), get("input"), get("system")
    # one combined check keeps the common, valid record on a fast path
    if not (
        isinstance(instruction, str)
        and isinstance(output, str)
        and (inp is None or isinstance(inp, str))
        and (system is None or isinstance(system, str))
    ):
        raise _alpaca_type_error(record)
    if _blank(output):
        raise _Reject("empty_output", "'output' is empty" if not output else "'output' is only whitespace")
    if _blank(instruction) and (not inp or inp.isspace()):
        raise _Reject("empty_turn", "'instruction' and 'input' are both empty")
    user = Message("user", instruction, inp or "")
    assistant = Message("assistant", output)
    if not system or system.isspace():
        return (user, assistant), {}
    return (Message("system", system), user, assistant), {}


#: a turn after role mapping: (role, raw content, turn number, role name as written)
_Turn = tuple[MessageRole, object, int, str]


def _map_roles(
    turns: list, role_keys: tuple[str, str], content_keys: tuple[str, str], roles: dict[str, MessageRole]
) -> list[_Turn]:
    out: list[_Turn] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _Reject("wrong_type", f"turn {i} is {_type_name(turn)}, expected an object")
        key = role_keys[0] if role_keys[0] in turn or role_keys[1] not in turn else role_keys[1]
        if key not in turn:
            raise _Reject("missing_field", f"turn {i} has no {role_keys[0]!r} (keys: {_keys(turn)})")
        name = turn[key]
        if not isinstance(name, str):
            raise _Reject("wrong_type", f"turn {i}: {key!r} is {_type_name(name)}, expected a string")
        role = roles.get(name) or roles.get(name.lower())
        if role is None:
            raise _Reject("unknown_role", f"turn {i} has role {name!r}; known: {', '.join(roles)}")
        ckey = content_keys[0] if content_keys[0] in turn or content_keys[1] not in turn else content_keys[1]
        if ckey not in turn:
            raise _Reject("missing_field", f"turn {i} ({name}) has no {content_keys[0]!r}")
        out.append((role, turn[ckey], i, name))
    return out


def _drop_turns(turns: list[_Turn]) -> tuple[list[_Turn], dict[str, int]]:
    """Apply the leading-assistant / trailing-turns policy (module docstring).

    roles ``assistant user assistant user`` -> ``user assistant``,
    ``{"leading_assistant": 1, "trailing_non_assistant": 1}``
    """
    first_user = next((k for k, t in enumerate(turns) if t[0] == "user"), len(turns))
    head = [t for t in turns[:first_user] if t[0] != "assistant"]
    rest = turns[first_user:]
    last = next((k for k in range(len(rest) - 1, -1, -1) if rest[k][0] == "assistant"), -1)
    if last < 0:
        names = ", ".join(t[3] for t in turns[:10]) + (", ..." if len(turns) > 10 else "")
        raise _Reject("no_assistant_turn", f"no assistant turn after a user turn (roles: {names})")
    dropped: dict[str, int] = {}
    if first_user > len(head):
        dropped["leading_assistant"] = first_user - len(head)
    if last < len(rest) - 1:
        dropped["trailing_non_assistant"] = len(rest) - 1 - last
    return head + rest[: last + 1], dropped


def _drop_blank_turns(kept: list[_Turn], dropped: dict[str, int]) -> tuple[tuple[Message, ...], dict[str, int]]:
    """The messages of ``kept`` under ``--blank-turns drop`` (module docstring), ``dropped`` counted on.

    roles ``user assistant user("") assistant user assistant("")`` -> ``user assistant``,
    ``{"blank_turn": 4}``; ``user user(" ") assistant`` -> ``user assistant``, ``{"blank_turn": 1}``
    """
    texts = [_content_text(content, i, name) for _, content, i, name in kept]
    blank = [_blank(t) for t in texts]
    if not any(blank):
        return tuple(Message(t[0], text) for t, text in zip(kept, texts, strict=True)), dropped
    drop = [False] * len(kept)
    # runs of consecutive user turns and of assistant turns (system turns stand apart); after
    # _drop_turns they alternate, a user run first and an assistant run last
    runs: list[list[int]] = []
    for k, (role, _, _, _) in enumerate(kept):
        if role == "system":
            drop[k] = blank[k]  # nothing answers a system turn
        elif runs and kept[runs[-1][0]][0] == role:
            runs[-1].append(k)
        else:
            runs.append([k])
    for r, run in enumerate(runs):
        if all(blank[k] for k in run):
            # nothing said: the run goes with the one answering it (a user run's next run) or the one it
            # answers (an assistant run's previous run)
            partner = runs[r + 1] if kept[run[0]][0] == "user" else runs[r - 1]
            for k in (*run, *partner):
                drop[k] = True
        else:  # a message split in two: the rest of the run still says it, the answer still answers it
            for k in run:
                drop[k] = drop[k] or blank[k]
    left = [k for k in range(len(kept)) if not drop[k]]
    last = next((j for j in range(len(left) - 1, -1, -1) if kept[left[j]][0] == "assistant"), -1)
    if last < 0:
        gone = [str(kept[k][2]) for k in range(len(kept)) if blank[k]]
        raise _Reject("no_assistant_turn", f"no assistant turn is left once blank turn{'s' * (len(gone) > 1)} "
                      f"{', '.join(gone)} and the turns answering them are dropped (--blank-turns drop)")  # fmt: skip
    dropped = {**dropped, "blank_turn": dropped.get("blank_turn", 0) + len(kept) - len(left)}
    if last < len(left) - 1:
        dropped["trailing_non_assistant"] = dropped.get("trailing_non_assistant", 0) + len(left) - 1 - last
    return tuple(Message(kept[k][0], texts[k]) for k in left[: last + 1]), dropped


def _content_text(content: object, i: int, name: str) -> str:
    """A turn's content as text: a string, or OpenAI text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            text = part.get("text") if kind == "text" else None
            if not isinstance(text, str):
                what = f"type {kind!r}" if kind else _type_name(part)
                raise _Reject("wrong_type", f"turn {i} ({name}): content part {k} is {what}, only text is supported")
            texts.append(text)
        return "".join(texts)
    raise _Reject("wrong_type", f"turn {i} ({name}): content is {_type_name(content)}, expected a string")


def _conversation(
    record: dict,
    field: str,
    role_keys: tuple[str, str],
    content_keys: tuple[str, str],
    roles: dict[str, MessageRole],
    drop_blank: bool = False,
) -> tuple[tuple[Message, ...], dict[str, int]]:
    if field not in record:
        raise _Reject("missing_field", f"no {field!r} field (keys: {_keys(record)})")
    turns = record[field]
    if not isinstance(turns, list):
        raise _Reject("wrong_type", f"{field!r} is {_type_name(turns)}, expected an array")
    if not turns:
        raise _Reject("empty_conversation", f"{field!r} is an empty list")
    kept, dropped = _drop_turns(_map_roles(turns, role_keys, content_keys, roles))
    if drop_blank:
        return _drop_blank_turns(kept, dropped)
    messages = []
    for role, content, i, name in kept:
        text = _content_text(content, i, name)
        if _blank(text):
            reason = "empty_output" if role == "assistant" else "empty_turn"
            raise _Reject(reason, f"turn {i} ({name}) is {'empty' if not text else 'only whitespace'}")
        messages.append(Message(role, text))
    return tuple(messages), dropped


def _parse_sharegpt(record: dict, drop_blank: bool = False) -> tuple[tuple[Message, ...], dict[str, int]]:
    """Messages of a ShareGPT record (raises _Reject).

    >>> _parse_sharegpt({"conversations": [{"from": "gpt", "value": "...rest"},
    ...     {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})[1]
    {'leading_assistant': 1}
    """
    messages, dropped = _conversation(record, "conversations", ("from", "role"), ("value", "content"), _SHAREGPT_ROLES,
                                      drop_blank)  # fmt: skip
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise _Reject("wrong_type", f"'system' is {_type_name(system)}, expected a string")
    if system and not system.isspace():
        messages = (Message("system", system), *messages)
    return messages, dropped


def _parse_messages(record: dict, drop_blank: bool = False) -> tuple[tuple[Message, ...], dict[str, int]]:
    """Messages of an OpenAI-style ``messages`` record (raises _Reject).

    >>> _parse_messages({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ...     {"role": "assistant", "content": "Hello"}]})[0][0]
    Message(role='user', content='Hi', input='')
    """
    return _conversation(record, "messages", ("role", "from"), ("content", "value"), _MESSAGES_ROLES, drop_blank)


_PARSERS: dict[str, Callable[[dict, bool], tuple[tuple[Message, ...], dict[str, int]]]] = {
    "alpaca": _parse_alpaca,
    "sharegpt": _parse_sharegpt,
    "messages": _parse_messages,
}


# --------------------------------------------------------------------------- the reader


class RecordReader:
    """Iterator over the records of ``paths`` (in order) as Conversation or
    Rejection, exactly one per input record.

    ``Source.doc_id`` counts from ``first_doc_id`` across all files,
    ``Source.index`` is the record's position in its file (for JSON Lines:
    among non-blank lines), ``Source.path`` the path as given. After a file has
    been read to its end, its :class:`InputSummary` is appended to
    :attr:`inputs`. Single pass; errors that stop the build raise BuildError
    (a missing file or a directory already when the reader is made).

    Progress: :attr:`total_bytes` is the sum of the files' sizes when the
    reader was made; :attr:`bytes_read` the bytes read so far, which only grows
    and equals ``total_bytes`` once the iteration has ended.

    >>> reader = RecordReader(["data.json"])                   # doctest: +SKIP
    >>> [type(r).__name__ for r in reader], reader.inputs[0].records  # doctest: +SKIP
    (['Conversation', 'Rejection'], 2)
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike], fmt: str | None = None, *, first_doc_id: int = 0,
        blank_turns: str = "reject",
    ) -> None:  # fmt: skip
        self.paths, self._sizes = _input_files(paths, fmt)
        if blank_turns not in BLANK_TURN_POLICIES:
            raise BuildError(f"unknown --blank-turns {blank_turns!r}; choose {'|'.join(BLANK_TURN_POLICIES)}")
        self.fmt = fmt
        #: a blank turn inside a conversation: "reject" the record, or "drop" the turn with its answer
        self.blank_turns = blank_turns
        self._drop_blank = blank_turns == "drop"
        self.inputs: list[InputSummary] = []
        #: the doc_id the next record will get
        self.next_doc_id = first_doc_id
        #: bytes of all inputs: where :attr:`bytes_read` ends
        self.total_bytes = sum(self._sizes)
        # (sizes of the files read to their end, the file being read, its size): one tuple, so that
        # bytes_read never sees a file both finished and under way, whichever thread asks
        self._at: tuple[int, _FileValues | None, int] = (0, None, 0)
        self._items = self._all_files()

    @property
    def bytes_read(self) -> int:
        """Bytes of the inputs read so far, for a progress bar. Advances a chunk (JSON), a block of
        lines (JSON Lines) or a row group (Parquet) at a time; a file counts no more than its size."""
        done, values, size = self._at
        return done if values is None else done + min(values.consumed.n, size)

    def __iter__(self) -> RecordReader:
        return self

    def __next__(self) -> Conversation | Rejection:
        return next(self._items)

    def _all_files(self) -> Iterator[Conversation | Rejection]:
        for path, size in zip(self.paths, self._sizes, strict=True):
            values = _FileValues(path)
            self._at = (self._at[0], values, size)
            yield from self._one_file(path, values)
            self._at = (self._at[0] + size, None, 0)

    def _one_file(self, path: str, values: _FileValues) -> Iterator[Conversation | Rejection]:
        fmt: str | None = None
        pending: list[object] = []  # values before the file's format is known
        count = 0
        for value in values:
            if fmt is None:
                fmt = _format_of(value, self.fmt)
                if fmt is None:
                    pending.append(value)
                    continue
                for early in pending:
                    yield self._record(early, fmt, path, count)
                    count += 1
                pending = []
            yield self._record(value, fmt, path, count)
            count += 1
        if fmt is None:
            raise BuildError(_undetected(path, pending, values.empty))
        self.inputs.append(InputSummary(path, values.sha256, fmt, count))

    def _record(self, value: object, fmt: str, path: str, index: int) -> Conversation | Rejection:
        source = Source(self.next_doc_id, path, index)
        self.next_doc_id += 1
        if isinstance(value, _Bad):
            return Rejection(source, value.reason, value.detail)
        if not isinstance(value, dict):
            return Rejection(source, "not_an_object", f"the record is {_type_name(value)}, not an object")
        if self.fmt is None:
            found = detect_format(value)
            if found is not None and found != fmt:
                return Rejection(source, "format_mismatch", f"the record is {found} but its file is {fmt}")
        try:
            messages, dropped = _PARSERS[fmt](value, self._drop_blank)
        except _Reject as r:
            return Rejection(source, r.reason, r.detail)
        for i, m in enumerate(messages):
            for value in (m.content, m.input):
                # JSON's \ud800 escapes decode to lone surrogates, which have no UTF-8 form:
                # the tokenizer cannot take them
                bad = None if value.isascii() else _SURROGATE_RE.search(value)
                if bad is not None:
                    return Rejection(source, "invalid_utf8",
                                     f"turn {i} ({m.role}) holds a lone surrogate {bad.group(0)!a} "
                                     f"at character {bad.start()}, which has no UTF-8 form")  # fmt: skip
        return Conversation(source, fmt, messages, dropped)  # type: ignore[arg-type]


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _format_of(value: object, fmt: str | None) -> str | None:
    """The format of a file whose next value is ``value``, if that value settles it (``fmt`` forces it)."""
    if isinstance(value, _Bad):
        return None
    return fmt or detect_format(value)  # type: ignore[arg-type]


def _undetected(path: str, values: list[object], empty: str) -> str:
    """The BuildError message for a file whose format was never settled: it
    has no values, no decodable value, or (format not forced) none detects."""
    if not values:
        return f"{path}: {empty}"
    good = [v for v in values if not isinstance(v, _Bad)]
    if not good:
        first = values[0]
        detail = first.detail if isinstance(first, _Bad) else ""
        return f"{path}: no record could be read, is it JSON? ({detail}); {_SUPPORTED}"
    first_dict = next((v for v in good if isinstance(v, dict)), None)
    seen = f"keys: {_keys(first_dict)}" if first_dict is not None else "no record is a JSON object"
    return (f"{path}: cannot detect the format ({seen}); the record formats are {_RECORD_FORMATS}; "
            f"--format {'|'.join(FORMATS)} forces one")  # fmt: skip


def _input_files(paths: Sequence[str | os.PathLike], fmt: str | None) -> tuple[list[str], list[int]]:
    """The paths as strings and the sizes of their files; BuildError for an unknown ``fmt``, or a path
    that is missing or not a file."""
    if fmt is not None and fmt not in FORMATS:
        raise BuildError(f"unknown format {fmt!r}; use --format {'|'.join(FORMATS)}")
    names = [os.fspath(p) if isinstance(p, os.PathLike) else str(p) for p in paths]
    return names, [_file_size(p) for p in names]


def _file_size(path: str) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BuildError(f"{path}: no such file") from None
    except OSError as e:  # e.g. a directory on the way that may not be searched
        raise BuildError(f"{path}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BuildError(f"{path}: is a directory; give the data files in it, not the directory")
    if not stat.S_ISREG(st.st_mode):
        raise BuildError(f"{path}: not a regular file (a pipe, socket or device); give a data file")
    return st.st_size


def check_inputs(paths: Sequence[str | os.PathLike], fmt: str | None = None) -> list[str]:
    """The format of each input, from the beginning of each file: the check a build runs before it
    creates or touches any output.

    Raises :class:`BuildError`, with the message :class:`RecordReader` gives for the same problem,
    when a path is missing, not a regular file or unreadable, when a file is empty, UTF-16, neither
    JSON, JSON Lines nor Parquet, or when its first records settle no format: none decodes, or
    (``fmt`` not given) none is of a known format. Reads up to the first record that settles the
    format, and gives up after 1,000 values or 8 MB (a file that only a later record would settle
    fails here, where the reader would have read on); hashes nothing, so a file of any size costs
    about the same: milliseconds.

    >>> check_inputs(["alpaca.json", "chats.jsonl"])          # doctest: +SKIP
    ['alpaca', 'sharegpt']
    """
    names, _ = _input_files(paths, fmt)
    return [_first_format(path, fmt) for path in names]


def _first_format(path: str, fmt: str | None) -> str:
    """The format the first values of a file settle, read as RecordReader reads them (see check_inputs)."""
    values = _FileValues(path, head_only=True)
    pending: list[object] = []
    items = iter(values)
    try:
        for value in items:
            found = _format_of(value, fmt)
            if found is not None:
                return found
            pending.append(value)
            if len(pending) >= _CHECK_RECORDS or values.consumed.n > _CHECK_BYTES:
                break
    finally:
        items.close()  # closes the file
    raise BuildError(_undetected(path, pending, values.empty))


def read_records(
    paths: Sequence[str | os.PathLike], fmt: str | None = None, *, first_doc_id: int = 0, blank_turns: str = "reject"
) -> RecordReader:
    """Convenience for :class:`RecordReader`: an iterator over the records of
    ``paths``; its ``.inputs`` holds the per-file summaries.

    >>> [r.source.doc_id for r in read_records(["a.jsonl", "b.json"])]  # doctest: +SKIP
    [0, 1, 2]
    """
    return RecordReader(paths, fmt, first_doc_id=first_doc_id, blank_turns=blank_turns)
