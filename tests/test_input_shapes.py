"""Data as users have it (issue 14): TRL's prompt/completion and text formats, a column map for
every format, HF ``datasets`` folders and cache files as input.

Real records from ../shared/data are rewritten into each shape; a build of the rewrite must give
the same token ids, roles and loss masks, document by document, as a build of the Alpaca or
``messages`` records they came from. Every wrong or missing column says which file, which record
and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer

from packer import BuildError, build
from packer.cli import main
from packer.output import roles as R
from packer.read.formats import RecordReader, check_inputs, parse_columns

from .helpers import SHARED_DATA, SHARED_TOKENIZERS, need_shared, read_documents

QWEN = SHARED_TOKENIZERS / "qwen2.5-instruct"
LLAMA3 = SHARED_TOKENIZERS / "llama-3-8b-instruct"
N = 150  # records of each real file: enough shapes, a quick build


def jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def alpaca_records() -> list[dict]:
    return json.loads((SHARED_DATA / "alpaca_llamafactory_en_demo.json").read_text())[:N]


def lima_records() -> list[dict]:
    with open(SHARED_DATA / "messages_lima.jsonl") as f:
        return [{"messages": json.loads(line)["messages"]} for _, line in zip(range(N), f, strict=False)]


def same_documents(a: Path, b: Path) -> None:
    """Both outputs hold the same documents: every per-token column (ids, roles, masks) equal, doc by doc."""
    da, db = read_documents(a), read_documents(b)
    assert da.keys() == db.keys() and len(da) > 0
    for doc_id, cols in da.items():
        assert cols.keys() == db[doc_id].keys()
        for name, values in cols.items():
            assert np.array_equal(values, db[doc_id][name]), (doc_id, name)


def built(inputs: list, out: Path, **options) -> dict:
    m = build(inputs, out, tokenizer=options.pop("tokenizer", QWEN), seq_len=4096, **options)
    assert m["counts"]["rejected"] == {}, m["counts"]["rejected"]
    return m


# --------------------------------------------------------------------------- prompt / completion


def test_prompt_completion_strings_are_alpaca_without_input(tmp_path: Path) -> None:
    need_shared()
    records = [r for r in alpaca_records() if not r["input"]]
    ref = jsonl(tmp_path / "alpaca.jsonl", [{"instruction": r["instruction"], "output": r["output"]} for r in records])
    pc = jsonl(tmp_path / "pc.jsonl", [{"prompt": r["instruction"], "completion": r["output"]} for r in records])
    for template in ("tokenizer", "alpaca"):
        built([ref], tmp_path / f"ref-{template}", template=template)
        m = built([pc], tmp_path / f"pc-{template}", template=template)
        assert m["inputs"][0]["format"] == "prompt_completion"
        same_documents(tmp_path / f"ref-{template}", tmp_path / f"pc-{template}")


def test_prompt_response_file_builds_as_prompt_completion(tmp_path: Path) -> None:
    """llm-foundry's {prompt, response} JSONL builds as it is: ``response`` is the completion."""
    need_shared()
    path = SHARED_DATA / "prompt_response_dolly_hhrlhf_train_small.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()][:N]
    ref = jsonl(tmp_path / "alpaca.jsonl", [{"instruction": r["prompt"], "output": r["response"]} for r in records])
    short = jsonl(tmp_path / "pr.jsonl", records)
    built([ref], tmp_path / "ref")
    m = built([short], tmp_path / "pr")
    assert m["inputs"][0]["format"] == "prompt_completion"
    same_documents(tmp_path / "ref", tmp_path / "pr")
    whole = build([path], tmp_path / "whole", tokenizer=QWEN, seq_len=4096)
    assert whole["counts"]["packed"] == 1000


