"""Normalised records: what readers produce and templates consume.

A reader turns each input record into either a :class:`Conversation` or a
:class:`Rejection`. Both carry where the record came from, so every message
about it can name the file and the record number.

    {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
    -> Conversation(doc_id=0, source="data.json", index=0, kind="alpaca",
         messages=(Message("user", "Add 2 and 3."), Message("assistant", "5")))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

MessageRole = Literal["system", "user", "assistant", "tool"]

#: Rejection reason codes (stable: they appear in manifests and rejected.jsonl).
REASONS: dict[str, str] = {
    "malformed_json": "the record is not valid JSON",
    "invalid_utf8": "the record is not valid UTF-8",
    "not_an_object": "the record is not a JSON object",
    "format_mismatch": "the record is of another format than its file",
    "missing_field": "a required field is missing",
    "wrong_type": "a field has the wrong type",
    "empty_output": "the output / assistant content is empty or whitespace",
    "empty_turn": "a turn's content is empty or whitespace",
    "empty_conversation": "the conversation has no turns",
    "unknown_role": "a turn has a role name packer does not know",
    "no_assistant_turn": "the conversation has no assistant turn to learn from",
    "special_token_in_content": "message content contains a tokenizer control token",
    "template_error": "the chat template refused the conversation",
    "overlong": "longer than seq_len (with --overlong drop)",
    "overlong_no_loss": "truncated to seq_len, nothing of the response was left",
    "duplicate": "the same conversation as an earlier record (with --dedupe)",
    "bad_tool_call": "a tool call has no function name, or arguments that are not a JSON object",
    "bad_tools": "the tool definitions are not a list of objects (or a JSON string of one)",
    "orphan_tool_result": "a tool result follows no assistant message with tool calls",
    "bad_weight": "a message's weight is not 0 or 1, or its training flag not a boolean",
    "no_trained_turn": "every assistant turn is marked untrained (weight 0 / training false)",
    "identical_sides": "a preference pair whose chosen and rejected completions are the same",
    "different_prompts": "a preference pair whose two sides do not share their prompt (implicit-prompt format)",
    "bad_label": "a KTO record's label is not a boolean",
}
#: a record a mixture (``--mix``) used 0 times: not a rejection (not in rejected.jsonl), counted on its own
UNSAMPLED = "unsampled"
#: the values of documents.arrow's ``status`` column, coded in a build by their place here
#: ("" only while a record is not decided yet)
STATUSES: tuple[str, ...] = ("", "packed", "truncated", *REASONS, UNSAMPLED)
STATUS_CODE: dict[str, int] = {name: code for code, name in enumerate(STATUSES)}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call of an assistant message, as chat templates get it (OpenAI's shape, the
    ``arguments`` a JSON object, parsed where the record held a JSON string)::

        {"type": "function", "id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    """

    name: str
    arguments: dict
    id: str | None = None

    def as_dict(self) -> dict:
        out: dict = {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        if self.id is not None:
            out["id"] = self.id
        return out


# not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, 3-4x slower, and
# readers make one per turn; treat it as read-only all the same
@dataclass(slots=True)
class Message:
    """One turn. ``input`` is Alpaca's ``input`` field, set only on the user
    message of Alpaca records (templates render it with the ``input`` role).

    ``reasoning`` is an assistant's ``reasoning_content`` (None: none given); ``tool_calls`` an
    assistant's function calls; ``tool_call_id`` / ``name`` a ``tool`` message's (None: not given);
    ``trained`` is False for a message marked ``"weight": 0`` or ``"training": false``, whose tokens get
    no loss under any strategy but ``full``. ``forced`` is True for a non-assistant message marked
    ``"training": true`` / ``"weight": 1``: the flag overrides the role (Axolotl's
    ``message_field_training``), so its content has loss under every strategy.
    """

    role: MessageRole
    content: str
    input: str = ""
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    trained: bool = True
    forced: bool = False

    @property
    def plain(self) -> bool:
        """No reasoning, no tool calls, not a tool result: the text is ``content`` (and ``input``) alone."""
        return self.reasoning is None and not self.tool_calls and self.role != "tool"

    def texts(self) -> tuple[str, ...]:
        """Every text of the message a template may render (for the checks on what content may hold)."""
        if self.plain:
            return (self.content, self.input)
        out = [self.content, self.input, self.reasoning or "", self.tool_call_id or "", self.name or ""]
        for c in self.tool_calls:
            out += [c.name, c.id or "", json.dumps(c.arguments, ensure_ascii=False)]
        return tuple(out)

    def __repr__(self) -> str:
        # the fields a plain turn has, then only those of the others that are set
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in _DEFAULTS if getattr(self, k) != _DEFAULTS[k])
        return f"Message(role={self.role!r}, content={self.content!r}, input={self.input!r}{extra})"


