"""Tests for packer.read.jsonvalues and packer.read.formats: containers, format detection, normalisation."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from packer.read.formats import FORMATS, InputSummary, RecordReader, check_inputs, detect_format
from packer.read.records import KTO_FORMATS, PAIR_FORMATS, BuildError, Conversation, Message, Rejection, ToolCall

ALPACA = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
SHAREGPT = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
MESSAGES = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
PROMPT_COMPLETION = {"prompt": "Hi", "completion": "Hello!"}
TEXT = {"text": "Hello!"}
EXPECTED = {
    "alpaca": (Message("user", "Add 2 and 3."), Message("assistant", "5")),
    "sharegpt": (Message("user", "Hi"), Message("assistant", "Hello!")),
    "messages": (Message("user", "Hi"), Message("assistant", "Hello!")),
    "prompt_completion": (Message("user", "Hi"), Message("assistant", "Hello!")),
    "text": (Message("assistant", "Hello!"),),
}
RECORDS = {"alpaca": ALPACA, "sharegpt": SHAREGPT, "messages": MESSAGES, "prompt_completion": PROMPT_COMPLETION,
           "text": TEXT}

SHARED = Path(__file__).parents[1].parent / "shared" / "data"


# --------------------------------------------------------------------------- helpers


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def write_array(path: Path, records: list) -> Path:
    return write(path, json.dumps(records, indent=2, ensure_ascii=False))


def write_jsonl(path: Path, records: list) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_parquet(path: Path, records: list) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def read(*paths: Path, fmt: str | None = None) -> list[Conversation | Rejection]:
    return list(RecordReader(list(paths), fmt))


def one(record: object, tmp_path: Path, fmt: str | None = None) -> Conversation | Rejection:
    """The single item a one-record JSON Lines file yields."""
    (item,) = read(write_jsonl(tmp_path / "one.jsonl", [record]), fmt=fmt)
    return item


def rejected(item: Conversation | Rejection, reason: str) -> Rejection:
    assert isinstance(item, Rejection), item
    assert item.reason == reason, item.message()
    return item


def sharegpt(*turns: tuple[str, object], **top: object) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in turns], **top}


#: the SFT record formats (the preference ones: tests/test_preference_read.py)
SFT_FORMATS = tuple(f for f in FORMATS if f not in PAIR_FORMATS + KTO_FORMATS)


def roles(item: Conversation | Rejection) -> list[str]:
    assert isinstance(item, Conversation), item
    return [m.role for m in item.messages]


# --------------------------------------------------------------------------- containers x formats


@pytest.mark.parametrize("fmt", SFT_FORMATS)
@pytest.mark.parametrize("container", ["array", "jsonl", "parquet"])
def test_each_format_from_each_container(tmp_path: Path, fmt: str, container: str) -> None:
    records = [RECORDS[fmt]] * 3
    writer = {"array": write_array, "jsonl": write_jsonl, "parquet": write_parquet}[container]
    suffix = {"array": ".json", "jsonl": ".jsonl", "parquet": ".parquet"}[container]
    path = writer(tmp_path / f"data{suffix}", records)
    reader = RecordReader([path])
    items = list(reader)
    assert [type(i) for i in items] == [Conversation] * 3
    assert all(i.kind == fmt and i.messages == EXPECTED[fmt] and i.dropped_turns == {} for i in items)
    assert [(i.source.doc_id, i.source.index, i.source.path) for i in items] == [(k, k, str(path)) for k in range(3)]
    assert reader.inputs == [InputSummary(str(path), hashlib.sha256(path.read_bytes()).hexdigest(), fmt, 3)]


def test_detect_format() -> None:
    assert detect_format(ALPACA) == "alpaca"
    assert detect_format(SHAREGPT) == "sharegpt"
    assert detect_format(MESSAGES) == "messages"
    assert detect_format({"instruction": "x"}) is None
    assert detect_format({"prompt": "x", "response": "y"}) == "prompt_completion"
    assert detect_format({"prompt": [], "completion": []}) == "prompt_completion"
    assert detect_format({"text": "x", "label": 1}) == "text"
    assert detect_format({"instruction": "x", "output": "y", "text": "z"}) == "alpaca"
    assert detect_format({"prompt": "x"}) is None
    # preference records are told by their keys, before the SFT formats whose keys they also have
    assert detect_format({"prompt": "x", "chosen": "y"}) == "preference"


def test_fmt_override_parses_every_record_as_that_format(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ALPACA, {**ALPACA, "messages": []}])
    items = read(path, fmt="alpaca")
    assert [type(i) for i in items] == [Conversation, Conversation]  # no format_mismatch when forced
    for item in read(path, fmt="sharegpt"):
        assert "'conversations'" in rejected(item, "missing_field").detail


def test_unknown_fmt_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="unknown format"):
        RecordReader([write_jsonl(tmp_path / "d.jsonl", [ALPACA])], "vicuna")


def test_undetectable_file_is_a_build_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pr.jsonl", [{"question": "a", "answer": "b"}] * 2)
    with pytest.raises(BuildError, match=r"pr\.jsonl: cannot detect the format \(keys: question, answer\); "):
        read(path)
    assert len(read(path, fmt="alpaca")) == 2  # forcing a format reads it (as missing_field rejections)


def test_records_before_the_first_detecting_one_keep_their_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"foo": 1}, [1], ALPACA])
    a, b, c = read(path)
    assert rejected(a, "missing_field").source.index == 0
    assert rejected(b, "not_an_object").source.index == 1
    assert isinstance(c, Conversation) and c.source.index == 2


def test_mixed_formats_in_one_file(tmp_path: Path) -> None:
    items = read(write_array(tmp_path / "mixed.json", [ALPACA, SHAREGPT, MESSAGES, ALPACA]))
    assert isinstance(items[0], Conversation) and isinstance(items[3], Conversation)
    for item in items[1:3]:
        detail = rejected(item, "format_mismatch").detail
        assert "alpaca" in detail and ("sharegpt" in detail or "messages" in detail)


def test_not_an_object(tmp_path: Path) -> None:
    items = read(write_array(tmp_path / "d.json", [ALPACA, 1, "x", [ALPACA], None]))
    assert [i.reason for i in items[1:]] == ["not_an_object"] * 4  # type: ignore[union-attr]


# --------------------------------------------------------------------------- sharegpt


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("human", "user"),
        ("user", "user"),
        ("gpt", "assistant"),
        ("assistant", "assistant"),
        ("chatgpt", "assistant"),
        ("bing", "assistant"),
        ("bard", "assistant"),
        ("system", "system"),
        ("Human", "user"),  # role names are matched case-insensitively
        ("GPT", "assistant"),
    ],
)
def test_sharegpt_role_names(tmp_path: Path, name: str, role: str) -> None:
    # wrapped so that the role under test is kept whatever it maps to
    record = sharegpt(("human", "q"), ("gpt", "a"), (name, "x"), ("human", "q2"), ("gpt", "a2"))
    item = one(record, tmp_path)
    assert isinstance(item, Conversation)
    assert item.messages[2] == Message(role, "x")  # type: ignore[arg-type]


def test_sharegpt_tool_calling(tmp_path: Path) -> None:
    record = sharegpt(
        ("human", "Weather in Paris?"),
        ("function_call", '{"name": "weather", "arguments": {"city": "Paris"}}'),
        ("observation", '{"temp": 21}'),
        ("gpt", "It is 21 degrees."),
        tools="[]",
    )
    item = one(record, tmp_path)
    assert roles(item) == ["user", "assistant", "tool", "assistant"]
    call = item.messages[1]
    assert call.content == "" and call.tool_calls == (ToolCall("weather", {"city": "Paris"}),)
    assert item.messages[2].content == '{"temp": 21}' and item.tools == ()


@pytest.mark.parametrize("name", ["observation", "tool", "function", "Observation"])
def test_sharegpt_tool_result_roles(tmp_path: Path, name: str) -> None:
    call = ("function_call", '[{"name": "f", "arguments": "{}"}, {"name": "g", "arguments": {"x": 1}}]')
    item = one(sharegpt(("human", "q"), call, (name, "r"), ("gpt", "a"), tools='[{"name": "f"}]'), tmp_path)
    assert roles(item) == ["user", "assistant", "tool", "assistant"]
    assert [c.name for c in item.messages[1].tool_calls] == ["f", "g"]  # a list of calls: parallel calls
    assert item.tools == ({"type": "function", "function": {"name": "f"}},)  # glaive's bare definition, wrapped
    # a result with no call before it says nothing a template can place
    detail = rejected(one(sharegpt(("human", "q"), ("gpt", "a"), (name, "r"), ("gpt", "b")), tmp_path),
                      "orphan_tool_result").detail
    assert "turn 2 (tool) follows turn 1 (assistant), which makes no tool call" in detail


def test_sharegpt_top_level_system_and_role_content_keys(tmp_path: Path) -> None:
    record = {
        "system": "Be brief.",
        "conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}],
    }
    item = one(record, tmp_path)
    assert isinstance(item, Conversation)
    assert item.messages == (
        Message("system", "Be brief."),
        Message("user", "Hi"),
        Message("assistant", "Hey"),
    )
    assert roles(one({**record, "system": ""}, tmp_path)) == ["user", "assistant"]
    rejected(one({**record, "system": 3}, tmp_path), "wrong_type")


def test_unknown_role(tmp_path: Path) -> None:
    item = one(sharegpt(("human", "q"), ("robot", "a")), tmp_path)
    detail = rejected(item, "unknown_role").detail
    assert "'robot'" in detail and "turn 1" in detail
    msg = {"messages": [{"role": "user", "content": "q"}, {"role": "model", "content": "a"}]}
    assert "'model'" in rejected(one(msg, tmp_path), "unknown_role").detail


def test_empty_conversation(tmp_path: Path) -> None:
    rejected(one({"conversations": []}, tmp_path), "empty_conversation")
    rejected(one({"messages": []}, tmp_path), "empty_conversation")


@pytest.mark.parametrize("turns", [[("human", "q")], [("system", "s")], [("gpt", "a")], [("gpt", "a"), ("gpt", "b")]])
def test_no_assistant_turn(tmp_path: Path, turns: list[tuple[str, str]]) -> None:
    rejected(one(sharegpt(*turns), tmp_path), "no_assistant_turn")


def test_leading_assistant_turns_are_dropped_and_counted(tmp_path: Path) -> None:
    item = one(sharegpt(("gpt", "...end of a chunk"), ("gpt", "more"), ("human", "q"), ("gpt", "a")), tmp_path)
    assert roles(item) == ["user", "assistant"]
    assert item.dropped_turns == {"leading_assistant": 2}  # type: ignore[union-attr]
    item = one(sharegpt(("system", "s"), ("gpt", "x"), ("human", "q"), ("gpt", "a")), tmp_path)
    assert roles(item) == ["system", "user", "assistant"]
    assert item.dropped_turns == {"leading_assistant": 1}  # type: ignore[union-attr]


def test_trailing_non_assistant_turns_are_dropped_and_counted(tmp_path: Path) -> None:
    item = one(sharegpt(("human", "q"), ("gpt", "a"), ("human", "q2"), ("system", "s")), tmp_path)
    assert roles(item) == ["user", "assistant"]
    assert item.dropped_turns == {"trailing_non_assistant": 2}  # type: ignore[union-attr]
    # a dropped turn is checked for its role only: its empty / null value does not reject the record
    item = one(sharegpt(("human", "q"), ("gpt", "a"), ("human", None)), tmp_path)
    assert item.dropped_turns == {"trailing_non_assistant": 1}  # type: ignore[union-attr]


def test_repeated_roles_and_mid_system_are_kept(tmp_path: Path) -> None:
    turns = [
        ("human", "a"),
        ("human", "b"),
        ("gpt", "c"),
        ("system", "d"),
        ("gpt", "e"),
        ("human", "f"),
        ("gpt", "g"),
    ]
    item = one(sharegpt(*turns), tmp_path)
    assert roles(item) == ["user", "user", "assistant", "system", "assistant", "user", "assistant"]
    assert item.dropped_turns == {}  # type: ignore[union-attr]


def test_sharegpt_turn_content_checks(tmp_path: Path) -> None:
    detail = rejected(one(sharegpt(("human", "q"), ("gpt", None)), tmp_path), "wrong_type").detail
    assert "turn 1" in detail and "null" in detail
    rejected(one(sharegpt(("human", 5), ("gpt", "a")), tmp_path), "wrong_type")
    detail = rejected(one(sharegpt(("human", "  \n"), ("gpt", "a")), tmp_path), "empty_turn").detail
    assert "turn 0" in detail and "human" in detail
    detail = rejected(one(sharegpt(("human", "q"), ("gpt", "")), tmp_path), "empty_output").detail
    assert "turn 1" in detail and "gpt" in detail
    rejected(one({"conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]}, tmp_path), "missing_field")
    rejected(one({"conversations": [{"value": "q"}, {"from": "gpt", "value": "a"}]}, tmp_path), "missing_field")
    rejected(one({"conversations": ["q", "a"]}, tmp_path), "wrong_type")
    rejected(one({"conversations": "q"}, tmp_path), "wrong_type")


# --------------------------------------------------------------------------- messages


def test_messages_roles(tmp_path: Path) -> None:
    record = {
        "messages": [
            {"role": "developer", "content": "d"},
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "content": "result"},
            {"role": "function", "content": "result2"},
            {"role": "assistant", "content": "a"},
        ]
    }
    assert roles(one(record, tmp_path)) == [
        "system",
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]


def test_messages_content(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    item = one({"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "Hi"}]}, tmp_path)
    assert item.messages[0] == Message("user", "Hello there")  # type: ignore[union-attr]
    image = [{"type": "image_url", "image_url": {"url": "x"}}]
    item = one({"messages": [{"role": "user", "content": image}, {"role": "assistant", "content": "Hi"}]}, tmp_path)
    assert "image_url" in rejected(item, "wrong_type").detail
    item = one({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}, tmp_path)
    rejected(item, "wrong_type")
    item = one({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}, tmp_path)
    rejected(item, "empty_turn")
    item = one({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}, tmp_path)
    rejected(item, "empty_output")


def test_messages_policy(tmp_path: Path) -> None:
    msgs = [("assistant", "x"), ("user", "q"), ("assistant", "a"), ("user", "bye")]
    item = one({"messages": [{"role": r, "content": c} for r, c in msgs]}, tmp_path)
    assert roles(item) == ["user", "assistant"]
    assert item.dropped_turns == {"leading_assistant": 1, "trailing_non_assistant": 1}  # type: ignore[union-attr]


# --------------------------------------------------------------------------- blank turns (--blank-turns)


def dropping(record: object, tmp_path: Path) -> Conversation | Rejection:
    """The single item of a one-record file read with ``blank_turns="drop"``."""
    (item,) = RecordReader([write_jsonl(tmp_path / "one.jsonl", [record])], blank_turns="drop")
    return item


def texts(item: Conversation | Rejection) -> list[tuple[str, str]]:
    assert isinstance(item, Conversation), item
    return [(m.role, m.content) for m in item.messages]


@pytest.mark.parametrize(
    ("turns", "kept", "dropped"),
    [
        # a blank user turn, then the assistant turn answering it: both go
        ([("human", "q1"), ("gpt", "a1"), ("human", " "), ("gpt", "a2"), ("human", "q3"), ("gpt", "a3")],
         [("user", "q1"), ("assistant", "a1"), ("user", "q3"), ("assistant", "a3")], {"blank_turn": 2}),
        # a blank assistant turn, with the user turn it answers
        ([("human", "q1"), ("gpt", "a1"), ("human", "q2"), ("gpt", "\n"), ("human", "q3"), ("gpt", "a3")],
         [("user", "q1"), ("assistant", "a1"), ("user", "q3"), ("assistant", "a3")], {"blank_turn": 2}),
        # the first exchange blank
        ([("human", ""), ("gpt", "a1"), ("human", "q2"), ("gpt", "a2")],
         [("user", "q2"), ("assistant", "a2")], {"blank_turn": 2}),
        # the last exchange blank
        ([("human", "q1"), ("gpt", "a1"), ("human", "q2"), ("gpt", " ")],
         [("user", "q1"), ("assistant", "a1")], {"blank_turn": 2}),
        # a user message split in two (ShareGPT dumps): the blank half alone goes, the answer stays
        ([("gpt", "x"), ("human", "q1"), ("human", ""), ("gpt", "a1"), ("human", "q2"), ("human", " "), ("gpt", "a2")],
         [("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")],
         {"leading_assistant": 1, "blank_turn": 2}),
        ([("human", "q1"), ("gpt", "a1"), ("gpt", "\t"), ("human", "q2"), ("gpt", "a2")],
         [("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")], {"blank_turn": 1}),
        # a blank system turn goes alone
        ([("human", "q1"), ("system", " "), ("gpt", "a1")], [("user", "q1"), ("assistant", "a1")], {"blank_turn": 1}),
        # what is left after the last assistant turn is trailing, as always
        ([("human", "q1"), ("gpt", "a1"), ("system", "s"), ("human", "q2"), ("gpt", "")],
         [("user", "q1"), ("assistant", "a1")], {"blank_turn": 2, "trailing_non_assistant": 1}),
        # nothing blank: nothing changes
        ([("human", "q1"), ("gpt", "a1")], [("user", "q1"), ("assistant", "a1")], {}),
    ],
)
def test_blank_turns_drop(tmp_path: Path, turns: list, kept: list, dropped: dict) -> None:
    item = dropping(sharegpt(*turns), tmp_path)
    assert texts(item) == kept
    assert item.dropped_turns == dropped  # type: ignore[union-attr]
    # every turn is kept or counted
    assert len(turns) == len(kept) + sum(dropped.values())
    # the default rejects the record, as before
    if any(not v.strip() for _, v in turns):
        assert isinstance(one(sharegpt(*turns), tmp_path), Rejection)


def test_blank_turns_drop_leaves_nothing(tmp_path: Path) -> None:
    item = dropping(sharegpt(("gpt", "x"), ("human", " "), ("gpt", "a1")), tmp_path)
    detail = rejected(item, "no_assistant_turn").detail
    assert "blank turn 1" in detail and "--blank-turns drop" in detail
    item = dropping(sharegpt(("human", "q1"), ("gpt", ""), ("human", ""), ("gpt", "a2")), tmp_path)
    assert "blank turns 1, 2" in rejected(item, "no_assistant_turn").detail


def test_blank_turns_drop_messages_format_and_checks(tmp_path: Path) -> None:
    msgs = [("system", "s"), ("user", [{"type": "text", "text": " "}]), ("assistant", "a1"), ("user", "q2"),
            ("assistant", "a2")]
    item = dropping({"messages": [{"role": r, "content": c} for r, c in msgs]}, tmp_path)
    assert texts(item) == [("system", "s"), ("user", "q2"), ("assistant", "a2")]
    assert item.dropped_turns == {"blank_turn": 2}  # type: ignore[union-attr]
    # a kept turn of the wrong type is still wrong_type, even one a blank turn would take with it
    rejected(dropping(sharegpt(("human", ""), ("gpt", 5), ("human", "q"), ("gpt", "a")), tmp_path), "wrong_type")
    # Alpaca records are not conversations: a blank output or instruction is rejected as before
    rejected(dropping({"instruction": "q", "output": " "}, tmp_path), "empty_output")
    rejected(dropping({"instruction": " ", "input": "", "output": "5"}, tmp_path), "empty_turn")


def test_blank_turns_policy_name_is_checked(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"--blank-turns 'keep'; choose reject\|drop"):
        RecordReader([write_jsonl(tmp_path / "one.jsonl", [SHAREGPT])], blank_turns="keep")


# --------------------------------------------------------------------------- alpaca


def test_alpaca_fields(tmp_path: Path) -> None:
    item = one({"instruction": "Sum", "input": "2 3", "output": "5", "system": "S", "extra": [1]}, tmp_path)
    assert item.messages == (  # type: ignore[union-attr]
        Message("system", "S"),
        Message("user", "Sum", "2 3"),
        Message("assistant", "5"),
    )
    item = one({"instruction": "Sum", "input": None, "output": "5"}, tmp_path)
    assert item.messages == (Message("user", "Sum"), Message("assistant", "5"))  # type: ignore[union-attr]
    item = one({"instruction": "", "input": "What is 2+3?", "output": "5"}, tmp_path)
    assert item.messages[0] == Message("user", "", "What is 2+3?")  # type: ignore[union-attr]


@pytest.mark.parametrize("missing", ["instruction", "output"])
def test_alpaca_missing_field(tmp_path: Path, missing: str) -> None:
    record = {k: v for k, v in ALPACA.items() if k != missing}
    assert repr(missing) in rejected(one(record, tmp_path, fmt="alpaca"), "missing_field").detail


@pytest.mark.parametrize(
    ("field", "literal", "seen"),
    [
        ("output", "5", "number"),
        ("instruction", '["a"]', "array"),
        ("output", "null", "null"),
        ("instruction", "null", "null"),
        ("output", "NaN", "NaN"),
        ("input", "3", "number"),
        ("system", "{}", "object"),
    ],
)
def test_alpaca_wrong_type(tmp_path: Path, field: str, literal: str, seen: str) -> None:
    fields = {"instruction": '"q"', "input": '""', "output": '"a"', field: literal}
    line = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}\n"
    (item,) = read(write(tmp_path / "d.jsonl", line))
    detail = rejected(item, "wrong_type").detail
    assert repr(field) in detail and seen in detail


@pytest.mark.parametrize("output", ["", "   ", "\n\t"])
def test_alpaca_empty_output(tmp_path: Path, output: str) -> None:
    rejected(one({**ALPACA, "output": output}, tmp_path), "empty_output")


def test_alpaca_empty_instruction_and_input(tmp_path: Path) -> None:
    rejected(one({"instruction": " ", "input": "", "output": "5"}, tmp_path), "empty_turn")


def test_parquet_wrong_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "instruction": pa.array(["q", None, "q"]),
            "input": pa.array([None, "", ""]),
            "output": pa.array([1.0, 2.0, float("nan")]),
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    items = read(tmp_path / "d.parquet")
    assert [rejected(i, "wrong_type").detail for i in items] == [
        "'output' is a number, expected a string",
        "'instruction' is null, expected a string",
        "'output' is NaN, expected a string",
    ]


# --------------------------------------------------------------------------- container edge cases


def test_jsonl_blank_lines_and_a_broken_line(tmp_path: Path) -> None:
    lines = [
        json.dumps(ALPACA),
        "",
        "  ",
        '{"instruction": "x", "output":',
        json.dumps(ALPACA),
        "",
        json.dumps(ALPACA),
    ]
    path = write(tmp_path / "d.jsonl", "\n".join(lines) + "\n\n")
    reader = RecordReader([path])
    items = list(reader)
    assert [i.source.index for i in items] == [0, 1, 2, 3]
    assert "line 4" in rejected(items[1], "malformed_json").detail
    assert all(isinstance(i, Conversation) for i in (items[0], items[2], items[3]))
    assert reader.inputs[0].records == 4


def test_jsonl_broken_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", "{oops\n" + json.dumps(MESSAGES) + "\n")
    items = read(path)
    assert [type(i) for i in items] == [Rejection, Conversation]
    assert items[0].source.index == 0 and items[1].kind == "messages"  # type: ignore[union-attr]


def test_truncated_json_array(tmp_path: Path) -> None:
    text = json.dumps([ALPACA, ALPACA, ALPACA], indent=2)
    path = write(tmp_path / "cut.json", text[: text.rindex('"output"')])
    reader = RecordReader([path])
    items = list(reader)
    assert [type(i) for i in items] == [Conversation, Conversation, Rejection]
    detail = rejected(items[2], "malformed_json").detail
    assert "line " in detail and "column " in detail and "the file ends inside this record" in detail
    assert items[2].source.index == 2 and reader.inputs[0].records == 3


@pytest.mark.parametrize("tail", [",", ", ", "", "\n"])
def test_json_array_cut_between_records(tmp_path: Path, tail: str) -> None:
    path = write(tmp_path / "cut.json", "[" + json.dumps(ALPACA) + tail)
    items = read(path)
    assert isinstance(items[0], Conversation)
    rejected(items[1], "malformed_json")
    assert len(items) == 2


def test_json_array_trailing_comma(tmp_path: Path) -> None:
    path = write(tmp_path / "tc.json", "[" + json.dumps(ALPACA) + ",\n" + json.dumps(ALPACA) + ",\n]\n")
    items = read(path)
    assert [type(i) for i in items] == [Conversation, Conversation, Rejection]
    assert "trailing comma" in rejected(items[2], "malformed_json").detail


def test_json_array_extra_data_after_the_end(tmp_path: Path) -> None:
    """Text after the array that may hold records (a second array) fails the build: they would be lost
    unseen (issue 24); other text is one rejection."""
    with pytest.raises(BuildError, match=r"x\.json: line 1 column \d+: more data after the array's closing"):
        read(write(tmp_path / "x.json", "[" + json.dumps(ALPACA) + "] []"))
    items = read(write(tmp_path / "y.json", "[" + json.dumps(ALPACA) + "] %"))
    assert "extra data" in rejected(items[1], "malformed_json").detail


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_bom_is_ignored(tmp_path: Path, suffix: str) -> None:
    body = json.dumps([ALPACA]) if suffix == ".json" else json.dumps(ALPACA) + "\n"
    (item,) = read(write(tmp_path / f"bom{suffix}", b"\xef\xbb\xbf" + body.encode()))
    assert isinstance(item, Conversation)


def test_invalid_utf8_in_a_jsonl_line(tmp_path: Path) -> None:
    good = json.dumps(ALPACA).encode()
    bad = b'{"instruction": "caf\xe9", "output": "x"}'
    items = read(write(tmp_path / "d.jsonl", good + b"\n" + bad + b"\n" + good + b"\n"))
    assert [type(i) for i in items] == [Conversation, Rejection, Conversation]
    detail = rejected(items[1], "invalid_utf8").detail
    offset = len(good) + 1 + bad.index(b"\xe9")
    assert "line 2" in detail and f"byte {offset} " in detail


def test_invalid_utf8_in_a_json_array_is_a_build_error(tmp_path: Path) -> None:
    data = b'[{"instruction": "caf\xe9", "output": "x"}]'
    offset = data.index(b"\xe9")
    with pytest.raises(BuildError, match=rf"bad\.json: invalid UTF-8 at byte {offset};"):
        read(write(tmp_path / "bad.json", data))


@pytest.mark.parametrize("name", ["e.json", "e.jsonl", "e.data"])
@pytest.mark.parametrize("content", [b"", b" \n\n \n", b"\xef\xbb\xbf\n"])
def test_empty_file_is_a_build_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(BuildError, match=re.escape(f"{path}: empty file, no records")):
        read(path)


def test_empty_array_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"e\.json: no records"):
        read(write(tmp_path / "e.json", "[ ]"))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("t.json", "hello world\n"),
        ("t.jsonl", "instruction,output\nadd,5\n"),
        ("t.txt", "hello\n"),
        ("t.parquet", "not parquet"),
        ("t.json", '{\n  "a": [1,\n'),  # a broken pretty-printed object
    ],
)
def test_not_json_is_a_build_error(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(BuildError) as err:
        read(path, fmt="alpaca")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"nope\.json: no such file"):
        RecordReader([tmp_path / "nope.json"])


def test_single_object_json_file(tmp_path: Path) -> None:
    path = write(tmp_path / "one.json", json.dumps(SHAREGPT, indent=2))
    reader = RecordReader([path])
    (item,) = reader
    assert isinstance(item, Conversation) and item.kind == "sharegpt"
    assert reader.inputs[0].records == 1


def test_json_file_holding_json_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "lines.json", json.dumps(ALPACA) + "\n{broken\n" + json.dumps(ALPACA) + "\n")
    items = read(path)
    assert [type(i) for i in items] == [Conversation, Rejection, Conversation]


def test_content_is_sniffed_for_other_extensions(tmp_path: Path) -> None:
    assert len(read(write_array(tmp_path / "d.txt", [ALPACA, ALPACA]))) == 2
    assert len(read(write_parquet(tmp_path / "d.bin", [ALPACA]))) == 1


# --------------------------------------------------------------------------- reader bookkeeping


def test_doc_ids_count_across_files_and_summaries(tmp_path: Path) -> None:
    a = write_array(tmp_path / "a.json", [ALPACA, ALPACA])
    b = write_jsonl(tmp_path / "b.jsonl", [MESSAGES, 7, MESSAGES])
    c = write_parquet(tmp_path / "c.parquet", [SHAREGPT])
    reader = RecordReader([a, str(b), c], first_doc_id=10)
    items = list(reader)
    assert [(i.source.doc_id, i.source.path, i.source.index) for i in items] == [
        (10, str(a), 0),
        (11, str(a), 1),
        (12, str(b), 0),
        (13, str(b), 1),
        (14, str(b), 2),
        (15, str(c), 0),
    ]
    assert [(s.path, s.format, s.records) for s in reader.inputs] == [
        (str(a), "alpaca", 2),
        (str(b), "messages", 3),
        (str(c), "sharegpt", 1),
    ]
    assert [s.sha256 for s in reader.inputs] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b, c)]
    assert reader.next_doc_id == 16


def test_inputs_are_filled_as_files_end(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [ALPACA])
    b = write_jsonl(tmp_path / "b.jsonl", [ALPACA])
    reader = RecordReader([a, b])
    next(reader)
    assert reader.inputs == []
    next(reader)  # reading b's first record finishes a
    assert [s.path for s in reader.inputs] == [str(a)]


def test_every_rejection_message_names_path_and_index(tmp_path: Path) -> None:
    records = [
        ALPACA,
        {"instruction": "q"},
        {**ALPACA, "output": 3},
        {**ALPACA, "output": " "},
        SHAREGPT,
        5,
        {"instruction": "", "output": "x"},
    ]
    lines = [*(json.dumps(r).encode() for r in records), b"{bad", b'"\xff"']
    path = write(tmp_path / "r.jsonl", b"\n".join(lines) + b"\n")
    items = read(path)
    reasons = Counter(i.reason for i in items if isinstance(i, Rejection))
    assert reasons == Counter(
        missing_field=1,
        wrong_type=1,
        empty_output=1,
        format_mismatch=1,
        not_an_object=1,
        empty_turn=1,
        malformed_json=1,
        invalid_utf8=1,
    )
    for item in items:
        if isinstance(item, Rejection):
            assert item.message().startswith(f"{path}: record {item.source.index}: {item.reason}: ")


# --------------------------------------------------------------------------- the real data in ../shared/data

SHARED_COUNTS = {
    "alpaca_llamafactory_en_demo.json": 999,
    "alpaca_llamafactory_zh_demo.json": 1000,
    "alpaca_code_alpaca_2k.json": 2017,
    "alpaca_new_codealpaca.json": 4535,
    "alpaca_gsm8k_train.json": 7473,
    "sharegpt_v3_unfiltered_cleaned_split_first3000.json": 3000,
    "sharegpt_fastchat_dummy_conversation.json": 500,
    "sharegpt_glaive_toolcall_en_demo.json": 300,
    "sharegpt_axolotl_fixture_conversation.json": 1,
    "sharegpt_axolotl_fixture_conversation_missingturns.json": 1,
    "messages_lima.jsonl": 1030,
    "messages_alpagasus_dolly_3k.jsonl": 2996,
    "messages_alpagasus_claude_t45_alpaca.jsonl": 5305,
}


def test_shared_data() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the real-data check needs the shared data files)")
    files = sorted(p for p in SHARED.iterdir() if p.name.startswith(("alpaca_", "sharegpt_", "messages_")))
    assert {p.name for p in files} == set(SHARED_COUNTS)
    rejections: dict[str, list[Rejection]] = {}
    for path in files:
        reader = RecordReader([path])
        items = list(reader)
        (summary,) = reader.inputs
        assert summary.records == len(items) == SHARED_COUNTS[path.name], path.name
        assert summary.format == path.name.split("_")[0]
        rejections[path.name] = [i for i in items if isinstance(i, Rejection)]

    code = rejections["alpaca_code_alpaca_2k.json"]
    assert [(r.reason, r.source.index) for r in code] == [("empty_output", 237), ("empty_output", 1859)]
    claude = rejections["messages_alpagasus_claude_t45_alpaca.jsonl"]
    assert [r.source.index for r in claude] == [2590, 3260, 4652, 4724]
    assert {r.reason for r in claude} <= {"empty_output", "empty_turn"}
    v3 = Counter(r.reason for r in rejections["sharegpt_v3_unfiltered_cleaned_split_first3000.json"])
    assert v3["empty_conversation"] == 21

    # {prompt, response}: the prompt-completion format, the response its completion
    reader = RecordReader([SHARED / "prompt_response_dolly_hhrlhf_train_small.jsonl"])
    items = list(reader)
    assert reader.inputs[0].format == "prompt_completion" and len(items) == 1000
    assert all(isinstance(i, Conversation) and [m.role for m in i.messages] == ["user", "assistant"] for i in items)


# -- JSON arrays are decoded a window at a time -------------------------------------------------------

BAD_INPUTS = Path(__file__).parent / "bad_inputs"


def _array_cases(tmp_path: Path) -> list[Path]:
    """JSON array files, good and broken, with multi-byte characters where a chunk may cut them."""
    cases = sorted(p for p in BAD_INPUTS.glob("*.json"))
    records = [
        {"instruction": f"Traduis « café {i} » 🎉 en anglais", "input": "", "output": f"coffee {i} 你好"}
        for i in range(40)
    ]
    text = json.dumps(records, ensure_ascii=False, indent=1)
    variants = {
        "good": text,
        "numbers_between": text.replace("[\n", "[\n 12345678,\n", 1),
        "broken_middle": text.replace('"coffee 20', '"coffee 20" "x', 1),
        "truncated": text[: len(text) * 2 // 3],
        "trailing_comma": text[:-2] + ",\n]",
        "extra_after": text + "\n{}",
        "blank_before": "\n" * 50 + "   " + text,
    }
    for name, body in variants.items():
        (tmp_path / f"v_{name}.json").write_text(body, encoding="utf-8")
        cases.append(tmp_path / f"v_{name}.json")
    bad = tmp_path / "bad_utf8.json"
    bad.write_bytes(text.encode()[:300] + b"\xff" + text.encode()[300:])
    cases.append(bad)
    return cases


def _read_all(path: Path) -> tuple[list, list]:
    reader = RecordReader([path])
    try:
        items = [(type(x).__name__, getattr(x, "reason", None), getattr(x, "detail", None), x.source.index,
                  getattr(x, "messages", None)) for x in reader]
    except BuildError as e:
        return [], [str(e)]
    return items, [(i.sha256, i.records) for i in reader.inputs]


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1000])
def test_json_array_windows_change_nothing(tmp_path: Path, monkeypatch, chunk: int) -> None:
    """Values, rejection messages (line and column in the whole file), errors and the file hash are the
    same whether the array is read in one piece or in chunks of a few bytes."""
    import packer.read.jsonvalues as jsonvalues

    cases = _array_cases(tmp_path)
    whole = {p.name: _read_all(p) for p in cases}
    assert any(r[0] and r[0][-1][1] == "malformed_json" for r in whole.values())
    assert whole["bad_utf8.json"] == (
        [],
        [f"{tmp_path / 'bad_utf8.json'}: invalid UTF-8 at byte 300; the file must be UTF-8"],
    )
    monkeypatch.setattr(jsonvalues, "_JSON_CHUNK", chunk)
    for p in cases:
        assert _read_all(p) == whole[p.name], p.name


def test_json_array_memory_is_a_window(tmp_path: Path, monkeypatch) -> None:
    """The decoded text held at once stays near one chunk plus a record, not the whole file."""
    import packer.read.jsonstream as jsonstream
    import packer.read.jsonvalues as jsonvalues

    records = [{"instruction": f"q{i} " + "x" * 50, "input": "", "output": "🎉" * 20} for i in range(2000)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    monkeypatch.setattr(jsonvalues, "_JSON_CHUNK", 4096)
    largest = 0
    real_more = jsonstream._TextWindow._more

    def more(self, pos):  # type: ignore[no-untyped-def]
        nonlocal largest
        largest = max(largest, len(self.text))
        return real_more(self, pos)

    monkeypatch.setattr(jsonstream._TextWindow, "_more", more)
    assert sum(isinstance(x, Conversation) for x in RecordReader([path])) == 2000
    assert path.stat().st_size > 50 * 4096 and largest < 3 * 4096


def test_json_array_record_too_long_to_wait_for(tmp_path: Path, monkeypatch) -> None:
    import packer.read.jsonstream as jsonstream
    import packer.read.jsonvalues as jsonvalues

    path = tmp_path / "long.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "x" * 5000, "output": "y"}]))
    monkeypatch.setattr(jsonvalues, "_JSON_CHUNK", 256)
    monkeypatch.setattr(jsonstream, "_MAX_RECORD_CHARS", 1000)
    items = list(RecordReader([path]))
    assert isinstance(items[0], Conversation) and items[1].reason == "malformed_json"
    assert "line 1 column 39: no complete record within 1,000 characters" in items[1].detail


# -- messages that say what to do next (issue 11) -----------------------------------------------------

_FORMAT_LIST = (
    "alpaca (instruction/input/output), sharegpt (conversations of {from, value}), messages (OpenAI role/content), "
    "prompt_completion (prompt/completion or prompt/response), text (text), preference (prompt/chosen/rejected), "
    "preference_implicit (chosen/rejected conversations), ranking (conversations + chosen/rejected turns), "
    "ranking_messages (chosen_messages/rejected_messages), kto (prompt/completion/label), kto_messages "
    "(messages/label)"
)
SUPPORTED = (
    "supported: JSON (an array of records, or one object), JSON Lines, Parquet, Arrow (HF datasets: a save_to_disk "
    f"folder or a cache .arrow file); record formats {_FORMAT_LIST}"
)
NOT_JSON = "not JSON, JSON Lines, Parquet or Arrow: it starts with"
RECORD_FORMATS = (
    f"the record formats are {_FORMAT_LIST}; --format alpaca|sharegpt|messages|prompt_completion|text|preference|"
    "preference_implicit|ranking|ranking_messages|kto|kto_messages forces one; "
    "--columns FIELD=COLUMN,... maps your names onto their fields"
)


def error_of(path: Path, fmt: str | None = None) -> str:
    """The BuildError message of reading ``path`` to its end; check_inputs must raise the same one."""
    with pytest.raises(BuildError) as full:
        read(path, fmt=fmt)
    with pytest.raises(BuildError) as check:
        check_inputs([path], fmt)
    assert str(check.value) == str(full.value)
    assert "\n" not in str(full.value)
    return str(full.value)


def test_a_csv_file_says_what_it_starts_with_and_what_is_supported(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", "instruction,input,output\nhi,,yo\n")
    assert error_of(path) == f"{path}: {NOT_JSON} 'instruction,input,output\\nhi,,yo\\n'; {SUPPORTED}"
    path = write(tmp_path / "long.txt", "  \n" + "é" * 50)  # blanks skipped, text shortened
    assert error_of(path) == f"{path}: {NOT_JSON} '{'é' * 40}'...; {SUPPORTED}"
    path = write(tmp_path / "data.bin", b"\x1f\x8b\x08\x00\xff")  # a gzip header: said so, no bytes shown (issue 24)
    assert error_of(path).startswith(f"{path}: compressed input (gzip) that cannot be decompressed: ")


def test_undetectable_format_lists_the_formats_and_the_way_out(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pr.jsonl", [{"question": "a", "answer": "b"}] * 2)
    assert error_of(path) == f"{path}: cannot detect the format (keys: question, answer); {RECORD_FORMATS}"
    path = write_array(tmp_path / "n.json", [1, 2])
    assert error_of(path) == f"{path}: cannot detect the format (no record is a JSON object); {RECORD_FORMATS}"


def test_no_decodable_record_lists_what_is_supported(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", "instruction,output\nadd,5\n")
    assert error_of(path, "alpaca") == (
        f"{path}: no record could be read, is it JSON? (line 1 column 1: Expecting value); {SUPPORTED}"
    )


# -- JSON Lines errors: line and column of the line (characters, from 1) --------------------------

JSONL_ERRORS = [
    ('{"instruction": "a", "input": "", "output": "b",}', "column 49: Expecting property name enclosed in double quotes"),  # noqa: E501
    ('{"instruction": "Add 2 and 3.", "input": "", "output": "5"}', None),
    ('{"instruction": "abc", "input": "", "output":', "column 46: Expecting value"),  # cut short: 45 characters
    ('{"instruction": "café 🎉 naïve", "input": "", "output": "ok"}', None),
    ('{"instruction": "日本語", "output": "b" "c"}', "column 38: Expecting ',' delimiter"),  # 44 in bytes
    ('{"instruction": "x", "output": "y"} extra', "column 37: Extra data"),
    ('{"instruction": "x", "output": "y', "column 32: Unterminated string starting at"),
    ('{"instruction": "x", "output": "y",\r', "column 36: Expecting property name enclosed in double quotes"),
]


@pytest.mark.parametrize("name", ["d.jsonl", "d.json"])  # a .json file of JSON Lines is read by the same code
def test_jsonl_errors_give_line_and_column(tmp_path: Path, name: str) -> None:
    assert len(JSONL_ERRORS[2][0]) == 45
    path = write(tmp_path / name, "\n".join(line for line, _ in JSONL_ERRORS) + "\n")
    items = read(path)
    assert [getattr(i, "detail", None) for i in items] == [
        None if error is None else f"line {n} {error}" for n, (_, error) in enumerate(JSONL_ERRORS, 1)
    ]


def test_jsonl_error_on_the_last_line_without_a_break_and_after_a_bom(tmp_path: Path) -> None:
    lines = [b'\xef\xbb\xbf{"instruction": "a", "output":', json.dumps(ALPACA).encode(), b"", b'{"output": "b"']
    path = write(tmp_path / "d.jsonl", b"\n".join(lines))  # the BOM is no column; no break at the end
    a, _, c = read(path)
    assert rejected(a, "malformed_json").detail == "line 1 column 31: Expecting value"
    assert rejected(c, "malformed_json").detail == "line 4 column 15: Expecting ',' delimiter"


# -- progress: bytes_read runs from 0 to total_bytes --------------------------------------------------


def progress(reader: RecordReader) -> list[tuple[str, int]]:
    """(path, bytes_read) before the first item and after each, and after the end."""
    seen = [("", reader.bytes_read)]
    for item in reader:
        seen.append((item.source.path, reader.bytes_read))
    seen.append(("", reader.bytes_read))
    return seen


def check_progress(paths: list[Path], steps_at_least: int) -> list[tuple[str, int]]:
    reader = RecordReader(paths)
    total = sum(p.stat().st_size for p in paths)
    assert reader.total_bytes == total
    seen = progress(reader)
    counts = [n for _, n in seen]
    assert counts[0] == 0 and counts[-1] == total
    assert counts == sorted(counts), "bytes_read went back"
    assert len(set(counts)) >= steps_at_least, counts
    # once a file's records come, the files before it are counted whole
    ends = {str(p): sum(q.stat().st_size for q in paths[:k]) for k, p in enumerate(paths)}
    assert all(n >= ends[path] for path, n in seen if path)
    return seen


def test_progress_jsonl(tmp_path: Path, monkeypatch) -> None:
    import packer.read.jsonvalues as jsonvalues

    monkeypatch.setattr(jsonvalues, "_JSONL_BLOCK", 200)
    records = [{**ALPACA, "output": f"{i} 🎉"} for i in range(100)]
    a, b = write_jsonl(tmp_path / "a.jsonl", records), write_jsonl(tmp_path / "b.jsonl", records[:7])
    check_progress([a, b], steps_at_least=20)


def test_progress_json_array_streamed(tmp_path: Path, monkeypatch) -> None:
    import packer.read.jsonvalues as jsonvalues

    monkeypatch.setattr(jsonvalues, "_JSON_CHUNK", 512)
    records = [{**ALPACA, "output": f"{i} 你好"} for i in range(200)]
    a, b = write_array(tmp_path / "a.json", records), write_array(tmp_path / "b.json", records[:50])
    assert a.stat().st_size > 20 * 512
    check_progress([a, b], steps_at_least=20)


def test_progress_small_json_read_whole(tmp_path: Path) -> None:
    one_object = write(tmp_path / "one.json", json.dumps(SHAREGPT, indent=2))
    lines = write(tmp_path / "lines.json", json.dumps(ALPACA) + "\n" + json.dumps(ALPACA) + "\n")
    small_array = write_array(tmp_path / "a.json", [ALPACA] * 3)
    seen = check_progress([one_object, lines, small_array], steps_at_least=4)
    sizes = [p.stat().st_size for p in (one_object, lines, small_array)]
    assert [n for _, n in seen] == [0, sizes[0], sum(sizes[:2]), sum(sizes[:2]), *[sum(sizes)] * 4]


def test_progress_parquet_by_row_group(tmp_path: Path, monkeypatch) -> None:
    import packer.read.jsonvalues as jsonvalues

    monkeypatch.setattr(jsonvalues, "_PARQUET_BATCH_ROWS", 5)  # batches of pyarrow's may span row groups
    records = [{**ALPACA, "output": f"answer {i} " * (i % 7 + 1)} for i in range(100)]
    a = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(records), a, row_group_size=10)
    b = write_parquet(tmp_path / "b.parquet", records[:5])
    seen = check_progress([a, b, write_jsonl(tmp_path / "c.jsonl", [ALPACA])], steps_at_least=10)
    counts = [n for path, n in seen if path == str(a)]
    assert len(set(counts)) == 10  # one step per row group of a
    reader = RecordReader([a, b])
    list(reader)
    assert [s.sha256 for s in reader.inputs] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]


# -- check_inputs: the pre-flight check ---------------------------------------------------------------


def test_check_inputs_returns_each_files_format(tmp_path: Path) -> None:
    paths = [
        write_array(tmp_path / "a.json", [ALPACA]),
        write_jsonl(tmp_path / "m.jsonl", [{"prompt": 1}, MESSAGES]),  # the first record that detects
        write_parquet(tmp_path / "s.parquet", [SHAREGPT]),
        write(tmp_path / "one.json", json.dumps(SHAREGPT, indent=2)),
        write(tmp_path / "lines.json", json.dumps(MESSAGES) + "\n" + json.dumps(MESSAGES) + "\n"),
        write(tmp_path / "bom.json", b"\xef\xbb\xbf" + json.dumps([ALPACA]).encode()),
        write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + json.dumps(MESSAGES).encode() + b"\n"),
        write_array(tmp_path / "sniffed.txt", [ALPACA]),
        write_parquet(tmp_path / "sniffed.bin", [MESSAGES]),
    ]
    expected = ["alpaca", "messages", "sharegpt", "sharegpt", "messages", "alpaca", "messages", "alpaca", "messages"]
    assert check_inputs(paths) == expected
    reader = RecordReader(paths)
    list(reader)
    assert [s.format for s in reader.inputs] == expected
    assert check_inputs(paths, "alpaca") == ["alpaca"] * len(paths)  # forced: any decodable first record
    assert check_inputs([]) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file, no records"),
        (b" \n\t\n", "empty file, no records"),
        (b"\xef\xbb\xbf", "empty file, no records"),
        (b"\xef\xbb\xbf\n\n", "empty file, no records"),
        ("[1]".encode("utf-16"), "the file is UTF-16 encoded; convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"),
        ("[1]".encode("utf-16-be"), "the file is UTF-16 encoded; convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"),
        ("{}".encode("utf-16-le"), "the file is UTF-16 encoded; convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"),
    ],
)
@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.txt"])
def test_check_inputs_empty_and_utf16(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = write(tmp_path / name, content)
    assert error_of(path) == f"{path}: {message}"
    assert error_of(path, "alpaca") == f"{path}: {message}"


def test_check_inputs_paths(tmp_path: Path) -> None:
    good = write_array(tmp_path / "a.json", [ALPACA])
    missing = tmp_path / "nope.json"
    for paths, message in [
        ([good, missing], f"{missing}: no such file"),
        ([good, tmp_path], f"{tmp_path}: is a directory; give the data files in it, or a folder written by HF "
                           "datasets' save_to_disk (with state.json)"),
        ([Path(os.devnull)], f"{os.devnull}: not a regular file (a pipe, socket or device); give a data file"),
    ]:
        for call in (RecordReader, check_inputs):
            with pytest.raises(BuildError) as err:
                call(paths)
            assert str(err.value) == message
    formats = r"alpaca\|sharegpt\|messages\|prompt_completion\|text\|preference\|preference_implicit\|ranking\|" \
        r"ranking_messages\|kto\|kto_messages"
    with pytest.raises(BuildError, match=rf"^unknown format 'vicuna'; use --format {formats}$"):
        check_inputs([good], "vicuna")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.parquet"])
def test_check_inputs_unreadable_file(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, [ALPACA])
    path.chmod(0)
    try:
        assert error_of(path) == f"{path}: cannot read: Permission denied"
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.parquet"])
def test_check_inputs_unreadable_file_as_root_too(tmp_path: Path, monkeypatch, name: str) -> None:
    """The same, with the refusal made up: root (as tests often run) may read any file."""
    import builtins

    import packer.fsio as fsio  # the reader opens its files there

    path = write_jsonl(tmp_path / name, [ALPACA])

    def refuse(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(fsio, "open", refuse, raising=False)
    assert error_of(path) == f"{path}: cannot read: Permission denied"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("e.json", "[ ]", "no records (an empty JSON array)"),
        ("t.parquet", "not parquet", "not a readable Parquet file: "),
        ("b.json", b'[{"instruction": "caf\xe9", "output": "x"}]', "invalid UTF-8 at byte 21; the file must be UTF-8"),
        ("o.json", '{\n  "a": [1,\n', "invalid JSON at line 3 column 1: Expecting value (neither one JSON object"),
        ("x.json", '[{"a": 1,', "no record could be read, is it JSON? (line 1 column 10: Expecting property name"),
    ],
)
def test_check_inputs_gives_the_readers_message(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    path = write(tmp_path / name, content)
    assert error_of(path).startswith(f"{path}: {message}")


def test_check_inputs_parquet_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"instruction": pa.array([], pa.string()), "output": pa.array([], pa.string())}), path)
    assert error_of(path) == f"{path}: no records (the Parquet file has no rows)"


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 16])
def test_check_inputs_agrees_with_the_reader(tmp_path: Path, monkeypatch, chunk: int) -> None:
    """On the corpus and the JSON array variants, with check_inputs reading chunks of any size: the
    format the reader settles, or the reader's error when it fails before its first record."""
    import packer.read.jsonvalues as jsonvalues

    monkeypatch.setattr(jsonvalues, "_CHECK_CHUNK", chunk)
    monkeypatch.setattr(jsonvalues, "_JSON_CHUNK", chunk)
    cases = _array_cases(tmp_path) + sorted(p for p in BAD_INPUTS.iterdir() if p.suffix != ".md")
    cases += [
        write(tmp_path / "lines.json", "{oops\n" + json.dumps(MESSAGES) + "\n"),  # read whole
        write(tmp_path / "late.json", json.dumps({"prompt": 1}) + "\n" + json.dumps(ALPACA)),  # no break at the end
        write(tmp_path / "one.json", json.dumps(SHAREGPT, indent=2)),
        write(tmp_path / "two_lines.json", '{"conversations":\n' + json.dumps(SHAREGPT["conversations"]) + "\n}"),
        write(tmp_path / "blanks.json", "\ufeff\n" + json.dumps(ALPACA) + "\n  \n\n"),
        write(tmp_path / "keys.json", json.dumps({"a": 1}) + "\n  \n"),
    ]
    for path in cases:
        reader, first = RecordReader([path]), None
        try:
            first = next(reader, None)
            list(reader)
        except BuildError as e:
            if first is None:  # failed before its first record: check_inputs fails the same way
                assert error_of(path) == str(e), path.name
                continue
        # it read a first record: check_inputs settles the same format
        (fmt,) = check_inputs([path])
        assert not reader.inputs or fmt == reader.inputs[0].format, path.name


