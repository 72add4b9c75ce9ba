"""Record formats: JSON values in, conversations out.

Each record that :mod:`packer.jsonvalues` reads from a file is in one of five
record formats, alpaca, sharegpt, messages, prompt_completion or text: this
module tells which from its keys (after the column map, if any, renamed them),
checks its fields' types, maps its roles onto system / user / assistant,
applies the turn policies, and gives a :class:`~packer.records.Conversation`, or
a :class:`~packer.records.Rejection` with the reason.

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
several files, in order, exactly one Conversation or Rejection per input record,
and fills :attr:`RecordReader.inputs` with one :class:`InputSummary` per file
once that file has been read to its end; :attr:`RecordReader.bytes_read` out of
:attr:`RecordReader.total_bytes` is its progress. :func:`check_inputs` is the
same reading of only the first records of each file: a build runs it before it
touches any output, so that a file the reader would refuse fails at once, with
the reader's message. Both live here, not in :mod:`packer.jsonvalues`, because
what they settle per file is its record format and what they yield are records.

Formats
    ``fmt`` forces one format for every record. Otherwise each FILE's format is
    detected from its first record that :func:`detect_format` recognises; a
    record recognised as another format is a ``format_mismatch`` rejection, a
    record recognised as none is parsed as the file's format (and usually
    rejected as ``missing_field``). A file whose first records settle no format
    is a :class:`~packer.records.BuildError` that lists the record formats and
    ``--format``. A value :mod:`packer.jsonvalues` could not decode is a
    rejection with its reason (``malformed_json``, ``invalid_utf8``); a value
    that is not an object is ``not_an_object``.

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
    prompt_completion (TRL's prompt-completion)
        ``prompt`` and ``completion`` (or, without ``completion``, ``response``:
        ``{prompt, response}`` files such as llm-foundry's are this format, so they
        build as they are). Two strings -> ``user(prompt) assistant(completion)``,
        the same messages as an Alpaca record without input; two lists of
        ``{"role", "content"}`` messages (conversational) -> the prompt's messages
        then the completion's, read as a ``messages`` record (turns numbered across
        both). Anything else is ``wrong_type``; a blank completion or an empty
        completion list ``empty_output``, a blank string prompt ``empty_turn``.
        Assistant turns inside a conversational prompt are assistant turns like
        any other (``last_turn`` trains on the last one only).
    text (TRL's language modelling)
        ``text``: a string, a whole document; one assistant message that the
        template does not render: the document is the text followed by the
        tokenizer's EOS token (:meth:`packer.templates.ChatTemplate.render`).
        Detected last, so a record with ``text`` and another format's keys is of
        that format. Blank -> ``empty_output``.
    messages
        ``messages``: ``[{"role", "content"}]``; roles system, user, assistant,
        developer -> system, tool and function -> user. ``content`` is a string
        or an OpenAI list of ``{"type": "text", "text"}`` parts, joined without a
        separator (as HF chat templates concatenate them); other part types and
        null content are ``wrong_type``, but for an assistant message with
        ``tool_calls``, whose content may be null or left out.
        LLaMA-Factory's v1 records are this format too: content parts
        ``{"type": "text" | "reasoning" | "tool_call", "value"}`` (the text parts
        joined; a reasoning part is ``reasoning_content``, a tool_call part's
        value, a JSON string of ``{"name", "arguments"}``, a call; both only in an
        assistant message) and a per-message ``loss_weight`` 0.0 / 1.0, read as
        ``weight`` where it is not what LLaMA-Factory gives that role anyway (1.0
        an assistant's, 0.0 any other's); another value is ``bad_weight``.
    Both conversation formats, after role mapping:
        * assistant turns before the first user turn are dropped
          (``dropped_turns["leading_assistant"]``): ShareGPT dumps split long
          chats into chunks that start mid-conversation with the model; with
          ``leading_assistant="keep"`` (``--leading-assistant keep``) they are
          kept (and trained). A conversation with no user turn before its last
          assistant turn, and a system turn before its first, keeps them either
          way: its system message is the prompt (OpenAI's system + assistant
          records);
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from .jsonvalues import RECORD_FORMATS, SUPPORTED, BadValue, FileValues, Piece, expand_inputs, file_size
from .options import BLANK_TURN_POLICIES, FORMATS, LEADING_ASSISTANT_POLICIES
from .records import BuildError, Conversation, Message, MessageRole, Rejection, Source, ToolCall

#: check_inputs gives up on settling a file's format after this many values or bytes
_CHECK_RECORDS = 1000
_CHECK_BYTES = 1 << 23

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
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
_MESSAGES_ROLES: dict[str, MessageRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
#: ShareGPT turn roles whose value is a function call (JSON ``{"name", "arguments"}``, or a list of them)
_CALL_ROLES = frozenset({"function_call"})


@dataclass(slots=True)
class InputSummary:
    """One input file as the manifest lists it: ``records`` counts every
    Conversation and Rejection the reader yielded for the file."""

    path: str
    sha256: str
    format: str
    records: int


def detect_format(record: dict) -> str | None:
    """The format a record's keys say it is in, or None (the first that applies: ``conversations``,
    ``messages``, ``instruction`` + ``output``, ``prompt`` + ``completion`` or ``response``, ``text``).

    >>> detect_format({"instruction": "Add 2 and 3.", "input": "", "output": "5"})
    'alpaca'
    >>> detect_format({"conversations": []}), detect_format({"prompt": "x"})
    ('sharegpt', None)
    >>> detect_format({"prompt": "x", "response": "y"}), detect_format({"text": "A document."})
    ('prompt_completion', 'text')
    """
    if not isinstance(record, dict):
        return None
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


#: a turn after role mapping: (role, raw content, turn number, role name as written, the turn's object)
_Turn = tuple[MessageRole, object, int, str, dict]


@dataclass(frozen=True, slots=True)
class TurnKeys:
    """The keys of a turn's role and content: each the usual one and the one also accepted; ``note`` says,
    in a missing key's message, which the column map set (``--columns role=speaker``)."""

    role: tuple[str, str]
    content: tuple[str, str]
    note: str = ""


