"""Record shapes people use today that packer refused or misread (issue 25):

- a conversation of a system message and an assistant reply (OpenAI's fine-tuning format allows it): packed,
  the system message the prompt; under a template that refuses a system turn (``--system merge``) the system
  text is the user turn, its tokens keeping the ``system`` role; a template that leaves the prompt out is a
  ``template_error``; ids equal transformers' ``apply_chat_template`` with every chat template in ../shared;
- an assistant tool-call message without a ``content`` key: read as ``content: null``; tool-call arguments given
  as a JSON string are parsed to an object (what transformers' templates expect: Qwen2.5's own would quote the
  string a second time);
- ``--leading-assistant drop|keep``: ``keep`` trains an assistant turn that opens a conversation (a greeting,
  an assistant-only conversation) where the template renders it; ``drop`` (default) is what it always was,
  and leaves the build key and manifest of earlier builds as they were;
- a build in which every record is rejected names its first rejections (record, field, what was found);
- LLaMA-Factory's v1 format (typed content parts, ``loss_weight``): the v1 SFT demo file builds, 500 of 500,
  to the same shards as the same data written as OpenAI messages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.ipc as ipc
import pytest
from click.testing import CliRunner

from packer import BuildError, build, load_tokenizer
from packer.cli import main
from packer.output import roles as R
from packer.output.container import read_table
from packer.read.formats import RecordReader
from packer.read.records import Conversation, Message, Rejection, ToolCall
from packer.recipe import RecipeError, load_recipe

from .helpers import (
    CHAT_TOKENIZERS,
    DEMO_TOKENIZER,
    SHARED_DATA,
    SHARED_TOKENIZERS,
    hf_tokenizer,
    need_shared,
    read_documents,
    real_tokenizer,
    tokenizer_params,
)

ROLE_NAMES = {code: name for name, code in R.ROLES.items()}
SYSTEM_AND_ANSWER = [{"role": "system", "content": "You are a pirate. Greet the crew."},
                     {"role": "assistant", "content": "Arr, ahoy me hearties!"}]
GREETING = [{"role": "system", "content": "Be kind."}, {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Nothing, bye."}, {"role": "assistant", "content": "Bye then."}]


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read(tmp_path: Path, *records: dict, **options) -> list[Conversation | Rejection]:
    return list(RecordReader([jsonl(tmp_path / "in.jsonl", list(records))], **options))


def shape(item: Conversation | Rejection) -> list[tuple[str, str]] | str:
    """A conversation's (role, content) pairs, or a rejection's reason."""
    if isinstance(item, Rejection):
        return item.reason
    return [(m.role, m.content) for m in item.messages]


def sharegpt(*turns: tuple[str, str]) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in turns]}


def loss_runs(doc: dict, strategy: str, decode) -> list[str]:  # type: ignore[no-untyped-def]
    """The runs of consecutive loss tokens of a document under ``strategy``, decoded."""
    mask = doc[f"mask_{strategy}"].astype(bool)
    ids = doc["input_ids"]
    runs, cur = [], []
    for i, m in zip(ids.tolist(), mask.tolist(), strict=True):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [decode(r) for r in runs]


# --------------------------------------------------------------------------- reading


def test_system_and_assistant_is_a_prompted_conversation(tmp_path):
    items = read(tmp_path, {"conversations": SYSTEM_AND_ANSWER},
                 sharegpt(("system", "s"), ("gpt", "a"), ("human", "trailing")),
                 sharegpt(("system", "s"), ("gpt", "a1"), ("gpt", "a2")),
                 sharegpt(("system", "s"), ("gpt", "x"), ("human", "q"), ("gpt", "a")),
                 sharegpt(("gpt", "a")), sharegpt(("system", "s")), sharegpt(("gpt", "a"), ("system", "s")))
    assert shape(items[0]) == [(m["role"], m["content"]) for m in SYSTEM_AND_ANSWER]
    assert items[0].dropped_turns == {}  # type: ignore[union-attr]
    assert shape(items[1]) == [("system", "s"), ("assistant", "a")]
    assert items[1].dropped_turns == {"trailing_non_assistant": 1}  # type: ignore[union-attr]
    assert shape(items[2]) == [("system", "s"), ("assistant", "a1"), ("assistant", "a2")]
    # a greeting before a user turn is still a leading assistant turn (dropped, counted) by default
    assert shape(items[3]) == [("system", "s"), ("user", "q"), ("assistant", "a")]
    assert items[3].dropped_turns == {"leading_assistant": 1}  # type: ignore[union-attr]
    # nothing prompts these: rejected as before, with the words earlier builds wrote
    assert [shape(i) for i in items[4:]] == ["no_assistant_turn"] * 3
    assert items[4].detail == "no assistant turn after a user turn (roles: gpt)"  # type: ignore[union-attr]


def test_leading_assistant_keep(tmp_path):
    records = [{"conversations": GREETING}, sharegpt(("gpt", "Hi there")), sharegpt(("gpt", "a"), ("gpt", "b")),
               sharegpt(("observation", "orphan"), ("gpt", "a"), ("human", "q"), ("gpt", "b")),
               sharegpt(("system", "s"), ("human", "q"), ("gpt", "a"), ("human", "trailing")),
               sharegpt(("system", "s"))]
    kept = read(tmp_path, *records, leading_assistant="keep")
    assert shape(kept[0]) == [(m["role"], m["content"]) for m in GREETING]
    assert shape(kept[1]) == [("assistant", "Hi there")]
    assert shape(kept[2]) == [("assistant", "a"), ("assistant", "b")]
    # a tool result before any call still answers nothing
    assert shape(kept[3]) == [("assistant", "a"), ("user", "q"), ("assistant", "b")]
    assert kept[3].dropped_turns == {"leading_tool_result": 1}  # type: ignore[union-attr]
    assert kept[4].dropped_turns == {"trailing_non_assistant": 1}  # type: ignore[union-attr]
    assert shape(kept[5]) == "no_assistant_turn"
    dropped = read(tmp_path, *records)
    assert shape(dropped[0]) == [("system", "Be kind."), ("user", "Nothing, bye."), ("assistant", "Bye then.")]
    assert dropped[0].dropped_turns == {"leading_assistant": 1}  # type: ignore[union-attr]
    assert [shape(i) for i in dropped[1:3]] == ["no_assistant_turn"] * 2
    # a blank opening answer goes alone under --blank-turns drop (it answers nothing)
    blank = read(tmp_path, sharegpt(("gpt", " "), ("human", "q"), ("gpt", "a")), leading_assistant="keep",
                 blank_turns="drop")
    assert shape(blank[0]) == [("user", "q"), ("assistant", "a")]
    assert blank[0].dropped_turns == {"blank_turn": 1}  # type: ignore[union-attr]


def test_leading_assistant_policy_name_is_checked(tmp_path, demo_tok):
    path = jsonl(tmp_path / "in.jsonl", [{"messages": GREETING}])
    with pytest.raises(BuildError, match=r"--leading-assistant 'train'; choose drop\|keep"):
        RecordReader([path], leading_assistant="train")
    with pytest.raises(BuildError, match=r"--leading-assistant 'train'; choose drop\|keep"):
        build([path], tmp_path / "o", tokenizer=demo_tok, leading_assistant="train")
    assert not (tmp_path / "o").exists()


def test_tool_call_without_content_reads_as_content_null(tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    turns = [{"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "tool_calls": [call]},
             {"role": "tool", "tool_call_id": "c1", "content": "12C"}, {"role": "assistant", "content": "12C."}]
    with_null = [dict(t, content=None) if "tool_calls" in t else t for t in turns]
    without, null = read(tmp_path, {"messages": turns}, {"messages": with_null})
    assert isinstance(without, Conversation) and without.messages == null.messages  # type: ignore[union-attr]
    assert without.messages[1].tool_calls == (ToolCall("get_weather", {"city": "Oslo"}, "c1"),)
    # the built-in chatml renders calls: the two build the same shards
    a = build([jsonl(tmp_path / "a.jsonl", [{"messages": turns}])], tmp_path / "a", tokenizer=DEMO_TOKENIZER,
              template="chatml", seq_len=512)
    b = build([jsonl(tmp_path / "b.jsonl", [{"messages": with_null}])], tmp_path / "b", tokenizer=DEMO_TOKENIZER,
              template="chatml", seq_len=512)
    assert a["counts"]["packed"] == b["counts"]["packed"] == 1
    assert same_shards(tmp_path / "a", tmp_path / "b")


# --------------------------------------------------------------------------- LLaMA-Factory v1


def test_v1_typed_parts(tmp_path):
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})
    record = {"messages": [
        {"role": "system", "content": [{"type": "text", "value": "Be brief."}], "loss_weight": 0.0},
        {"role": "user", "content": [{"type": "text", "value": "Weather "}, {"type": "text", "value": "in Oslo?"}],
         "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "reasoning", "value": "Ask the tool."},
                                          {"type": "text", "value": "Let me look."},
                                          {"type": "tool_call", "value": call}], "loss_weight": 1.0},
        {"role": "tool", "content": [{"type": "text", "value": "12C"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": "12C."}], "loss_weight": 1.0}],
        "tools": json.dumps([{"name": "get_weather", "parameters": {"type": "object"}}])}
    (conv,) = read(tmp_path, record)
    assert isinstance(conv, Conversation)
    assert conv.messages == (
        Message("system", "Be brief."), Message("user", "Weather in Oslo?"),
        Message("assistant", "Let me look.", reasoning="Ask the tool.",
                tool_calls=(ToolCall("get_weather", {"city": "Oslo"}),)),
        Message("tool", "12C"), Message("assistant", "12C."))
    assert conv.tools == ({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},)


def test_v1_loss_weight(tmp_path):
    def v1(user_weight: object, answer_weight: object) -> dict:
        return {"messages": [{"role": "user", "content": [{"type": "text", "value": "q"}], "loss_weight": user_weight},
                             {"role": "assistant", "content": [{"type": "text", "value": "a"}],
                              "loss_weight": answer_weight},
                             {"role": "user", "content": [{"type": "text", "value": "q2"}]},
                             {"role": "assistant", "content": [{"type": "text", "value": "a2"}]}]}

    items = read(tmp_path, v1(0.0, 1.0), v1(0, 0.0), v1(1.0, 1), v1(0.0, 0.5), v1(True, 1.0), v1("1", 1.0),
                 {"messages": [{"role": "user", "content": "q", "weight": 1, "loss_weight": 0.0},
                               {"role": "assistant", "content": "a", "weight": 1, "loss_weight": 0.0}]})
    # LLaMA-Factory's own weights for the roles are no flag: the conversation of the same texts
    assert [m.trained for m in items[0].messages] == [True] * 4  # type: ignore[union-attr]
    assert [m.trained for m in items[1].messages] == [True, False, True, True]  # type: ignore[union-attr]
    assert [m.trained for m in items[2].messages] == [True] * 4  # type: ignore[union-attr]
    assert [(i.reason, i.detail) for i in items[3:]] == [  # type: ignore[union-attr]
        ("bad_weight", "turn 1 (assistant): 'loss_weight' is 0.5, expected 0.0 or 1.0 (packer does not carry "
                       "fractional weights)"),
        ("bad_weight", "turn 0 (user): 'loss_weight' is True, expected 0.0 or 1.0 (packer does not carry fractional "
                       "weights)"),
        ("bad_weight", "turn 0 (user): 'loss_weight' is '1', expected 0.0 or 1.0 (packer does not carry fractional "
                       "weights)"),
        ("bad_weight", "turn 1 (assistant): 'weight' 1 and 'loss_weight' 0.0 disagree")]


@pytest.mark.parametrize(("content", "reason", "words"), [
    ([{"type": "tool_call", "value": "{not json"}], "bad_tool_call", "turn 1: tool call part 0: the value is not JSON"),
    ([{"type": "tool_call", "value": '{"arguments": {}}'}], "bad_tool_call", "tool call part 0 has no function name"),
    ([{"type": "reasoning", "value": 3}], "wrong_type", "content part 0 (reasoning): 'value' is a number"),
    ([{"type": "reasoning", "value": "a"}, {"type": "reasoning", "value": "b"}], "wrong_type", "2 reasoning parts"),
    ([{"type": "image_url", "value": "x.png"}], "wrong_type", "content part 0 is type 'image_url', only text is"),
    ([{"type": "text", "value": ""}], "empty_output", "turn 1 (assistant) is empty"),
])
def test_v1_bad_parts(tmp_path, content, reason, words):
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}]}
    (item,) = read(tmp_path, record)
    assert isinstance(item, Rejection) and item.reason == reason and words in item.detail


def test_v1_reasoning_and_calls_only_in_an_assistant_turn(tmp_path):
    both = {"role": "assistant", "content": [{"type": "tool_call", "value": '{"name": "f", "arguments": {}}'}],
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}]}
    user, twice = read(tmp_path, {"messages": [{"role": "user", "content": [{"type": "reasoning", "value": "r"}]},
                                               {"role": "assistant", "content": "a"}]},
                       {"messages": [{"role": "user", "content": "q"}, both]})
    assert user.reason == "wrong_type" and "only in an assistant turn" in user.detail  # type: ignore[union-attr]
    assert twice.reason == "wrong_type" and "both as content parts" in twice.detail  # type: ignore[union-attr]


def to_openai(record: dict) -> dict:
    """A LLaMA-Factory v1 SFT record written as OpenAI messages: text parts joined, reasoning as
    ``reasoning_content``, tool_call parts as ``tool_calls`` with the arguments a JSON string (OpenAI's way),
    no weights (the v1 file's are LLaMA-Factory's defaults)."""
    out = []
    for m in record["messages"]:
        msg: dict = {"role": m["role"], "content": "".join(p["value"] for p in m["content"] if p["type"] == "text")}
        reasoning = [p["value"] for p in m["content"] if p["type"] == "reasoning"]
        if reasoning:
            msg["reasoning_content"] = reasoning[0]
        calls = [json.loads(p["value"]) for p in m["content"] if p["type"] == "tool_call"]
        if calls:
            msg["tool_calls"] = [{"type": "function", "function": {"name": c["name"],
                                                                   "arguments": json.dumps(c["arguments"])}}
                                 for c in calls]
        assert m["loss_weight"] == (1.0 if m["role"] == "assistant" else 0.0)
        out.append(msg)
    return {"messages": out, **({"tools": record["tools"]} if "tools" in record else {})}


def same_shards(a: Path, b: Path) -> bool:
    """Whether two outputs hold the same shards (every column of every row) and documents."""
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    if [s["rows"] for s in ma["shards"]] != [s["rows"] for s in mb["shards"]]:
        return False
    tables = [[read_table(d / s["file"]) for s in m["shards"]] for d, m in ((a, ma), (b, mb))]
    # documents.arrow names the input file: the rest must be the same
    docs = [ipc.open_file(d / "documents.arrow").read_all().drop_columns(["input"]) for d in (a, b)]
    return (all(x.equals(y) for x, y in zip(*tables, strict=True)) and docs[0].equals(docs[1])
            and ma["tokens"] == mb["tokens"] and ma["counts"] == mb["counts"])


def test_v1_tool_calls_build_like_openai(tmp_path):
    """Reasoning and a tool call in v1 parts, through the built-in chatml: the shards of the OpenAI record."""
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}})
    v1 = {"messages": [
        {"role": "user", "content": [{"type": "text", "value": "Weather in Oslo?"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "reasoning", "value": "Use the tool."},
                                          {"type": "tool_call", "value": call}], "loss_weight": 1.0},
        {"role": "tool", "content": [{"type": "text", "value": "12"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": "It is 12C."}], "loss_weight": 1.0}],
        "tools": json.dumps([{"name": "get_weather", "parameters": {"type": "object"}}])}
    a = jsonl(tmp_path / "v1.jsonl", [v1])
    b = jsonl(tmp_path / "openai.jsonl", [to_openai(v1)])
    for path in (a, b):
        m = build([path], tmp_path / path.stem, tokenizer=DEMO_TOKENIZER, template="chatml", seq_len=512)
        assert m["counts"]["packed"] == 1 and m["tokens"]["per_role"]["tool_call"] > 0
    assert same_shards(tmp_path / "v1", tmp_path / "openai")


@pytest.mark.parametrize("name", ["qwen2.5-instruct", "llama-3-8b-instruct"])
def test_v1_sft_file_builds_like_openai_messages(name, tmp_path):
    need_shared()
    v1 = SHARED_DATA / "llamafactory_v1_sft_demo.jsonl"
    records = [json.loads(x) for x in v1.read_text(encoding="utf-8").splitlines()]
    openai = jsonl(tmp_path / "openai.jsonl", [to_openai(r) for r in records])
    tok = real_tokenizer(name)
    ma = build([v1], tmp_path / "v1", tokenizer=tok, seq_len=2048)
    build([openai], tmp_path / "openai", tokenizer=tok, seq_len=2048)
    assert ma["inputs"][0]["format"] == "messages"
    assert (ma["counts"]["records"], ma["counts"]["packed"]) == (500, 500)
    assert same_shards(tmp_path / "v1", tmp_path / "openai")


# --------------------------------------------------------------------------- building


def transformers_loader() -> str:
    """The tokenizer loader whose ids transformers' apply_chat_template gives (its own rebuild under 5.x)."""
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    return "file" if int(transformers.__version__.split(".")[0]) < 5 else "transformers"


def hf_ids(tok_dir: Path, messages: list[dict]) -> list[int]:
    out = hf_tokenizer(tok_dir).apply_chat_template(messages, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize("name", tokenizer_params(CHAT_TOKENIZERS))
def test_system_and_assistant_packs_with_every_chat_template(name, tmp_path):
    """Each shared chat template renders a system message and an answer (Mistral's and Gemma's refuse the
    system turn: merged, it is the user turn): ids equal apply_chat_template; the loss under instruction
    tuning is the answer and its end token; the system text keeps the system role."""
    need_shared()
    tok_dir = SHARED_TOKENIZERS / name
    tok = load_tokenizer(tok_dir, loader=transformers_loader())
    path = jsonl(tmp_path / "in.jsonl", [{"messages": SYSTEM_AND_ANSWER}])
    m = build([path], tmp_path / "o", tokenizer=tok, template="tokenizer", seq_len=1024, tokenizer_backend="tokenizers")
    assert m["counts"]["packed"] == 1
    merged = m["counts"]["system_policy"] == {"merged": 1}
    assert merged == m["template"]["refuses_system"]
    system, answer = (x["content"] for x in SYSTEM_AND_ANSWER)
    expect = [{"role": "user", "content": system}, SYSTEM_AND_ANSWER[1]] if merged else SYSTEM_AND_ANSWER
    doc = read_documents(tmp_path / "o")[0]
    assert doc["input_ids"].tolist() == hf_ids(tok_dir, expect)
    decode = tok.tokenizer.decode
    roles = doc["roles"]
    assert decode(doc["input_ids"][roles == R.ROLES["system"]].tolist()).strip() == system
    runs = loss_runs(doc, "instruction_tuning", lambda ids: decode(ids, skip_special_tokens=False))
    assert len(runs) == 1 and runs[0].strip().startswith(answer) and runs[0] != answer


def test_qwen25_tool_call_without_content_and_string_arguments(tmp_path):
    """With Qwen2.5's own template: a call message without content packs, its ids those of apply_chat_template
    given content null and the arguments as an object; OpenAI's JSON-string arguments passed straight to
    apply_chat_template would be quoted a second time (the README says why packer parses them)."""
    need_shared()
    tok_dir = SHARED_TOKENIZERS / "qwen2.5-instruct"
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    turns = [{"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "tool_calls": [call]},
             {"role": "tool", "tool_call_id": "c1", "content": "12C"}, {"role": "assistant", "content": "12C."}]
    m = build([jsonl(tmp_path / "in.jsonl", [{"messages": turns}])], tmp_path / "o", template="tokenizer",
              tokenizer=load_tokenizer(tok_dir, loader=transformers_loader()), seq_len=1024,
              tokenizer_backend="tokenizers")
    assert m["counts"]["packed"] == 1
    ids = read_documents(tmp_path / "o")[0]["input_ids"].tolist()
    parsed = {**call, "function": {**call["function"], "arguments": {"city": "Oslo"}}}
    assert ids == hf_ids(tok_dir, [turns[0], {"role": "assistant", "content": None, "tool_calls": [parsed]},
                                   *turns[2:]])
    assert ids != hf_ids(tok_dir, [turns[0], {"role": "assistant", "content": None, "tool_calls": [call]},
                                   *turns[2:]])


def test_a_template_that_drops_the_prompt_rejects_it(tmp_path, demo_tok):
    """The built-in mistral keeps a system message for the first instruction, which never comes here: the
    answer would train unprompted, so the record is a template_error; chatml renders it."""
    path = jsonl(tmp_path / "in.jsonl", [{"messages": SYSTEM_AND_ANSWER}, {"messages": GREETING}])
    m = build([path], tmp_path / "m", tokenizer=demo_tok, template="mistral", seq_len=512)
    assert (m["counts"]["packed"], m["counts"]["rejected"]) == (1, {"template_error": 1})
    line = json.loads((tmp_path / "m" / "rejected.jsonl").read_text())
    assert line["record"] == 0 and "does not render the system message" in line["detail"]
    m = build([path], tmp_path / "c", tokenizer=demo_tok, template="chatml", seq_len=512)
    assert (m["counts"]["packed"], m["counts"]["rejected"]) == (2, {})


def test_leading_assistant_keep_trains_the_greeting(tmp_path, demo_tok):
    path = jsonl(tmp_path / "in.jsonl", [{"messages": GREETING}, {"messages": GREETING[1:2]}])
    decode = demo_tok.tokenizer.decode
    m = build([path], tmp_path / "drop", tokenizer=demo_tok, template="chatml", seq_len=512)
    assert (m["counts"]["packed"], m["counts"]["rejected"]) == (1, {"no_assistant_turn": 1})
    assert m["counts"]["dropped_turns"] == {"leading_assistant": 1}
    assert "leading_assistant" not in m["build_key"]
    doc = read_documents(tmp_path / "drop")[0]
    assert "Hello" not in decode(doc["input_ids"].tolist())
    m = build([path], tmp_path / "keep", tokenizer=demo_tok, template="chatml", seq_len=512,
              leading_assistant="keep")
    assert (m["counts"]["packed"], m["counts"]["rejected"], m["counts"]["dropped_turns"]) == (2, {}, {})
    assert m["build_key"]["leading_assistant"] == "keep"
    docs = read_documents(tmp_path / "keep")
    runs = loss_runs(docs[0], "instruction_tuning", decode)
    assert [r.replace(" ", "") for r in runs] == ["Hello!HowcanIhelp?", "Byethen."]
    assert [r.replace(" ", "") for r in loss_runs(docs[0], "last_turn", decode)] == ["Byethen."]
    assert [r.replace(" ", "") for r in loss_runs(docs[1], "instruction_tuning", decode)] == ["Hello!HowcanIhelp?"]


@pytest.mark.parametrize("name", ["qwen2.5-instruct", "llama-3-8b-instruct", "phi-3-mini-instruct"])
def test_leading_assistant_keep_ids_equal_apply_chat_template(name, tmp_path):
    need_shared()
    tok_dir = SHARED_TOKENIZERS / name
    tok = load_tokenizer(tok_dir, loader=transformers_loader())
    path = jsonl(tmp_path / "in.jsonl", [{"messages": GREETING}, {"messages": GREETING[1:2]}])
    m = build([path], tmp_path / "o", tokenizer=tok, template="tokenizer", seq_len=1024, leading_assistant="keep",
              tokenizer_backend="tokenizers")
    assert m["counts"]["packed"] == 2
    docs = read_documents(tmp_path / "o")
    for doc, msgs in ((docs[0], GREETING), (docs[1], GREETING[1:2])):
        assert doc["input_ids"].tolist() == hf_ids(tok_dir, msgs)
        runs = loss_runs(doc, "instruction_tuning", lambda ids: tok.tokenizer.decode(ids, skip_special_tokens=True))
        assert [r.strip() for r in runs] == [x["content"] for x in msgs if x["role"] == "assistant"]


@pytest.mark.parametrize("name", tokenizer_params(["mistral-7b-instruct-v0.1", "gemma-2"]))
def test_leading_assistant_keep_where_the_template_cannot_render_it(name, tmp_path):
    """Mistral's and Gemma's own templates want a user turn first: the record is a template_error, not dropped."""
    need_shared()
    path = jsonl(tmp_path / "in.jsonl", [{"messages": GREETING}, {"messages": GREETING[1:2]},
                                         {"messages": GREETING[2:]}])
    m = build([path], tmp_path / "o", tokenizer=SHARED_TOKENIZERS / name, template="tokenizer", seq_len=1024,
              leading_assistant="keep", tokenizer_backend="tokenizers")
    assert (m["counts"]["packed"], m["counts"]["rejected"]) == (1, {"template_error": 2})


def test_default_policy_keeps_the_build_key(tmp_path, demo_tok):
    """--leading-assistant drop (the default) leaves the key, so an output built before the option existed
    is up to date; keep is another build."""
    path = jsonl(tmp_path / "in.jsonl", [{"messages": GREETING}])
    m = build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=512)
    assert "leading_assistant" not in m["build_key"]
    again = build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=512, leading_assistant="drop")
    assert again["build_seconds"] == m["build_seconds"]  # nothing was done
    with pytest.raises(BuildError, match="built from other inputs or options"):
        build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=512, leading_assistant="keep")


