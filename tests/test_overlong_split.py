"""``--overlong split``: a conversation longer than seq_len is packed as several documents, split at its
turns, each one what rendering and tokenizing its turns alone gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest

from packer import build
from packer.inspect.verify import verify
from packer.output import roles as R
from packer.output.container import read_table
from packer.pipeline.part import resolve_template
from packer.read.formats import RecordReader
from packer.read.records import Conversation
from packer.tokens.tokenize import Labeller, char_codes

from .helpers import EXAMPLES, output_files

SEQ_LEN = 256


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The ShareGPT demo with one long record: a system message and the turns of eight demo records."""
    records = json.loads((EXAMPLES / "sharegpt_demo.json").read_text())
    turns = [t for r in records[:8] for t in r["conversations"] if t["from"] in ("human", "gpt")]
    long = {"id": "long", "conversations": [{"from": "system", "value": "Answer briefly."}, *turns]}
    path = tmp_path_factory.mktemp("split") / "long.json"
    path.write_text(json.dumps([*records[8:20], long, *records[20:30]]))
    return path


def shard_docs(out: Path) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(doc_id, input_ids, roles) of every document of the shards, in shard and row order."""
    m = json.loads((out / "manifest.json").read_text())
    found = []
    for shard in m["shards"]:
        for row in read_table(out / shard["file"]).to_pylist():
            pos = 0
            for n, d in zip(row["seq_lens"], row["doc_ids"], strict=True):
                found.append((d, np.array(row["input_ids"][pos : pos + n]), np.array(row["roles"][pos : pos + n])))
                pos += n
    return found


def tokenize(tok, tpl, conv: Conversation, messages) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    r = tpl.render(Conversation(conv.source, conv.kind, tuple(messages)))
    lab = Labeller(tok)
    batch = lab.prepare([r.seg_lengths], [char_codes(r.seg_roles, r.seg_last)], [r.text])
    tb = lab.label(batch, lab.encode(batch))
    return tb.ids, tb.roles


def test_a_long_conversation_is_split_at_its_turns(inputs, tmp_path, demo_tok):
    out = tmp_path / "out"
    m = build([inputs], out, tokenizer=demo_tok, seq_len=SEQ_LEN, overlong="split")
    assert verify(out) == []
    long_id = 12
    conv = next(c for c in RecordReader([str(inputs)]) if c.source.doc_id == long_id)
    tpl = resolve_template("auto", demo_tok)
    full_ids, full_roles = tokenize(demo_tok, tpl, conv, conv.messages)
    assert len(full_ids) > 2 * SEQ_LEN
    # the expected pieces: greedily as many whole exchanges as fit, the system message at the head of each
    head, rest = conv.messages[:1], conv.messages[1:]
    exchanges = [rest[i : i + 2] for i in range(0, len(rest), 2)]
    expected, a = [], 0
    while a < len(exchanges):
        b = a + 1
        while b < len(exchanges) and len(tokenize(demo_tok, tpl, conv, [*head, *sum(exchanges[a : b + 1], ())])[0]
                                         ) <= SEQ_LEN:
            b += 1
        expected.append(tokenize(demo_tok, tpl, conv, [*head, *sum(exchanges[a:b], ())]))
        a = b
    assert len(expected) >= 3
    pieces = [(ids, roles) for d, ids, roles in shard_docs(out) if d == long_id]
    assert all(len(ids) <= SEQ_LEN for ids, _ in pieces)
    assert sorted(ids.tolist() for ids, _ in pieces) == sorted(ids.tolist() for ids, _ in expected)
    # every response token of the record is in exactly one piece
    response = [ids[roles == R.RESPONSE] for ids, roles in expected]
    assert np.concatenate(response).tolist() == full_ids[full_roles == R.RESPONSE].tolist()
    docs = ipc.open_file(out / "documents.arrow").read_all().to_pylist()
    assert docs[long_id]["copies"] == len(expected) and docs[long_id]["status"] == "packed"
    split = [d["doc_id"] for d in docs if d["copies"] > 1]
    assert m["counts"]["split"] == len(split) and long_id in split
    assert m["counts"]["split_pieces"] == sum(d["copies"] for d in docs if d["copies"] > 1)
    assert m["counts"]["packed"] + sum(m["counts"]["rejected"].values()) == m["counts"]["records"] == 23
    lines = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(x["doc_id"], x["action"], x["reason"]) for x in lines if x["action"] == "split"] == [
        (d, "split", "overlong") for d in split]


def test_an_exchange_longer_than_seq_len_rejects_the_record(inputs, tmp_path, demo_tok):
    m = build([inputs], tmp_path / "out", tokenizer=demo_tok, seq_len=64, overlong="split")
    assert m["counts"]["rejected"].get("overlong", 0) >= 1
    assert verify(tmp_path / "out") == []
    lines = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert any("alone" in x["detail"] for x in lines if x["action"] == "rejected")


def test_parts_do_not_change_a_split_build(inputs, tmp_path, demo_tok):
    kw = {"tokenizer": demo_tok, "seq_len": SEQ_LEN, "overlong": "split", "batch_size": 4}
    build([inputs, inputs], tmp_path / "p1", dedupe=True, **kw)
    build([inputs, inputs], tmp_path / "p3", dedupe=True, part_size=1_000 / 2**20, **kw)
    assert output_files(tmp_path / "p1") == output_files(tmp_path / "p3")
    assert verify(tmp_path / "p3") == []


def test_a_split_keeps_each_tool_call_with_its_results_and_the_tools(tmp_path, demo_tok):
    # exchanges of a question, a call, its result and the answer: a piece never starts at a tool result
    # (its call in the piece before), and every piece is rendered with the record's tool definitions
    tools = [{"type": "function", "function": {"name": "lookup", "description": "look a word up"}}]
    messages = []
    for k in range(12):
        call = {"type": "function", "function": {"name": "lookup", "arguments": {"word": f"word{k}"}}}
        messages += [{"role": "user", "content": f"What does word{k} mean? " + "Tell me more. " * 4},
                     {"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "content": f"word{k} means thing {k}."},
                     {"role": "assistant", "content": f"It means thing {k}. " * 3}]
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps({"messages": messages, "tools": tools}) + "\n")
    out = tmp_path / "out"
    m = build([path], out, tokenizer=demo_tok, template="chatml", seq_len=2 * SEQ_LEN, overlong="split")
    assert verify(out) == [] and m["counts"]["packed"] == 1
    pieces = [(ids, roles) for _, ids, roles in shard_docs(out)]
    assert len(pieces) >= 3
    text = [demo_tok.tokenizer.decode(ids.tolist(), skip_special_tokens=False) for ids, _ in pieces]
    assert sum(t.count('{"name": "lookup", "arguments"') for t in text) == 12
    assert all(t.count('<tools>\n{"type": "function"') == 1 for t in text)
    for t, (_, roles) in zip(text, pieces, strict=True):
        # each result follows its own call in the same piece
        for k in range(12):
            if f"word{k} means" in t:
                assert t.index(f'"word": "word{k}"') < t.index(f"word{k} means")
        assert (roles == R.TOOL).any() and (roles == R.TOOL_CALL).any()