_SHAREGPT_KEYS = TurnKeys(("from", "role"), ("value", "content"))
_MESSAGES_KEYS = TurnKeys(("role", "from"), ("content", "value"))


def _map_roles(turns: list, keys: TurnKeys, roles: dict[str, MessageRole]) -> list[_Turn]:
    role_keys, content_keys = keys.role, keys.content
    out: list[_Turn] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _Reject("wrong_type", f"turn {i} is {_type_name(turn)}, expected an object")
        key = role_keys[0] if role_keys[0] in turn or role_keys[1] not in turn else role_keys[1]
        if key not in turn:
            raise _Reject("missing_field", f"turn {i} has no {role_keys[0]!r}{keys.note} (keys: {_keys(turn)})")
        name = turn[key]
        if not isinstance(name, str):
            raise _Reject("wrong_type", f"turn {i}: {key!r} is {_type_name(name)}, expected a string")
        role = roles.get(name) or roles.get(name.lower())
        if role is None:
            raise _Reject("unknown_role", f"turn {i} has role {name!r}; known: {', '.join(roles)}")
        ckey = content_keys[0] if content_keys[0] in turn or content_keys[1] not in turn else content_keys[1]
        if ckey not in turn:
            if role == "assistant" and "tool_calls" in turn:  # OpenAI: a call with no content key at all
                out.append((role, None, i, name, turn))
                continue
            raise _Reject("missing_field",
                          f"turn {i} ({name}) has no {content_keys[0]!r}{keys.note} (keys: {_keys(turn)})")
        out.append((role, turn[ckey], i, name, turn))
    return out


def _prompt_start(turns: list[_Turn], keep_leading: bool) -> int:
    """Where a conversation's kept turns start, after its leading system turns: its first user turn; with
    ``keep_leading`` its first user or assistant turn; without, its first assistant turn where no user turn
    comes before its last one and a system turn comes before its first (OpenAI's system + assistant
    records: the system message is the prompt)."""
    first_user = next((k for k, t in enumerate(turns) if t[0] == "user"), len(turns))
    first_assistant = next((k for k, t in enumerate(turns) if t[0] == "assistant"), len(turns))
    if keep_leading:
        return min(first_user, first_assistant)
    if first_assistant < first_user and any(t[0] == "system" for t in turns[:first_assistant]):
        last = max(k for k, t in enumerate(turns) if t[0] == "assistant")
        if last < first_user:
            return first_assistant
    return first_user


