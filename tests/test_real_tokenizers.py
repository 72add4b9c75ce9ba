"""Real tokenizers and real data from ../shared (skipped where it is absent).

With ``--template tokenizer`` (and the default ``file`` tokenizer loader) the ids must be exactly
``tokenizer.json``'s encoding of the text HF transformers' ``apply_chat_template`` renders, which under
transformers 4.x is its ``apply_chat_template(messages, tokenize=True)`` (transformers 5 rebuilds
SentencePiece-family tokenizers instead: tests/test_loaders.py checks its ids with the transformers
loader); every quirk listed in shared/tokenizers/README.md must come out with the right roles.
"""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from packer import BuildError, build, load_tokenizer
from packer.output import roles as R
from packer.output.container import read_table
from packer.pipeline.build import resolve_template
from packer.read.formats import RecordReader
from packer.read.records import Conversation, Rejection

from .helpers import (
    CHAT_TOKENIZERS,
    SHARED_DATA,
    SHARED_TOKENIZERS,
    hf_tokenizer,
    need_shared,
    read_documents,
    real_tokenizer,
    tokenizer_params,
)

#: the token each template closes an assistant turn with
END_TOKEN = {
    "qwen2.5-instruct": "<|im_end|>", "qwen3": "<|im_end|>", "llama-3-8b-instruct": "<|eot_id|>",
    "llama-3-8b-instruct-initial": "<|eot_id|>", "mistral-7b-instruct-v0.1": "</s>",
    "phi-3-mini-instruct": "<|end|>", "gemma-2": "<end_of_turn>",
}


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory) -> Path:
    """A mix of real records: single and multi-turn LIMA, ShareGPT, Alpaca with input."""
    need_shared()
    lima = (SHARED_DATA / "messages_lima.jsonl").read_text().splitlines()
    alpaca = json.loads((SHARED_DATA / "alpaca_llamafactory_en_demo.json").read_text())
    chats = json.loads((SHARED_DATA / "sharegpt_fastchat_dummy_conversation.json").read_text())
    records = [json.loads(x) for x in lima[:15] + lima[-8:]]
    for a in alpaca[:15]:
        prompt = a["instruction"] + ("\n\n" + a["input"] if a["input"] else "")
        records.append(
            {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": a["output"]}]}
        )
    role = {"human": "user", "gpt": "assistant"}
    records += [
        {"messages": [{"role": role[t["from"]], "content": t["value"]} for t in c["conversations"]]} for c in chats[:15]
    ]
    path = tmp_path_factory.mktemp("sample") / "sample.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def hf_ids(tokenizer_dir: Path, messages: list[dict]) -> list[int]:
    """transformers' ``apply_chat_template(messages, tokenize=True)``."""
    out = hf_tokenizer(tokenizer_dir).apply_chat_template(messages, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def file_ids(tokenizer_dir: Path, messages: list[dict]) -> list[int]:
    """``tokenizer.json`` (run as it is) on the text transformers' chat template renders: what the file
    loader must give, whatever transformers version is installed."""
    text = hf_tokenizer(tokenizer_dir).apply_chat_template(messages, tokenize=False)
    cache = file_ids.__dict__.setdefault("cache", {})
    if tokenizer_dir not in cache:
        cache[tokenizer_dir] = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    return cache[tokenizer_dir].encode(text, add_special_tokens=False).ids


def transformers_4() -> bool:
    """Whether transformers 4.x is installed: it runs tokenizer.json as it is, so its ids are the file loader's."""
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    return transformers.__version__.startswith("4.")


def byte_level(tok) -> bool:  # type: ignore[no-untyped-def]
    return "ByteLevel" in repr(json.loads(tok.tokenizer.to_str()).get("decoder"))


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@pytest.mark.parametrize("name", tokenizer_params(CHAT_TOKENIZERS))
def test_ids_equal_hf_apply_chat_template(name, sample_file, tmp_path):
    tok_dir = SHARED_TOKENIZERS / name
    tok = real_tokenizer(name)
    m = build([sample_file], tmp_path / "o", tokenizer=tok, template="tokenizer", seq_len=8192)
    docs = read_documents(tmp_path / "o")
    tpl = resolve_template("tokenizer", tok)
    end_id = tok.tokenizer.token_to_id(END_TOKEN[name])
    exact_decode = byte_level(tok)
    # the reference is transformers on the messages as the file holds them, not as packer read them
    written = [json.loads(line)["messages"] for line in sample_file.read_text().splitlines()]
    checked = 0
    for conv in RecordReader([sample_file]):
        assert isinstance(conv, Conversation)
        if conv.source.doc_id not in docs:
            continue
        doc = docs[conv.source.doc_id]
        ids, roles = doc["input_ids"].tolist(), doc["roles"]
        assert ids == file_ids(tok_dir, written[conv.source.index]), conv.source.where()
        if transformers_4():
            assert ids == hf_ids(tok_dir, written[conv.source.index]), conv.source.where()
        text = tpl.render(conv).text
        # the tokenizer's normalizer may compose characters (NFC); byte-level
        # decoders are then exact, SentencePiece ones move spaces around special tokens
        decoded = nfc(tok.tokenizer.decode(ids, skip_special_tokens=False))
        if exact_decode:
            assert decoded == nfc(text)
        else:
            assert "".join(decoded.split()) == "".join(nfc(text).split())
        answers = "".join(x.content for x in conv.messages if x.role == "assistant")
        response = tok.tokenizer.decode(doc["input_ids"][roles == R.RESPONSE].tolist(), skip_special_tokens=False)
        assert "".join(nfc(response).split()) == "".join(nfc(answers).split()), conv.source.where()
        n_assistant = sum(x.role == "assistant" for x in conv.messages)
        assert (roles == R.END).sum() == n_assistant
        assert (doc["input_ids"][roles == R.END] == end_id).all()
        for strategy, role_names in m["strategies"].items():
            if strategy != "last_turn":
                assert (doc[f"mask_{strategy}"] == np.isin(roles, R.role_codes(role_names))).all()
        checked += 1
    rejected = m["counts"]["rejected"]
    assert checked == m["counts"]["packed"] and checked >= 40, rejected
    if name in ("gemma-2", "mistral-7b-instruct-v0.1"):
        assert set(rejected) <= {"template_error"}  # they refuse non-alternating turns
    else:
        assert rejected == {}


def test_llama3_single_bos(tmp_path, sample_file):
    tok = real_tokenizer("llama-3-8b-instruct")
    build([sample_file], tmp_path / "o", tokenizer=tok, seq_len=8192)
    for doc in read_documents(tmp_path / "o").values():
        assert doc["input_ids"][0] == 128000 and (doc["input_ids"] == 128000).sum() == 1
        assert doc["roles"][0] == R.SPECIAL


def test_qwen25_default_system_prompt_is_boilerplate(tmp_path, sample_file):
    tok = real_tokenizer("qwen2.5-instruct")
    m = build([sample_file], tmp_path / "o", tokenizer=tok, seq_len=8192)
    prompt = tok.tokenizer.encode("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.").ids
    for doc in read_documents(tmp_path / "o").values():
        assert doc["input_ids"][doc["roles"] == R.BOILERPLATE].tolist() == prompt
    # IM learns the injected prompt, boilerplate_masked does not
    loss = m["tokens"]["loss"]
    assert loss["instruction_modelling"] - loss["boilerplate_masked"] == m["tokens"]["per_role"]["boilerplate"]


def test_phi3_newline_absorbed_into_end_token(tmp_path, sample_file):
    tok = real_tokenizer("phi-3-mini-instruct")
    build([sample_file], tmp_path / "o", tokenizer=tok, seq_len=8192)
    end_id = tok.tokenizer.token_to_id("<|end|>")
    eot_id = tok.tokenizer.token_to_id("<|endoftext|>")
    for doc in read_documents(tmp_path / "o").values():
        ids, roles = doc["input_ids"], doc["roles"]
        assert ids[-1] == eot_id and roles[-1] == R.SPECIAL  # appended once, not a turn end
        ends = roles == R.END
        assert (ids[ends] == end_id).all() and ends.sum() == (ids == end_id).sum() // 2 + (ids == end_id).sum() % 2


def test_qwen3_drops_earlier_reasoning_and_keeps_the_last(tmp_path):
    need_shared()
    tok_dir = SHARED_TOKENIZERS / "qwen3"
    conv = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>\nadd again\n</think>\n\n6"},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"messages": conv}) + "\n")
    tok = load_tokenizer(tok_dir)
    build([path], tmp_path / "o", tokenizer=tok, template="tokenizer")
    doc = read_documents(tmp_path / "o")[0]
    assert doc["input_ids"].tolist() == hf_ids(tok_dir, conv)
    def decode(role: int) -> str:
        return tok.tokenizer.decode(doc["input_ids"][doc["roles"] == role].tolist(), skip_special_tokens=False)

    # the earlier turn's reasoning is gone; the last turn's is reasoning, tags included, the answers response
    assert decode(R.RESPONSE) == "4\n\n6"
    assert decode(R.REASONING) == "<think>\nadd again\n</think>"
    last = tok.tokenizer.decode(doc["input_ids"][doc["mask_last_turn"]].tolist(), skip_special_tokens=False)
    assert last == "<think>\nadd again\n</think>\n\n6<|im_end|>"


@pytest.mark.slow  # Gemma-2 (helpers.SLOW_TOKENIZERS)
def test_gemma_renames_assistant_and_rejects_system(tmp_path):
    need_shared()
    path = tmp_path / "g.jsonl"
    records = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    tok = real_tokenizer("gemma-2")
    m = build([path], tmp_path / "o", tokenizer=tok, system="reject")
    assert m["counts"]["rejected"] == {"template_error": 1}
    line = json.loads((tmp_path / "o" / "rejected.jsonl").read_text())
    assert line["record"] == 1 and "System role not supported" in line["detail"]
    doc = read_documents(tmp_path / "o")[0]
    text = tok.tokenizer.decode(doc["input_ids"][doc["roles"] == R.MARKER].tolist(), skip_special_tokens=False)
    assert "model" in text


@pytest.mark.parametrize(("name", "bos"), [("llama-2", "<s>"), ("gpt2", None)])
def test_tokenizers_without_chat_template_use_alpaca(name, bos, tmp_path):
    need_shared()
    tok = real_tokenizer(name)
    m = build([SHARED_DATA / "alpaca_code_alpaca_2k.json"], tmp_path / "o", tokenizer=tok, seq_len=2048)
    assert m["template"]["name"] == "alpaca"
    assert m["counts"]["rejected"] == {"empty_output": 2}
    docs = read_documents(tmp_path / "o")
    first = docs[0]["input_ids"].tolist()
    bos_id = tok.token_id(bos)
    if bos is not None:
        assert first[0] == bos_id and first.count(bos_id) == 1
    else:
        assert first[0] != tok.token_id("<|endoftext|>")
    eos_id = tok.token_id(tok.eos_token)
    for doc in docs.values():
        assert doc["input_ids"][-1] == eos_id and doc["roles"][-1] == R.END
        assert (doc["roles"] == R.BOILERPLATE).any()


def test_unloadable_tokenizer_is_a_clear_error(tmp_path):
    need_shared()
    broken = SHARED_TOKENIZERS / "_broken" / "llama-2-onnxruntime-extensions-unloadable"
    with pytest.raises(BuildError, match=r"tokenizer\.json: cannot load tokenizer"):
        load_tokenizer(broken)


DATA_FILES = sorted(p.name for p in SHARED_DATA.glob("*") if p.name.split("_")[0] in ("alpaca", "sharegpt", "messages"))


# the 3,000-record ShareGPT file is the longest build (slow: CI builds it, the inner loop the smaller files)
@pytest.mark.parametrize("file", [pytest.param(f, marks=pytest.mark.slow) if "first3000" in f else f
                                  for f in DATA_FILES] or ["(none)"])
def test_every_shared_data_file_builds(file, tmp_path):
    """Each real file builds (or rejects records with reasons); invariants hold on
    every row, and a sample of documents is re-rendered and re-tokenized."""
    need_shared()
    tok = real_tokenizer("qwen2.5-instruct")
    path = SHARED_DATA / file
    try:
        m = build([path], tmp_path / "o", tokenizer=tok, seq_len=4096)
    except BuildError as e:  # only a file whose every record is bad may fail
        assert "no record could be packed" in str(e) and "missingturns" in file
        return
    c = m["counts"]
    assert c["records"] == c["packed"] + sum(c["rejected"].values()) == m["inputs"][0]["records"]
    assert m["packing"]["rows"] <= m["packing"]["lower_bound_rows"] + 2
    per_role = np.zeros(R.N_ROLES, dtype=np.int64)
    for shard in m["shards"]:
        t = read_table(tmp_path / "o" / shard["file"])
        roles = t.column("roles").combine_chunks().flatten().to_numpy()
        per_role += np.bincount(roles, minlength=R.N_ROLES)
        for name, role_names in m["strategies"].items():
            mask = t.column(f"mask_{name}").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            expected = np.isin(roles, R.role_codes(role_names))
            assert (mask <= expected).all() if name == "last_turn" else (mask == expected).all()
        lens = t.column("seq_lens").to_pylist()
        assert all(sum(s) == len(r) <= 4096 for s, r in zip(lens, t.column("input_ids").to_pylist(), strict=True))
    assert {k: int(per_role[v]) for k, v in R.ROLES.items()} == m["tokens"]["per_role"]
    docs = read_documents(tmp_path / "o")
    tpl = resolve_template("auto", tok)
    convs = [c for c in RecordReader([path]) if isinstance(c, Conversation) and c.source.doc_id in docs]
    for conv in random.Random(0).sample(convs, min(100, len(convs))):
        doc = docs[conv.source.doc_id]
        text = tpl.render(conv).text
        assert doc["input_ids"].tolist() == tok.tokenizer.encode(text, add_special_tokens=False).ids
        answers = "".join(x.content for x in conv.messages if x.role == "assistant")
        response = tok.tokenizer.decode(doc["input_ids"][doc["roles"] == R.RESPONSE].tolist())
        assert "".join(nfc(response).split()) == "".join(nfc(answers).split())


def test_control_token_text_in_real_sharegpt_is_rejected(tmp_path):
    """ShareGPT records 1835 and 1836 contain a literal <|endoftext|>: with Qwen it
    is a control token, so they are rejected rather than tokenized into one."""
    need_shared()
    tok = real_tokenizer("qwen2.5-instruct")
    path = SHARED_DATA / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"
    records = json.loads(path.read_text())[1830:1840]
    small = tmp_path / "s.json"
    small.write_text(json.dumps(records))
    build([small], tmp_path / "o", tokenizer=tok, seq_len=32768)
    lines = [json.loads(x) for x in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    special = [x["record"] for x in lines if x["reason"] == "special_token_in_content"]
    assert special == [5, 6] and all("<|endoftext|>" in x["detail"] for x in lines if x["record"] in special)
    eot = tok.token_id("<|endoftext|>")
    for doc in read_documents(tmp_path / "o").values():
        assert eot not in doc["input_ids"].tolist()


@pytest.fixture(scope="module")
def real_conversations() -> list[Conversation]:
    need_shared()
    names = ("sharegpt_v3_unfiltered_cleaned_split_first3000.json", "messages_lima.jsonl",
             "alpaca_llamafactory_zh_demo.json", "sharegpt_glaive_toolcall_en_demo.json")
    files = [SHARED_DATA / f for f in names]
    convs = [c for c in RecordReader(files) if isinstance(c, Conversation)]
    return random.Random(0).sample(convs, 1500)


@pytest.mark.parametrize("name", tokenizer_params(CHAT_TOKENIZERS))
def test_assembled_renders_equal_jinja_renders_of_real_templates(name, real_conversations):
    """Records of shapes a real chat template only pastes into are assembled without Jinja: the text
    and every segment must be what Jinja's render gives."""
    tok = real_tokenizer(name)
    fast, jinja = resolve_template("tokenizer", tok), resolve_template("tokenizer", tok)
    jinja.assemble = False
    for c in real_conversations:
        a, b = fast.render(c), jinja.render(c)
        assert type(a) is type(b), c.source.where()
        if isinstance(a, Rejection):
            assert a == b
            continue
        assert a.text == b.text, c.source.where()
        for field in ("seg_lengths", "seg_roles", "seg_last"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (c.source.where(), field)
    assembled = sum(s.assembly.unchecked for s in fast._structures.values() if not isinstance(s, str) and s.assembly)
    if name == "qwen3":  # its template looks into assistant contents for <think>: never assembled
        assert assembled < len(real_conversations) // 2
    else:
        assert assembled > len(real_conversations) // 2
