"""Record formats: JSON values in, conversations out.

Each record that :mod:`packer.read.jsonvalues` reads from a file is in one of the
record formats, alpaca, sharegpt, messages, prompt_completion or text (SFT data),
preference, preference_implicit, ranking or ranking_messages (preference pairs)
or kto, kto_messages (KTO's labelled completions): this module tells which from
its keys (after the column map, if any, renamed them), has :mod:`packer.read.normalise`
(and, for preference data, :mod:`packer.read.preference`) check its fields' types,
map its roles onto system / user / assistant and apply the turn policies, and
gives a :class:`~packer.read.records.Conversation` (a KTO record's with its
``label``), a :class:`~packer.read.records.Pair` for a preference pair, or a
:class:`~packer.read.records.Rejection` with the reason.

Worked example, a JSON Lines file of three records::

    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "chats.jsonl")
    >>> chats = [("gpt", "...and so"), ("human", "Hi"), ("gpt", "Hello")], [("human", "Hi"), ("gpt", " ")]
    >>> records = [{"conversations": [{"from": f, "value": v} for f, v in turns]} for turns in chats]
    >>> records.append({"instruction": "Add 2 and 3.", "output": "5"})
    >>> with open(path, "w") as f:
    ...     f.writelines(json.dumps(r) + "\\n" for r in records)
    >>> reader = RecordReader([path])
    >>> chat, blank, alpaca = reader
    >>> chat.kind, [(m.role, m.content) for m in chat.messages], chat.dropped_turns
    ('sharegpt', [('user', 'Hi'), ('assistant', 'Hello')], {'leading_assistant': 1})
    >>> blank.reason, blank.detail
    ('empty_output', 'turn 1 (gpt) is only whitespace')
    >>> alpaca.reason, alpaca.detail
    ('format_mismatch', 'the record is alpaca but its file is sharegpt')
    >>> reader.inputs[0].format, reader.inputs[0].records
    ('sharegpt', 3)

The first record settles the file's format (sharegpt); its leading ``gpt`` turn
answers nothing in the record, so it is dropped and counted. The second has a
blank assistant turn: rejected (``blank_turns="drop"`` would drop it with the
user turn it answers, and reject the record as ``no_assistant_turn``). The third
is an Alpaca record in a ShareGPT file.

:class:`RecordReader` is the reading a build does: it streams the records of
several files, in order, exactly one Conversation, Pair or Rejection per input record,
and fills :attr:`RecordReader.inputs` with one :class:`InputSummary` per file
once that file has been read to its end; :attr:`RecordReader.bytes_read` out of
:attr:`RecordReader.total_bytes` is its progress. :func:`check_inputs` is the
same reading of only the first records of each file: a build runs it before it
touches any output, so that a file the reader would refuse fails at once, with
the reader's message. Both live here, not in :mod:`packer.read.jsonvalues`, because
what they settle per file is its record format and what they yield are records.

Formats
    ``fmt`` forces one format for every record. Otherwise each FILE's format is
    detected from its first record that :func:`detect_format` recognises; a
    record recognised as another format is a ``format_mismatch`` rejection, a
    record recognised as none is parsed as the file's format (and usually
    rejected as ``missing_field``). A file whose first records settle no format
    is a :class:`~packer.read.records.BuildError` that lists the record formats and
    ``--format``. A value :mod:`packer.read.jsonvalues` could not decode is a
    rejection with its reason (``malformed_json``, ``invalid_utf8``); a value
    that is not an object is ``not_an_object``.

Normalisation policy
    What each format's records must hold, how their roles map onto system /
    user / assistant and which turns are dropped: :mod:`packer.read.normalise`, which
    parses a record of a settled format (one turn's fields, tool calls and
    training flags: :mod:`packer.read.turnfields`).

Column map (``columns=``, ``--columns instruction=question,output=answer``)
    Maps a field of the record formats (:data:`TOP_FIELDS`; ``role`` / ``content``,
    or ShareGPT's ``from`` / ``value``, for the keys of a conversation's turns)
    onto the name of the column that holds it in the input. Every record of every
    input is read through it before its format is detected: a copy with each
    mapped field set from its column (a dotted name not in the record is a path
    into nested objects: ``messages=conversation.turns``) and the columns read
    dropped; a record that lacks a mapped column is ``missing_field``, naming the
    column, the field and the keys it has. A map naming a field no format has is
    a BuildError before anything is read (:func:`check_columns`). Without a map
    the reader does nothing more per record.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

from ..options import BLANK_TURN_POLICIES, FORMATS, LEADING_ASSISTANT_POLICIES
from .inputs import expand_inputs, file_size
from .jsonstream import BadValue
from .jsonvalues import RECORD_FORMATS, SUPPORTED, FileValues, Piece
from .normalise import _MESSAGES_KEYS, _PARSERS, _SHAREGPT_KEYS, TurnKeys, _Parser, plain_alpaca
from .preference import KTO_PARSERS, PAIR_PARSERS, TURN_KEYS, preference_format
from .records import (
    KTO_FORMATS,
    PAIR_FORMATS,
    BuildError,
    Conversation,
    FlatRun,
    Message,
    Pair,
    Rejection,
    Source,
)
from .turnfields import _keys, _Reject, _tools, _type_name

#: check_inputs gives up on settling a file's format after this many values or bytes
_CHECK_RECORDS = 1000
_CHECK_BYTES = 1 << 23


@dataclass(slots=True)
class InputSummary:
    """One input file as the manifest lists it: ``records`` counts every
    Conversation and Rejection the reader yielded for the file."""

    path: str
    sha256: str
    format: str
    records: int


def detect_format(record: dict) -> str | None:
    """The format a record's keys say it is in, or None (the first that applies: a preference format,
    :func:`~packer.read.preference.preference_format`: ``chosen`` / ``rejected`` or ``chosen_messages`` /
    ``rejected_messages``, a ``label`` with ``messages`` or ``prompt`` + ``completion``; then
    ``conversations``, ``messages``, ``instruction`` + ``output``, ``prompt`` + ``completion`` or ``response``,
    ``text``).

    >>> detect_format({"instruction": "Add 2 and 3.", "input": "", "output": "5"})
    'alpaca'
    >>> detect_format({"conversations": []}), detect_format({"prompt": "x"})
    ('sharegpt', None)
    >>> detect_format({"prompt": "x", "response": "y"}), detect_format({"text": "A document."})
    ('prompt_completion', 'text')
    >>> detect_format({"conversations": [], "chosen": {}, "rejected": {}})
    'ranking'
    """
    if not isinstance(record, dict):
        return None
    found = preference_format(record)
    if found is not None:
        return found
    if "conversations" in record:
        return "sharegpt"
    if "messages" in record:
        return "messages"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and ("completion" in record or "response" in record):
        return "prompt_completion"
    if "text" in record:
        return "text"
    return None


# --------------------------------------------------------------------------- the column map

#: the fields of the record formats a column map may name (targets): top-level ones, and the keys of a turn
TOP_FIELDS: tuple[str, ...] = (
    "instruction", "input", "output", "system", "conversations", "messages", "prompt", "completion", "text", "tools",
    "chosen", "rejected", "chosen_messages", "rejected_messages", "label",
)
#: a turn's keys (``from`` / ``value`` are ShareGPT's names for the same two)
TURN_FIELDS: dict[str, str] = {"role": "role", "content": "content", "from": "role", "value": "content"}


def parse_columns(text: str) -> tuple[tuple[str, str], ...]:
    """``--columns instruction=question,output=answer`` as pairs (checked by :func:`check_columns`).

    >>> parse_columns("instruction=question, output=answer")
    (('instruction', 'question'), ('output', 'answer'))
    """
    pairs = []
    for item in text.split(","):
        target, eq, source = item.partition("=")
        if not eq:
            raise BuildError(f"--columns: {item.strip()!r} is not FIELD=COLUMN (e.g. --columns instruction=question,"
                             "output=answer)")
        pairs.append((target.strip(), source.strip()))
    return check_columns(pairs)


def check_columns(columns: object) -> tuple[tuple[str, str], ...]:
    """A column map (``{field: your column}``, or pairs) as sorted pairs; BuildError, before anything is
    read, for a field no record format has, a field named twice or an empty name.

    >>> check_columns({"output": "answer", "instruction": "question"})
    (('instruction', 'question'), ('output', 'answer'))
    """
    if columns is None:
        return ()
    items = list(columns.items()) if isinstance(columns, Mapping) else list(columns)  # type: ignore[call-overload]
    pairs: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise BuildError(f"columns: {item!r} is not a (field, column) pair of strings")
        target, source = item
        if not target or not source or "" in source.split("."):
            raise BuildError(f"--columns {target}={source}: a field and a column name are both needed")
        if target not in TOP_FIELDS and target not in TURN_FIELDS:
            hint = f"; did you mean {source}={target}?" if source in TOP_FIELDS or source in TURN_FIELDS else ""
            raise BuildError(
                f"--columns {target}={source}: no record format has a field {target!r}; map your column onto one of "
                f"{', '.join(TOP_FIELDS)} (or role, content for the keys of a conversation's turns), as FIELD=COLUMN"
                f"{hint}")
        what = TURN_FIELDS.get(target, target)
        if what in seen:
            raise BuildError(f"--columns: the {what!r} field is mapped twice ({seen[what]} and {target}={source})")
        seen[what] = f"{target}={source}"
        pairs.append((target, source))
    return tuple(sorted(pairs))


_MISSING = object()


#: the formats whose records hold turns, and their turn keys (the column map's ``role`` / ``content`` replace them)
_FORMAT_TURN_KEYS: dict[str, TurnKeys] = {
    "sharegpt": _SHAREGPT_KEYS, "messages": _MESSAGES_KEYS, "prompt_completion": _MESSAGES_KEYS, **TURN_KEYS,
}
#: every format's parser: SFT formats' and KTO's give messages, pair formats' the two sides
_ALL_PARSERS: dict[str, _Parser] = {**_PARSERS, **KTO_PARSERS, **PAIR_PARSERS}  # type: ignore[dict-item]


class _ColumnMap:
    """Applies a column map to one record: a copy with each mapped field set from its column (a dotted
    column name not in the record is a path into nested objects), the columns read removed unless a
    field of that name is mapped too; a record without a mapped column becomes a ``missing_field``
    BadValue. Only a build with a column map pays for it."""

    def __init__(self, columns: tuple[tuple[str, str], ...]) -> None:
        top = [(t, s) for t, s in columns if t in TOP_FIELDS]
        self.top = [(t, s, tuple(s.split("."))) for t, s in top]
        targets = {t for t, _ in top}
        self.drop = tuple(s for _, s in top if s not in targets)
        turn = {TURN_FIELDS[t]: s for t, s in columns if t in TURN_FIELDS}
        self.turn_parsers: dict[str, _Parser] = {}
        if turn:
            note = ", ".join(f"{k}={v}" for k, v in sorted(turn.items()))
            for fmt, keys in _FORMAT_TURN_KEYS.items():
                role = (turn["role"],) * 2 if "role" in turn else keys.role
                content = (turn["content"],) * 2 if "content" in turn else keys.content
                mapped = TurnKeys(role, content, f", which --columns {note} names")
                self.turn_parsers[fmt] = functools.partial(_ALL_PARSERS[fmt], keys=mapped)  # type: ignore[assignment]

    def __call__(self, value: object) -> object:
        if not isinstance(value, dict):
            return value
        out = dict(value)
        for target, source, path in self.top:
            got = value.get(source, _MISSING)
            if got is _MISSING and len(path) > 1:
                got = value
                for name in path:
                    got = got.get(name, _MISSING) if isinstance(got, dict) else _MISSING
                    if got is _MISSING:
                        break
            if got is _MISSING:
                return BadValue("missing_field", f"no {source!r} column, which --columns {target}={source} reads as "
                                f"{target!r} (keys: {_keys(value)})")
            out[target] = got
        for source in self.drop:
            out.pop(source, None)
        return out


# --------------------------------------------------------------------------- the reader


class RecordReader:
    """Iterator over the records of ``paths`` (in order) as Conversation, Pair (a preference pair's record)
    or Rejection, exactly one per input record.

    ``Source.doc_id`` counts from ``first_doc_id`` across all files,
    ``Source.index`` is the record's position in its file (for JSON Lines:
    among non-blank lines), ``Source.path`` the path as given. After a file has
    been read to its end, its :class:`InputSummary` is appended to
    :attr:`inputs`. Single pass; errors that stop the build raise BuildError
    (a missing file or a directory already when the reader is made).

    ``flat=True``: runs of consecutive plain Alpaca records come as one :class:`~packer.read.records.FlatRun`
    each (columns, no Conversation per record), the other records as without it; the doc_ids and indexes are
    the same.

    Progress: :attr:`total_bytes` is the sum of the files' sizes when the
    reader was made; :attr:`bytes_read` the bytes read so far, which only grows
    and equals ``total_bytes`` once the iteration has ended.

    >>> reader = RecordReader(["data.json"])                   # doctest: +SKIP
    >>> [type(r).__name__ for r in reader], reader.inputs[0].records  # doctest: +SKIP
    (['Conversation', 'Rejection'], 2)
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike], fmt: str | None = None, *, first_doc_id: int = 0,
        blank_turns: str = "reject", columns: object = None, piece: Piece | None = None,
        file_format: str | None = None, leading_assistant: str = "drop", flat: bool = False,
    ) -> None:
        self.paths, self._sizes = _input_files(paths, fmt)
        #: read only this piece of the one input (a part of a parallel build), whose record format is
        #: ``file_format`` (settled by the file's first records, which the piece may not hold)
        self.piece = piece
        self._file_format = file_format
        if piece is not None:
            if len(self.paths) != 1:
                raise ValueError("a piece is a piece of one input")
            if piece.kind in ("lines", "array"):
                self._sizes = [piece.end - piece.start]
        #: the column map (field, column) pairs, checked; () for none
        self.columns = check_columns(columns)
        self._remap = _ColumnMap(self.columns) if self.columns else None
        self._parsers = {**_ALL_PARSERS, **self._remap.turn_parsers} if self._remap else _ALL_PARSERS
        if blank_turns not in BLANK_TURN_POLICIES:
            raise BuildError(f"unknown --blank-turns {blank_turns!r}; choose {'|'.join(BLANK_TURN_POLICIES)}")
        if leading_assistant not in LEADING_ASSISTANT_POLICIES:
            raise BuildError(f"unknown --leading-assistant {leading_assistant!r}; choose "
                             f"{'|'.join(LEADING_ASSISTANT_POLICIES)}")
        #: an assistant turn opening a conversation: "drop" it (counted) or "keep" it (trained)
        self.leading_assistant = leading_assistant
        if leading_assistant == "keep":
            self._parsers = {fmt: functools.partial(p, keep_leading=True) if fmt in _FORMAT_TURN_KEYS else p
                             for fmt, p in self._parsers.items()}  # type: ignore[misc]
        self.fmt = fmt
        #: give runs of plain Alpaca records as :class:`FlatRun` columns (see the class's docstring)
        self.flat = flat
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
        self._at: tuple[int, FileValues | None, int] = (0, None, 0)
        self._items = self._all_files()

    @property
    def bytes_read(self) -> int:
        """Bytes of the inputs read so far, for a progress bar. Advances a chunk (JSON), a block of
        lines (JSON Lines) or a row group (Parquet) at a time; a file counts no more than its size."""
        done, values, size = self._at
        return done if values is None else done + min(values.consumed.n, size)

    def __iter__(self) -> RecordReader:
        return self

    def __next__(self) -> Conversation | Pair | Rejection | FlatRun:
        return next(self._items)

    def _all_files(self) -> Iterator[Conversation | Pair | Rejection | FlatRun]:
        for path, size in zip(self.paths, self._sizes, strict=True):
            values = FileValues(path) if self.piece is None else FileValues(path, piece=self.piece)
            self._at = (self._at[0], values, size)
            yield from self._one_file(path, values)
            self._at = (self._at[0] + size, None, 0)

    def _one_file(self, path: str, values: FileValues) -> Iterator[Conversation | Pair | Rejection | FlatRun]:
        fmt: str | None = self._file_format
        pending: list[object] = []  # values before the file's format is known
        count = values.piece.first_record
        items = iter(values if self._remap is None else map(self._remap, values))
        for value in items:
            if fmt is None:
                fmt = _format_of(value, self.fmt)
                if fmt is None:
                    pending.append(value)
                    continue
                for early in pending:
                    yield self._record(early, fmt, path, count)
                    count += 1
                pending = []
            if self.flat and fmt == "alpaca":  # the rest of the file, plain records in runs
                count = yield from self._flat_runs(chain((value,), items), path, count)
                break
            yield self._record(value, fmt, path, count)
            count += 1
        if fmt is None:
            raise BuildError(_undetected(path, pending, values.empty))
        self.inputs.append(InputSummary(path, values.sha256, fmt, count - values.piece.first_record))

    def _flat_runs(
        self, values: Iterable[object], path: str, count: int,
    ) -> Generator[Conversation | Rejection | FlatRun, None, int]:
        """The Alpaca records of ``values`` (the first has index ``count`` in its file): runs of plain ones
        (:func:`~packer.read.normalise.plain_alpaca`, no lone surrogate) as :class:`FlatRun`, every other record
        as :meth:`_record` reads it, in order; returns the count after the last."""
        detect = self.fmt is None  # a record of another format in the file is a format_mismatch
        ins: list[str] = []
        inps: list[str] = []
        outs: list[str] = []
        start = (self.next_doc_id, count)
        for value in values:
            got = _plain(value, detect)
            if got is None:
                if outs:
                    yield FlatRun(path, *start, ins, inps, outs)
                    ins, inps, outs = [], [], []
                yield self._record(value, "alpaca", path, count)
                count += 1
                continue
            if not outs:
                start = (self.next_doc_id, count)
            ins.append(got[0])
            inps.append(got[1])
            outs.append(got[2])
            self.next_doc_id += 1
            count += 1
            if len(outs) >= FLAT_RUN:
                yield FlatRun(path, *start, ins, inps, outs)
                ins, inps, outs = [], [], []
        if outs:
            yield FlatRun(path, *start, ins, inps, outs)
        return count

    def _record(self, value: object, fmt: str, path: str, index: int) -> Conversation | Pair | Rejection:
        source = Source(self.next_doc_id, path, index)
        self.next_doc_id += 1
        if isinstance(value, BadValue):
            return Rejection(source, value.reason, value.detail)
        if not isinstance(value, dict):
            return Rejection(source, "not_an_object", f"the record is {_type_name(value)}, not an object")
        if self.fmt is None:
            found = detect_format(value)
            if found is not None and found != fmt:
                return Rejection(source, "format_mismatch", f"the record is {found} but its file is {fmt}")
        try:
            parsed = self._parsers[fmt](value, self._drop_blank)
            tools = _tools(value) if "tools" in value and fmt in _TOOL_FORMATS else ()
        except _Reject as r:
            return Rejection(source, r.reason, r.detail)
        if fmt in PAIR_FORMATS:
            chosen, rejected, prompt, (c_dropped, r_dropped) = parsed  # type: ignore[misc]
            bad = _bad_text(source, chosen, tools, "chosen: ") or _bad_text(source, rejected, (), "rejected: ")
            if bad is not None:
                return bad
            return Pair(source, fmt, Conversation(source, fmt, chosen, c_dropped, tools),  # type: ignore[arg-type]
                        Conversation(source, fmt, rejected, r_dropped, tools), prompt)  # type: ignore[arg-type]
        messages, dropped = parsed
        bad = _bad_text(source, messages, tools)
        if bad is not None:
            return bad
        label = value["label"] if fmt in _KTO_FORMATS else None
        return Conversation(source, fmt, messages, dropped, tools, label)  # type: ignore[arg-type]


