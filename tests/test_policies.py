"""The record policies a user chooses, on real tokenizers and data from ../shared (skipped where it is absent):

- ``--system merge|drop|reject``: a system message under a template that refuses one (Mistral v0.1's and
  Gemma's own) is merged into the first user message (ids as HF transformers renders the merged
  conversation, its characters labelled ``system``), dropped, or the record rejected; counted in
  ``counts.system_policy``. A template that takes system messages is not touched.
- ``--blank-turns reject|drop``: ShareGPT-3000's records with blank turns are kept with ``drop``, the dropped
  turns counted in ``counts.dropped_turns["blank_turn"]``; ``reject`` (the default) rejects them as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from packer import build, load_tokenizer
from packer.inspect.verify import verify
from packer.output import roles as R
from packer.read.formats import RecordReader
from packer.read.records import Conversation, Rejection
from packer.tokens.templates import SYSTEM_SEPARATOR, ChatTemplate, Rendered

from .helpers import (
    DEMO_TOKENIZER,
    EXAMPLES,
    SHARED_DATA,
    SHARED_TOKENIZERS,
    hf_tokenizer,
    need_shared,
    output_files,
    read_documents,
    tokenizer_params,
)

SHAREGPT_3000 = SHARED_DATA / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"
#: the chat tokenizers here whose own template raises on a system message
REFUSING = ["mistral-7b-instruct-v0.1", "gemma-2"]


def transformers_loader() -> str:
    """The tokenizer loader whose ids HF's apply_chat_template gives: tokenizer.json as it is under
    transformers 4, transformers' own rebuild under 5."""
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    return "file" if int(transformers.__version__.split(".")[0]) < 5 else "transformers"


def hf_chat(tok_dir: Path, messages: list[dict]) -> tuple[str, list[int]]:
    """HF transformers' rendering of ``messages``: the text and the ids."""
    hf = hf_tokenizer(tok_dir)
    ids = hf.apply_chat_template(messages, tokenize=True)
    return hf.apply_chat_template(messages, tokenize=False), list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.fixture(scope="module")
def system_file(tmp_path_factory) -> Path:
    """The demo ShareGPT records (12 of 64 with a system message) and ShareGPT-3000's records with one."""
    need_shared()
    records = json.loads((EXAMPLES / "sharegpt_demo.json").read_text())
    records += [
        r for r in json.loads(SHAREGPT_3000.read_text())
        if any(t.get("from") == "system" for t in r.get("conversations", []))
    ]
    path = tmp_path_factory.mktemp("system") / "with_system.json"
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path


@pytest.fixture(scope="module")
def system_convs(system_file) -> list[Conversation]:
    """The records of system_file that have a leading system message and a user message to merge it into."""
    convs = [c for c in RecordReader([system_file]) if isinstance(c, Conversation) and c.messages[0].role == "system"]
    assert len(convs) >= 15
    return convs


def toks(name: str):  # type: ignore[no-untyped-def]
    cache = toks.__dict__.setdefault("cache", {})
    if name not in cache:
        cache[name] = load_tokenizer(SHARED_TOKENIZERS / name, loader=transformers_loader())
    return cache[name]


def merged(conv: Conversation) -> list[dict]:
    """The conversation as a user would merge its system message into the first user message: a blank line
    between the two, as Gemma 3's own template and Mistral's (mistral-common) do."""
    system, user, *rest = conv.messages
    assert user.role == "user"
    first = {"role": "user", "content": system.content + "\n\n" + user.content}
    return [first, *({"role": m.role, "content": m.content} for m in rest)]


