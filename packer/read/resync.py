"""Reading on past a broken element of a JSON array, where the next element starts for sure.

A JSON Lines reader that meets a broken line reads on at the next line. A JSON array has no such
marks: after a syntax error the reader does not know how deep inside the broken element it is, so
every ``{`` after the error might be the next record or an object nested in the broken one. :func:`skip`
reads on only at a boundary it can verify, and otherwise fails the build; it never guesses.

The rule. The broken stretch starts at the broken element's first character, ``s`` (where the element
starts is certain: the elements before it parsed whole, each followed by ``,``). A candidate is the
first character ``c`` of a value after a comma ``k`` past ``s`` (``k`` may be the comma at ``s``
itself). ``c`` is where the array goes on if all of these hold:

1. the value at ``c`` parses whole and is followed by ``,`` or ``]`` (or the end of the file, or the
   file ends inside it);
2. ``c`` cannot be an element of an array opened inside the stretch: for no ``[`` between ``s`` and
   ``c`` is the text up to ``c`` a run of whole values separated by commas (then the broken element
   may simply lack its closing brackets at the end of the file, and ``c`` be nested in it);
3. and the run of values from ``c`` (values separated by commas, read on a second handle from ``c``'s
   byte: only a broken file pays for it) either

   a. reaches the closing ``]`` with nothing but blanks after it to the end of the file, or the file
      ends inside it (a file cut short): ``c`` is where the array goes on; or
   b. meets a ``]`` with more text after it, or a ``}`` or ``:`` where the array would have ``,`` or
      ``]``: the run is inside a value, so ``c`` and every candidate up to there are nested; or
   c. breaks on a syntax error (a second broken element): ``c`` is where the array goes on if the
      stretch ``s..k`` is balanced: read leniently (a string runs from a quote to the next unescaped
      one, whatever it holds), its brackets close exactly at ``k`` and never close more than they
      open, so ``k`` is a comma at the array's own depth. Where it is not, the values of the run cannot
      be told apart from values nested in the broken element, and the build fails (below).

The first candidate that passes is where the array goes on. Where none passes, the stretch runs to
the end of the file: it is one cut record when the file ends inside the value at ``s`` (a truncated
download), records told apart by their balanced brackets when it is balanced, no record when it holds
nothing a value can start with. Anything else holds an unknown number of records, and the build fails
naming the place and the way out (fix it, or JSON Lines), as it does when no candidate passes within
:data:`MAX_SKIP_CHARS` characters (the window holds the stretch while it is searched).

Each skipped stretch becomes ``malformed_json`` rejections: one per element its balanced brackets
tell apart (two broken records side by side are two rejections), or one that says it may hold
more than one record where the brackets do not balance. Each names the line and column where it
breaks and the bytes skipped; the last says where reading goes on. A broken array is read as one
part of a parallel build (:mod:`packer.read.plan`), so the same records and numbers come out whatever
the parts.

    [{"a": 1}, {"b": 2 "x": [{"c": 3}, {"d": 4}]}, {"e": 5}]

``{"b"...`` breaks at ``"x"``; the candidates after it: ``{"d": 4}`` follows the run ``{"c": 3},``
from the ``[`` (rule 2): nested; ``{"e": 5}`` is followed by ``]`` and the end of the file (3a): the
next record. (``{"c": 3}`` follows ``: [``, no comma: no candidate.) Records
``{"a": 1}``, one rejection (skipped 37 bytes), ``{"e": 5}``.
"""

from __future__ import annotations

import json
import re

from .jsonstream import (
    _DECODER,
    _WS,
    VALUE_START,
    BadValue,
    _Consumed,
    _TextWindow,
    definitive,
    open_at,
)
from .records import BuildError

__all__ = ["MAX_SKIP_CHARS", "skip"]

#: how far past a break the reader looks for the array's next element (it holds the text in between)
MAX_SKIP_CHARS = 1 << 27
#: the lenient reading of a stretch's brackets: a whole string, a quote that opens one never closed, a bracket
#: or a comma
_LEX = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|"|[\[\]{},]', re.S)
#: what the end of the file may cut off a value's text: a literal, a number's fraction or exponent, an escape
_CUT_TAIL = re.compile(
    r"t(?:r(?:ue?)?)?|f(?:a(?:l(?:se?)?)?)?|n(?:u(?:ll?)?)?|N(?:aN?)?|-?(?:I(?:n(?:f(?:i(?:n(?:i(?:ty?)?)?)?)?)?)?)?"
    r"|[.eE][+-]?|\\(?:u[0-9a-fA-F]{0,3})?"
)
_BROKEN, _CUT = -1, -2
#: how the run of elements from a candidate ends (:func:`_goes_on`)
_END, _NESTED, _SYNTAX = "end", "nested", "syntax"


class _Unknown(Exception):
    """Values that parse as records follow the break, but none can be verified (rule 3b fails after a syntax
    error in their run): how many records the stretch holds cannot be known."""


