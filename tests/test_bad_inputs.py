"""The bad-input corpus (tests/bad_inputs/): for each kind of bad input, the
message names the file, the record and the reason; the record is listed in
rejected.jsonl and counted in the manifest; the good records around it are
packed; --strict makes the first one fail the build."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from packer import BuildError, build
from packer.inspect.verify import verify
from packer.pipeline.build import BuildEvents
from packer.read.formats import RecordReader, check_inputs

CORPUS = Path(__file__).parent / "bad_inputs"

#: file -> (records read, packed, {reason: count}, [(record index, words in the detail)])
EXPECTED = {
    "truncated.json": (2, 1, {"malformed_json": 1}, [(1, "line 1 column")]),
    "trailing_comma.json": (3, 2, {"malformed_json": 1}, [(2, "trailing comma")]),
    # broken elements mid-array: reading goes on after each (issue 24); the nested look-alikes are no records
    "broken_elements.json": (
        5, 3, {"malformed_json": 2},
        [(1, "line 8 column 24: Expecting ',' delimiter; skipped 212 bytes; reading on at line 14 column 1"),
         (3, "line 20 column 3: Expecting ',' delimiter; skipped 57 bytes; reading on at line 22 column 1")],
    ),
    # gzip'd JSON Lines: read as the file it holds, same messages
    "compressed.jsonl.gz": (3, 2, {"malformed_json": 1}, [(1, "line 2 column 44: Expecting value")]),
    "invalid_utf8.jsonl": (3, 2, {"invalid_utf8": 1}, [(1, "line 2")]),
    # a JSON escape of half a surrogate pair: valid JSON, no UTF-8 form (a whole pair is fine)
    "lone_surrogate.jsonl": (3, 2, {"invalid_utf8": 1}, [(1, "lone surrogate '\\ud83d' at character 15")]),
    "bom.json": (2, 2, {}, []),
    "blank_lines_and_broken_line.jsonl": (3, 2, {"malformed_json": 1}, [(1, "line 3 column 37: Expecting value")]),
    "wrong_types.jsonl": (
        7, 1, {"wrong_type": 5, "not_an_object": 1},
        [(1, "'instruction' is NaN"), (2, "'instruction' is null"), (3, "'output' is a number"),
         (4, "'output' is an array"), (5, "'input' is a number"), (6, "not an object")],
    ),
    "missing_output.jsonl": (3, 1, {"missing_field": 2}, [(1, "no 'output' field"), (2, "no 'instruction' field")]),
    "empty_output.jsonl": (3, 1, {"empty_output": 2}, [(1, "empty"), (2, "whitespace")]),
    "whitespace_turns.json": (3, 1, {"empty_turn": 1, "empty_output": 1}, [(1, "turn 0"), (2, "turn 1")]),
    "unknown_from.json": (2, 1, {"unknown_role": 1}, [(1, "'narrator'")]),
    "two_assistant_turns_in_a_row.json": (1, 1, {}, []),
    "ends_on_user.json": (1, 1, {}, []),
    "no_assistant_turn.json": (2, 1, {"no_assistant_turn": 1}, [(1, "no assistant turn")]),
    "system_in_the_middle.json": (1, 1, {}, []),
    "control_tokens_in_text.jsonl": (
        4, 2, {"special_token_in_content": 2}, [(1, "'<|im_end|>'"), (2, "'<|im_start|>'")],
    ),
    "mixed_formats.jsonl": (3, 1, {"format_mismatch": 2}, [(1, "sharegpt"), (2, "messages")]),
    "duplicates.jsonl": (4, 4, {}, []),
    "prompt_completion_bad.jsonl": (
        7, 2, {"missing_field": 2, "wrong_type": 1, "empty_output": 2},
        [(1, "no 'completion' (or 'response') field (keys: prompt)"),
         (2, "'prompt' is a string and 'completion' an array"), (3, "'completion' is only whitespace"),
         (4, "'completion' is an empty list"), (5, "turn 1 (assistant) has no 'content' (keys: role)")],
    ),
    "text_bad.jsonl": (
        6, 2, {"wrong_type": 2, "empty_output": 1, "missing_field": 1},
        [(1, "'text' is a number"), (2, "'text' is only whitespace"), (3, "'text' is null"),
         (4, "no 'text' field (keys: body)")],
    ),
    # an Arrow IPC stream, as HF datasets writes (two record batches): rows are records, named by file and row
    "hf_stream.arrow": (3, 2, {"empty_output": 1}, [(1, "turn 1 (assistant) is empty")]),
    # tool calls (issue 15). Record 1 is a good tool-call record, but the default template here (the demo
    # tokenizer's own ChatML, which knows no tools) would drop its calls: template_error naming chatml
    "tool_calls_bad.jsonl": (
        8, 1, {"template_error": 1, "bad_tool_call": 3, "bad_tools": 2, "orphan_tool_result": 1},
        [(1, "does not render the tool calls of turn 1; templates that render tools"),
         (2, "tool call 0 (get_weather): 'arguments' is not JSON"), (3, "tool call 0 has no function name"),
         (4, "'arguments' is an array, expected a JSON object"),
         (5, "'tools' is an object, expected an array of tool definitions"), (6, "'tools' is not JSON"),
         (7, "turn 1 (tool) follows turn 0 (user), which makes no tool call")],
    ),
    "tool_sharegpt_bad.jsonl": (
        7, 1, {"template_error": 1, "bad_tool_call": 3, "bad_tools": 1, "orphan_tool_result": 1},
        [(1, "--template chatml"), (2, "turn 1 (function_call): the value is not JSON"),
         (3, "turn 1 (function_call) has no function name"), (4, "turn 1 (function_call): an empty list of calls"),
         (5, "'tools' is an object, expected an array"),
         (6, "turn 1 (tool) follows turn 0 (user), which makes no tool call")],
    ),
    "weight_bad.jsonl": (
        7, 2, {"bad_weight": 4, "no_trained_turn": 1},
        [(2, "turn 1 (assistant): 'weight' is 2, expected 0 or 1"), (3, "'weight' is True, expected 0 or 1"),
         (4, "'training' is a string, expected true or false"), (5, "'weight' 0 and 'training' True disagree"),
         (6, "every assistant turn is marked weight 0 / training false")],
    ),
    # LLaMA-Factory v1 (issue 25): typed content parts, loss_weight; records 0 and 6 (an untrained first answer) pack
    "llamafactory_v1_bad.jsonl": (
        7, 2, {"bad_weight": 1, "bad_tool_call": 1, "wrong_type": 2, "no_trained_turn": 1},
        [(1, "'loss_weight' is 0.5, expected 0.0 or 1.0"), (2, "turn 1: tool call part 0: the value is not JSON"),
         (3, "type 'reasoning', only text is supported (reasoning and tool_call parts only in an assistant turn)"),
         (4, "type 'image_url', only text is supported"), (5, "every assistant turn is marked weight 0")],
    ),
    # a system message prompts an answer (issue 25): packed; an assistant turn alone is not (--leading-assistant
    # keep packs it); a greeting before the first user turn is dropped and counted
    "system_and_assistant.jsonl": (3, 2, {"no_assistant_turn": 1}, [(1, "no assistant turn after a user turn")]),
}


def check(out: Path, path: Path, m: dict, expected: tuple) -> None:
    records, packed, reasons, lines = expected
    c = m["counts"]
    assert (c["records"], c["packed"], c["rejected"]) == (records, packed, reasons)
    assert c["records"] == c["packed"] + sum(c["rejected"].values()) + c.get("unsampled", 0)
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["record"] for r in rejected] == [i for i, _ in lines]
    for r, (_, words) in zip(rejected, lines, strict=True):
        assert r["input"] == str(path) and words in r["detail"]
    assert verify(out) == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_input_is_accounted_for(name, tmp_path, demo_tok):
    path = CORPUS / name
    events_seen = []

    m = build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=512,
              events=BuildEvents(on_rejection=lambda r: events_seen.append(r.message())))
    check(tmp_path / "o", path, m, EXPECTED[name])
    for msg, (index, _) in zip(events_seen, EXPECTED[name][3], strict=True):
        assert msg.startswith(f"{path}: record {index}: ")


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e[2]))
def test_strict_fails_on_the_first(name, tmp_path, demo_tok):
    first = EXPECTED[name][3][0][0]
    with pytest.raises(BuildError, match=rf"{name}: record {first}: .*--strict"):
        build([CORPUS / name], tmp_path / "o", tokenizer=demo_tok, seq_len=512, strict=True)
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_turn_policies_are_counted(tmp_path, demo_tok):
    m = build([CORPUS / "ends_on_user.json"], tmp_path / "o", tokenizer=demo_tok)
    assert m["counts"]["dropped_turns"] == {"trailing_non_assistant": 1}
    m = build([CORPUS / "system_and_assistant.jsonl"], tmp_path / "s", tokenizer=demo_tok)
    assert m["counts"]["dropped_turns"] == {"leading_assistant": 1}
    m = build([CORPUS / "system_and_assistant.jsonl"], tmp_path / "k", tokenizer=demo_tok, leading_assistant="keep")
    assert (m["counts"]["packed"], m["counts"]["dropped_turns"]) == (3, {})


def test_duplicates_are_kept_and_counted_or_rejected_with_dedupe(tmp_path, demo_tok):
    path = CORPUS / "duplicates.jsonl"
    m = build([path], tmp_path / "keep", tokenizer=demo_tok)
    assert m["counts"]["duplicates"] == 2 and m["counts"]["packed"] == 4
    m = build([path], tmp_path / "dedupe", tokenizer=demo_tok, dedupe=True)
    assert m["counts"]["rejected"] == {"duplicate": 2} and m["counts"]["packed"] == 2
    lines = [json.loads(x) for x in (tmp_path / "dedupe" / "rejected.jsonl").read_text().splitlines()]
    assert [x["record"] for x in lines] == [1, 3]
    assert all(f"same conversation as {path}: record 0" in x["detail"] for x in lines)


SUPPORTED = (
    "supported: JSON (an array of records, or one object), JSON Lines, Parquet, Arrow (HF datasets: a save_to_disk "
    "folder or a cache .arrow file); record formats alpaca (instruction/input/output), sharegpt (conversations of "
    "{from, value}), messages (OpenAI role/content), prompt_completion (prompt/completion or prompt/response), "
    "text (text), preference (prompt/chosen/rejected), preference_implicit (chosen/rejected conversations), ranking "
    "(conversations + chosen/rejected turns), ranking_messages (chosen_messages/rejected_messages), kto "
    "(prompt/completion/label), kto_messages (messages/label)"
)


def not_json(start: str) -> str:
    return f"not JSON, JSON Lines, Parquet or Arrow: it starts with {start}; {SUPPORTED}"


#: file -> the whole message of the build's failure, after the file's path
FAILS = {
    "empty.json": "empty file, no records",
    "not_json.txt": not_json(r"'instruction: Name a colour.\noutput: Blue'..."),
    "spreadsheet.csv": not_json(r"'instruction,input,output\nhi,,yo\n'"),
    "broken_array_unknown.json": (
        "record 0 is not valid JSON (line 2 column 21: Expecting ',' delimiter), and no later record of the array "
        "could be told apart from it: the 91 bytes from there to the end of the file hold an unknown number of "
        "records, which packer will not drop unseen; fix the JSON there (python -m json.tool FILE names the first "
        "error), or give the records as JSON Lines, where a broken line loses only itself"
    ),
    "two_arrays.json": (
        "line 2 column 1: more data after the array's closing ']' (two arrays one after the other?), which may hold "
        "records; packer reads one array per file: split the file, or give the records as JSON Lines"
    ),
}


@pytest.mark.parametrize("name", sorted(FAILS))
def test_unreadable_files_fail_the_build_naming_the_file(name, tmp_path, demo_tok):
    message = f"{CORPUS / name}: {FAILS[name]}"
    with pytest.raises(BuildError) as err:
        check_inputs([CORPUS / name])
    assert str(err.value) == message
    with pytest.raises(BuildError) as err:
        build([CORPUS / name], tmp_path / "o", tokenizer=demo_tok)
    assert str(err.value) == message
    assert not (tmp_path / "o").exists()


def test_the_check_before_a_build_passes_files_with_bad_records():
    """Every file of the corpus but those that fail is read: the pre-flight check lets them through,
    with the format the reader gives them."""
    names = sorted(p.name for p in CORPUS.iterdir() if p.suffix != ".md" and p.name not in FAILS)
    assert set(names) == set(EXPECTED)
    reader = RecordReader([CORPUS / n for n in names])
    list(reader)
    assert check_inputs([CORPUS / n for n in names]) == [s.format for s in reader.inputs]


def test_readme_lists_every_file():
    readme = (CORPUS / "README.md").read_text()
    listed = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")}
    assert listed == {p.name for p in CORPUS.iterdir() if p.suffix != ".md"}


def test_very_long_record(tmp_path, demo_tok):
    story = " ".join(f"word{i % 1000} and more" for i in range(40_000))
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"instruction": "Tell it.", "output": "Short."}) + "\n"
                    + json.dumps({"instruction": "Tell a long story.", "output": story}) + "\n")
    n_tokens = len(demo_tok.tokenizer.encode(story).ids)
    assert n_tokens > 100_000
    m = build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=4096)
    assert m["counts"]["rejected"] == {"overlong": 1} and m["counts"]["packed"] == 1
    line = json.loads((tmp_path / "o" / "rejected.jsonl").read_text())
    assert line["record"] == 1 and "> seq_len 4096" in line["detail"]
    m = build([path], tmp_path / "t", tokenizer=demo_tok, seq_len=4096, overlong="truncate")
    assert m["counts"]["truncated"] == 1 and m["counts"]["packed"] == 2


def test_parquet_with_wrong_column_types(tmp_path, demo_tok):
    path = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"instruction": ["Name a colour.", "Count."], "input": [None, None], "output": ["Blue.", None]}),
        path,
    )
    bad_types = tmp_path / "types.parquet"
    pq.write_table(pa.table({"instruction": [1, 2], "output": [3.5, 4.5]}), bad_types)
    m = build([path, bad_types], tmp_path / "o", tokenizer=demo_tok)
    assert m["counts"]["packed"] == 1
    assert m["counts"]["rejected"] == {"wrong_type": 3}
    lines = [json.loads(x) for x in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert [(Path(x["input"]).name, x["record"]) for x in lines] == [
        ("bad.parquet", 1), ("types.parquet", 0), ("types.parquet", 1),
    ]