def _plain(value: object, detect: bool) -> tuple[str, str, str] | None:
    """:func:`~packer.read.normalise.plain_alpaca` of a value of an Alpaca file; None also where
    :meth:`RecordReader._record` would reject it otherwise: another format's (``detect``: the file's format was
    detected), or one holding a lone surrogate."""
    got = plain_alpaca(value)
    if got is None:
        return None
    # keys of no other format: alpaca without asking detect_format
    if detect and not _ALPACA_ONLY(value) and detect_format(value) != "alpaca":  # type: ignore[arg-type]
        return None
    if not (got[0].isascii() and got[1].isascii() and got[2].isascii()) and any(map(_SURROGATE_RE.search, got)):
        return None
    return got


def _bad_text(source: Source, messages: tuple[Message, ...], tools: tuple[dict, ...],
              side: str = "") -> Rejection | None:
    """The ``invalid_utf8`` rejection of a record whose messages or tools hold a lone surrogate, or None."""
    for i, m in enumerate(messages):
        for text in m.texts():
            # JSON's \ud800 escapes decode to lone surrogates, which have no UTF-8 form:
            # the tokenizer cannot take them
            bad = None if text.isascii() else _SURROGATE_RE.search(text)
            if bad is not None:
                return Rejection(source, "invalid_utf8",
                                 f"{side}turn {i} ({m.role}) holds a lone surrogate {bad.group(0)!a} "
                                 f"at character {bad.start()}, which has no UTF-8 form")
    if tools:
        bad = _SURROGATE_RE.search(json.dumps(tools, ensure_ascii=False))
        if bad is not None:
            return Rejection(source, "invalid_utf8", f"'tools' holds a lone surrogate {bad.group(0)!a}, which "
                             "has no UTF-8 form")
    return None