def _drop_turns(turns: list[_Turn], keep_leading: bool = False) -> tuple[list[_Turn], dict[str, int]]:
    """Apply the leading-assistant / trailing-turns policy (module docstring).

    roles ``assistant user assistant user`` -> ``user assistant``,
    ``{"leading_assistant": 1, "trailing_non_assistant": 1}``; ``system assistant`` is kept as it is
    """
    first = _prompt_start(turns, keep_leading)
    # an assistant turn before the first user turn answers nothing here, and a tool result then
    # answers a call that is not here either (``--leading-assistant keep`` keeps the assistant turns)
    head = [t for t in turns[:first] if t[0] != "assistant" and t[0] != "tool"]
    leading_tools = sum(t[0] == "tool" for t in turns[:first])
    rest = turns[first:]
    last = next((k for k in range(len(rest) - 1, -1, -1) if rest[k][0] == "assistant"), -1)
    if last < 0:
        names = ", ".join(t[3] for t in turns[:10]) + (", ..." if len(turns) > 10 else "")
        # (the words of earlier builds' rejected.jsonl kept, byte for byte)
        what = "no assistant turn" if keep_leading else "no assistant turn after a user turn"
        raise _Reject("no_assistant_turn", f"{what} (roles: {names})")
    dropped: dict[str, int] = {}
    if first > len(head) + leading_tools:
        dropped["leading_assistant"] = first - len(head) - leading_tools
    if leading_tools:
        dropped["leading_tool_result"] = leading_tools
    if last < len(rest) - 1:
        dropped["trailing_non_assistant"] = len(rest) - 1 - last
    return head + rest[: last + 1], dropped


def _drop_blank_turns(kept: list[_Turn], dropped: dict[str, int]) -> tuple[tuple[Message, ...], dict[str, int]]:
    """The messages of ``kept`` under ``--blank-turns drop`` (module docstring), ``dropped`` counted on.

    roles ``user assistant user("") assistant user assistant("")`` -> ``user assistant``,
    ``{"blank_turn": 4}``; ``user user(" ") assistant`` -> ``user assistant``, ``{"blank_turn": 1}``
    """
    msgs = [_turn_message(t) for t in kept]
    blank = [_blank_message(m) for m in msgs]
    if not any(blank):
        return _checked(tuple(msgs), [t[2] for t in kept]), dropped
    drop = [False] * len(kept)
    # runs of consecutive user turns and of assistant turns (system turns stand apart); after
    # _drop_turns they alternate, a user run first (or an assistant run: a conversation a system
    # message prompts, --leading-assistant keep) and an assistant run last
    runs: list[list[int]] = []
    for k, (role, _, _, _, _) in enumerate(kept):
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
            if kept[run[0]][0] == "user":  # the answer: every run up to the next user run (calls, results)
                nxt = next((j for j in range(r + 1, len(runs)) if kept[runs[j][0]][0] == "user"), len(runs))
                partner = [k for j in range(r + 1, nxt) for k in runs[j]]
            else:  # (an opening assistant run answers nothing: it goes alone)
                partner = runs[r - 1] if r else []
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
                      f"{', '.join(gone)} and the turns answering them are dropped (--blank-turns drop)")
    dropped = {**dropped, "blank_turn": dropped.get("blank_turn", 0) + len(kept) - len(left)}
    if last < len(left) - 1:
        dropped["trailing_non_assistant"] = dropped.get("trailing_non_assistant", 0) + len(left) - 1 - last
    return _checked(tuple(msgs[k] for k in left[: last + 1]), [kept[k][2] for k in left[: last + 1]]), dropped


def _content_text(content: object, i: int, name: str) -> str:
    """A turn's content as text: a string, or text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return _content_parts(content, i, name, False)[0]
    raise _Reject("wrong_type", f"turn {i} ({name}): content is {_type_name(content)}, expected a string")


#: the content part types of LLaMA-Factory v1 an assistant message may hold beside text
_V1_PARTS = ("reasoning", "tool_call")


def _content_parts(
    content: list, i: int, name: str, assistant: bool
) -> tuple[str, str | None, tuple[ToolCall, ...]]:
    """A turn's content given as typed parts: OpenAI's ``{"type": "text", "text"}`` or LLaMA-Factory v1's
    ``{"type": "text" | "reasoning" | "tool_call", "value"}`` -> (the text parts joined without a separator,
    as HF chat templates concatenate them; the reasoning, or None; the tool calls, in order). Reasoning and
    tool calls only in an assistant turn; a ``tool_call`` part's value is a JSON string of ``{"name",
    "arguments"}``; other part types are ``wrong_type``."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get("text", part.get("value")) if kind == "text" else None
        if isinstance(value, str):
            texts.append(value)
            continue
        value = part.get("value") if assistant and kind in _V1_PARTS else None
        if kind == "reasoning" and isinstance(value, str):
            reasoning.append(value)
        elif kind == "tool_call" and value is not None:
            where = f"turn {i}: tool call part {k}"
            calls.append(_tool_call(_decoded(value, "bad_tool_call", f"{where}: the value"), where))
        elif assistant and kind in _V1_PARTS:
            raise _Reject("wrong_type", f"turn {i} ({name}): content part {k} ({kind}): 'value' is "
                          f"{_type_name(value)}, expected a string")
        else:  # (the words of earlier builds' rejected.jsonl kept)
            what = f"type {kind!r}" if kind else _type_name(part)
            where = " (reasoning and tool_call parts only in an assistant turn)" if kind in _V1_PARTS else ""
            raise _Reject("wrong_type", f"turn {i} ({name}): content part {k} is {what}, only text is supported{where}")
    if len(reasoning) > 1:
        raise _Reject("wrong_type", f"turn {i} ({name}): {len(reasoning)} reasoning parts; give one")
    return "".join(texts), reasoning[0] if reasoning else None, tuple(calls)