@pytest.mark.parametrize("name", tokenizer_params(REFUSING))
def test_system_merged_ids_equal_transformers(name, system_file, system_convs, tmp_path):
    tok = toks(name)
    assert ChatTemplate.named("tokenizer", tok).refuses_system
    m = build([system_file], tmp_path / "o", tokenizer=tok, template="tokenizer", seq_len=32768)
    assert m["counts"]["system_policy"] == {"merged": len(system_convs)}
    assert "template_error" not in m["counts"]["rejected"]
    assert m["template"]["system"] == "merge"
    docs = read_documents(tmp_path / "o")
    tpl = ChatTemplate.named("tokenizer", tok)
    for conv in system_convs:
        doc = docs[conv.source.doc_id]  # every record with a system message is packed
        text, ids = hf_chat(SHARED_TOKENIZERS / name, merged(conv))
        assert doc["input_ids"].tolist() == ids, conv.source.where()
        r = tpl.render(conv)
        assert isinstance(r, Rendered) and r.system == "merged" and r.text == text
        # the system message's characters are system (Gemma trims the merged content), the separator marker
        system = conv.messages[0].content
        chars = np.repeat(r.seg_roles, r.seg_lengths)
        start = r.text.index(system.strip())
        assert (chars[start : start + len(system.strip())] == R.SYSTEM).all()
        assert (chars == R.SYSTEM).sum() in (len(system), len(system.lstrip()))
        after = r.text.index(SYSTEM_SEPARATOR, start + len(system.strip()))
        assert (chars[after : after + len(SYSTEM_SEPARATOR)] == R.MARKER).all()
        # and so are its tokens: they decode to the system message
        sys_ids = doc["input_ids"][doc["roles"] == R.SYSTEM].tolist()
        decoded = tok.tokenizer.decode(sys_ids, skip_special_tokens=False)
        assert "".join(decoded.split()) == "".join(system.split()), conv.source.where()
        assert not (doc["mask_instruction_tuning"] & (doc["roles"] == R.SYSTEM)).any()
        assert (doc["mask_instruction_modelling"][doc["roles"] == R.SYSTEM]).all()
    assert verify(tmp_path / "o") == []


@pytest.mark.parametrize("name", tokenizer_params(REFUSING))
def test_system_dropped_or_rejected_is_counted(name, system_file, system_convs, tmp_path):
    tok = toks(name)
    m = build([system_file], tmp_path / "drop", tokenizer=tok, seq_len=32768, system="drop")
    assert m["counts"]["system_policy"] == {"dropped": len(system_convs)}
    docs = read_documents(tmp_path / "drop")
    for conv in system_convs:
        _, ids = hf_chat(SHARED_TOKENIZERS / name, [{"role": x.role, "content": x.content} for x in conv.messages[1:]])
        doc = docs[conv.source.doc_id]
        assert doc["input_ids"].tolist() == ids, conv.source.where()
        assert not (doc["roles"] == R.SYSTEM).any()
    m2 = build([system_file], tmp_path / "reject", tokenizer=tok, seq_len=32768, system="reject")
    assert m2["counts"]["system_policy"] == {}
    assert m2["counts"]["rejected"]["template_error"] == len(system_convs)
    assert m2["counts"]["packed"] == m["counts"]["packed"] - len(system_convs)
    lines = [json.loads(x) for x in (tmp_path / "reject" / "rejected.jsonl").read_text().splitlines()]
    refused = {x["record"] for x in lines if x["reason"] == "template_error"}
    assert refused == {c.source.index for c in system_convs}


@pytest.mark.parametrize("name", tokenizer_params(REFUSING))
def test_merged_real_records_assembled_equal_jinja(name, system_convs):
    tok = toks(name)
    fast = ChatTemplate.named("tokenizer", tok)
    slow = ChatTemplate.named("tokenizer", tok)
    slow.assemble = False
    for _ in range(3):
        for conv in system_convs:
            a, b = fast.render(conv), slow.render(conv)
            assert isinstance(a, Rendered) and isinstance(b, Rendered)
            assert a.text == b.text and a.system == b.system == "merged"
            assert np.array_equal(np.repeat(a.seg_roles, a.seg_lengths), np.repeat(b.seg_roles, b.seg_lengths))
            assert np.array_equal(np.repeat(a.seg_last, a.seg_lengths), np.repeat(b.seg_last, b.seg_lengths))
    unchecked = sum(s.assembly.unchecked for s in fast._structures.values() if not isinstance(s, str) and s.assembly)
    assert unchecked > 0  # merged records do take the fast path