def _cut(e: json.JSONDecodeError, text: str) -> bool:
    """Whether a decode error at the end of the file is the file ending inside the value, not a syntax error."""
    if e.msg.startswith("Unterminated string"):
        return True
    rest = text[e.pos :].rstrip(" \t\n\r")
    return not rest or _CUT_TAIL.fullmatch(rest) is not None


def _lex(text: str, start: int, end: int) -> tuple[bool, int, list[int]]:
    """``text[start:end]`` read leniently: (whether it never closes more brackets than it opened and leaves no
    string open, its depth at the end, the positions of its commas at depth 0)."""
    depth = 0
    commas: list[int] = []
    for m in _LEX.finditer(text, start, end):
        tok = m.group()
        if tok[0] == '"':
            if len(tok) == 1:
                return False, depth, commas
        elif tok in "[{":
            depth += 1
        elif tok in "]}":
            depth -= 1
            if depth < 0:
                return False, depth, commas
        elif depth == 0:
            commas.append(m.start())
    return True, depth, commas


def _sequence_reaches(text: str, pos: int, target: int) -> bool:
    """Whether ``text[pos:target]`` is blank or whole values each followed by a comma (rule 2)."""
    pos = _WS.match(text, pos).end()
    while pos < target:
        try:
            _, pos = _DECODER.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            return False
        pos = _WS.match(text, pos).end()
        if text[pos : pos + 1] != ",":
            return False
        pos = _WS.match(text, pos + 1).end()
    return pos == target


def _goes_on(win: _TextWindow, offset: int) -> tuple[str, int]:
    """How the run of the array's elements from byte ``offset`` of the file ends (rule 3a), and the characters
    from ``offset`` to where it ends: ``end`` (the closing ``]`` and blanks to the end of the file, or the file
    ends inside it), ``nested`` (a ``]`` with more text after it, a ``}`` or a ``:`` where the array would have
    ``,`` or ``]``: the run is inside a value) or ``syntax`` (a broken element, or a missing comma). Reads on a
    handle of its own."""
    with win.opener() as f:
        open_at(f, offset)
        w = _TextWindow(f, win._path, _Consumed(hashing=False), b"", offset, 1 << 16)
        pos = w.skip_ws(0)
        while True:
            try:
                _, pos = w.decode(pos)
            except json.JSONDecodeError as e:
                return (_END if w.eof and _cut(e, w.text) else _SYNTAX), w._dropped + e.pos
            except RecursionError:
                return _SYNTAX, w._dropped + pos
            pos = w.skip_ws(pos)
            sep = w.text[pos : pos + 1]
            if sep == ",":
                pos = w.skip_ws(pos + 1)
                if pos >= len(w.text):
                    return _END, w._dropped + pos
                if not w.text.startswith("]", pos):
                    continue
                sep = "]"  # a trailing comma: the reader rejects it, the array ends all the same
            at = w._dropped + pos
            if sep == "]":
                return (_END if w.skip_ws(pos + 1) >= len(w.text) else _NESTED), at
            return (_END if not sep else _NESTED if sep in "}:" else _SYNTAX), at


class _Search:
    """The search for the array's next element after the broken stretch from ``win.text[s]``. Positions are
    relative to ``s``: the window moves on keeping the text from ``s`` (``s`` changes, they do not)."""

    def __init__(self, win: _TextWindow, s: int) -> None:
        self.win, self.s = win, s
        self.comma = -1  # the comma before the element found
        self.capped = False  # gave up: no element within MAX_SKIP_CHARS
        self.cut = False  # the element found is cut short by the end of the file

    def _extend(self) -> bool:
        win = self.win
        if win.eof:
            return False
        if len(win.text) - self.s > MAX_SKIP_CHARS:
            self.capped = True
            return False
        self.s = win._more(self.s)
        return True

    def ws(self, r: int) -> int:
        while True:
            p = _WS.match(self.win.text, self.s + r).end()
            if p < len(self.win.text) or not self._extend():
                return p - self.s

    def value_end(self, r: int) -> int:
        """Where the value at ``r`` ends; _BROKEN where none parses, _CUT where the file ends inside it."""
        while True:
            text = self.win.text
            try:
                _, end = _DECODER.raw_decode(text, self.s + r)
            except json.JSONDecodeError as e:
                if definitive(e, text):
                    return _BROKEN
                if not self._extend():
                    return _CUT if self.win.eof and _cut(e, self.win.text) else _BROKEN
                continue
            except RecursionError:
                return _BROKEN
            if end == len(text) and self._extend():
                continue  # a number may go on
            return end - self.s

    def next_element(self) -> int:
        """Where the array goes on (rules 1-3), or -1; raises _Unknown."""
        r = 0
        while True:
            i = self.win.text.find(",", self.s + r)
            if i < 0:
                r = len(self.win.text) - self.s
                if not self._extend():
                    return -1
                continue
            k = i - self.s
            c = self.ws(k + 1)
            r = k + 1
            if self.s + c >= len(self.win.text):
                continue
            verdict = self._verdict(k, c)
            if verdict is True:
                self.comma = k
                return c
            if verdict is not False:
                r = max(r, verdict)  # every candidate up to there lies in the same nested run

    def _verdict(self, k: int, c: int) -> bool | int:
        """True where the array goes on at ``c`` (after the comma at ``k``), False where not, or where the nested
        run from ``c`` ends (no candidate before it can be the next element either)."""
        end = self.value_end(c)
        if end == _BROKEN:
            return False
        if end != _CUT:
            after = self.s + self.ws(end)
            if self.win.text[after : after + 1] not in (",", "]", ""):
                return False
        text, s = self.win.text, self.s
        b = text.find("[", s, s + c)
        while b >= 0:  # rule 2
            if _sequence_reaches(text, b + 1, s + c):
                return False
            b = text.find("[", b + 1, s + c)
        if end == _CUT:
            self.cut = True
            return True
        how, length = _goes_on(self.win, self.win.byte_offset(s + c))
        if how == _END:
            return True
        if how == _NESTED:
            return c + length
        ok, depth, _ = _lex(text, s, s + k)
        if ok and depth == 0:
            return True
        raise _Unknown


