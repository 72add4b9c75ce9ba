"""Tool calls, tool results, reasoning and per-message training flags (issue 15).

- with ``--template tokenizer`` on Qwen2.5 and Qwen3 (../shared; skipped where it is absent) the ids are
  ``tokenizer.json``'s encoding of transformers' ``apply_chat_template(messages, tools=...)``, on every record
  of the glaive tool-call demo converted to OpenAI messages, and on records with parallel calls, reasoning
  (Qwen3; Qwen2.5's template drops it, so it rejects them) and tool results; the glaive file read as ShareGPT
  gives the same ids;
- every mask column is its strategy's role set on the roles, less the untrained tokens (``full`` keeps them;
  ``last_turn`` keeps only the final assistant turn);
- the tokens of each role decode to what the record says: answers, calls, reasoning, tool results;
- a message marked ``"weight": 0`` / ``"training": false`` gets no loss under every strategy but ``full``,
  in the shards and in ``PackedDataset`` (role sets, ``prompt_loss_weight``), and is counted in the manifest;
- the built-in ``chatml`` renders tools, calls, results and reasoning; the other built-ins reject such
  records naming it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from packer import build
from packer.inspect.verify import verify
from packer.output import roles as R
from packer.read.formats import RecordReader
from packer.read.records import Conversation, Rejection, ToolCall
from packer.tokens.templates import BUILTIN_TEMPLATES
from packer.train.dataset import PackedDataset

from .helpers import (
    DEMO_TOKENIZER,
    SHARED_DATA,
    SHARED_TOKENIZERS,
    hf_tokenizer,
    need_shared,
    read_documents,
    real_tokenizer,
    shard_rows,
    tokenizer_params,
)

GLAIVE = "sharegpt_glaive_toolcall_en_demo.json"
QWEN = ["qwen2.5-instruct", "qwen3"]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"name": "get_time", "description": "The local time of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def call(name: str, args: object, cid: str | None = None) -> dict:
    out: dict = {"type": "function", "function": {"name": name, "arguments": args}}
    if cid is not None:
        out["id"] = cid
    return out


#: records of the shapes the glaive file lacks, as a file holds them (OpenAI messages)
PARALLEL_REASONING = {  # parallel calls, reasoning before them and before the answer, tool results
    "messages": [
        {"role": "user", "content": "Weather in Oslo and Paris?"},
        {"role": "assistant", "content": "Let me check both.", "reasoning_content": "Two cities: two calls.",
         "tool_calls": [call("get_weather", {"city": "Oslo"}, "a"), call("get_weather", {"city": "Paris"}, "b")]},
        {"role": "tool", "tool_call_id": "a", "content": "{\"sky\": \"sunny\", \"temp\": 21}"},
        {"role": "tool", "tool_call_id": "b", "content": "{\"sky\": \"rain\", \"temp\": 14}"},
        {"role": "assistant", "content": "Oslo is sunny (21°C); Paris has rain (14°C).",
         "reasoning_content": "Put the two results together."},
    ],
    "tools": [WEATHER],
}
REASONING_ONLY = {
    "messages": [
        {"role": "system", "content": "Think before you answer."},
        {"role": "user", "content": "What is 17 * 3?"},
        {"role": "assistant", "content": "51", "reasoning_content": "17 * 3 = 51."},
    ],
}
#: reasoning in two exchanges: Qwen3 keeps only the last exchange's (the earlier is left out, not all)
REASONING_TWICE = {
    "messages": [
        {"role": "user", "content": "What time is it in Tokyo?"},
        {"role": "assistant", "content": "", "reasoning_content": "Ask the clock.",
         "tool_calls": [call("get_time", {"city": "Tokyo"})]},
        {"role": "tool", "content": "09:30"},
        {"role": "assistant", "content": "It is 09:30 in Tokyo."},
        {"role": "user", "content": "And in Lima?"},
        {"role": "assistant", "content": None, "reasoning_content": "Ask again, for Lima.",
         "tool_calls": [call("get_time", {"city": "Lima"})]},
        {"role": "tool", "content": "19:30"},
        {"role": "assistant", "content": "It is 19:30 in Lima.", "reasoning_content": "Read it out."},
    ],
    "tools": [{"type": "function", "function": TIME}],
}
#: parallel calls, no reasoning: content null, one call's arguments a JSON string, tools a JSON string of
#: bare definitions, tool results with their call's id and name, one of them empty
PARALLEL_PLAIN = {
    "messages": [
        {"role": "system", "content": "You are a travel assistant."},
        {"role": "user", "content": "Weather and time in Rome?"},
        {"role": "assistant", "content": None,
         "tool_calls": [call("get_weather", "{\"city\": \"Rome\"}", "w1"), call("get_time", {"city": "Rome"}, "t1")]},
        {"role": "tool", "tool_call_id": "w1", "name": "get_weather", "content": "{\"sky\": \"clear\"}"},
        {"role": "tool", "tool_call_id": "t1", "name": "get_time", "content": ""},
        {"role": "assistant", "content": "Clear skies in Rome; the clock did not answer."},
    ],
    "tools": json.dumps([WEATHER["function"], TIME]),
}
#: an answer and a call in one message
CONTENT_AND_CALL = {
    "messages": [
        {"role": "user", "content": "Is it warm in Cairo?"},
        {"role": "assistant", "content": "I will look it up.", "tool_calls": [call("get_weather", {"city": "Cairo"})]},
        {"role": "tool", "content": "{\"temp\": 35}"},
        {"role": "assistant", "content": "Yes: 35 degrees."},
    ],
    "tools": [WEATHER],
}
EXTRA = [PARALLEL_REASONING, REASONING_ONLY, REASONING_TWICE, PARALLEL_PLAIN, CONTENT_AND_CALL]


def has_reasoning(record: dict) -> bool:
    return any(m.get("reasoning_content") for m in record["messages"])


def canonical(record: dict) -> dict:
    """The record as transformers' templates expect it (what packer's readers must make of it): call
    arguments JSON objects, tools a list of ``{"type": "function", "function": ...}``, a null content ""
    (Qwen3's template fails on None)."""
    r = copy.deepcopy(record)
    for m in r["messages"]:
        if m.get("content") is None:
            m["content"] = ""
        for c in m.get("tool_calls") or ():
            if isinstance(c["function"]["arguments"], str):
                c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    tools = r.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools)
    if tools:
        r["tools"] = [t if "type" in t else {"type": "function", "function": t} for t in tools]
    return r


