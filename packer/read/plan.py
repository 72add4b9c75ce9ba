"""Cutting a build's input into parts: fixed by the input alone, never by the number of workers.

A part is a file, or a piece of one (:class:`~packer.read.jsonvalues.Piece`): a byte range of
JSON Lines (whole lines: only ``\\n`` ends a line, never U+2028), a run of the elements of a
JSON array (the plan parses the array once to find where its elements start), or a run of
Parquet row groups. Other files (an Arrow file, a JSON file holding one object, a JSON array
that does not parse) are one part each. Each input is scanned on its own (:func:`scan_file`,
which any engine can run), and the plan counts every piece's records, so each part knows its
first doc_id, the record number of its first record in its file and (JSON Lines) its first
line before any part is mapped::

    chats.jsonl (300 MB, 100 MB parts)      alpaca.json (an array, 40 MB)
      tag 0: lines, bytes 0..100.0M        tag 3: array, elements of bytes 1..39.9M
      tag 1: lines, bytes 100.0M..200.1M          (one part: under 100 MB)
      tag 2: lines, bytes 200.1M..300M
    records  410k, 405k, 398k              52k
    first doc_id  0, 410k, 815k            1.213M

A cut at byte ``c`` moves to the first line (element, row group) that starts at or after ``c``,
so the parts, and with them the output, depend on the input and ``part_bytes`` alone.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.jsonl")
    >>> _ = open(path, "w").write('{"a": 1}\\n\\n{"b": 2}\\n{"c": 3}\\n')
    >>> [(p.start, p.end, p.first_record, p.first_line, n) for p, n in scan_file(path, cuts=(10,))]
    [(0, 10, 0, 0, 1), (10, 28, 1, 2, 2)]
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .. import fsio
from .jsonstream import _JSON_CHUNK, _Consumed, _TextWindow
from .jsonvalues import _BOM, _WS_BYTES, FileValues, Piece, _Range, container
from .records import BuildError

#: the part size of a parallel build: big enough that a part's fixed cost (a task, its spill files) is
#: noise, small enough that 16 workers share an input of a few GB evenly
DEFAULT_PART_BYTES = 64 << 20
#: JSON Lines are counted this many bytes at a time
_COUNT_BLOCK = 1 << 22


@dataclass(frozen=True)
class Planned:
    """One piece of one input with its records counted (``records``, -1 where not counted) and its size in
    bytes (for progress)."""

    input: int
    piece: Piece
    records: int
    nbytes: int


def _thresholds(size: int, part_bytes: int | None, cuts: Sequence[int] | None) -> list[int]:
    if cuts is not None:
        return sorted({int(c) for c in cuts if 0 < int(c) < size})
    if not part_bytes or size <= part_bytes:
        return []
    return list(range(part_bytes, size, part_bytes))


def scan_file(
    path: str, part_bytes: int | None = None, cuts: Sequence[int] | None = None, count: bool = True
) -> list[tuple[Piece, int]]:
    """The pieces of one input file, each with its record count (-1 where ``count`` is off and the file is one
    piece): cut every ``part_bytes`` bytes, or at the byte offsets ``cuts``, each cut moved to the next record's
    start. A picklable function of its arguments alone: an engine runs one per file. ``path`` may be a URI
    (:mod:`packer.fsio`)."""
    size = fsio.size(path)
    at = _thresholds(size, part_bytes, cuts)
    kind = container(path)
    if kind == "jsonl":
        return _jsonl_pieces(path, size, at)
    if kind == "parquet" and at:
        return _parquet_pieces(path, size, at)
    if kind == "json" and at:
        pieces = _array_pieces(path, at)
        if pieces is not None:
            return pieces
    return [(Piece(), _count(path) if count else -1)]


def _count(path: str) -> int:
    """Records of a file read whole: every value the reader yields, a broken one included."""
    if container(path) == "arrow":
        import pyarrow as pa

        with fsio.open_arrow(path) as src:
            if src.read(6) == b"ARROW1":
                return pa.ipc.open_file(src).count_rows()
            src.seek(0)
            return sum(b.num_rows for b in pa.ipc.open_stream(src))
    return sum(1 for _ in FileValues(path, head_only=False))


def _jsonl_pieces(path: str, size: int, at: list[int]) -> list[tuple[Piece, int]]:
    starts = _line_starts(path, size, at)
    ends = [*starts[1:], size]
    return _numbered(starts, ends, [_count_lines(path, a, b) for a, b in zip(starts, ends, strict=True)])


def _line_starts(path: str, size: int, at: list[int]) -> list[int]:
    """Where the JSON Lines pieces start: 0, and the first line start at or after each cut (a seek and a line
    read per cut)."""
    starts = [0]
    with fsio.open_input(path) as f:
        for t in at:
            if t <= starts[-1]:
                continue
            f.seek(t - 1)
            f.readline()  # to the end of the line holding byte t - 1: the next line starts at or after t
            if f.tell() < size:
                starts.append(f.tell())
    return starts


def _numbered(starts: list[int], ends: list[int], counts: list[tuple[int, int]]) -> list[tuple[Piece, int]]:
    """JSON Lines pieces with their first record and line, from each piece's (lines, records)."""
    out = []
    lines = records = 0
    for a, b, (n_lines, n_records) in zip(starts, ends, counts, strict=True):
        out.append((Piece("lines", a, b, records, lines), n_records))
        lines += n_lines
        records += n_records
    return out