def skip(win: _TextWindow, start: int, error: int, msg: str, n: int) -> tuple[list[BadValue], int]:
    """The rejections for the broken stretch of an array from ``win.text[start]`` (element ``n``; the syntax
    error ``msg`` at ``win.text[error]``) and where the array goes on in ``win.text`` (-1: at the end of the
    file); BuildError where the stretch holds records that cannot be counted (see the module's rule)."""
    where = f"{win.where(error)}: {msg}"
    search = _Search(win, start)
    try:
        c = search.next_element()
    except _Unknown:
        c, search.capped = -1, False
        unknown = True
    else:
        unknown = False
    s = search.s
    text = win.text
    if c >= 0:
        ok, depth, commas = _lex(text, s, s + search.comma)
        clean = ok and depth == 0
        resume = f"reading on at {win.where(s + c)}"
        if not clean and VALUE_START.search(text, s, s + search.comma):
            resume += " (the skipped text may hold more than one record: its brackets do not balance)"
        bad = _pieces(win, s, s + c, commas if clean else [], where, resume)
        if not search.cut:
            return bad, s + c
        # the last element, cut short: the end of the file, which a search from it would take apart
        size = win.byte_offset(len(text)) - win.byte_offset(s + c)
        return [*bad, _ends_inside(_error(win, s + c), size)], -1
    tail = text[s:].rstrip(" \t\n\r")
    size = win.byte_offset(len(text)) - win.byte_offset(s)
    if not search.capped and not unknown:
        if not tail:
            return [BadValue("malformed_json", f"{where}: the file ends before the array's closing ']'")], -1
        if search.value_end(0) == _CUT:
            return [_ends_inside(where, size)], -1
        closed = tail.endswith("]")
        ok, depth, commas = _lex(text, s, s + len(tail) - closed)
        if ok and (depth == 0 or not closed):
            last = "the array's last record" if closed else "the file ends inside the last of them"
            return _pieces(win, s, len(text), commas, where, last), -1
        if not VALUE_START.search(tail, 0, len(tail) - closed):
            return [BadValue("malformed_json", f"{where}; skipped the {size:,} bytes to the end of the file, "
                             "which hold no record")], -1
    if unknown:
        why = ("values that parse as records follow it, but none can be told apart from a value nested in it "
               "(their run breaks again, and the brackets before them do not balance): they are an unknown number "
               "of records")
    elif search.capped:
        why = f"no record of the array could be found after it within {MAX_SKIP_CHARS:,} characters"
    else:
        why = (f"no later record of the array could be told apart from it: the {size:,} bytes "
               "from there to the end of the file hold an unknown number of records")
    raise BuildError(f"{win._path}: record {n} is not valid JSON ({where}), and {why}, which packer will not drop "
                     "unseen; fix the JSON there (python -m json.tool FILE names the first error), or give the "
                     "records as JSON Lines, where a broken line loses only itself")


def _ends_inside(where: str, size: int) -> BadValue:
    return BadValue("malformed_json", f"{where}; the file ends inside this record ({size:,} bytes from its start)")


def _pieces(win: _TextWindow, s: int, stop: int, commas: list[int], where: str, last: str) -> list[BadValue]:
    """One rejection per piece of ``win.text[s:stop]`` between the depth-0 ``commas``, each with its bytes."""
    starts = [s, *(_WS.match(win.text, k + 1).end() for k in commas)]
    ends = [*starts[1:], stop]
    out = []
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        size = win.byte_offset(b) - win.byte_offset(a)
        at = where if i == 0 else _error(win, a)
        tail = f"; {last}" if i == len(starts) - 1 else ""
        out.append(BadValue("malformed_json", f"{at}; skipped {size:,} bytes{tail}"))
    return out


def _error(win: _TextWindow, pos: int) -> str:
    """Where and what is wrong with the value at ``win.text[pos]`` (a piece of a broken stretch after its
    first)."""
    try:
        _, end = _DECODER.raw_decode(win.text, pos)
    except json.JSONDecodeError as e:
        return f"{win.where(e.pos)}: {e.msg}"
    except RecursionError:
        return f"{win.where(pos)}: nested too deeply"
    return f"{win.where(end)}: expecting ',' or ']' after a record"
