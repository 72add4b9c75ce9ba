"""Record formats' records -> messages: role maps, field checks and the turn policies.

:class:`~packer.read.formats.RecordReader` settles a file's record format; each of
its records then goes through that format's parser here (:data:`_PARSERS`),
which checks its fields' types, maps its roles onto system / user / assistant
(and tool), applies the turn policies below and gives the record's messages
with the turns it dropped counted, or raises :class:`~packer.read.turnfields._Reject`
with the reason. One turn's fields (content parts, tool calls, reasoning,
weights) are :mod:`packer.read.turnfields`'.

    >>> _parse_alpaca({"instruction": "Add 2 and 3.", "output": "5"})[0][1]
    Message(role='assistant', content='5', input='')


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
        tokenizer's EOS token (:meth:`packer.tokens.templates.ChatTemplate.render`).
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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .records import Message, MessageRole
from .turnfields import _blank, _blank_message, _checked, _keys, _Reject, _Turn, _turn_message, _type_name

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


#: a record's messages, each one's turn number in the record, and the turns dropped (reason -> count)
_Numbered = tuple[tuple[Message, ...], tuple[int, ...], dict[str, int]]

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



def plain_alpaca(record: object) -> tuple[str, str, str] | None:
    """(instruction, input, output) of an Alpaca record that :func:`_parse_alpaca` reads as exactly a user
    message and an assistant message, rejecting nothing: every field a ``str`` (``input`` may be absent),
    ``system`` absent or blank, an output and an instruction or input that are not blank. None for any other
    record, which is then read the usual way (:class:`packer.read.records.FlatRun` runs are made of these).

    >>> plain_alpaca({"instruction": "Add", "output": "5"}), plain_alpaca({"instruction": "Add", "output": " "})
    (('Add', '', '5'), None)
    """
    if type(record) is not dict:
        return None
    get = record.get
    instruction, output, inp, system = get("instruction"), get("output"), get("input"), get("system")
    if type(instruction) is not str or type(output) is not str or not output or output.isspace():
        return None
    if inp is None:
        inp = ""
    elif type(inp) is not str:
        return None
    if system is not None and (type(system) is not str or (system and not system.isspace())):
        return None
    if (not instruction or instruction.isspace()) and (not inp or inp.isspace()):
        return None
    return instruction, inp, output

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


def _drop_blank_turns(kept: list[_Turn], dropped: dict[str, int]) -> _Numbered:
    """The messages of ``kept`` under ``--blank-turns drop`` (module docstring), each one's turn number, and
    ``dropped`` counted on.

    roles ``user assistant user("") assistant user assistant("")`` -> ``user assistant``,
    ``{"blank_turn": 4}``; ``user user(" ") assistant`` -> ``user assistant``, ``{"blank_turn": 1}``
    """
    msgs = [_turn_message(t) for t in kept]
    blank = [_blank_message(m) for m in msgs]
    if not any(blank):
        numbers = tuple(t[2] for t in kept)
        return _checked(tuple(msgs), numbers), numbers, dropped
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
    numbers = tuple(kept[k][2] for k in left[: last + 1])
    return _checked(tuple(msgs[k] for k in left[: last + 1]), numbers), numbers, dropped


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
    messages, _, dropped = _numbered_messages(turns, keys, roles, drop_blank, keep_leading)
    return messages, dropped


def _numbered_messages(
    turns: list, keys: TurnKeys, roles: dict[str, MessageRole], drop_blank: bool, keep_leading: bool = False
) -> _Numbered:
    """:func:`_turn_messages` with each message's turn number (its index in ``turns``): a preference record's
    reader tells its prompt's messages from a side's by them."""
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
    numbers = tuple(t[2] for t in kept)
    return _checked(tuple(messages), numbers), numbers, dropped



def _parse_sharegpt(
    record: dict, drop_blank: bool = False, keys: TurnKeys = _SHAREGPT_KEYS, keep_leading: bool = False
) -> tuple[tuple[Message, ...], dict[str, int]]:
    """Messages of a ShareGPT record (raises _Reject).

    >>> _parse_sharegpt({"conversations": [{"from": "gpt", "value": "...rest"},
    ...     {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})[1]
    {'leading_assistant': 1}
    """
    messages, dropped = _conversation(record, "conversations", keys, _SHAREGPT_ROLES, drop_blank, keep_leading)
    return _system_message(record) + messages, dropped


def _system_message(record: dict) -> tuple[Message, ...]:
    """A record's top-level ``system`` (ShareGPT's) as the message that opens its conversation: () for none or
    a blank one; not a string -> ``wrong_type``."""
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise _Reject("wrong_type", f"'system' is {_type_name(system)}, expected a string")
    return (Message("system", system),) if system and not system.isspace() else ()


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