_DEFAULTS = {"reasoning": None, "tool_calls": (), "tool_call_id": None, "name": None, "trained": True,
             "forced": False}


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from: ``doc_id`` counts records across all inputs
    in the order given; ``index`` is the record's position in its file."""

    doc_id: int
    path: str
    index: int

    def where(self) -> str:
        return f"{self.path}: record {self.index}"


@dataclass(frozen=True, slots=True)
class Conversation:
    source: Source
    #: the record format; ``"text"`` is a plain document (one assistant message, rendered without a chat
    #: template: :meth:`packer.tokens.templates.ChatTemplate.render`)
    #: (a side of a :class:`Pair` has its pair's format)
    kind: Literal["alpaca", "sharegpt", "messages", "prompt_completion", "text", "kto", "kto_messages", "preference",
                  "preference_implicit", "ranking", "ranking_messages"]
    messages: tuple[Message, ...]
    #: turns a documented policy dropped (e.g. leading assistant turns): reason -> count
    dropped_turns: dict[str, int] = field(default_factory=dict)
    #: the tool definitions the record offers the model (OpenAI's ``tools``: a tuple of JSON objects,
    #: rendered by the template into the prompt with the ``system`` role); () for none
    tools: tuple[dict, ...] = ()
    #: a KTO record's label (True: desirable, False: undesirable); None for every other record
    label: bool | None = None


@dataclass(frozen=True, slots=True)
class FlatRun:
    """Consecutive plain Alpaca records of one file, as columns: what :class:`~packer.read.formats.RecordReader`
    gives with ``flat=True`` for a run of records that each read as exactly a user message (instruction and
    input) and an assistant message (output), with nothing to reject, drop or warn about, so that a build can
    take them a batch at a time (issue 28: :mod:`packer.pipeline.flat`). Record ``k`` is
    :meth:`conversation` ``(k)``, the Conversation the reader gives without ``flat``.

        {"instruction": "Add 2 and 3.", "input": "", "output": "5"}, {"instruction": "Hi", "output": "Hello"}
        -> FlatRun(path="data.json", doc_id=0, index=0, instructions=["Add 2 and 3.", "Hi"], inputs=["", ""],
                   outputs=["5", "Hello"])
    """

    path: str
    #: the doc_id and the index in its file of the run's first record (the others follow one by one)
    doc_id: int
    index: int
    instructions: list[str]
    #: "" where the record has none
    inputs: list[str]
    outputs: list[str]

    def __len__(self) -> int:
        return len(self.outputs)

    def conversation(self, k: int, doc_id: int | None = None) -> Conversation:
        """Record ``k`` of the run as a Conversation (``doc_id``: another than the reader's, a part's)."""
        source = Source(self.doc_id + k if doc_id is None else doc_id, self.path, self.index + k)
        return Conversation(source, "alpaca", (Message("user", self.instructions[k], self.inputs[k]),
                                               Message("assistant", self.outputs[k])))


#: record formats of preference pairs (:class:`Pair`) and of KTO's labelled completions (a :class:`Conversation`
#: with a ``label``); every other format is supervised fine-tuning data
PAIR_FORMATS: tuple[str, ...] = ("preference", "preference_implicit", "ranking", "ranking_messages")
KTO_FORMATS: tuple[str, ...] = ("kto", "kto_messages")


@dataclass(frozen=True, slots=True)
class Pair:
    """A preference pair (DPO and its kin): one prompt, a chosen and a rejected completion, kept as the two
    whole conversations the model sees, ``prompt + chosen`` and ``prompt + rejected``; their first ``prompt``
    messages are the same (the prompt), the rest of each is its completion (an assistant message first).

        {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "assistant", "content": "5"}]}
        -> Pair(source, kind="preference", prompt=1,
                chosen=Conversation(..., messages=(Message("user", "2+2?"), Message("assistant", "4"))),
                rejected=Conversation(..., messages=(Message("user", "2+2?"), Message("assistant", "5"))))

    The build shares the longest common prefix of the two sides' *tokens*, not of these messages: the prompt
    here only says which messages the record gave as its prompt.
    """

    source: Source
    kind: Literal["preference", "preference_implicit", "ranking", "ranking_messages"]
    chosen: Conversation
    rejected: Conversation
    #: how many leading messages of both sides are the prompt
    prompt: int


@dataclass(frozen=True, slots=True)
class Rejection:
    source: Source
    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}")

    def message(self) -> str:
        return f"{self.source.where()}: {self.reason}: {self.detail}"


class BuildError(Exception):
    """A failure of the whole build, with a one-line message for the user."""