def test_conversational_prompt_completion_is_the_messages(tmp_path: Path) -> None:
    need_shared()
    records = lima_records()
    ref = jsonl(tmp_path / "messages.jsonl", records)
    pc = jsonl(tmp_path / "pc.jsonl", [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}
                                       for r in records])
    built([ref], tmp_path / "ref")
    built([pc], tmp_path / "pc")
    same_documents(tmp_path / "ref", tmp_path / "pc")


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("tokenizer", ["llama-3-8b-instruct", "qwen2.5-instruct", "llama-2"])
def test_text_is_the_tokenizers_encoding_and_eos_all_of_it_trained(tmp_path: Path, tokenizer: str) -> None:
    """A text document is what TRL's language-modelling format gives: the text and the EOS token tokenized
    with the tokenizer's own special tokens (BOS where it adds one); the text ``response``, EOS ``end``."""
    need_shared()
    tok_dir = SHARED_TOKENIZERS / tokenizer
    texts = [r["messages"][1]["content"] for r in lima_records()[:40]]
    m = built([jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts])], tmp_path / "o", tokenizer=tok_dir)
    assert m["inputs"][0]["format"] == "text"
    eos = m["tokenizer"]["eos_token"]
    raw = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    docs = read_documents(tmp_path / "o")
    for doc_id, text in enumerate(texts):
        d = docs[doc_id]
        assert d["input_ids"].tolist() == raw.encode(text + eos, add_special_tokens=True).ids
        bos = int(d["input_ids"][0] == m["tokenizer"]["bos_id"])
        assert set(d["roles"][bos:-1].tolist()) == {R.RESPONSE} and d["roles"][-1] == R.END
        assert d["mask_instruction_tuning"].sum() == len(d["input_ids"]) - bos
    assert m["tokens"]["loss"]["instruction_tuning"] == m["tokens"]["loss"]["instruction_modelling"]


def test_text_in_a_chat_file_is_a_format_mismatch(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"prompt": "Hi", "completion": "Hello"}, {"text": "A document."}])
    (good, bad) = RecordReader([path])
    assert good.kind == "prompt_completion"
    assert (bad.reason, bad.detail) == ("format_mismatch", "the record is text but its file is prompt_completion")


# --------------------------------------------------------------------------- the column map


def test_custom_column_names(tmp_path: Path) -> None:
    need_shared()
    records = alpaca_records()
    ref = jsonl(tmp_path / "alpaca.jsonl", records)
    mine = jsonl(tmp_path / "mine.jsonl", [{"question": r["instruction"], "context": r["input"], "answer": r["output"]}
                                           for r in records])
    built([ref], tmp_path / "ref")
    columns = {"instruction": "question", "input": "context", "output": "answer"}
    m = built([mine], tmp_path / "mine", columns=columns)
    assert m["columns"] == columns and m["build_key"]["columns"] == columns
    assert m["inputs"][0]["format"] == "alpaca"
    same_documents(tmp_path / "ref", tmp_path / "mine")
    # a build without the map lists no columns, and its key is what it was before the map existed
    assert json.loads((tmp_path / "ref" / "manifest.json").read_text())["columns"] == {}
    assert "columns" not in json.loads((tmp_path / "ref" / "manifest.json").read_text())["build_key"]


def test_nested_fields_and_turn_keys(tmp_path: Path) -> None:
    need_shared()
    records = lima_records()
    ref = jsonl(tmp_path / "messages.jsonl", records)
    nested = [{"id": k, "conversation": {"turns": [{"from": t["role"], "text": t["content"]} for t in r["messages"]]}}
              for k, r in enumerate(records)]
    mine = jsonl(tmp_path / "nested.jsonl", nested)
    built([ref], tmp_path / "ref")
    built([mine], tmp_path / "mine", columns=parse_columns("messages=conversation.turns,role=from,content=text"))
    same_documents(tmp_path / "ref", tmp_path / "mine")