def glaive_to_openai(record: dict) -> dict:
    """A glaive ShareGPT record as OpenAI messages: function_call turns become assistant tool calls,
    observations tool messages, the tools JSON string a list of OpenAI tool definitions."""
    role = {"human": "user", "gpt": "assistant", "observation": "tool"}
    messages = []
    for t in record["conversations"]:
        if t["from"] == "function_call":
            c = json.loads(t["value"])
            messages.append({"role": "assistant", "content": "", "tool_calls": [call(c["name"], c["arguments"])]})
        else:
            messages.append({"role": role[t["from"]], "content": t["value"]})
    out: dict = {"messages": messages}
    tools = json.loads(record["tools"]) if record.get("tools") else []
    if tools:
        out["tools"] = [{"type": "function", "function": t} for t in tools]
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def rejections(out: Path) -> dict[int, dict]:
    path = out / "rejected.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {x["record"]: x for x in map(json.loads, lines)}


def text_of(tok, ids) -> str:  # type: ignore[no-untyped-def]
    return tok.tokenizer.decode([int(x) for x in ids], skip_special_tokens=False)


def squeeze(text: str) -> str:
    return "".join(text.split())


# --------------------------------------------------------------------------- masks, for every build here


def final_turn(roles: np.ndarray) -> np.ndarray:
    """Where the final assistant turn is: after the last token of a prompt or a tool result."""
    prompt = np.flatnonzero(np.isin(roles, R.role_codes(("system", "instruction", "input", "tool"))))
    start = prompt[-1] + 1 if len(prompt) else 0
    return np.arange(len(roles)) >= start