def test_check_inputs_reads_only_the_beginning(tmp_path: Path, monkeypatch) -> None:
    import packer.read.formats as formats

    made: list = []

    class Spy(formats.FileValues):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(formats, "FileValues", Spy)
    records = [{**ALPACA, "output": "x" * 1000}] * 5000
    # each with a broken end that reading the whole file would meet
    paths = [
        write(tmp_path / "big.jsonl", "".join(json.dumps(r) + "\n" for r in records) + "{broken"),
        write(tmp_path / "big.json", json.dumps(records)[:-1000]),
        write(tmp_path / "lines.json", "".join(json.dumps(r) + "\n" for r in records) + "{broken"),
    ]
    assert all(p.stat().st_size > 5_000_000 for p in paths)
    assert check_inputs(paths) == ["alpaca"] * 3
    assert all(v.consumed.n <= 1 << 18 for v in made), [v.consumed.n for v in made]  # of 5 MB


def test_check_inputs_gives_up_after_the_first_records(tmp_path: Path, monkeypatch) -> None:
    """The check reads no further than its limits: a format settled only later is not found."""
    import packer.read.formats as formats

    monkeypatch.setattr(formats, "_CHECK_RECORDS", 5)
    path = write_jsonl(tmp_path / "late.jsonl", [{"prompt": "a"}] * 5 + [ALPACA])
    assert error_of_check(path) == f"{path}: cannot detect the format (keys: prompt); {RECORD_FORMATS}"
    assert check_inputs([path], "alpaca") == ["alpaca"]
    path = write_jsonl(tmp_path / "soon.jsonl", [{"prompt": "a"}] * 4 + [ALPACA])
    assert check_inputs([path]) == ["alpaca"]


def error_of_check(path: Path) -> str:
    with pytest.raises(BuildError) as err:
        check_inputs([path])
    return str(err.value)


def test_tool_turns_under_the_turn_policies(tmp_path: Path) -> None:
    call = {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
    lead = one({"messages": [{"role": "tool", "content": "r"}, {"role": "user", "content": "q"},
                             {"role": "assistant", "content": "a"}]}, tmp_path)
    assert roles(lead) == ["user", "assistant"] and lead.dropped_turns == {"leading_tool_result": 1}
    # a blank question goes with its whole answer: the call, its result and the reply
    blank = {"messages": [{"role": "user", "content": " "}, call, {"role": "tool", "content": "r"},
                          {"role": "assistant", "content": "ans"}, {"role": "user", "content": "q2"},
                          {"role": "assistant", "content": "a2"}]}
    kept = RecordReader([write_jsonl(tmp_path / "b.jsonl", [blank])], blank_turns="drop")
    (item,) = kept
    assert roles(item) == ["user", "assistant"] and item.dropped_turns == {"blank_turn": 4}