def _conversation(
    record: dict, field: str, keys: TurnKeys, roles: dict[str, MessageRole], drop_blank: bool = False,
    keep_leading: bool = False,
) -> tuple[tuple[Message, ...], dict[str, int]]:
    if field not in record:
        raise _Reject("missing_field", f"no {field!r} field (keys: {_keys(record)})")
    turns = record[field]
    if not isinstance(turns, list):
        raise _Reject("wrong_type", f"{field!r} is {_type_name(turns)}, expected an array")
    if not turns:
        raise _Reject("empty_conversation", f"{field!r} is an empty list")
    return _turn_messages(turns, keys, roles, drop_blank, keep_leading)


def _turn_messages(
    turns: list, keys: TurnKeys, roles: dict[str, MessageRole], drop_blank: bool, keep_leading: bool = False
) -> tuple[tuple[Message, ...], dict[str, int]]:
    """The messages of a list of turns, the turn policies applied (module docstring)."""
    kept, dropped = _drop_turns(_map_roles(turns, keys, roles), keep_leading)
    if drop_blank:
        return _drop_blank_turns(kept, dropped)
    messages = []
    for turn in kept:
        m = _turn_message(turn)
        if _blank_message(m):
            reason = "empty_output" if m.role == "assistant" else "empty_turn"
            text = m.content
            raise _Reject(reason, f"turn {turn[2]} ({turn[3]}) is {'empty' if not text else 'only whitespace'}")
        messages.append(m)
    return _checked(tuple(messages), [t[2] for t in kept]), dropped


# --------------------------------------------------------------------------- tools, reasoning, weights

#: the keys of a plain turn (role and content): a turn with more is looked at for the fields below
_PLAIN_KEYS = 2


def _blank_message(m: Message) -> bool:
    """Whether a message says nothing: a tool result may be empty (the tool returned nothing), an
    assistant message with tool calls has said something."""
    return m.role != "tool" and not m.tool_calls and _blank(m.content)


def _turn_message(turn: _Turn) -> Message:
    """The Message of a kept turn: its content as text, and, where the turn has more keys than role and
    content, its reasoning, tool calls, tool-result fields and training flag (raises _Reject)."""
    role, content, i, name, obj = turn
    call = role == "assistant" and name.lower() in _CALL_ROLES
    # a call's value is the call, and OpenAI's content of a message with calls may be null (or left out)
    calls_only = call or (content is None and role == "assistant" and obj.get("tool_calls"))
    parts: tuple[str | None, tuple[ToolCall, ...]] = (None, ())  # LLaMA-Factory v1's reasoning, tool_call parts
    if calls_only:
        text = ""
    elif type(content) is list:
        text, *rest = _content_parts(content, i, name, role == "assistant")
        parts = tuple(rest)  # type: ignore[assignment]
    else:
        text = _content_text(content, i, name)
    if len(obj) <= _PLAIN_KEYS and not call and not calls_only and parts == (None, ()):
        return Message(role, text)
    obj = _loss_weight(obj, role, i, name)
    trained = _trained(obj, i, name)
    # an explicit "training": true / "weight": 1 (v1's "loss_weight": 1.0) on another role's message overrides the
    # role (Axolotl's message_field_training): its content gets loss under every strategy
    forced = trained and role != "assistant" and (obj.get("weight") is not None or obj.get("training") is not None)
    if role == "assistant":
        calls = _sharegpt_calls(content, i) if call else _openai_calls(obj.get("tool_calls"), i)
        reasoning = obj.get("reasoning_content")
        if reasoning is not None and not isinstance(reasoning, str):
            raise _Reject("wrong_type", f"turn {i} ({name}): 'reasoning_content' is {_type_name(reasoning)}, "
                          "expected a string")
        if parts != (None, ()):
            if (parts[0] is not None and reasoning) or (parts[1] and calls):
                raise _Reject("wrong_type", f"turn {i} ({name}): reasoning or tool calls given both as content parts "
                              "and as 'reasoning_content' / 'tool_calls'")
            reasoning, calls = reasoning or parts[0], calls or parts[1]
        return Message(role, text, reasoning=reasoning or None, tool_calls=calls, trained=trained)
    if role == "tool":
        ids = []
        for key in ("tool_call_id", "name"):
            value = obj.get(key)
            if value is not None and not isinstance(value, str):
                raise _Reject("wrong_type", f"turn {i} ({name}): {key!r} is {_type_name(value)}, expected a string")
            ids.append(value)
        return Message(role, text, tool_call_id=ids[0], name=ids[1], trained=trained, forced=forced)
    return Message(role, text, trained=trained, forced=forced)