def test_column_map_on_the_command_line(tmp_path: Path) -> None:
    need_shared()
    records = alpaca_records()[:40]
    ref = jsonl(tmp_path / "alpaca.jsonl", records)
    mine = jsonl(tmp_path / "mine.jsonl", [{"q": r["instruction"], "i": r["input"], "a": r["output"]} for r in records])
    built([ref], tmp_path / "ref")
    result = CliRunner().invoke(main, ["build", str(mine), "-o", str(tmp_path / "cli"), "--tokenizer", str(QWEN),
                                       "--columns", "instruction=q,input=i,output=a", "-q"])
    assert result.exit_code == 0, result.output
    same_documents(tmp_path / "ref", tmp_path / "cli")
    result = CliRunner().invoke(main, ["build", str(mine), "-o", str(tmp_path / "bad"), "--columns", "instruction"])
    assert result.exit_code == 2 and "'instruction' is not FIELD=COLUMN" in result.output
    assert not (tmp_path / "bad").exists()


def test_a_missing_mapped_column_rejects_the_record(tmp_path: Path, demo_tok) -> None:
    path = jsonl(tmp_path / "qa.jsonl", [{"q": "Name a colour.", "a": "Blue."}, {"q": "Name a fruit.", "answer": "x"},
                                         {"q": "Count.", "a": "1 2 3"}])
    m = build([path], tmp_path / "o", tokenizer=demo_tok, columns={"instruction": "q", "output": "a"})
    assert m["counts"]["packed"] == 2 and m["counts"]["rejected"] == {"missing_field": 1}
    (line,) = [json.loads(x) for x in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert (line["input"], line["record"]) == (str(path), 1)
    assert line["detail"] == "no 'a' column, which --columns output=a reads as 'output' (keys: q, answer)"
    with pytest.raises(BuildError, match=rf"^{path}: record 1: missing_field: no 'a' column.* \(--strict\)$"):
        build([path], tmp_path / "s", tokenizer=demo_tok, columns={"instruction": "q", "output": "a"}, strict=True)


def test_a_missing_nested_field_or_turn_key_says_which(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "n.jsonl", [
        {"chat": {"turns": [{"who": "user", "said": "Hi"}, {"who": "assistant", "said": "Hello"}]}},
        {"chat": {"lines": []}},
        {"chat": {"turns": [{"who": "user", "said": "Hi"}, {"from": "assistant", "said": "Hello"}]}},
        {"chat": {"turns": [{"who": "user", "said": "Hi"}, {"who": "assistant", "text": "Hello"}]}},
    ])
    items = list(RecordReader([path], columns={"messages": "chat.turns", "role": "who", "content": "said"}))
    assert items[0].kind == "messages" and [m.content for m in items[0].messages] == ["Hi", "Hello"]
    assert [(i.reason, i.detail) for i in items[1:]] == [
        ("missing_field", "no 'chat.turns' column, which --columns messages=chat.turns reads as 'messages' "
                          "(keys: chat)"),
        ("missing_field", "turn 1 has no 'who', which --columns content=said, role=who names (keys: from, said)"),
        ("missing_field", "turn 1 (assistant) has no 'said', which --columns content=said, role=who names "
                          "(keys: who, text)"),
    ]
    assert all(i.source.path == str(path) for i in items) and [i.source.index for i in items] == [0, 1, 2, 3]


def test_a_file_with_none_of_the_mapped_columns_fails_before_writing(tmp_path: Path, demo_tok) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"instruction": "Hi", "output": "Hello"}] * 2)
    message = (f"{path}: no record has the columns the column map names: record 0 has no 'question' column, which "
               "--columns instruction=question reads as 'instruction' (keys: instruction, output)")
    for call in (lambda: check_inputs([path], columns={"instruction": "question"}),
                 lambda: build([path], tmp_path / "o", tokenizer=demo_tok, columns={"instruction": "question"})):
        with pytest.raises(BuildError) as err:
            call()
        assert str(err.value) == message
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("columns", "message"), [
    ({"question": "instruction"}, "--columns question=instruction: no record format has a field 'question'; map "
     "your column onto one of instruction, input, output, system, conversations, messages, prompt, completion, text, "
         "tools, chosen, rejected, chosen_messages, rejected_messages, label "
     "(or role, content for the keys of a conversation's turns), as FIELD=COLUMN; did you mean instruction=question?"),
    ({"instrucion": "q"}, "--columns instrucion=q: no record format has a field 'instrucion'"),
    ({"role": "who", "from": "speaker"}, "--columns: the 'role' field is mapped twice"),
    ({"output": ""}, "--columns output=: a field and a column name are both needed"),
    ({"messages": "chat..turns"}, "--columns messages=chat..turns: a field and a column name are both needed"),
])
def test_a_column_map_naming_no_field_fails_before_anything_is_written(tmp_path: Path, demo_tok, columns,
                                                                      message) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    with pytest.raises(BuildError) as err:
        build([path], tmp_path / "o", tokenizer=demo_tok, columns=columns)
    assert str(err.value).startswith(message)
    assert not (tmp_path / "o").exists()