def check_masks(out: Path) -> int:
    """Each mask column is its strategy's role set on the roles, and the trainable column (but under
    ``full``), and the final turn (``last_turn``), or the forced column (format version 3: under every
    strategy); returns the number of documents checked."""
    m = json.loads((out / "manifest.json").read_text())
    assert set(R.BUILTIN_STRATEGIES) <= set(m["strategies"])
    docs = read_documents(out)
    for doc in docs.values():
        roles, trainable = doc["roles"], doc["trainable"].astype(bool)
        for name, role_names in m["strategies"].items():
            expected = R.role_lut(role_names)[roles]
            if name not in R.UNFLAGGED_STRATEGIES:
                expected &= trainable
            if name in R.LAST_TURN_STRATEGIES:
                expected &= final_turn(roles)
            if "forced" in doc:
                expected |= doc["forced"].astype(bool)
            assert np.array_equal(doc[f"mask_{name}"].astype(bool), expected), name
        assert doc["mask_full"].all()
    return len(docs)


# --------------------------------------------------------------------------- Qwen2.5 and Qwen3 (../shared)


@pytest.fixture(scope="module", params=tokenizer_params(QWEN))
def qwen(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One Qwen tokenizer: the glaive demo converted to OpenAI messages plus EXTRA, built once with its own
    template, and the glaive file itself (ShareGPT) built once; with transformers' reference ids."""
    need_shared()
    pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    name = request.param
    tok_dir = SHARED_TOKENIZERS / name
    tmp = tmp_path_factory.mktemp(name)
    glaive = json.loads((SHARED_DATA / GLAIVE).read_text())
    records = [glaive_to_openai(r) for r in glaive] + EXTRA
    path = write_jsonl(tmp / "tools.jsonl", records)
    tok = real_tokenizer(name)
    m = build([path], tmp / "o", tokenizer=tok, template="tokenizer", seq_len=16384)
    direct = build([SHARED_DATA / GLAIVE], tmp / "sharegpt", tokenizer=tok, template="tokenizer", seq_len=16384)
    hf = hf_tokenizer(tok_dir)
    file_tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    reference = []
    for r in map(canonical, records):
        text = hf.apply_chat_template(r["messages"], tools=r.get("tools"), tokenize=False)
        reference.append(file_tok.encode(text, add_special_tokens=False).ids)
    return {"name": name, "tok": tok, "path": path, "records": records, "n_glaive": len(glaive),
            "manifest": m, "out": tmp / "o", "direct": direct, "direct_out": tmp / "sharegpt",
            "reference": reference, "hf": hf}


def test_ids_equal_transformers_with_tools(qwen):
    docs = read_documents(qwen["out"])
    rejected = rejections(qwen["out"])
    qwen25 = qwen["name"] == "qwen2.5-instruct"
    for i, record in enumerate(qwen["records"]):
        if qwen25 and has_reasoning(record):
            # Qwen2.5's template leaves reasoning_content out: rejected, naming templates that render it
            assert i not in docs
            r = rejected[i]
            assert r["reason"] == "template_error", r
            assert "does not render the reasoning of turn" in r["detail"] and "chatml" in r["detail"], r
            continue
        assert i not in rejected, rejected.get(i)
        assert docs[i]["input_ids"].tolist() == qwen["reference"][i], f"record {i}"
    expected_rejected = sum(map(has_reasoning, EXTRA)) if qwen25 else 0
    counts = qwen["manifest"]["counts"]
    assert counts["rejected"] == ({"template_error": expected_rejected} if expected_rejected else {})
    assert counts["packed"] == len(qwen["records"]) - expected_rejected
    assert qwen["n_glaive"] == 300 and len(docs) == counts["packed"]
    assert qwen["manifest"]["tokens"]["untrained"] == 0 and not qwen["manifest"]["tokens"]["untrained_per_role"]
    assert verify(qwen["out"]) == []


def test_ids_equal_transformers_tokenize_true(qwen):
    """transformers 4 runs tokenizer.json as it is: its own tokenization is the same ids (a few records)."""
    transformers = pytest.importorskip("transformers")
    if not transformers.__version__.startswith("4."):
        pytest.skip("transformers 5 rebuilds the tokenizer; the file reference above is the one that holds")
    docs = read_documents(qwen["out"])
    for i in [0, 1, 2, *range(qwen["n_glaive"], len(qwen["records"]))]:
        if i in docs:
            r = canonical(qwen["records"][i])
            out = qwen["hf"].apply_chat_template(r["messages"], tools=r.get("tools"), tokenize=True)
            assert docs[i]["input_ids"].tolist() == list(out["input_ids"] if hasattr(out, "keys") else out), i


def test_glaive_sharegpt_read_directly_equals_its_openai_conversion(qwen):
    direct, converted = read_documents(qwen["direct_out"]), read_documents(qwen["out"])
    counts = qwen["direct"]["counts"]
    assert counts["packed"] == counts["records"] == qwen["n_glaive"] and counts["rejected"] == {}
    for i in range(qwen["n_glaive"]):
        for column in ("input_ids", "roles", "trainable", "mask_instruction_tuning", "mask_last_turn"):
            assert np.array_equal(direct[i][column], converted[i][column]), (i, column)
    calls = sum(t["from"] == "function_call" for r in json.loads((SHARED_DATA / GLAIVE).read_text())
                for t in r["conversations"])
    assert calls == 211
    assert sum(text_of(qwen["tok"], d["input_ids"][d["roles"] == R.TOOL_CALL]).count("<tool_call>")
               for d in direct.values()) == calls


def test_glaive_sharegpt_reader():
    need_shared()
    records = json.loads((SHARED_DATA / GLAIVE).read_text())
    convs = list(RecordReader([SHARED_DATA / GLAIVE]))
    assert len(convs) == len(records) and all(isinstance(c, Conversation) for c in convs)
    for conv, record in zip(convs, records, strict=True):
        assert list(conv.tools) == [{"type": "function", "function": t} for t in json.loads(record["tools"])]
        turns = record["conversations"]
        assert [m.role for m in conv.messages] == [
            {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "tool"}[t["from"]]
            for t in turns
        ]
        for m, t in zip(conv.messages, turns, strict=True):
            if t["from"] == "function_call":
                c = json.loads(t["value"])
                assert m.tool_calls == (ToolCall(c["name"], c["arguments"]),) and m.content == ""
            else:
                assert m.content == t["value"] and m.tool_calls == ()


def test_qwen_masks_are_role_sets(qwen):
    assert check_masks(qwen["out"]) == qwen["manifest"]["counts"]["packed"]
    assert check_masks(qwen["direct_out"]) == qwen["n_glaive"]


def rendered_reasoning(name: str, messages: list[dict]) -> list[int]:
    """The assistant messages whose reasoning the template renders: Qwen3 those after the last user message."""
    last_user = max(k for k, m in enumerate(messages) if m["role"] == "user")
    return [k for k, m in enumerate(messages) if m.get("reasoning_content") and (name != "qwen3" or k > last_user)]


def check_decodes(tok, doc: dict, record: dict, reasoning_at: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Each role's tokens decode to what the record says."""
    record = canonical(record)
    messages = record["messages"]
    roles, ids = doc["roles"], doc["input_ids"]

    def of(role: int) -> str:
        return text_of(tok, ids[roles == role])

    answers = "".join(m["content"] or "" for m in messages if m["role"] == "assistant")
    assert squeeze(of(R.RESPONSE)) == squeeze(answers)
    calls = of(R.TOOL_CALL)
    n_calls = 0
    for m in messages:
        for c in m.get("tool_calls") or ():
            fn = c["function"]
            rendered = f'{{"name": "{fn["name"]}", "arguments": {json.dumps(fn["arguments"], ensure_ascii=False)}}}'
            assert rendered in calls
            n_calls += 1
    assert calls.count("<tool_call>") == calls.count("</tool_call>") == n_calls
    assert squeeze(of(R.TOOL)) == squeeze("".join(m["content"] for m in messages if m["role"] == "tool"))
    reasoning = of(R.REASONING)
    for k in reasoning_at:
        assert messages[k]["reasoning_content"] in reasoning
    assert reasoning.count("</think>") == len(reasoning_at)
    dropped = [m["reasoning_content"] for k, m in enumerate(messages)
               if m.get("reasoning_content") and k not in reasoning_at]
    assert not any(d in text_of(tok, ids) for d in dropped)


def test_qwen_role_tokens_decode_to_the_record(qwen):
    docs = read_documents(qwen["out"])
    checked = 0
    for i, record in enumerate(qwen["records"]):
        if i in docs:
            check_decodes(qwen["tok"], docs[i], record, rendered_reasoning(qwen["name"], record["messages"]))
            checked += 1
    assert checked == qwen["manifest"]["counts"]["packed"]
    per_role = qwen["manifest"]["tokens"]["per_role"]
    assert per_role["tool_call"] > 0 and per_role["tool"] > 0
    assert (per_role["reasoning"] > 0) == (qwen["name"] == "qwen3")


# --------------------------------------------------------------------------- the built-in chatml (demo tokenizer)


@pytest.fixture(scope="module")
def chatml_build(tmp_path_factory, demo_tok):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("chatml")
    path = write_jsonl(tmp / "tools.jsonl", EXTRA)
    m = build([path], tmp / "o", tokenizer=demo_tok, template="chatml", seq_len=1024)
    return {"manifest": m, "out": tmp / "o", "path": path}


CHATML_PARALLEL_PLAIN = (
    "<|im_start|>system\nYou are a travel assistant.\n\n# Tools\n\nYou may call one or more functions to assist "
    "with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    + json.dumps(canonical(PARALLEL_PLAIN)["tools"][0]) + "\n" + json.dumps(canonical(PARALLEL_PLAIN)["tools"][1])
    + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}"
    "\n</tool_call><|im_end|>\n"
    "<|im_start|>user\nWeather and time in Rome?<|im_end|>\n"
    "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>"
    "\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call><|im_end|>\n"
    "<|im_start|>tool\n{\"sky\": \"clear\"}<|im_end|>\n"
    "<|im_start|>tool\n<|im_end|>\n"
    "<|im_start|>assistant\nClear skies in Rome; the clock did not answer.<|im_end|>\n"
)


def test_chatml_renders_tools_calls_results_and_reasoning(chatml_build, demo_tok):
    m, out = chatml_build["manifest"], chatml_build["out"]
    assert m["counts"]["packed"] == len(EXTRA) and m["counts"]["rejected"] == {}
    assert m["template"]["name"] == "chatml"
    docs = read_documents(out)
    assert text_of(demo_tok, docs[EXTRA.index(PARALLEL_PLAIN)]["input_ids"]) == CHATML_PARALLEL_PLAIN
    for i, record in enumerate(EXTRA):
        reasoning_at = [k for k, x in enumerate(record["messages"]) if x.get("reasoning_content")]
        check_decodes(demo_tok, docs[i], record, reasoning_at)
    doc = docs[EXTRA.index(PARALLEL_REASONING)]
    assert text_of(demo_tok, doc["input_ids"][doc["roles"] == R.REASONING]) == (
        "<think>\nTwo cities: two calls.\n</think><think>\nPut the two results together.\n</think>"
    )
    # the model writes its calls: their tags and JSON, and the end of the turn after them
    end = doc["input_ids"][doc["roles"] == R.END]
    assert text_of(demo_tok, end) == "<|im_end|><|im_end|>"
    assert check_masks(out) == len(EXTRA)
    assert verify(out) == []


def test_chatml_ids_equal_transformers_render_of_the_builtin(chatml_build, demo_tok):
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(DEMO_TOKENIZER / "tokenizer.json"))
    docs = read_documents(chatml_build["out"])
    for i, record in enumerate(map(canonical, EXTRA)):
        text = hf.apply_chat_template(record["messages"], tools=record.get("tools"),
                                      chat_template=BUILTIN_TEMPLATES["chatml"], tokenize=False)
        assert docs[i]["input_ids"].tolist() == demo_tok.tokenizer.encode(text, add_special_tokens=False).ids, i