def _trained(obj: dict, i: int, name: str) -> bool:
    """False for a turn marked ``"weight": 0`` (OpenAI's fine-tuning format) or ``"training": false``
    (Axolotl's); a weight other than 0 or 1, a flag not a boolean, or the two disagreeing is ``bad_weight``."""
    weight, training = obj.get("weight"), obj.get("training")
    if weight is None and training is None:
        return True
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float) or weight not in (0, 1)):
        raise _Reject("bad_weight", f"turn {i} ({name}): 'weight' is {weight!r}, expected 0 or 1")
    if training is not None and not isinstance(training, bool):
        raise _Reject("bad_weight", f"turn {i} ({name}): 'training' is {_type_name(training)}, expected true or false")
    if weight is not None and training is not None and bool(weight) != training:
        raise _Reject("bad_weight", f"turn {i} ({name}): 'weight' {weight!r} and 'training' {training} disagree")
    return bool(weight) if weight is not None else bool(training)


def _loss_weight(obj: dict, role: str, i: int, name: str) -> dict:
    """``obj``, with LLaMA-Factory v1's ``loss_weight`` read as ``weight`` (``bad_weight`` unless 0 or 1:
    fractional weights are not carried). The weight LLaMA-Factory gives a message of that role anyway (1.0 an
    assistant's, 0.0 any other's) is no flag, so v1 data packs as the same conversation without weights."""
    lw = obj.get("loss_weight")
    if lw is None:
        return obj
    if isinstance(lw, bool) or not isinstance(lw, int | float) or lw not in (0, 1):
        raise _Reject("bad_weight", f"turn {i} ({name}): 'loss_weight' is {lw!r}, expected 0.0 or 1.0 (packer does "
                      "not carry fractional weights)")
    if (lw == 1) == (role == "assistant"):
        return obj
    weight = obj.get("weight")
    if weight is not None and weight != lw:
        raise _Reject("bad_weight", f"turn {i} ({name}): 'weight' {weight!r} and 'loss_weight' {lw!r} disagree")
    return {**obj, "weight": int(lw)}


def _decoded(value: object, reason: str, what: str) -> object:
    """``value``, or the JSON a string ``value`` holds (tool data often comes JSON-encoded); raises _Reject
    ``reason`` naming ``what`` where the string is not JSON."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as e:
        raise _Reject(reason, f"{what} is not JSON ({e})") from None


def _json_object(value: object, what: str) -> dict:
    """``value`` as a JSON object: an object, or a string holding one (raises ``bad_tool_call``)."""
    value = _decoded(value, "bad_tool_call", what)
    if not isinstance(value, dict):
        raise _Reject("bad_tool_call", f"{what} is {_type_name(value)}, expected a JSON object")
    return value


def _tool_call(call: object, where: str) -> ToolCall:
    """One call: OpenAI's ``{"id", "type", "function": {"name", "arguments"}}`` or a flat
    ``{"name", "arguments"}`` (glaive, LLaMA-Factory); ``arguments`` an object or a JSON string of one."""
    if not isinstance(call, dict):
        raise _Reject("bad_tool_call", f"{where} is {_type_name(call)}, expected an object")
    fn = call.get("function", call)
    if not isinstance(fn, dict):
        raise _Reject("bad_tool_call", f"{where}: 'function' is {_type_name(fn)}, expected an object")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _Reject("bad_tool_call", f"{where} has no function name")
    args = fn.get("arguments", {})
    args = _json_object(args, f"{where} ({name}): 'arguments'")
    cid = call.get("id")
    if cid is not None and not isinstance(cid, str):
        raise _Reject("bad_tool_call", f"{where} ({name}): 'id' is {_type_name(cid)}, expected a string")
    return ToolCall(name, args, cid)


def _openai_calls(calls: object, i: int) -> tuple[ToolCall, ...]:
    if calls is None:
        return ()
    if not isinstance(calls, list):
        raise _Reject("bad_tool_call", f"turn {i}: 'tool_calls' is {_type_name(calls)}, expected an array")
    return tuple(_tool_call(c, f"turn {i}: tool call {k}") for k, c in enumerate(calls))


def _sharegpt_calls(value: object, i: int) -> tuple[ToolCall, ...]:
    """A ShareGPT ``function_call`` turn's value: a call (JSON ``{"name", "arguments"}``) or a list of them."""
    value = _decoded(value, "bad_tool_call", f"turn {i} (function_call): the value")
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise _Reject("bad_tool_call", f"turn {i} (function_call): an empty list of calls")
    return tuple(_tool_call(c, f"turn {i} (function_call)" + (f" call {k}" if len(calls) > 1 else ""))
                 for k, c in enumerate(calls))