def test_an_undetected_file_points_at_the_column_map(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "qa.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(BuildError, match=r"cannot detect the format \(keys: question, answer\); .*--columns "
                                         r"FIELD=COLUMN,\.\.\. maps your names onto their fields$"):
        check_inputs([path])


# --------------------------------------------------------------------------- HF datasets


@pytest.mark.slow
def test_a_save_to_disk_folder_and_a_cache_file(tmp_path: Path) -> None:
    """A folder from Dataset.save_to_disk (two data files) and an HF cache .arrow file build as the JSON Lines
    file they were made from; messages name each data file and its row."""
    need_shared()
    datasets = pytest.importorskip("datasets")
    records = lima_records()
    ref = jsonl(tmp_path / "messages.jsonl", records)
    ds = datasets.Dataset.from_list(records)
    ds.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    built([ref], tmp_path / "ref")
    m = built([tmp_path / "saved"], tmp_path / "saved_out")
    names = [Path(i["path"]).name for i in m["inputs"]]
    assert names == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    assert sum(i["records"] for i in m["inputs"]) == len(records) and m["inputs"][0]["format"] == "messages"
    same_documents(tmp_path / "ref", tmp_path / "saved_out")
    cached = datasets.load_dataset("json", data_files=str(ref), split="train", cache_dir=str(tmp_path / "cache"))
    (cache_file,) = [f["filename"] for f in cached.cache_files]
    built([cache_file], tmp_path / "cache_out")
    same_documents(tmp_path / "ref", tmp_path / "cache_out")
    # the command line takes the folder too
    result = CliRunner().invoke(main, ["build", str(tmp_path / "saved"), "-o", str(tmp_path / "cli"),
                                       "--tokenizer", str(QWEN), "-q"])
    assert result.exit_code == 0, result.output
    same_documents(tmp_path / "ref", tmp_path / "cli")


def test_hf_folders_that_are_no_dataset_say_what_to_give(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"prompt": "Hi", "completion": "Hello"}])
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(BuildError) as err:
        check_inputs([tmp_path / "dd"])
    assert str(err.value) == (f"{tmp_path / 'dd'}: holds a DatasetDict (splits: train, test); give one split's "
                              f"folder, e.g. {tmp_path / 'dd' / 'train'}")
    assert check_inputs([tmp_path / "dd" / "test"]) == ["prompt_completion"]
    (tmp_path / "plain").mkdir()
    with pytest.raises(BuildError, match="plain: is a directory; give the data files in it, or a folder written by"):
        check_inputs([tmp_path / "plain"])


def test_a_broken_arrow_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.arrow"
    path.write_bytes(b"\xff\xff\xff\xff" + b"\x00" * 3)
    with pytest.raises(BuildError, match=rf"^{path}: not a readable Arrow file \(an IPC stream, as HF datasets "):
        list(RecordReader([path]))
