"""Preference records -> the two sides of a pair (DPO and its kin), and KTO's labelled conversations.

:class:`~packer.read.formats.RecordReader` settles a file's record format; a record of a pair format goes
through its parser here (:data:`PAIR_PARSERS`), which gives the messages of its two whole conversations,
``prompt + chosen`` and ``prompt + rejected``, and how many leading messages are the prompt; the reader makes
them a :class:`~packer.read.records.Pair`. A KTO record's parser (:data:`KTO_PARSERS`) checks its label and
gives its messages as the SFT parser of the same shape does. Each side is parsed by
:mod:`packer.read.normalise`, as the SFT record of the same shape would be, so every check and turn policy of
SFT data holds for each side; a side's rejection names the side (``chosen: turn 2 (assistant) is only
whitespace``; the turns of an explicit prompt and a side are numbered across both).

    >>> chosen, rejected, prompt, _ = _parse_preference({"prompt": "2+2?", "chosen": "4", "rejected": "5"})
    >>> [(m.role, m.content) for m in chosen], [m.content for m in rejected], prompt
    ([('user', '2+2?'), ('assistant', '4')], ['2+2?', '5'], 1)

Record formats
    preference (TRL's explicit prompt)
        ``prompt``, ``chosen``, ``rejected``: each a string or a list of OpenAI messages (a string prompt is
        a user message, a string side an assistant message, as in ``prompt_completion``); a prompt list may
        hold a system message and earlier turns. ``tools`` as in ``messages``.
    preference_implicit (TRL's implicit prompt)
        ``chosen``, ``rejected``: two whole conversations (lists of messages); the prompt is their longest
        common leading run of messages (compared as parsed), and each side's rest must start with an
        assistant message, else ``different_prompts``.
    ranking (LLaMA-Factory's ShareGPT ranking)
        ``conversations`` (ShareGPT turns, the prompt), ``chosen`` / ``rejected`` (one turn
        ``{"from": "gpt", "value"}``, or a list of turns), optional ``system`` and ``tools``.
    ranking_messages (LLaMA-Factory v1)
        ``chosen_messages``, ``rejected_messages``: two whole conversations (v1's typed content parts and
        ``loss_weight`` as in ``messages``), their prompt found as in ``preference_implicit``.
    kto (TRL's unpaired preference)
        ``prompt``, ``completion``, ``label``: a ``prompt_completion`` record with a boolean label.
    kto_messages (LLaMA-Factory's KTO)
        ``messages``, ``label``: a ``messages`` record with a boolean label (ShareGPT's ``from`` / ``value``
        and roles accepted too; an optional ``system``).

Rejections on top of SFT's: a side whose completion equals the other's -> ``identical_sides``; implicit sides
that share no leading message, or whose rest does not start with an assistant message -> ``different_prompts``
(naming the message where they part); a label that is not a boolean -> ``bad_label``; a side with nothing after
the prompt or not starting with an assistant message -> ``no_assistant_turn``.
"""

from __future__ import annotations

from collections.abc import Callable

from .normalise import (
    _MESSAGES_KEYS,
    _MESSAGES_ROLES,
    _SHAREGPT_KEYS,
    _SHAREGPT_ROLES,
    TurnKeys,
    _conversation,
    _Numbered,
    _numbered_messages,
    _parse_prompt_completion,
    _system_message,
)
from .records import Message, MessageRole
from .turnfields import _blank, _keys, _Reject, _type_name

#: a pair record's sides: chosen's messages, rejected's, how many leading messages of both are the prompt,
#: and each side's dropped turns (reason -> count)
_Sides = tuple[tuple[Message, ...], tuple[Message, ...], int, tuple[dict[str, int], dict[str, int]]]
#: KTO's LLaMA-Factory records come as OpenAI messages or as ShareGPT turns under ``messages``
_KTO_ROLES: dict[str, MessageRole] = {**_SHAREGPT_ROLES, **_MESSAGES_ROLES}


def _field(record: dict, name: str) -> object:
    if name not in record:
        raise _Reject("missing_field", f"no {name!r} field (keys: {_keys(record)})")
    return record[name]