def _checked(messages: tuple[Message, ...], turns: Sequence[int]) -> tuple[Message, ...]:
    """Checks across messages (raises _Reject; ``turns``: each message's turn number in the record): every
    tool result follows an assistant message with tool calls (other tool results between), and some
    assistant turn is trained (or another message is marked ``"training": true``)."""
    prev: Message | None = None
    at = -1
    untrained = False
    for k, m in enumerate(messages):
        if m.role == "tool":
            if prev is None or not prev.tool_calls:
                after = "no turn" if prev is None else f"turn {turns[at]} ({prev.role})"
                raise _Reject("orphan_tool_result", f"turn {turns[k]} (tool) follows {after}, which makes no tool "
                              "call")
        else:
            prev, at = m, k
        untrained = untrained or not m.trained
    if untrained and not any(m.trained for m in messages if m.role == "assistant") and not any(
            m.forced for m in messages):
        raise _Reject("no_trained_turn", "every assistant turn is marked weight 0 / training false: nothing to "
                      "learn under any strategy but full")
    return messages


def _tools(record: dict) -> tuple[dict, ...]:
    """A record's tool definitions (raises ``bad_tools``): a list of objects, or a JSON string of one
    (glaive's ShareGPT ``tools``); a definition without ``type`` (a bare ``{"name", "description",
    "parameters"}``) is wrapped as ``{"type": "function", "function": ...}``, OpenAI's shape."""
    tools = record.get("tools")
    if tools is None or tools == "":
        return ()
    tools = _decoded(tools, "bad_tools", "'tools'")
    if not isinstance(tools, list):
        raise _Reject("bad_tools", f"'tools' is {_type_name(tools)}, expected an array of tool definitions")
    out = []
    for k, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _Reject("bad_tools", f"tool {k} is {_type_name(tool)}, expected an object")
        if "type" not in tool and "function" not in tool:
            if not isinstance(tool.get("name"), str):
                raise _Reject("bad_tools", f"tool {k} has no 'type' and no 'name' (keys: {_keys(tool)})")
            tool = {"type": "function", "function": tool}
        out.append(tool)
    return tuple(out)


def _parse_sharegpt(
    record: dict, drop_blank: bool = False, keys: TurnKeys = _SHAREGPT_KEYS, keep_leading: bool = False
) -> tuple[tuple[Message, ...], dict[str, int]]:
    """Messages of a ShareGPT record (raises _Reject).

    >>> _parse_sharegpt({"conversations": [{"from": "gpt", "value": "...rest"},
    ...     {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})[1]
    {'leading_assistant': 1}
    """
    messages, dropped = _conversation(record, "conversations", keys, _SHAREGPT_ROLES, drop_blank, keep_leading)
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise _Reject("wrong_type", f"'system' is {_type_name(system)}, expected a string")
    if system and not system.isspace():
        messages = (Message("system", system), *messages)
    return messages, dropped


def _parse_messages(
    record: dict, drop_blank: bool = False, keys: TurnKeys = _MESSAGES_KEYS, keep_leading: bool = False
) -> tuple[tuple[Message, ...], dict[str, int]]:
    """Messages of an OpenAI-style ``messages`` record (raises _Reject).

    >>> _parse_messages({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ...     {"role": "assistant", "content": "Hello"}]})[0][0]
    Message(role='user', content='Hi', input='')
    """
    return _conversation(record, "messages", keys, _MESSAGES_ROLES, drop_blank, keep_leading)