#: what a template that renders only role and content leaves out first, per record of EXTRA
DROPPED = ["the tool calls of turn 1", "the reasoning of turn 2", "the tool calls of turn 1",
           "the tool calls of turn 2", "the tool calls of turn 1"]
PLAIN = {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}


@pytest.mark.parametrize("template", sorted(set(BUILTIN_TEMPLATES) - {"chatml"}))
def test_other_builtin_templates_reject_tools_naming_chatml(template, tmp_path, demo_tok):
    offered = {**PLAIN, "tools": [WEATHER]}  # tools offered, none called
    path = write_jsonl(tmp_path / "t.jsonl", [PLAIN, *EXTRA, offered])
    m = build([path], tmp_path / "o", tokenizer=demo_tok, template=template, seq_len=1024)
    assert m["counts"]["packed"] == 1 and m["counts"]["rejected"] == {"template_error": len(EXTRA) + 1}
    rejected = rejections(tmp_path / "o")
    assert sorted(rejected) == list(range(1, 2 + len(EXTRA)))
    for i, r in rejected.items():
        assert f"template {template!r}" in r["detail"] and "--template chatml" in r["detail"], r
        what = DROPPED[i - 1] if i <= len(EXTRA) else "the record's tool definitions"
        assert f"does not render {what};" in r["detail"], r