def _count_lines(path: str, start: int, end: int) -> tuple[int, int]:
    """Lines, and non-blank lines (records), in bytes ``start:end`` of a JSON Lines file (as the reader counts)."""
    lines = records = 0
    with io.BufferedReader(_Range(path, start, end), _COUNT_BLOCK) as f:
        while chunk := f.readlines(_COUNT_BLOCK):
            if start == 0 and lines == 0 and chunk[0].startswith(_BOM):
                chunk[0] = chunk[0][3:]
            lines += len(chunk)
            records += sum(1 for raw in chunk if not raw.isspace() and raw)
    return lines, records


def _parquet_pieces(path: str, size: int, at: list[int]) -> list[tuple[Piece, int]]:
    import pyarrow.parquet as pq

    source, filesystem = fsio.arrow_source(path)
    meta = pq.ParquetFile(source, filesystem=filesystem).metadata
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    sizes = [sum(g.column(j).total_compressed_size for j in range(g.num_columns)) for g in groups]
    out: list[tuple[Piece, int]] = []
    first = records = offset = 0
    cut = iter(at)
    nxt = next(cut, None)
    for i in range(len(groups)):
        if i > first and nxt is not None and offset >= nxt:
            n = sum(groups[k].num_rows for k in range(first, i))
            out.append((Piece("row_groups", first, i, records), n))
            records += n
            first = i
            while nxt is not None and nxt <= offset:
                nxt = next(cut, None)
        offset += sizes[i]
    out.append((Piece("row_groups", first, len(groups), records), sum(g.num_rows for g in groups[first:])))
    return out


class _ByteWindow(_TextWindow):
    """A :class:`~packer.read.jsonstream._TextWindow` that knows the byte offset of positions in its text (each
    character is encoded once, as the window moves on)."""

    def __init__(self, f: io.BufferedReader, path: str, head: bytes, fed: int) -> None:
        super().__init__(f, path, _Consumed(hashing=False), head, fed, _JSON_CHUNK)
        self.mark = 0
        self.mark_byte = fed

    def byte_at(self, pos: int) -> int:
        """The file's byte offset of ``text[pos]``; ``pos`` never goes back."""
        self.mark_byte += len(self.text[self.mark : pos].encode("utf-8", "surrogatepass"))
        self.mark = pos
        return self.mark_byte

    def _more(self, pos: int) -> int:
        self.byte_at(pos)
        self.mark = 0
        return super()._more(pos)


def _array_pieces(path: str, at: list[int]) -> list[tuple[Piece, int]] | None:
    """A JSON array cut into runs of elements, or None where the file is no array, or one that does not parse
    (then it is one part, read as the reader reads it, with its break where it is)."""
    with fsio.open_input(path) as f:
        head = f.read(1 << 16)
        skipped = 3 if head.startswith(_BOM) else 0
        start = _WS_BYTES.match(head, skipped).end()
        if head[start : start + 1] != b"[":
            return None
        try:
            win = _ByteWindow(f, path, head[skipped:], skipped)  # type: ignore[arg-type]
        except BuildError:
            return None
        try:
            return _elements(win, start - skipped, at)
        except (BuildError, json.JSONDecodeError, RecursionError):
            return None