def _parse_prompt_completion(
    record: dict, drop_blank: bool = False, keys: TurnKeys = _MESSAGES_KEYS, keep_leading: bool = False
) -> tuple[tuple[Message, ...], dict[str, int]]:
    """Messages of a TRL prompt-completion record (raises _Reject): two strings (``response`` is taken
    for a missing ``completion``) -> ``user(prompt) assistant(completion)``; two lists of messages
    (conversational) -> the prompt's messages then the completion's, as a ``messages`` record.

    >>> _parse_prompt_completion({"prompt": "Add 2 and 3.", "response": "5"})[0]
    (Message(role='user', content='Add 2 and 3.', input=''), Message(role='assistant', content='5', input=''))
    """
    if "prompt" not in record:
        raise _Reject("missing_field", f"no 'prompt' field (keys: {_keys(record)})")
    name = "completion" if "completion" in record or "response" not in record else "response"
    if name not in record:
        raise _Reject("missing_field", f"no 'completion' (or 'response') field (keys: {_keys(record)})")
    prompt, completion = record["prompt"], record[name]
    if isinstance(prompt, str) and isinstance(completion, str):
        if _blank(completion):
            raise _Reject("empty_output", f"{name!r} is {'empty' if not completion else 'only whitespace'}")
        if _blank(prompt):
            raise _Reject("empty_turn", f"'prompt' is {'empty' if not prompt else 'only whitespace'}")
        return (Message("user", prompt), Message("assistant", completion)), {}
    if isinstance(prompt, list) and isinstance(completion, list):
        if not completion:
            raise _Reject("empty_output", f"{name!r} is an empty list")
        return _turn_messages(prompt + completion, keys, _MESSAGES_ROLES, drop_blank, keep_leading)
    raise _Reject("wrong_type", f"'prompt' is {_type_name(prompt)} and {name!r} {_type_name(completion)}: expected "
                  "two strings, or two arrays of messages (conversational)")


def _parse_text(record: dict, drop_blank: bool = False) -> tuple[tuple[Message, ...], dict[str, int]]:
    """The one message of a plain-text document (raises _Reject): all of it is what the model learns
    (the template renders it without a chat template, followed by the EOS token).

    >>> _parse_text({"text": "The cat sat."})[0]
    (Message(role='assistant', content='The cat sat.', input=''),)
    """
    text = record.get("text")
    if not isinstance(text, str):
        if "text" not in record:
            raise _Reject("missing_field", f"no 'text' field (keys: {_keys(record)})")
        raise _Reject("wrong_type", f"'text' is {_type_name(text)}, expected a string")
    if _blank(text):
        raise _Reject("empty_output", f"'text' is {'empty' if not text else 'only whitespace'}")
    return (Message("assistant", text),), {}


_Parser = Callable[[dict, bool], tuple[tuple[Message, ...], dict[str, int]]]
_PARSERS: dict[str, _Parser] = {
    "alpaca": _parse_alpaca,
    "sharegpt": _parse_sharegpt,
    "messages": _parse_messages,
    "prompt_completion": _parse_prompt_completion,
    "text": _parse_text,
}
#: the formats whose records hold turns (the column map's ``role`` / ``content`` apply to them)
_TURN_FORMATS = ("sharegpt", "messages", "prompt_completion")


# --------------------------------------------------------------------------- the column map

