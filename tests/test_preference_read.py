"""Preference data read (issue 27): the six shapes (TRL's explicit and implicit prompt, LLaMA-Factory's ranking
and v1 pairs, TRL's and LLaMA-Factory's KTO) become Pairs or labelled Conversations, with the SFT checks on each
side, the new rejections (identical_sides, different_prompts, bad_label), detection, --format and --columns; and
the shared LLaMA-Factory files read whole, checked against an oracle that reads their JSON directly."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from packer.cli import main
from packer.options import FORMATS
from packer.read.formats import RecordReader, check_inputs, detect_format, parse_columns
from packer.read.records import KTO_FORMATS, PAIR_FORMATS, Conversation, Message, Pair, Rejection, ToolCall

from .helpers import SHARED_DATA


def turn(role: str, content: object, **extra: object) -> dict:
    return {"role": role, "content": content, **extra}


def gpt(value: str) -> dict:
    return {"from": "gpt", "value": value}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read(tmp_path: Path, *records: object, **options: object) -> list[Conversation | Pair | Rejection]:
    return list(RecordReader([write_jsonl(tmp_path / "prefs.jsonl", list(records))], **options))  # type: ignore[arg-type]


def each(tmp_path: Path, *records: object) -> list[Conversation | Pair | Rejection]:
    """Each record read from a file of its own (a file's records are of one format)."""
    out = []
    for k, record in enumerate(records):
        out += RecordReader([write_jsonl(tmp_path / f"record{k}.jsonl", [record])])
    return out


def pair(item: object, kind: str, prompt: int) -> Pair:
    assert isinstance(item, Pair), item.message() if isinstance(item, Rejection) else item
    assert item.kind == kind and item.prompt == prompt
    # both sides are whole conversations of the same record, with the same prompt
    assert item.chosen.source == item.rejected.source == item.source
    assert item.chosen.kind == item.rejected.kind == kind
    assert item.chosen.messages[:prompt] == item.rejected.messages[:prompt]
    assert item.chosen.tools == item.rejected.tools
    return item


def texts(c: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in c.messages]


def rejection(item: object, reason: str, *words: str) -> Rejection:
    assert isinstance(item, Rejection), item
    assert item.reason == reason, item.message()
    for w in words:
        assert w in item.detail, item.message()
    return item


# --------------------------------------------------------------------------- the six shapes


def test_explicit_prompt_strings_are_a_user_and_an_assistant_message(tmp_path: Path) -> None:
    (p,) = read(tmp_path, {"prompt": "2+2?", "chosen": "4", "rejected": "5"})
    p = pair(p, "preference", 1)
    assert p.chosen.messages == (Message("user", "2+2?"), Message("assistant", "4"))
    assert p.rejected.messages == (Message("user", "2+2?"), Message("assistant", "5"))
    assert p.chosen.label is None and p.chosen.dropped_turns == {} and p.chosen.tools == ()


def test_explicit_prompt_messages_with_system_turns_tools_reasoning_and_flags(tmp_path: Path) -> None:
    call = {"type": "function", "id": "c1", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    record = {
        "prompt": [turn("system", "Use the tools."), turn("user", "2+2?"),
                   turn("assistant", None, tool_calls=[call], weight=0), turn("tool", "4", tool_call_id="c1"),
                   turn("user", "Sure?")],
        "chosen": [turn("assistant", "Yes, 4.", reasoning_content="The tool said 4.")],
        "rejected": [turn("assistant", "No, 5.", training=False), turn("user", "Why?"),
                     turn("assistant", "Because.")],
        "tools": tools,
    }
    (p,) = read(tmp_path, record)
    p = pair(p, "preference", 5)
    c, r = p.chosen.messages, p.rejected.messages
    assert [m.role for m in c] == ["system", "user", "assistant", "tool", "user", "assistant"]
    assert c[2].tool_calls == (ToolCall("add", {"a": 2, "b": 2}, "c1"),) and c[2].trained is False
    assert c[3].tool_call_id == "c1"
    assert c[5] == Message("assistant", "Yes, 4.", reasoning="The tool said 4.")
    assert [(m.role, m.content, m.trained) for m in r[5:]] == [
        ("assistant", "No, 5.", False), ("user", "Why?", True), ("assistant", "Because.", True)]
    assert p.chosen.tools == tuple(tools)


def test_explicit_prompt_may_mix_a_string_prompt_and_message_sides(tmp_path: Path) -> None:
    (p,) = read(tmp_path, {"prompt": "Hi", "chosen": [turn("assistant", "Hello")], "rejected": "Go away"})
    p = pair(p, "preference", 1)
    assert texts(p.chosen) == [("user", "Hi"), ("assistant", "Hello")]
    assert texts(p.rejected) == [("user", "Hi"), ("assistant", "Go away")]


def test_implicit_prompt_is_the_longest_common_run_of_messages(tmp_path: Path) -> None:
    head = [turn("system", "Be brief."), turn("user", "2+2?"), turn("assistant", "4"), turn("user", "And 3+3?")]
    call = {"type": "function", "function": {"name": "calc", "arguments": {"x": "3+3"}}}
    tool_turns = [turn("assistant", None, tool_calls=[call]), turn("tool", "6")]
    items = read(
        tmp_path,
        {"chosen": [*head, turn("assistant", "6")], "rejected": [*head, turn("assistant", "7")]},
        # the common run goes on into the completions (a shared tool call): it is all prompt here
        {"chosen": [*head, *tool_turns, turn("assistant", "6")],
         "rejected": [*head, *tool_turns, turn("assistant", "7")]},
        {"chosen": [turn("user", "Hi"), turn("assistant", "Hello", reasoning_content="Greet.")],
         "rejected": [turn("user", "Hi"), turn("assistant", "Hello")]},  # differs in its reasoning only
    )
    a, b, c = (pair(items[0], "preference_implicit", 4), pair(items[1], "preference_implicit", 6),
               pair(items[2], "preference_implicit", 1))
    assert texts(a.chosen)[4:] == [("assistant", "6")] and texts(a.rejected)[4:] == [("assistant", "7")]
    assert b.chosen.messages[4].tool_calls == (ToolCall("calc", {"x": "3+3"}),)
    assert c.chosen.messages[1].reasoning == "Greet." and c.rejected.messages[1].reasoning is None


def test_ranking_sharegpt_with_system_and_tools(tmp_path: Path) -> None:
    tools = json.dumps([{"name": "search", "description": "Search.", "parameters": {"type": "object"}}])
    record = {
        "system": "You are kind.", "tools": tools,
        "conversations": [{"from": "human", "value": "Find cats."},
                          {"from": "function_call", "value": '{"name": "search", "arguments": {"q": "cats"}}'},
                          {"from": "observation", "value": "3 cats"}, {"from": "gpt", "value": "Found 3."},
                          {"from": "human", "value": "Thanks?"}],
        "chosen": gpt("You're welcome."), "rejected": [gpt("Whatever.")],
    }
    (p,) = read(tmp_path, record)
    p = pair(p, "ranking", 6)
    assert [m.role for m in p.chosen.messages] == ["system", "user", "assistant", "tool", "assistant", "user",
                                                   "assistant"]
    assert p.chosen.messages[0] == Message("system", "You are kind.")
    assert p.chosen.messages[2].tool_calls == (ToolCall("search", {"q": "cats"}),)
    assert texts(p.rejected)[-1] == ("assistant", "Whatever.")
    assert p.chosen.tools == ({"type": "function", "function": json.loads(tools)[0]},)


def test_ranking_v1_messages_with_typed_parts_and_loss_weight(tmp_path: Path) -> None:
    def v1(role: str, *parts: tuple[str, str], weight: float) -> dict:
        return {"role": role, "content": [{"type": t, "value": v} for t, v in parts], "loss_weight": weight}

    prompt = [v1("system", ("text", "Translate."), weight=0.0), v1("user", ("text", "Bonjour"), weight=0.0)]
    record = {"chosen_messages": [*prompt, v1("assistant", ("reasoning", "French."), ("text", "Hello"), weight=1.0)],
              "rejected_messages": [*prompt, v1("assistant", ("text", "Good"), ("text", "bye"), weight=1.0)]}
    (p,) = read(tmp_path, record)
    p = pair(p, "ranking_messages", 2)
    assert p.chosen.messages[2] == Message("assistant", "Hello", reasoning="French.")
    assert texts(p.rejected) == [("system", "Translate."), ("user", "Bonjour"), ("assistant", "Goodbye")]


def test_kto_records_are_labelled_conversations(tmp_path: Path) -> None:
    items = read(
        tmp_path,
        {"prompt": "2+2?", "completion": "4", "label": True},
        {"prompt": [turn("system", "Be brief."), turn("user", "2+2?")], "completion": [turn("assistant", "5")],
         "label": False},
    )
    for item, label in zip(items, (True, False), strict=True):
        assert isinstance(item, Conversation) and item.kind == "kto" and item.label is label
    assert texts(items[0]) == [("user", "2+2?"), ("assistant", "4")]
    assert texts(items[1]) == [("system", "Be brief."), ("user", "2+2?"), ("assistant", "5")]
    items = read(
        tmp_path,
        {"messages": [turn("user", "Hi"), turn("assistant", "Hello")], "label": True},
        # LLaMA-Factory's ShareGPT-style KTO: from / value under messages, a top-level system
        {"messages": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Go"}], "label": False,
         "system": "Be kind."},
    )
    assert [(i.kind, i.label) for i in items] == [("kto_messages", True), ("kto_messages", False)]  # type: ignore[union-attr]
    assert texts(items[1]) == [("system", "Be kind."), ("user", "Hi"), ("assistant", "Go")]  # type: ignore[arg-type]


@pytest.mark.parametrize("container", ["array", "jsonl", "parquet"])
def test_each_shape_from_each_container(tmp_path: Path, container: str) -> None:
    shapes = {
        "preference": {"prompt": "Hi", "chosen": "Hello", "rejected": "Go"},
        "preference_implicit": {"chosen": [turn("user", "Hi"), turn("assistant", "Hello")],
                                "rejected": [turn("user", "Hi"), turn("assistant", "Go")]},
        "ranking": {"conversations": [{"from": "human", "value": "Hi"}], "chosen": gpt("Hello"), "rejected": gpt("Go")},
        "ranking_messages": {"chosen_messages": [turn("user", "Hi"), turn("assistant", "Hello")],
                             "rejected_messages": [turn("user", "Hi"), turn("assistant", "Go")]},
        "kto": {"prompt": "Hi", "completion": "Hello", "label": True},
        "kto_messages": {"messages": [turn("user", "Hi"), turn("assistant", "Hello")], "label": True},
    }
    assert set(shapes) == set(PAIR_FORMATS + KTO_FORMATS)
    for fmt, record in shapes.items():
        path = tmp_path / f"{fmt}.{'json' if container == 'array' else container}"
        if container == "parquet":
            pq.write_table(pa.Table.from_pylist([record] * 2), path)
        elif container == "array":
            path.write_text(json.dumps([record] * 2))
        else:
            write_jsonl(path, [record] * 2)
        reader = RecordReader([path])
        items = list(reader)
        assert reader.inputs[0].format == fmt and reader.inputs[0].records == 2
        assert check_inputs([path]) == [fmt]
        for item in items:
            if fmt in PAIR_FORMATS:
                p = pair(item, fmt, 1)
                assert texts(p.chosen) == [("user", "Hi"), ("assistant", "Hello")]
            else:
                assert isinstance(item, Conversation) and item.kind == fmt and item.label is True


# --------------------------------------------------------------------------- rejections


def test_identical_sides_are_rejected(tmp_path: Path) -> None:
    same = [turn("user", "Hi"), turn("assistant", "Hello")]
    items = each(
        tmp_path,
        {"prompt": "Hi", "chosen": "Hello", "rejected": "Hello"},
        {"chosen": same, "rejected": same},
        {"conversations": [{"from": "human", "value": "Hi"}], "chosen": gpt("Hello"), "rejected": gpt("Hello")},
        {"prompt": "Hi", "chosen": "Hello", "rejected": "Hello!"},  # one character apart: a pair
    )
    r = rejection(items[0], "identical_sides", "completions are the same (1 message)")
    assert r.message().startswith(f"{tmp_path / 'record0.jsonl'}: record 0: identical_sides: ")
    rejection(items[1], "identical_sides", "'chosen' and 'rejected' are the same conversation")
    rejection(items[2], "identical_sides", "completions are the same")
    pair(items[3], "preference", 1)


def test_implicit_sides_with_different_prompts_are_rejected_naming_where(tmp_path: Path) -> None:
    u, a = turn("user", "Hi"), turn("assistant", "Hello")
    items = each(
        tmp_path,
        {"chosen": [u, a], "rejected": [turn("user", "Hey"), a]},
        {"chosen": [u, a, turn("user", "More?"), a], "rejected": [u, a, turn("user", "Less?"), a]},
        {"chosen": [u, a], "rejected": [u, a, turn("user", "More?"), turn("assistant", "No")]},
        {"chosen_messages": [turn("system", "A"), u, a], "rejected_messages": [turn("system", "B"), u, a]},
    )
    r = rejection(items[0], "different_prompts", "differ from message 0 on (chosen turn 0 (user), rejected turn 0 "
                  "(user)): they share no prompt")
    assert r.message().startswith(f"{tmp_path / 'record0.jsonl'}: record 0: different_prompts: ")
    rejection(items[1], "different_prompts", "message 2", "chosen turn 2 (user)", "each must go on with an assistant")
    rejection(items[2], "different_prompts", "message 2", "chosen its end", "'chosen' has nothing after")
    rejection(items[3], "different_prompts", "chosen_messages turn 0 (system)", "share no prompt")


def test_bad_labels_are_rejected(tmp_path: Path) -> None:
    pc = {"prompt": "Hi", "completion": "Hello"}
    msgs = {"messages": [turn("user", "Hi"), turn("assistant", "Hello")]}
    items = read(tmp_path, {**pc, "label": 1}, {**pc, "label": "true"}, {**pc, "label": None})
    items += read(tmp_path, {**msgs, "label": "false"}, {**msgs, "label": [True]})
    rejection(items[0], "bad_label", "'label' is a number (1), expected true (desirable) or false")
    rejection(items[1], "bad_label", "a string ('true')")
    rejection(items[2], "bad_label", "'label' is null")
    rejection(items[3], "bad_label", "a string ('false')")
    r = rejection(items[4], "bad_label", "an array, expected")
    assert r.message().startswith(f"{tmp_path / 'prefs.jsonl'}: record 1: bad_label: ")


def test_missing_fields_and_wrong_types(tmp_path: Path) -> None:
    items = each(
        tmp_path,
        {"prompt": "Hi", "rejected": "Go"},
        {"chosen": [turn("user", "Hi"), turn("assistant", "Hello")]},
        {"conversations": [{"from": "human", "value": "Hi"}], "chosen": gpt("Hello")},
        {"prompt": "Hi", "chosen": 5, "rejected": "Go"},
        {"chosen": "Hello", "rejected": "Go"},
        {"conversations": "Hi", "chosen": gpt("Hello"), "rejected": gpt("Go")},
        {"chosen_messages": [], "rejected_messages": [turn("user", "Hi"), turn("assistant", "Go")]},
        {"prompt": [], "chosen": "Hello", "rejected": "Go"},
    )
    rejection(items[0], "missing_field", "no 'chosen' field (keys: prompt, rejected)")
    rejection(items[1], "missing_field", "no 'rejected' field")
    rejection(items[2], "missing_field", "no 'rejected' field")
    rejection(items[3], "wrong_type", "'chosen' is a number, expected a string, a message or an array")
    rejection(items[4], "wrong_type", "'chosen' is a string, expected an array of messages")
    rejection(items[5], "wrong_type", "'conversations' is a string")
    rejection(items[6], "empty_conversation", "'chosen_messages' is an empty list")
    rejection(items[7], "empty_conversation", "'prompt' is an empty list")


def test_the_sft_checks_hold_on_each_side_and_name_it(tmp_path: Path) -> None:
    u = turn("user", "Hi")
    items = each(
        tmp_path,
        {"prompt": "Hi", "chosen": "  ", "rejected": "Go"},
        {"prompt": " ", "chosen": "Hello", "rejected": "Go"},
        {"prompt": [u], "chosen": [turn("assistant", "Hello")], "rejected": [turn("robot", "Go")]},
        {"prompt": [u], "chosen": [turn("assistant", None, tool_calls=[{"function": {"arguments": "{}"}}])],
         "rejected": [turn("assistant", "Go")]},
        {"chosen": [u, turn("assistant", "Hello")], "rejected": [u, turn("assistant", " ")]},
        {"prompt": [u], "chosen": [turn("user", "Me again"), turn("assistant", "Hello")],
         "rejected": [turn("assistant", "Go")]},
        {"prompt": [u], "chosen": [turn("assistant", "Hi \ud83d")], "rejected": [turn("assistant", "Go")]},
        {"prompt": [u], "chosen": [turn("assistant", "Hi", weight=0)], "rejected": [turn("assistant", "Go")]},
    )
    rejection(items[0], "empty_output", "'chosen' is only whitespace")
    rejection(items[1], "empty_turn", "'prompt' is only whitespace")
    rejection(items[2], "unknown_role", "rejected: turn 1 has role 'robot'")
    rejection(items[3], "bad_tool_call", "chosen: turn 1")
    rejection(items[4], "empty_output", "rejected: turn 1 (assistant) is only whitespace")
    rejection(items[5], "no_assistant_turn", "'chosen' starts with a user message (turn 1)")
    rejection(items[6], "invalid_utf8", "chosen: turn 1 (assistant) holds a lone surrogate")
    rejection(items[7], "no_trained_turn", "chosen: every assistant turn is marked weight 0")


def test_turn_policies_apply_to_each_side(tmp_path: Path) -> None:
    """A leading assistant turn is dropped from both sides (and counted on each), the prompt counted after it;
    --leading-assistant keep keeps it; --blank-turns drop drops a blank prompt turn from both."""
    record = {"prompt": [turn("assistant", "...so"), turn("user", "Hi")], "chosen": "Hello", "rejected": "Go"}
    (p,) = read(tmp_path, record)
    p = pair(p, "preference", 1)
    assert p.chosen.dropped_turns == p.rejected.dropped_turns == {"leading_assistant": 1}
    (p,) = read(tmp_path, record, leading_assistant="keep")
    assert pair(p, "preference", 2).chosen.dropped_turns == {}
    record = {"prompt": [turn("user", "Hi"), turn("user", " ")], "chosen": "Hello", "rejected": "Go"}
    rejection(read(tmp_path, record)[0], "empty_turn", "chosen: turn 1 (user)")
    (p,) = read(tmp_path, record, blank_turns="drop")
    assert pair(p, "preference", 1).rejected.dropped_turns == {"blank_turn": 1}


# --------------------------------------------------------------------------- detection, --format, --columns


def test_detection_by_keys_comes_before_the_sft_formats() -> None:
    assert detect_format({"prompt": "a", "chosen": "b", "rejected": "c"}) == "preference"
    assert detect_format({"chosen": [], "rejected": []}) == "preference_implicit"
    assert detect_format({"conversations": [], "chosen": {}, "rejected": {}}) == "ranking"
    assert detect_format({"chosen_messages": [], "rejected_messages": []}) == "ranking_messages"
    assert detect_format({"prompt": "a", "completion": "b", "label": True}) == "kto"
    assert detect_format({"messages": [], "label": False}) == "kto_messages"
    # a label alone, or next to other formats' keys, is no KTO record; a pair needs only one side to be told
    assert detect_format({"instruction": "a", "output": "b", "label": True}) == "alpaca"
    assert detect_format({"prompt": "a", "response": "b", "label": True}) == "prompt_completion"
    assert detect_format({"messages": []}) == "messages" and detect_format({"conversations": []}) == "sharegpt"
    assert detect_format({"prompt": "a", "rejected": "c"}) == "preference"


def test_a_file_mixing_pairs_and_sft_records_rejects_the_others(tmp_path: Path) -> None:
    sft = {"messages": [turn("user", "Hi"), turn("assistant", "Hello")]}
    items = read(tmp_path, {"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}, sft,
                 {**sft, "label": True}, {"prompt": "Hi", "chosen": "Hey", "rejected": "No"})
    assert isinstance(items[0], Pair) and isinstance(items[3], Pair)
    rejection(items[1], "format_mismatch", "the record is messages but its file is preference")
    rejection(items[2], "format_mismatch", "the record is kto_messages but its file is preference")
    items = read(tmp_path, sft, {"prompt": "Hi", "chosen": "Hello", "rejected": "Go"})
    assert isinstance(items[0], Conversation) and items[0].label is None
    rejection(items[1], "format_mismatch", "the record is preference but its file is messages")


def test_format_forces_a_preference_format(tmp_path: Path) -> None:
    sides = {"chosen": [turn("user", "Hi"), turn("assistant", "Hello")],
             "rejected": [turn("user", "Hi"), turn("assistant", "Go")]}
    # with --format every record is read as that format, whatever its other keys say
    (p,) = read(tmp_path, {**sides, "prompt": "ignored"}, fmt="preference_implicit")
    pair(p, "preference_implicit", 1)
    (r,) = read(tmp_path, {"messages": sides["chosen"]}, fmt="kto_messages")
    rejection(r, "missing_field", "no 'label' field")
    assert check_inputs([tmp_path / "prefs.jsonl"], "kto_messages") == ["kto_messages"]
    assert set(PAIR_FORMATS + KTO_FORMATS) <= set(FORMATS)


@pytest.mark.parametrize("fmt", PAIR_FORMATS + KTO_FORMATS)
def test_the_command_line_takes_each_preference_format(fmt: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "o"),
                                       "--format", fmt])
    assert "Invalid value for '--format'" not in result.output
    assert "none.jsonl: no such file" in result.output


def test_columns_map_onto_the_preference_fields(tmp_path: Path) -> None:
    items = read(tmp_path, {"question": "2+2?", "good": "4", "bad": "5"},
                 columns=parse_columns("prompt=question,chosen=good,rejected=bad"))
    assert texts(pair(items[0], "preference", 1).rejected) == [("user", "2+2?"), ("assistant", "5")]
    items = read(tmp_path, {"c": [{"speaker": "user", "text": "Hi"}, {"speaker": "assistant", "text": "A"}],
                            "r": [{"speaker": "user", "text": "Hi"}, {"speaker": "assistant", "text": "B"}]},
                 columns=parse_columns("chosen_messages=c,rejected_messages=r,role=speaker,content=text"))
    assert texts(pair(items[0], "ranking_messages", 1).chosen) == [("user", "Hi"), ("assistant", "A")]
    # a string prompt's turn is made with the mapped keys, so a turn map does not break it
    items = read(tmp_path, {"prompt": "Hi", "chosen": [{"speaker": "assistant", "text": "A"}], "rejected": "B"},
                 columns=parse_columns("role=speaker,content=text"))
    assert texts(pair(items[0], "preference", 1).chosen) == [("user", "Hi"), ("assistant", "A")]
    items = read(tmp_path, {"prompt": "Hi", "completion": "A", "kto_tag": False}, columns={"label": "kto_tag"})
    assert isinstance(items[0], Conversation) and items[0].kind == "kto" and items[0].label is False


# --------------------------------------------------------------------------- the shared LLaMA-Factory files


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not found (the shared data is only in CI and developer checkouts)")
    return path


def read_whole(path: Path, fmt: str) -> list[Conversation | Pair | Rejection]:
    reader = RecordReader([path])
    items = list(reader)
    raw = json.loads(path.read_text()) if path.suffix == ".json" else [
        json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert reader.inputs[0].format == fmt and reader.inputs[0].records == len(raw) == len(items)
    assert check_inputs([path]) == [fmt]
    # every record is counted once, as a pair / conversation or a rejection
    assert [i.source.index for i in items] == list(range(len(raw)))
    assert all(isinstance(i, Rejection) for i in items if not isinstance(i, Pair | Conversation))
    return items


_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def test_llamafactory_dpo_demo_read_whole_against_its_json() -> None:
    path = shared("llamafactory_dpo_en_demo.json")
    items = read_whole(path, "ranking")
    raw = json.loads(path.read_text())
    assert all(isinstance(i, Pair) for i in items)  # the file is clean: 300 pairs, no rejection
    for item, record in zip(items, raw, strict=True):
        system = [("system", record["system"])] if record.get("system") else []
        prompt = system + [(_ROLES[t["from"]], t["value"]) for t in record["conversations"]]
        p = pair(item, "ranking", len(prompt))
        assert texts(p.chosen) == [*prompt, ("assistant", record["chosen"]["value"])]
        assert texts(p.rejected) == [*prompt, ("assistant", record["rejected"]["value"])]


def test_llamafactory_v1_dpo_demo_read_whole_against_its_json() -> None:
    path = shared("llamafactory_v1_dpo_demo.jsonl")
    items = read_whole(path, "ranking_messages")
    for item, line in zip(items, path.read_text().splitlines(), strict=True):
        record = json.loads(line)
        sides = [[(m["role"], "".join(p["value"] for p in m["content"] if p["type"] == "text"))
                  for m in record[key]] for key in ("chosen_messages", "rejected_messages")]
        assert all(p["type"] == "text" for key in ("chosen_messages", "rejected_messages")
                   for m in record[key] for p in m["content"])
        common = next(k for k, (c, r) in enumerate(zip(*sides, strict=False)) if c != r)
        p = pair(item, "ranking_messages", common)
        assert [texts(p.chosen), texts(p.rejected)] == sides
        assert [m.trained for m in p.chosen.messages] == [True] * len(sides[0])  # v1's own weights: no flags


def test_llamafactory_kto_demo_read_whole_against_its_json() -> None:
    path = shared("llamafactory_kto_en_demo.json")
    items = read_whole(path, "kto_messages")
    raw = json.loads(path.read_text())
    assert all(isinstance(i, Conversation) for i in items)
    for item, record in zip(items, raw, strict=True):
        assert item.kind == "kto_messages" and item.label is record["label"]  # type: ignore[union-attr]
        assert texts(item) == [(m["role"], m["content"]) for m in record["messages"]]  # type: ignore[arg-type]
    assert sum(i.label for i in items) == 150  # type: ignore[union-attr, misc]
