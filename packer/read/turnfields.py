"""One turn of a conversation record -> one :class:`~packer.read.records.Message`.

:mod:`packer.read.normalise` maps a record's turns onto roles and applies the turn
policies; what it keeps, this module turns into messages: a turn's content as
text (a string, or OpenAI's / LLaMA-Factory v1's typed parts joined), its
reasoning, its tool calls (OpenAI's ``tool_calls``, a ShareGPT ``function_call``
turn's value), a tool result's ``tool_call_id`` / ``name``, and its training
flag (``weight``, ``training``, v1's ``loss_weight``). It also holds the checks
across the messages of a record (every tool result answers a call, something is
trained), a record's tool definitions (``tools``), and :class:`_Reject`, which
every record parser raises and :class:`~packer.read.formats.RecordReader` turns into
a :class:`~packer.read.records.Rejection`.

    >>> m = _turn_message(("assistant", None, 1, "assistant",
    ...     {"role": "assistant", "content": None,
    ...      "tool_calls": [{"function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]}))
    >>> m.content, m.tool_calls
    ('', (ToolCall(name='add', arguments={'a': 2, 'b': 3}, id=None),))
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .records import Message, MessageRole, ToolCall

#: ShareGPT turn roles whose value is a function call (JSON ``{"name", "arguments"}``, or a list of them)
_CALL_ROLES = frozenset({"function_call"})


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



#: a turn after role mapping: (role, raw content, turn number, role name as written, the turn's object)
_Turn = tuple[MessageRole, object, int, str, dict]



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