#: the fields of the record formats a column map may name (targets): top-level ones, and the keys of a turn
TOP_FIELDS: tuple[str, ...] = (
    "instruction", "input", "output", "system", "conversations", "messages", "prompt", "completion", "text", "tools",
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
            for fmt, keys in (("sharegpt", _SHAREGPT_KEYS), ("messages", _MESSAGES_KEYS),
                              ("prompt_completion", _MESSAGES_KEYS)):
                role = (turn["role"],) * 2 if "role" in turn else keys.role
                content = (turn["content"],) * 2 if "content" in turn else keys.content
                mapped = TurnKeys(role, content, f", which --columns {note} names")
                self.turn_parsers[fmt] = functools.partial(_PARSERS[fmt], keys=mapped)  # type: ignore[assignment]

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
        blank_turns: str = "reject", columns: object = None, piece: Piece | None = None,
        file_format: str | None = None, leading_assistant: str = "drop",
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
        self._parsers = {**_PARSERS, **self._remap.turn_parsers} if self._remap else _PARSERS
        if blank_turns not in BLANK_TURN_POLICIES:
            raise BuildError(f"unknown --blank-turns {blank_turns!r}; choose {'|'.join(BLANK_TURN_POLICIES)}")
        if leading_assistant not in LEADING_ASSISTANT_POLICIES:
            raise BuildError(f"unknown --leading-assistant {leading_assistant!r}; choose "
                             f"{'|'.join(LEADING_ASSISTANT_POLICIES)}")
        #: an assistant turn opening a conversation: "drop" it (counted) or "keep" it (trained)
        self.leading_assistant = leading_assistant
        if leading_assistant == "keep":
            self._parsers = {fmt: functools.partial(p, keep_leading=True) if fmt in _TURN_FORMATS else p
                             for fmt, p in self._parsers.items()}  # type: ignore[misc]
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

    def __next__(self) -> Conversation | Rejection:
        return next(self._items)

    def _all_files(self) -> Iterator[Conversation | Rejection]:
        for path, size in zip(self.paths, self._sizes, strict=True):
            values = FileValues(path) if self.piece is None else FileValues(path, piece=self.piece)
            self._at = (self._at[0], values, size)
            yield from self._one_file(path, values)
            self._at = (self._at[0] + size, None, 0)

    def _one_file(self, path: str, values: FileValues) -> Iterator[Conversation | Rejection]:
        fmt: str | None = self._file_format
        pending: list[object] = []  # values before the file's format is known
        count = values.piece.first_record
        for value in values if self._remap is None else map(self._remap, values):
            if fmt is None:
                fmt = _format_of(value, self.fmt, path)
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
        self.inputs.append(InputSummary(path, values.sha256, fmt, count - values.piece.first_record))

    def _record(self, value: object, fmt: str, path: str, index: int) -> Conversation | Rejection:
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
            messages, dropped = self._parsers[fmt](value, self._drop_blank)
            tools = _tools(value) if "tools" in value and fmt in _TOOL_FORMATS else ()
        except _Reject as r:
            return Rejection(source, r.reason, r.detail)
        for i, m in enumerate(messages):
            for value in m.texts():
                # JSON's \ud800 escapes decode to lone surrogates, which have no UTF-8 form:
                # the tokenizer cannot take them
                bad = None if value.isascii() else _SURROGATE_RE.search(value)
                if bad is not None:
                    return Rejection(source, "invalid_utf8",
                                     f"turn {i} ({m.role}) holds a lone surrogate {bad.group(0)!a} "
                                     f"at character {bad.start()}, which has no UTF-8 form")
        if tools:
            bad = _SURROGATE_RE.search(json.dumps(tools, ensure_ascii=False))
            if bad is not None:
                return Rejection(source, "invalid_utf8", f"'tools' holds a lone surrogate {bad.group(0)!a}, which "
                                 "has no UTF-8 form")
        return Conversation(source, fmt, messages, dropped, tools)  # type: ignore[arg-type]


_SURROGATE_RE = re.compile("[\ud800-\udfff]")
#: the record formats whose records may carry ``tools``
_TOOL_FORMATS = frozenset({"sharegpt", "messages", "prompt_completion"})


def _format_of(value: object, fmt: str | None, path: str) -> str | None:
    """The format of a file whose next value is ``value``, if that value settles it (``fmt`` forces it);
    BuildError where it is a preference record (:func:`_refuse_preference`)."""
    if isinstance(value, BadValue):
        return None
    found = fmt or detect_format(value)  # type: ignore[arg-type]
    if found is not None:
        _refuse_preference(path, value)  # type: ignore[arg-type]
    return found


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


#: keys of preference records: DPO pairs (TRL's, LLaMA-Factory's ranking and v1 shapes) and KTO's label
_PREFERENCE_KEYS = ("chosen", "rejected", "chosen_messages", "rejected_messages")


def _refuse_preference(path: str, record: dict) -> None:
    """BuildError for a file of preference records: read as SFT, a DPO file would train on its prompts (or on
    both answers) and a KTO file on its undesirable completions, silently wrong training."""
    keys = [k for k in _PREFERENCE_KEYS if k in record]
    if not keys and isinstance(record.get("label"), bool):
        keys = ["label"]
    if keys:
        raise BuildError(f"{path}: its first record is preference data (keys {', '.join(keys)}: a DPO pair or a "
                         "KTO label), which packer does not pack yet; read as SFT data it would train on rejected "
                         "or undesirable answers. Remove those keys to train on the conversations as SFT data")


def _first_format(path: str, fmt: str | None, remap: _ColumnMap | None = None) -> str:
    """The format the first values of a file settle, read as RecordReader reads them (see check_inputs)."""
    values = FileValues(path, head_only=True)
    pending: list[object] = []
    raw = iter(values)
    items = raw if remap is None else map(remap, raw)
    try:
        for value in items:
            found = _format_of(value, fmt, path)
            if found is not None:
                return found
            pending.append(value)
            if len(pending) >= _CHECK_RECORDS or values.consumed.n > _CHECK_BYTES:
                break
    finally:
        raw.close()  # closes the file
    raise BuildError(_undetected(path, pending, values.empty))
