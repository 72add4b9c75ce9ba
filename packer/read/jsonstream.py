"""A JSON array streamed element by element, and what every reader of values shares.

:class:`_TextWindow` holds the text of a UTF-8 file a chunk at a time, so that
a JSON array of any size is decoded one element after another
(:func:`_json_array_values`) in about a chunk plus a record of memory; a break
keeps every complete element before it and becomes :class:`BadValue` values
(:mod:`packer.read.resync` finds where the array goes on). :class:`BadValue` (a record
that could not be decoded, in its place) and :class:`_Consumed` (the bytes read
and their hash) are shared with :mod:`packer.read.jsonvalues`, which reads whole
files of every container, and :mod:`packer.read.plan`, which cuts arrays into parts.

    >>> import io
    >>> raw = b'[{"a": 1}, {"b": 2}, {"c"'
    >>> win = _TextWindow(io.BytesIO(raw), "cut.json", _Consumed(), b"", 0, 8, lambda: io.BytesIO(raw))
    >>> for v in _json_array_values(win, 0):  # a chunk of 8 bytes at a time
    ...     print(v.detail if isinstance(v, BadValue) else v)
    {'a': 1}
    {'b': 2}
    line 1 column 26: Expecting ':' delimiter; the file ends inside this record (4 bytes from its start)
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Callable, Generator, Iterator
from typing import BinaryIO

from .. import fsio
from .records import BuildError

__all__ = ["VALUE_START", "BadValue", "definitive", "open_at"]

#: JSON whitespace, the same pattern the json module uses between values
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
#: bytes read at a time from a JSON array file
_JSON_CHUNK = 1 << 23
#: characters of one unfinished array element after which it counts as broken, not unfinished
_MAX_RECORD_CHARS = 1 << 26


class BadValue:
    """A record the file could not decode, in its place: ``reason`` (``malformed_json``, ``invalid_utf8``) and
    ``detail`` (where, and what broke) become its Rejection."""

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

    def __init__(
        self, f: BinaryIO, path: str, consumed: _Consumed, head: bytes, fed: int, chunk: int,
        opener: Callable[[], BinaryIO] | None = None,
    ) -> None:
        self._f, self._path, self._consumed, self._chunk = f, path, consumed, chunk
        #: opens the bytes the window reads again, from their start (for messages and the resynchronisation
        #: of a broken array: :mod:`packer.read.resync`)
        self.opener = opener or (lambda: fsio.open_input(path))
        # (characters, byte, lines, column) of the file before a point where() counted lines to
        self._anchor = (0, 0, 0, 0)
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
        """``"line L column C"`` of ``text[pos]`` in the whole file (reads the file again, from where the last
        call counted to: errors only)."""
        before = (0, 0)
        if self._dropped:
            chars, byte, lines, col = self._anchor
            before = _prefix_lines(self.opener, self._dropped - chars, byte, (lines, col))
            self._anchor = (self._dropped, self.byte_offset(0), *before)
        return _line_col(self.text, pos, before)

    def byte_offset(self, pos: int) -> int:
        """The byte offset in the file of ``text[pos]`` (encodes the rest of the window: errors only)."""
        return self._fed - len(self._dec.getstate()[0]) - len(self.text[pos:].encode("utf-8"))

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
            except json.JSONDecodeError as e:
                # unfinished (it goes on in the next chunk) or broken: only more text tells, unless the
                # error lies well before the end of the text
                if definitive(e, self.text):
                    raise
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


def _prefix_lines(
    opener: Callable[[], BinaryIO], chars: int, start: int = 0, before: tuple[int, int] = (0, 0)
) -> tuple[int, int]:
    """Newlines in the first ``chars`` characters of a UTF-8 file (BOM skipped) from byte ``start`` (where
    ``before`` were counted), and the characters after the last of them."""
    lines, col = before
    dec = codecs.getincrementaldecoder("utf-8-sig" if start == 0 else "utf-8")()
    with opener() as f:
        open_at(f, start)
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


def definitive(e: json.JSONDecodeError, text: str) -> bool:
    """Whether a decode error of ``text`` stays whatever text follows: one well before its end (a literal,
    number or escape the end cuts fails within a few characters of it), not a string that runs to the end."""
    return e.pos + 16 < len(text) and not e.msg.startswith("Unterminated string")


def open_at(f: BinaryIO, offset: int) -> None:
    """Move ``f`` to byte ``offset``: a seek, or (a decompressed stream) reading up to it."""
    if f.seekable():
        f.seek(offset)
        return
    while offset > 0:
        raw = f.read(min(offset, 1 << 20))
        if not raw:
            return
        offset -= len(raw)


def _json_array_values(win: _TextWindow, pos: int, resync: bool = True) -> Iterator[object]:
    """Elements of the JSON array opening at ``win.text[pos] == "["``, decoded one
    at a time so that a break keeps every complete element before it.

    ``[{"a": 1}, {"b": 2}, {"c"`` -> two values, then one BadValue(malformed_json)
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
    n = 0  # elements so far (records, and broken stretches)
    while pos >= 0:
        dropped = win._dropped
        try:
            value, end = win.decode(pos)
        except json.JSONDecodeError as e:
            pos -= win._dropped - dropped  # where the element starts in the window now
            pos, n = yield from _skipped(win, pos, e.pos, e.msg, n, resync)
            continue
        except RecursionError:
            pos -= win._dropped - dropped
            pos, n = yield from _skipped(win, pos, pos, "nested too deeply", n, resync)
            continue
        yield value
        n += 1
        pos = win.skip_ws(end)
        sep = win.text[pos : pos + 1]
        if sep == ",":
            pos = win.skip_ws(pos + 1)
            if win.text.startswith("]", pos):
                yield BadValue("malformed_json", f"{win.where(pos)}: trailing comma before ']'")
                return
        elif sep == "]":
            yield from _after_array(win, pos + 1)
            return
        elif pos >= len(win.text):
            yield _broken(f"{win.where(pos)}: the file ends before the array's closing ']'")
            return
        else:
            pos, n = yield from _skipped(win, pos, pos, "expecting ',' or ']' after a record", n, resync)


def _skipped(
    win: _TextWindow, start: int, error: int, msg: str, n: int, resync: bool
) -> Generator[BadValue, None, tuple[int, int]]:
    """The BadValues of a broken stretch of an array from ``win.text[start]`` (:func:`packer.read.resync.skip`);
    where the array's next element starts (-1: none) and the elements counted so far."""
    if not resync:  # a run of elements of a parallel build's plan: they parsed whole when the plan was made
        raise BuildError(f"{win._path}: {msg} in a run of array elements that parsed whole when the build was "
                         "planned; did the file change during the build?")
    from .resync import skip  # a broken array only

    bad, pos = skip(win, start, error, msg, n)
    yield from bad
    return pos, n + len(bad)


def _broken(where: str) -> BadValue:
    return BadValue("malformed_json", f"{where}; the rest of the file could not be read")


#: what a JSON value may start with: a stretch of text without any holds no record
VALUE_START = re.compile(r'[\[{"\-0-9A-Za-z]')


def _after_array(win: _TextWindow, pos: int) -> Iterator[BadValue]:
    """Nothing but blanks may follow the array's closing ``]``: text that could hold records is a BuildError
    (they would be lost unseen), other text one ``malformed_json`` value."""
    pos = win.skip_ws(pos)
    if pos >= len(win.text):
        return
    at = win.where(pos)
    rest = win.text[pos:]
    while len(rest) < 4096 and (more := win._more(pos)) >= 0:
        pos, rest = more, win.text[more:]
    if VALUE_START.search(rest):
        raise BuildError(f"{win._path}: {at}: more data after the array's closing ']' (two arrays one after the "
                         "other?), which may hold records; packer reads one array per file: split the file, "
                         "or give the records as JSON Lines")
    yield _broken(f"{at}: extra data after the array's closing ']'")