def _elements(win: _ByteWindow, pos: int, at: list[int]) -> list[tuple[Piece, int]] | None:
    pos = win.skip_ws(pos + 1)
    if win.text.startswith("]", pos):
        return None  # empty: one part
    out: list[tuple[Piece, int]] = []
    cuts = iter(at)
    nxt = next(cuts, None)
    first = win.byte_at(pos)
    records = n = end = 0
    while True:
        b = win.byte_at(pos)
        if n and nxt is not None and b >= nxt:
            out.append((Piece("array", first, end, records), n))
            records += n
            first, n = b, 0
            while nxt is not None and nxt <= b:
                nxt = next(cuts, None)
        _, pos = win.decode(pos)
        n += 1
        end = win.byte_at(pos)
        pos = win.skip_ws(pos)
        sep = win.text[pos : pos + 1]
        if sep == ",":
            pos = win.skip_ws(pos + 1)
            if win.text.startswith("]", pos) or pos >= len(win.text):
                return None
        elif sep == "]":
            after = win.skip_ws(pos + 1)
            if after < len(win.text):
                return None
            break
        else:
            return None
    out.append((Piece("array", first, end, records), n))
    return out


def plan_inputs(
    inputs: Sequence[str], part_bytes: int | None, *, cuts: Mapping[int, Sequence[int]] | None = None,
    count: bool = True, scan=None, on_progress: Callable[[int, int], None] | None = None,  # type: ignore[no-untyped-def]
) -> list[Planned]:
    """Every input's pieces in input order (see the module's docstring). ``cuts``: byte offsets per input index
    (tests and experiments), instead of ``part_bytes``. ``scan``: runs a function over a list of argument
    tuples and returns the results in order (an engine's ``map``, called as ``scan(fn, calls, on_done)``;
    default: here, one after the other). ``on_progress(done, total)``: bytes of the inputs planned so far.

    JSON Lines are cut here (a seek per cut) and counted a piece per task, so that one big file is counted by
    every worker; every other file is scanned by a task of its own (:func:`scan_file`).
    """
    sizes = [fsio.size(p) for p in inputs]
    total = sum(sizes)
    done = [0]

    def run(fn: Callable, calls: list[tuple], weights: list[int]) -> list:  # type: ignore[type-arg]
        def on_done(k: int, _: object) -> None:
            done[0] += weights[k]
            if on_progress is not None:
                on_progress(done[0], total)

        if scan is None:
            out = []
            for k, c in enumerate(calls):
                out.append(fn(*c))
                on_done(k, None)
            return out
        return scan(fn, calls, on_done)

    at = [_thresholds(sizes[i], part_bytes, None if cuts is None else cuts.get(i, ())) for i in range(len(inputs))]
    lines = [container(p) == "jsonl" for p in inputs]
    others = [i for i in range(len(inputs)) if not lines[i]]
    found: dict[int, list[tuple[Piece, int]]] = dict(zip(others, run(
        scan_file, [(inputs[i], part_bytes, None if cuts is None else cuts.get(i, ()), count) for i in others],
        [sizes[i] for i in others]), strict=True))
    ranges = []
    for i in (i for i in range(len(inputs)) if lines[i]):
        starts = _line_starts(inputs[i], sizes[i], at[i])
        ranges += [(i, a, b) for a, b in zip(starts, [*starts[1:], sizes[i]], strict=True)]
    counts = run(_count_lines, [(inputs[i], a, b) for i, a, b in ranges], [b - a for _, a, b in ranges])
    for i in (i for i in range(len(inputs)) if lines[i]):
        mine = [(a, b, c) for (j, a, b), c in zip(ranges, counts, strict=True) if j == i]
        found[i] = _numbered([a for a, _, _ in mine], [b for _, b, _ in mine], [c for _, _, c in mine])
    out = []
    for i in range(len(inputs)):
        pieces = found[i]
        for piece, n in pieces:
            nbytes = piece.end - piece.start if piece.kind in ("lines", "array") else sizes[i] // len(pieces)
            out.append(Planned(i, piece, n, nbytes))
    return out


__all__ = ["DEFAULT_PART_BYTES", "Planned", "plan_inputs", "scan_file"]
