"""Normalised records: what readers produce and templates consume.

A reader turns each input record into either a :class:`Conversation` or a
:class:`Rejection`. Both carry where the record came from, so every message
about it can name the file and the record number.

    {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
    -> Conversation(doc_id=0, source="data.json", index=0, kind="alpaca",
         messages=(Message("user", "Add 2 and 3."), Message("assistant", "5")))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MessageRole = Literal["system", "user", "assistant"]

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
}
#: a record a mixture (``--mix``) used 0 times: not a rejection (not in rejected.jsonl), counted on its own
UNSAMPLED = "unsampled"
#: the values of documents.arrow's ``status`` column, coded in a build by their place here
#: ("" only while a record is not decided yet)
STATUSES: tuple[str, ...] = ("", "packed", "truncated", *REASONS, UNSAMPLED)
STATUS_CODE: dict[str, int] = {name: code for code, name in enumerate(STATUSES)}


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. ``input`` is Alpaca's ``input`` field, set only on the user
    message of Alpaca records (templates render it with the ``input`` role)."""

    role: MessageRole
    content: str
    input: str = ""


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
    #: template: :meth:`packer.templates.ChatTemplate.render`)
    kind: Literal["alpaca", "sharegpt", "messages", "prompt_completion", "text"]
    messages: tuple[Message, ...]
    #: turns a documented policy dropped (e.g. leading assistant turns): reason -> count
    dropped_turns: dict[str, int] = field(default_factory=dict)


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