#: whether a record with ``instruction`` and ``output`` has none of the keys by which :func:`detect_format` says
#: another format (then it says alpaca)
_ALPACA_ONLY = frozenset({"chosen_messages", "rejected_messages", "chosen", "rejected", "label", "conversations",
                          "messages"}).isdisjoint
#: records in a :class:`FlatRun` at most (a build takes a few hundred a batch)
FLAT_RUN = 256
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
#: the record formats whose records may carry ``tools``
_TOOL_FORMATS = frozenset({"sharegpt", "messages", "prompt_completion", *PAIR_FORMATS, *KTO_FORMATS})
_KTO_FORMATS = frozenset(KTO_FORMATS)


def _format_of(value: object, fmt: str | None) -> str | None:
    """The format of a file whose next value is ``value``, if that value settles it (``fmt`` forces it)."""
    if isinstance(value, BadValue):
        return None
    return fmt or detect_format(value)  # type: ignore[arg-type]


def _undetected(path: str, values: list[object], empty: str) -> str:
    """The BuildError message for a file whose format was never settled: it
    has no values, no decodable value, or (format not forced) none detects."""
    if not values:
        return f"{path}: {empty}"
    good = [v for v in values if not isinstance(v, BadValue)]
    if not good:
        first = values[0]
        detail = first.detail if isinstance(first, BadValue) else ""
        if isinstance(first, BadValue) and first.reason == "missing_field":  # the column map's
            return f"{path}: no record has the columns the column map names: record 0 has {detail}"
        return f"{path}: no record could be read, is it JSON? ({detail}); {SUPPORTED}"
    first_dict = next((v for v in good if isinstance(v, dict)), None)
    seen = f"keys: {_keys(first_dict)}" if first_dict is not None else "no record is a JSON object"
    return (f"{path}: cannot detect the format ({seen}); the record formats are {RECORD_FORMATS}; "
            f"--format {'|'.join(FORMATS)} forces one; --columns FIELD=COLUMN,... maps your names onto their fields")