def test_leading_assistant_on_the_command_line_and_in_a_recipe(tmp_path):
    path = jsonl(tmp_path / "in.jsonl", [{"messages": GREETING[1:2]}, {"messages": GREETING}])
    res = CliRunner().invoke(main, ["build", str(path), "-o", str(tmp_path / "o"), "--seq-len", "512", "-q",
                                    "--leading-assistant", "keep"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["counts"]["packed"] == 2 and m["build_key"]["leading_assistant"] == "keep"
    res = CliRunner().invoke(main, ["build", str(path), "--leading-assistant", "always"])
    assert res.exit_code == 2 and "'always' is not one of 'drop', 'keep'" in res.output
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'tokenizer = "{DEMO_TOKENIZER.as_posix()}"\nleading_assistant = "keep"\n'
                      f'[[inputs]]\npath = "{path.as_posix()}"\n')
    assert load_recipe(recipe)["leading_assistant"] == "keep"
    recipe.write_text(recipe.read_text().replace('"keep"', '"yes"'))
    with pytest.raises(RecipeError, match="leading_assistant"):
        load_recipe(recipe)


# --------------------------------------------------------------------------- nothing packed


def test_a_build_that_packs_nothing_names_its_first_rejections(tmp_path, demo_tok):
    path = jsonl(tmp_path / "bad.jsonl", [{"instruction": f"Add {i} and 1.", "output": i + 1} for i in range(50)])
    with pytest.raises(BuildError) as e:
        build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=512)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("no record could be packed (50 read; wrong_type: 50); first rejected: ")
    for k in range(3):
        assert f"{path}: record {k}: wrong_type: 'output' is a number, expected a string" in msg
    assert "record 3:" not in msg
    assert not (tmp_path / "o").exists()
    # the command line says the same, also with -q (no rejection echoed as it happens)
    res = CliRunner().invoke(main, ["build", str(path), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1 and f"{path}: record 0: wrong_type: 'output' is a number" in res.output
    # with workers, each part's rejections: still the first three, in record order
    with pytest.raises(BuildError, match=r"first rejected: \S+bad.jsonl: record 0: .* record 1: .* record 2: "):
        build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=512, part_size=512 / 2**20)