@pytest.mark.parametrize("template", ["chatml", "mistral", "tokenizer"])
def test_templates_taking_system_messages_unchanged(template, tmp_path):
    # the demo tokenizer's own template is ChatML; the built-in mistral one puts a system message first itself
    data = EXAMPLES / "sharegpt_demo.json"
    files = {}
    for policy in ("merge", "drop", "reject"):
        out = tmp_path / policy
        m = build([data], out, tokenizer=DEMO_TOKENIZER, template=template, seq_len=2048, system=policy)
        assert m["counts"]["system_policy"] == {}
        files[policy] = {k: v for k, v in output_files(out).items() if k != "manifest.json"}
        per_role = m["tokens"]["per_role"]
        assert per_role["system"] > 0
    assert files["merge"] == files["drop"] == files["reject"]


# -- blank turns ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharegpt3000() -> tuple[list, list]:
    need_shared()
    return list(RecordReader([SHAREGPT_3000])), list(RecordReader([SHAREGPT_3000], blank_turns="drop"))


def test_blank_turns_drop_keeps_sharegpt3000_records(sharegpt3000):
    today, dropping = sharegpt3000
    raw = json.loads(SHAREGPT_3000.read_text())
    blank = {r.source.index for r in today if isinstance(r, Rejection) and r.reason == "empty_turn"}
    assert len(blank) == 44
    kept = 0
    for a, b in zip(today, dropping, strict=True):
        if a.source.index not in blank:
            assert a == b  # the policy changes nothing else
            continue
        if isinstance(b, Rejection):  # [gpt, blank human, gpt]: nothing is left to learn
            assert b.reason == "no_assistant_turn" and "blank turn 1" in b.detail
            assert [t["from"] for t in raw[b.source.index]["conversations"]] == ["gpt", "human", "gpt"]
            continue
        kept += 1
        assert b.dropped_turns["blank_turn"] >= 1
        assert all(m.content.strip() for m in b.messages)
        # every turn of the record is kept or counted
        assert len(raw[b.source.index]["conversations"]) == len(b.messages) + sum(b.dropped_turns.values())
    assert kept == 43


def test_blank_turns_counted_in_the_manifest(sharegpt3000, tmp_path):
    today, dropping = sharegpt3000
    blank = [r.source.index for r in today if isinstance(r, Rejection) and r.reason == "empty_turn"]
    raw = json.loads(SHAREGPT_3000.read_text())
    picked = sorted({*blank, *range(40)})  # the blank records and some others
    path = tmp_path / "blank.json"
    path.write_text(json.dumps([raw[i] for i in picked], ensure_ascii=False))
    m = build([path], tmp_path / "reject", tokenizer=DEMO_TOKENIZER, seq_len=65536)
    assert m["counts"]["rejected"].get("empty_turn") == len(blank) and "blank_turn" not in m["counts"]["dropped_turns"]
    m2 = build([path], tmp_path / "drop", tokenizer=DEMO_TOKENIZER, seq_len=65536, blank_turns="drop")
    c, c2 = m["counts"], m2["counts"]
    assert "empty_turn" not in c2["rejected"]
    assert c2["packed"] == c["packed"] + len(blank) - 1
    assert c2["rejected"]["no_assistant_turn"] == c["rejected"].get("no_assistant_turn", 0) + 1
    by_index = {r.source.index: r for r in dropping}
    expected = sum(
        by_index[i].dropped_turns.get("blank_turn", 0) for i in blank if isinstance(by_index[i], Conversation)
    )
    assert c2["dropped_turns"]["blank_turn"] == expected == 103
    docs = read_documents(tmp_path / "drop")
    kept = [k for k, i in enumerate(picked) if i in blank and isinstance(by_index[i], Conversation)]
    assert len(kept) == len(blank) - 1 and all(k in docs for k in kept)
    assert verify(tmp_path / "drop") == []