def _input_files(paths: Sequence[str | os.PathLike], fmt: str | None) -> tuple[list[str], list[int]]:
    """The paths as strings and the sizes of their files; BuildError for an unknown ``fmt``, or a path
    that is missing or not a file."""
    if fmt is not None and fmt not in FORMATS:
        raise BuildError(f"unknown format {fmt!r}; use --format {'|'.join(FORMATS)}")
    names = expand_inputs(paths)
    return names, [file_size(p) for p in names]


def check_inputs(paths: Sequence[str | os.PathLike], fmt: str | None = None, columns: object = None) -> list[str]:
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
    pairs = check_columns(columns)
    remap = _ColumnMap(pairs) if pairs else None
    return [_first_format(path, fmt, remap) for path in names]


def _first_format(path: str, fmt: str | None, remap: _ColumnMap | None = None) -> str:
    """The format the first values of a file settle, read as RecordReader reads them (see check_inputs)."""
    values = FileValues(path, head_only=True)
    pending: list[object] = []
    raw = iter(values)
    items = raw if remap is None else map(remap, raw)
    try:
        for value in items:
            found = _format_of(value, fmt)
            if found is not None:
                return found
            pending.append(value)
            if len(pending) >= _CHECK_RECORDS or values.consumed.n > _CHECK_BYTES:
                break
    finally:
        raw.close()  # closes the file
    raise BuildError(_undetected(path, pending, values.empty))
