"""A template's render read as fixed pieces and content slots (the tokens stage's character labels).

:class:`~packer.tokens.templates.ChatTemplate` renders a conversation shape once with
a placeholder (``PKRSLOT<k>Z``) in each content slot (:func:`_placeholders`); the
text between them is the template's fixed text. This module holds what that
render teaches (:class:`_Structure`: the fixed pieces, the slots, each piece's
labelled segments) and what reads a real render by it: :func:`_directed_match`
finds each slot's value (as given or trimmed) between the fixed pieces,
:func:`_segments` gives the segments' lengths and roles, :func:`_label_text`
labels fixed text ``marker`` or ``boilerplate``. JSON values (tool definitions,
a call's arguments) are traced through the template's ``tojson``
(:func:`_tojson`, :class:`_JsonSlot`, :class:`_Tagged`).

    >>> _directed_match("<u>Hi there</u>", ["<u>", "</u>"], ["Hi there "])
    [(3, 11)]
    >>> [(n, R.ROLE_NAMES[r]) for _, n, r, _, _ in _label_text("### Response:\\nBelow is a long line here.\\n", 0)]
    [(14, 'marker'), (26, 'boilerplate'), (1, 'marker')]
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import jinja2
import numpy as np

from ..output import roles as R
from ..read.records import Message
from .assembly import _TRANSFORMS, Fill, _Assembly

#: words in a line of fixed template text from which on it is prose (boilerplate)
BOILERPLATE_MIN_WORDS = 4


_SLOT_ROLE = {"system": R.SYSTEM, "user": R.INSTRUCTION, "assistant": R.RESPONSE, "tool": R.TOOL}
_PLACEHOLDER = "PKRSLOT{}Z"
_PLACEHOLDER_RE = re.compile(r"PKRSLOT(\d+)Z")


def _tojson(x: object, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False):  # type: ignore[no-untyped-def]
    # transformers' tojson, and the way JSON slots (tool definitions, a call's arguments) are traced
    if isinstance(x, _JsonSlot):
        return x.placeholder
    out = json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    if isinstance(x, _Tagged):
        x.seen.append(out)
    return out


_JSON_LOOK = ("the template reads inside a JSON value (a tool definition or a call's arguments); packer can tell "
              "such a value from template text only where the template writes it whole with tojson")


class _JsonSlot(dict):
    """A JSON value (a tool definition, a call's arguments) in a placeholder render: ``tojson`` writes its
    placeholder; any look inside it fails the render, since text a template writes from a value's keys
    could not be told from template text."""

    def __init__(self, placeholder: str) -> None:
        super().__init__()
        self.placeholder = placeholder

    def _refuse(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise jinja2.TemplateError(_JSON_LOOK)

    __getitem__ = __iter__ = __len__ = __contains__ = get = items = keys = values = _refuse  # type: ignore[assignment]

    def __bool__(self) -> bool:
        return True


class _Tagged(dict):
    """A JSON value in a real render: what ``tojson`` wrote of it is kept in :attr:`seen`, the slot's text."""

    def __init__(self, value: dict) -> None:
        super().__init__(value)
        self.seen: list[str] = []


def _json_field(field: str) -> bool:
    """Whether a slot field holds a JSON value (written by the template's tojson)."""
    return field.startswith("tools.") or field.endswith(".arguments")


def _placeholders(names: list[tuple[int, str]]) -> Fill:
    """A fill giving each slot a placeholder (``PKRSLOT<k>Z``), the k-th slot's (message, field) put in
    ``names``."""

    def fill(i: int, field: str, value: object) -> object:
        names.append((i, field))
        placeholder = _PLACEHOLDER.format(len(names) - 1)
        return _JsonSlot(placeholder) if _json_field(field) else placeholder

    return fill


def _field_role(field: str, message_role: str) -> int:
    """The role of a slot's characters."""
    if field == "input":
        return R.INPUT
    if field == "reasoning":
        return R.REASONING
    if field.startswith("tools."):
        return R.SYSTEM
    if field.startswith("call"):
        return R.TOOL_CALL
    return _SLOT_ROLE[message_role]


@dataclass(frozen=True)
class _Slot:
    message: int  # -1 for the record's tool definitions
    #: "content" | "input" | "reasoning" | "tools.K" | "callK.name" | "callK.arguments" | "callK.id" |
    #: "tool_call_id" | "name" (a tool result's)
    field: str
    role: int
    last: bool
    train: bool = True
    #: the slot is content of a non-assistant message marked ``"training": true`` (loss under every strategy)
    forced: bool = False


@dataclass
class _Structure:
    """What the placeholder render of one conversation shape taught us."""

    pattern: re.Pattern[str]
    fixed: tuple[str, ...]
    slots: tuple[_Slot, ...]
    #: per fixed piece: (relative start, length, role, last, train) segments
    pieces: tuple[tuple[tuple[int, int, int, bool, bool], ...], ...]
    #: set when the template only pastes (or trims) the contents of this shape: see :mod:`packer.tokens.assembly`
    assembly: _Assembly | None = None

    def __post_init__(self) -> None:
        #: some segment belongs to a message marked untrained (such shapes are never assembled)
        self.untrained = any(not seg[4] for piece in self.pieces for seg in piece) or any(
            not s.train for s in self.slots)
        #: some slot is content of a message marked ``"training": true`` that is not the assistant's (only
        #: slots are: the template's markup around it stays without loss; never assembled either)
        self.forced = any(s.forced for s in self.slots)
        #: some slot holds a JSON value (tool definitions, a call's arguments; never assembled)
        self.has_json = any(_json_field(s.field) for s in self.slots)

    @property
    def slot_keys(self) -> tuple[tuple[int, str], ...]:
        return tuple((s.message, s.field) for s in self.slots)

    def spans(self, text: str, values: Sequence[str]) -> list[tuple[int, int]] | None:
        return _directed_match(text, self.fixed, values)

    def segments(self, slot_lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lengths, roles, last, _train, _forced, slot_segs = _segments(self, slot_lengths)
        return lengths, roles, last, slot_segs


def _segments(
    st: _Structure, slot_lengths: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lengths (int64), roles (uint8), last-turn flags (bool), training flags (bool) and forced-training
    flags (bool) of a shape's segments in text order, the slots given their lengths; and the index of each
    slot's segment."""
    static = st.__dict__.get("_static")
    if static is None:  # what every record of the shape shares, found once
        lengths: list[int] = []
        codes: list[int] = []
        last: list[bool] = []
        train: list[bool] = []
        forced: list[bool] = []
        slot_segs: list[int] = []
        for k, piece in enumerate(st.pieces):
            for _rel, n, role, is_last, is_trained in piece:
                lengths.append(n)
                codes.append(role)
                last.append(is_last)
                train.append(is_trained)
                forced.append(False)
            if k < len(st.slots):
                slot_segs.append(len(lengths))
                lengths.append(0)
                codes.append(st.slots[k].role)
                last.append(st.slots[k].last)
                train.append(st.slots[k].train)
                forced.append(st.slots[k].forced)
        static = (np.asarray(lengths, dtype=np.int64), np.asarray(codes, dtype=np.uint8),
                  np.asarray(last, dtype=bool), np.asarray(train, dtype=bool), np.asarray(forced, dtype=bool),
                  np.asarray(slot_segs, dtype=np.int64))
        for a in static:
            a.flags.writeable = False  # shared by the shape's records
        st.__dict__["_static"] = static
    out = static[0].copy()
    out[static[5]] = slot_lengths
    return out, static[1], static[2], static[3], static[4], static[5]


def _message_shape(m: Message) -> tuple:
    """What of a message decides its render's fixed text (the key of a learnt shape)."""
    if m.plain and m.trained and not m.forced:
        return (m.role, bool(m.content), bool(m.input), _think_shape(m) if m.role == "assistant" else None)
    return (m.role, bool(m.content), bool(m.input), None if m.reasoning is not None else _think_shape(m),
            m.reasoning is not None, tuple(c.id is not None for c in m.tool_calls), m.tool_call_id is not None,
            m.name is not None, m.trained, m.forced)


def _dropped(names: Sequence[tuple[int, str]], slots: Sequence[_Slot], messages: Sequence[Message]) -> str | None:
    """What of a record's tools, tool calls, tool results or reasoning a template leaves out, or None.
    Call ids and tool names may be left out (bookkeeping); reasoning may be left out of some turns (Qwen3
    keeps only the last exchange's) but not all."""
    shown = {(s.message, s.field) for s in slots}
    for i, field in names:
        if (i, field) in shown:
            continue
        if field.startswith("tools."):
            return "the record's tool definitions"
        if field.endswith((".name", ".arguments")):
            return f"the tool calls of turn {i}"
        if field == "content" and messages[i].role == "tool":
            return f"the tool result of turn {i}"
    reasoning = [i for i, f in names if f == "reasoning"]
    if reasoning and not any(s.field == "reasoning" for s in slots):
        return f"the reasoning of turn {reasoning[-1]}"
    return None


def _prompt_dropped(names: Sequence[tuple[int, str]], slots: Sequence[_Slot], messages: Sequence[Message]) -> bool:
    """Whether the template leaves out the system message of a conversation with no user turn (the built-in
    ``mistral`` keeps it for a first instruction that never comes): its answers would train unprompted."""
    if not messages or messages[0].role != "system" or any(m.role == "user" for m in messages):
        return False
    return (0, "content") in names and not any(s.message == 0 and s.field == "content" for s in slots)


def _inner_piece(piece: str, after: _Slot, before: _Slot) -> tuple[tuple[int, int, int, bool, bool], ...]:
    """Template text between two slots of one assistant message (``</think>`` tags, a call's
    ``", "arguments": ``): the model writes it, so it takes their roles. After the reasoning it is
    reasoning up to the end of ``</think>``; next to a tool call, the call's; else the response's."""
    if not piece:
        return ()
    if after.role == before.role:
        return ((0, len(piece), after.role, after.last, after.train),)
    if after.role == R.REASONING:
        end = piece.find("</think>")
        cut = len(piece) if end < 0 else end + len("</think>")
        segs = [(0, cut, R.REASONING, after.last, after.train)]
        if cut < len(piece):
            segs.append((cut, len(piece) - cut, before.role, before.last, before.train))
        return tuple(segs)
    role = R.TOOL_CALL if R.TOOL_CALL in (after.role, before.role) else before.role
    return ((0, len(piece), role, after.last, after.train),)


def _call_start(piece: str, generation_prompt: str | None, special_re: re.Pattern[str] | None) -> int:
    """Where, in the template text before a turn's first tool call, the model's own writing begins:
    after the generation prompt (``<|im_start|>assistant\n``) where the piece holds it, else after its
    last control token and the whitespace after it."""
    if generation_prompt:
        at = piece.rfind(generation_prompt)
        if at >= 0:
            return at + len(generation_prompt)
        # Qwen2.5 writes "<|im_start|>assistant" and then "\n<tool_call>": the prompt less its whitespace
        bare = generation_prompt.rstrip()
        at = piece.rfind(bare) if bare else -1
        if at >= 0:
            cut = at + len(bare)
            return cut + len(piece[cut:]) - len(piece[cut:].lstrip())
    cut = 0
    if special_re is not None:
        for m in special_re.finditer(piece):
            cut = m.end()
    header = _ASSISTANT_HEADER_RE.match(piece, cut)  # "assistant\n" after "<|im_start|>"
    return header.end() if header else cut + len(piece[cut:]) - len(piece[cut:].lstrip())


_ASSISTANT_HEADER_RE = re.compile(r"\s*assistant\b[^\S\n]*:?\s*")


def _slot_texts(slots: Sequence[_Slot], values: dict[tuple[int, str], object]) -> list[str] | None:
    """The text of each slot in a real render: a string value as it is, a JSON value as the template's
    tojson wrote it (its n-th writing for its n-th slot); None where a JSON value was not so written."""
    out: list[str] = []
    used: dict[tuple[int, str], int] = {}
    for slot in slots:
        key = (slot.message, slot.field)
        value = values[key]
        if isinstance(value, _Tagged):
            n = used.get(key, 0)
            used[key] = n + 1
            if n >= len(value.seen):
                return None
            out.append(value.seen[n])
        else:
            out.append(value)  # type: ignore[arg-type]
    return out


def _candidates(value: str) -> list[str]:
    # what a template may emit for a value: as is, or trimmed (Jinja's trim, strip('\n'), ...)
    out: list[str] = []
    for t in _TRANSFORMS:
        c = t(value)
        if c not in out:
            out.append(c)
    return out


def _directed_match(text: str, fixed: Sequence[str], values: Sequence[str]) -> list[tuple[int, int]] | None:
    """Spans of the slots when ``text`` is fixed[0] v0 fixed[1] v1 ... with each
    value as given or trimmed; unlike a regex, content that contains the
    template's own text ("### Response:") cannot be cut in the wrong place."""
    spans: list[tuple[int, int]] = []
    # explicit stack of (slot, position, next candidate) instead of recursion: long chats
    stack: list[tuple[int, int, int]] = []
    if not text.startswith(fixed[0]):
        return None
    k, pos, choice = 0, len(fixed[0]), 0
    while True:
        if k == len(values) and pos == len(text):
            return spans
        found = False
        if k < len(values):
            cands = _candidates(values[k])
            for j in range(choice, len(cands)):
                end = pos + len(cands[j])
                if text.startswith(cands[j], pos) and text.startswith(fixed[k + 1], end):
                    stack.append((k, pos, j + 1))
                    spans.append((pos, end))
                    k, pos, choice = k + 1, end + len(fixed[k + 1]), 0
                    found = True
                    break
        if found:
            continue
        if not stack:  # no way to read the text as template + values
            return None
        k, pos, choice = stack.pop()
        spans.pop()


def _slot_spans(st: _Structure, text: str, values: Sequence[str]) -> list[tuple[int, int]] | None:
    """Where each slot of the shape ``st`` lies in a real render ``text`` whose slots hold ``values``; None where
    the fixed pieces do not read so. A value as given or trimmed first (:func:`_directed_match`); else, where the
    template changed a value beyond trimming, the slots found by the fixed text around them, each still holding
    only text from its value (else template text depending on the content would pass as content)."""
    spans = _directed_match(text, st.fixed, values)
    if spans is None:
        match = st.pattern.fullmatch(text)
        if match is not None and all(match.group(k + 1) in v for k, v in enumerate(values)):
            spans = [match.span(k + 1) for k in range(len(values))]
    return spans


def _slot_value(m: Message, field: str) -> str:
    # the value _message_dicts fills a slot with (shapes with tool calls or tools are never assembled)
    if field == "input":
        return m.input
    if field == "tool_call_id":
        return m.tool_call_id or ""
    if field == "name":
        return m.name or ""
    if m.reasoning is not None:
        return m.reasoning if field == "reasoning" else m.content
    think = _split_think(m) if m.role == "assistant" else None
    if think is not None:
        return think[0] if field == "reasoning" else think[1]
    return m.content


_THINK_RE = re.compile(r"<think>(.*?)</think>(.*)", re.DOTALL)


def _split_think(m: Message) -> tuple[str, str] | None:
    """(reasoning, answer) of an assistant content that opens with a <think> block."""
    if not m.content.startswith("<think>"):
        return None
    match = _THINK_RE.fullmatch(m.content)
    return (match.group(1), match.group(2)) if match else None


def _think_shape(m: Message) -> tuple[bool, bool] | None:
    think = _split_think(m)
    return None if think is None else (bool(think[0]), bool(think[1]))


_LINE_RE = re.compile(r"[^\n]*\n*")


def _label_text(text: str, base: int) -> list[tuple[int, int, int, bool, bool]]:
    # template text between special tokens: prose lines are boilerplate,
    # everything else (role names, headers, separators, newlines) is marker
    segs: list[tuple[int, int, int, bool, bool]] = []
    for m in _LINE_RE.finditer(text):
        line = m.group(0)
        if not line:
            continue
        body = line.rstrip("\n")
        role = R.BOILERPLATE if len(body.split()) >= BOILERPLATE_MIN_WORDS else R.MARKER
        if role == R.BOILERPLATE and len(body) < len(line):
            segs.append((base + m.start(), len(body), role, False, True))
            segs.append((base + m.start() + len(body), len(line) - len(body), R.MARKER, False, True))
        else:
            segs.append((base + m.start(), len(line), role, False, True))
    return segs