# --------------------------------------------------------------------------- readers


def test_openai_reader_normalizes_calls_and_tools(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [PARALLEL_PLAIN, REASONING_TWICE])
    first, second = RecordReader([path])
    assert isinstance(first, Conversation) and isinstance(second, Conversation)
    assert first.tools == (WEATHER, {"type": "function", "function": TIME})
    assistant = first.messages[2]
    assert assistant.content == "" and assistant.tool_calls == (
        ToolCall("get_weather", {"city": "Rome"}, "w1"), ToolCall("get_time", {"city": "Rome"}, "t1"),
    )
    assert [(m.role, m.tool_call_id, m.name, m.content) for m in first.messages[3:5]] == [
        ("tool", "w1", "get_weather", "{\"sky\": \"clear\"}"), ("tool", "t1", "get_time", ""),
    ]
    assert [m.reasoning for m in second.messages] == [
        None, "Ask the clock.", None, None, None, "Ask again, for Lima.", None, "Read it out.",
    ]
    assert second.tools == ({"type": "function", "function": TIME},)


def test_orphan_tool_result_names_the_records_turn(tmp_path):
    record = {"messages": [{"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "Weather?"},
                           {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]}
    (rejection,) = RecordReader([write_jsonl(tmp_path / "t.jsonl", [record])])
    assert isinstance(rejection, Rejection) and rejection.reason == "orphan_tool_result"
    assert rejection.detail == "turn 2 (tool) follows turn 1 (user), which makes no tool call"


# --------------------------------------------------------------------------- weight 0 / training false

WEIGHTED = [
    # 0: the first answer untrained (OpenAI's weight)
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there", "weight": 0},
                  {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "weight": 1}]},
    # 1: an untrained tool call (Axolotl's flag)
    {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                  {"role": "assistant", "content": None, "training": False,
                   "tool_calls": [call("get_weather", {"city": "Oslo"}, "a")]},
                  {"role": "tool", "tool_call_id": "a", "content": "sunny"},
                  {"role": "assistant", "content": "It is sunny.", "training": True}],
     "tools": [WEATHER]},
    # 2: an untrained user message
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Name a colour.", "weight": 0},
                  {"role": "assistant", "content": "Blue."}]},
    # 3: the last answer untrained: nothing left for last_turn
    {"messages": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Apple."},
                  {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Pear.", "weight": 0}]},
    # 4: all trained, flags given (the user's "training": true trains its content under every strategy: issue 25)
    {"messages": [{"role": "user", "content": "Name a tree.", "training": True},
                  {"role": "assistant", "content": "Oak.", "weight": 1}]},
    # 5: untrained reasoning and answer
    {"messages": [{"role": "user", "content": "3+4?"},
                  {"role": "assistant", "content": "7", "reasoning_content": "Add.", "weight": 0},
                  {"role": "user", "content": "5+6?"}, {"role": "assistant", "content": "11"}]},
]
#: record -> the text of its untrained tokens (the message's content, its calls and reasoning, its end token)
UNTRAINED_TEXT = {
    0: "Hello there<|im_end|>",
    1: "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><|im_end|>",
    2: "Name a colour.",
    3: "Pear.<|im_end|>",
    4: "",
    5: "<think>\nAdd.\n</think>\n\n7<|im_end|>",
}


@pytest.fixture(scope="module")
def weighted_build(tmp_path_factory, demo_tok):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("weighted")
    path = write_jsonl(tmp / "w.jsonl", WEIGHTED)
    m = build([path], tmp / "o", tokenizer=demo_tok, template="chatml", seq_len=512)
    return m, tmp / "o"


def test_untrained_messages_have_no_loss_in_the_shards(weighted_build, demo_tok):
    m, out = weighted_build
    assert m["counts"]["packed"] == len(WEIGHTED) and m["counts"]["rejected"] == {}
    docs = read_documents(out)
    total = 0
    per_role: dict[str, int] = {}
    for i, expected in UNTRAINED_TEXT.items():
        doc = docs[i]
        untrained = ~doc["trainable"].astype(bool)
        # one run of tokens, the message's, decoding to exactly its text
        where = np.flatnonzero(untrained)
        assert len(where) == 0 or (np.diff(where) == 1).all(), i
        assert text_of(demo_tok, doc["input_ids"][untrained]) == expected, i
        for name in R.BUILTIN_STRATEGIES:
            mask = doc[f"mask_{name}"].astype(bool)
            if name in R.UNFLAGGED_STRATEGIES:
                assert mask.all()
            else:
                assert not (mask & untrained).any(), (i, name)
        total += int(untrained.sum())
        for code, n in zip(*np.unique(doc["roles"][untrained], return_counts=True), strict=True):
            per_role[R.ROLE_NAMES[int(code)]] = per_role.get(R.ROLE_NAMES[int(code)], 0) + int(n)
    # the trained answers keep their loss
    assert text_of(demo_tok, docs[0]["input_ids"][docs[0]["mask_instruction_tuning"].astype(bool)]) == "4<|im_end|>"
    assert text_of(demo_tok, docs[1]["input_ids"][docs[1]["mask_answer_only"].astype(bool)]) == "It is sunny.<|im_end|>"
    assert not docs[3]["mask_last_turn"].any()
    im = docs[2]["input_ids"][docs[2]["mask_instruction_modelling"].astype(bool)]
    assert "Be brief." in text_of(demo_tok, im) and "colour" not in text_of(demo_tok, im)
    assert check_masks(out) == len(WEIGHTED)
    assert m["tokens"]["untrained"] == total > 0
    assert m["tokens"]["untrained_per_role"] == per_role
    assert set(per_role) == {"response", "end", "tool_call", "instruction", "reasoning"}
    assert verify(out) == []




@pytest.mark.parametrize(
    ("strategy", "prompt_loss_weight"),
    [({"response", "end"}, None), ({"response", "end", "tool_call", "instruction"}, None),
     ("instruction_tuning", 0.5), ({"response", "end"}, 0.25), ("full", None)],
)
def test_packed_dataset_gives_untrained_tokens_no_label(weighted_build, strategy, prompt_loss_weight):
    _, out = weighted_build
    ds = PackedDataset(out, strategy=strategy, shuffle=False, prompt_loss_weight=prompt_loss_weight)
    rows = shard_rows(out)
    items = list(ds)
    assert len(items) == len(rows) > 0
    untrained_seen = 0
    for item, row in zip(items, rows, strict=True):
        ids = np.asarray(row["input_ids"])
        roles = np.asarray(row["roles"], dtype=np.uint8)
        trainable = np.asarray(row["trainable"], dtype=bool)
        forced = np.asarray(row["forced"], dtype=bool)
        starts = np.cumsum(row["seq_lens"]) - np.asarray(row["seq_lens"])
        if isinstance(strategy, str):
            loss = np.asarray(row[f"mask_{strategy}"], dtype=bool)
        else:
            loss = R.role_lut(strategy)[roles] & trainable | forced
        if strategy != "full":
            assert not (loss & ~trainable).any()
        weights = loss.astype(np.float64)
        if prompt_loss_weight is not None:
            weights[R.role_lut(R.PROMPT_ROLES)[roles] & trainable & ~forced] = prompt_loss_weight
        weights[starts] = 0
        labels = np.where(weights > 0, ids, -100)
        assert item["labels"].tolist() == labels.tolist()
        if prompt_loss_weight is not None:
            assert np.allclose(item["loss_weights"].numpy(), weights)
            assert (item["loss_weights"].numpy()[~trainable] == 0).all()
        if strategy != "full":
            assert (item["labels"].numpy()[~trainable] == -100).all()
        untrained_seen += int((~trainable).sum())
    assert untrained_seen > 0