def _turns(value: object, name: str, role: str, keys: TurnKeys) -> list:
    """A prompt or a side of an explicit-prompt record as a list of turns: a string is one turn of ``role``
    (a blank one is rejected as SFT's prompt-completion strings are), a turn object one turn."""
    if isinstance(value, str):
        if _blank(value):
            reason = "empty_output" if role == "assistant" else "empty_turn"
            raise _Reject(reason, f"{name!r} is {'empty' if not value else 'only whitespace'}")
        return [{keys.role[0]: role, keys.content[0]: value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        if not value:
            raise _Reject("empty_output" if role == "assistant" else "empty_conversation", f"{name!r} is an empty list")
        return value
    raise _Reject("wrong_type", f"{name!r} is {_type_name(value)}, expected a string, a message or an array of "
                  "messages")


def _side(turns: list, name: str, keys: TurnKeys, roles: dict[str, MessageRole], drop_blank: bool,
          keep_leading: bool) -> _Numbered:
    """One side's messages, parsed as an SFT conversation; its rejection names the side."""
    try:
        return _numbered_messages(turns, keys, roles, drop_blank, keep_leading)
    except _Reject as r:
        raise _Reject(r.reason, f"{name}: {r.detail}") from None


def _explicit(prompt: list, chosen: list, rejected: list, keys: TurnKeys, roles: dict[str, MessageRole],
              drop_blank: bool, keep_leading: bool) -> _Sides:
    """The sides of a record that gives its prompt: each is the prompt's turns then its own, parsed whole (so
    the turn policies see the conversation the model sees); the prompt is the messages from prompt turns."""
    n = len(prompt)
    cm, cn, cd = _side(prompt + chosen, "chosen", keys, roles, drop_blank, keep_leading)
    rm, rn, rd = _side(prompt + rejected, "rejected", keys, roles, drop_blank, keep_leading)
    p = sum(k < n for k in cn)
    if sum(k < n for k in rn) != p or cm[:p] != rm[:p]:
        # only --blank-turns drop does this: a blank last prompt turn goes with the answer of one side only
        raise _Reject("different_prompts", "the prompt is not the same on both sides once blank turns and the "
                      "turns answering them are dropped (--blank-turns drop)")
    for name, m, numbers in (("chosen", cm, cn), ("rejected", rm, rn)):
        if len(m) == p:
            raise _Reject("no_assistant_turn", f"{name!r} leaves no assistant message after the prompt")
        if m[p].role != "assistant":
            raise _Reject("no_assistant_turn", f"{name!r} starts with a {m[p].role} message (turn {numbers[p]}), not "
                          "the assistant's answer to the prompt")
    if cm[p:] == rm[p:]:
        k = len(cm) - p
        raise _Reject("identical_sides", f"the chosen and rejected completions are the same ({k} message"
                      f"{'s' * (k > 1)})")
    return cm, rm, p, (cd, rd)


def _implicit(record: dict, names: tuple[str, str], keys: TurnKeys, drop_blank: bool, keep_leading: bool) -> _Sides:
    """The sides of a record of two whole conversations; the prompt is their longest common leading run of
    messages, after which each must go on with an assistant message (else ``different_prompts``)."""
    sides = []
    for name in names:
        turns = _field(record, name)
        if not isinstance(turns, list):
            raise _Reject("wrong_type", f"{name!r} is {_type_name(turns)}, expected an array of messages")
        if not turns:
            raise _Reject("empty_conversation", f"{name!r} is an empty list")
        sides.append(_side(turns, name, keys, _MESSAGES_ROLES, drop_blank, keep_leading))
    (cm, cn, cd), (rm, rn, rd) = sides
    if cm == rm:
        raise _Reject("identical_sides", f"{names[0]!r} and {names[1]!r} are the same conversation")
    p = 0
    while p < len(cm) and p < len(rm) and cm[p] == rm[p]:
        p += 1
    if p == 0:
        why = "they share no prompt"
    elif p == len(cm) or p == len(rm):
        why = f"{names[p == len(rm)]!r} has nothing after the messages both share"
    elif cm[p].role != "assistant" or rm[p].role != "assistant":
        why = "after the prompt both share, each must go on with an assistant message"
    else:
        return cm, rm, p, (cd, rd)

    def at(m: tuple[Message, ...], numbers: tuple[int, ...]) -> str:
        return f"turn {numbers[p]} ({m[p].role})" if p < len(m) else "its end"

    raise _Reject("different_prompts", f"the sides differ from message {p} on ({names[0]} {at(cm, cn)}, "
                  f"{names[1]} {at(rm, rn)}): {why}")


def _parse_preference(record: dict, drop_blank: bool = False, keys: TurnKeys = _MESSAGES_KEYS,
                      keep_leading: bool = False) -> _Sides:
    """The sides of a TRL explicit-prompt record (raises _Reject).

    >>> _parse_preference({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    ...     "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": "Go away"})[2]
    2
    """
    for name in ("prompt", "chosen", "rejected"):
        _field(record, name)
    prompt = _turns(record["prompt"], "prompt", "user", keys)
    chosen = _turns(record["chosen"], "chosen", "assistant", keys)
    rejected = _turns(record["rejected"], "rejected", "assistant", keys)
    return _explicit(prompt, chosen, rejected, keys, _MESSAGES_ROLES, drop_blank, keep_leading)


def _parse_implicit(record: dict, drop_blank: bool = False, keys: TurnKeys = _MESSAGES_KEYS,
                    keep_leading: bool = False) -> _Sides:
    """The sides of a TRL implicit-prompt record (raises _Reject).

    >>> turn = lambda role, text: {"role": role, "content": text}
    >>> _parse_implicit({"chosen": [turn("user", "2+2?"), turn("assistant", "4")],
    ...                  "rejected": [turn("user", "2+2?"), turn("assistant", "5")]})[2]
    1
    """
    return _implicit(record, ("chosen", "rejected"), keys, drop_blank, keep_leading)


def _parse_ranking(record: dict, drop_blank: bool = False, keys: TurnKeys = _SHAREGPT_KEYS,
                   keep_leading: bool = False) -> _Sides:
    """The sides of a LLaMA-Factory ShareGPT ranking record (raises _Reject); its ``system`` opens both.

    >>> _parse_ranking({"conversations": [{"from": "human", "value": "2+2?"}], "system": "Be brief.",
    ...     "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}})[2]
    2
    """
    prompt = _field(record, "conversations")
    if not isinstance(prompt, list):
        raise _Reject("wrong_type", f"'conversations' is {_type_name(prompt)}, expected an array")
    if not prompt:
        raise _Reject("empty_conversation", "'conversations' is an empty list")
    for name in ("chosen", "rejected"):
        _field(record, name)
    chosen = _turns(record["chosen"], "chosen", "assistant", keys)
    rejected = _turns(record["rejected"], "rejected", "assistant", keys)
    cm, rm, p, dropped = _explicit(prompt, chosen, rejected, keys, _SHAREGPT_ROLES, drop_blank, keep_leading)
    system = _system_message(record)
    return system + cm, system + rm, p + len(system), dropped


def _parse_ranking_messages(record: dict, drop_blank: bool = False, keys: TurnKeys = _MESSAGES_KEYS,
                            keep_leading: bool = False) -> _Sides:
    """The sides of a LLaMA-Factory v1 ``chosen_messages`` / ``rejected_messages`` record (raises _Reject)."""
    return _implicit(record, ("chosen_messages", "rejected_messages"), keys, drop_blank, keep_leading)


def _label(record: dict) -> bool:
    """A KTO record's label (raises ``missing_field`` / ``bad_label``)."""
    label = _field(record, "label")
    if not isinstance(label, bool):
        shown = f" ({label!r:.40})" if isinstance(label, int | float | str) else ""
        raise _Reject("bad_label", f"'label' is {_type_name(label)}{shown}, expected true (desirable) or false "
                      "(undesirable); --format with an SFT format reads the file as SFT data")
    return label


def _parse_kto(record: dict, drop_blank: bool = False, keys: TurnKeys = _MESSAGES_KEYS,
               keep_leading: bool = False) -> tuple[tuple[Message, ...], dict[str, int]]:
    """Messages of a TRL KTO record, a labelled prompt-completion record (raises _Reject).

    >>> _parse_kto({"prompt": "2+2?", "completion": "5", "label": False})[0][1]
    Message(role='assistant', content='5', input='')
    """
    _label(record)
    return _parse_prompt_completion(record, drop_blank, keys, keep_leading)


def _parse_kto_messages(record: dict, drop_blank: bool = False, keys: TurnKeys = _MESSAGES_KEYS,
                        keep_leading: bool = False) -> tuple[tuple[Message, ...], dict[str, int]]:
    """Messages of a LLaMA-Factory KTO record, a labelled ``messages`` record (raises _Reject)."""
    _label(record)
    messages, dropped = _conversation(record, "messages", keys, _KTO_ROLES, drop_blank, keep_leading)
    return _system_message(record) + messages, dropped


PAIR_PARSERS: dict[str, Callable[..., _Sides]] = {
    "preference": _parse_preference,
    "preference_implicit": _parse_implicit,
    "ranking": _parse_ranking,
    "ranking_messages": _parse_ranking_messages,
}
KTO_PARSERS: dict[str, Callable[..., tuple[tuple[Message, ...], dict[str, int]]]] = {
    "kto": _parse_kto,
    "kto_messages": _parse_kto_messages,
}
#: each preference format's turn keys (the column map's ``role`` / ``content`` replace them)
TURN_KEYS: dict[str, TurnKeys] = {
    "preference": _MESSAGES_KEYS, "preference_implicit": _MESSAGES_KEYS, "ranking": _SHAREGPT_KEYS,
    "ranking_messages": _MESSAGES_KEYS, "kto": _MESSAGES_KEYS, "kto_messages": _MESSAGES_KEYS,
}


def preference_format(record: dict) -> str | None:
    """The preference format a record's keys say it is in, or None: a pair by ``chosen`` / ``rejected`` (or
    v1's ``chosen_messages`` / ``rejected_messages``), KTO by a ``label`` next to ``messages`` or ``prompt`` +
    ``completion``. Checked before the SFT formats: a ranking record has ``conversations`` too.

    >>> preference_format({"prompt": "2+2?", "chosen": "4", "rejected": "5"})
    'preference'
    >>> preference_format({"messages": [], "label": True}), preference_format({"messages": []})
    ('kto_messages', None)
    """
    if "chosen_messages" in record or "rejected_messages" in record:
        return "ranking_messages"
    if "chosen" in record or "rejected" in record:
        if "conversations" in record:
            return "ranking"
        return "preference" if "prompt" in record else "preference_implicit"
    if "label" in record:
        if "messages" in record:
            return "kto_messages"
        if "prompt" in record and "completion" in record:
            return "kto"
    return None
