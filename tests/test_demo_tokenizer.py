"""The bundled demo data (``examples/``) and the demo tokenizer (``packer/demo_tokenizer``, package data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from tokenizers import Tokenizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOKENIZER_DIR = EXAMPLES.parent / "packer" / "demo_tokenizer"
DATA_FILES = ("alpaca_demo.json", "sharegpt_demo.json")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []


def _load(name: str) -> list:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [s for name in DATA_FILES for s in _strings(_load(name))]


def test_demo_data_shape() -> None:
    alpaca = _load("alpaca_demo.json")
    assert 100 <= len(alpaca) <= 150
    assert all(set(r) == {"instruction", "input", "output"} for r in alpaca)
    assert any(r["input"] for r in alpaca) and any(not r["input"] for r in alpaca)

    sharegpt = _load("sharegpt_demo.json")
    assert 50 <= len(sharegpt) <= 80
    ids = [r["id"] for r in sharegpt]
    assert len(set(ids)) == len(ids)
    odd = {r["id"]: r["conversations"] for r in sharegpt if r["id"].startswith("odd-")}
    assert set(odd) == {"odd-starts-with-gpt", "odd-empty-value", "odd-unknown-role"}
    assert odd["odd-starts-with-gpt"][0]["from"] == "gpt"
    assert any(t["value"] == "" for t in odd["odd-empty-value"])
    assert any(t["from"] == "narrator" for t in odd["odd-unknown-role"])
    for r in sharegpt:
        if r["id"].startswith("odd-"):
            continue
        turns = r["conversations"]
        roles = [t["from"] for t in turns]
        assert set(roles) <= {"system", "human", "gpt"}
        assert roles[0] in ("system", "human") and roles[-1] == "gpt"
        assert all(t["value"].strip() for t in turns)
        assert 2 <= len([x for x in roles if x != "system"]) <= 8


def test_demo_data_has_no_control_tokens(texts: list[str]) -> None:
    assert not [t for t in texts if any(s in t for s in SPECIALS)]


def test_tokenizer_loads_with_special_ids(tok: Tokenizer) -> None:
    assert tok.get_vocab_size() == 2048
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i
    assert tok.encode("<|im_end|>", add_special_tokens=False).ids == [2]
    ids = tok.encode("Hello!<|im_end|>\n", add_special_tokens=False).ids
    assert ids.count(2) == 1
    assert tok.decode(ids, skip_special_tokens=False) == "Hello!<|im_end|>\n"


def test_config() -> None:
    cfg = json.loads((TOKENIZER_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["bos_token"] is None
    assert cfg["eos_token"] == "<|im_end|>"
    assert cfg["pad_token"] == "<|endoftext|>"
    assert cfg["model_max_length"] == 4096
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert cfg["add_bos_token"] is False
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    template = jinja2.Environment().from_string(cfg["chat_template"])
    assert template.render(messages=messages, add_generation_prompt=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    assert template.render(messages=messages[:1], add_generation_prompt=True) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_round_trip(tok: Tokenizer, texts: list[str]) -> None:
    assert len(texts) > 500
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    decoded = tok.decode_batch([e.ids for e in encodings], skip_special_tokens=False)
    assert [i for i, (a, b) in enumerate(zip(texts, decoded, strict=True)) if a != b] == []


def test_offsets_are_character_offsets(tok: Tokenizer, texts: list[str]) -> None:
    ascii_texts = [t for t in texts if t.isascii() and t]
    assert len(ascii_texts) > 300
    for text in ascii_texts:
        enc = tok.encode(text, add_special_tokens=False)
        pos = 0
        for tid, (start, end) in zip(enc.ids, enc.offsets, strict=True):
            assert start == pos, (text, start, pos)
            assert text[start:end] == tok.decode([tid]), (text, start, end)
            pos = end
        assert pos == len(text)


def test_offsets_on_non_ascii_text_stay_in_bounds(tok: Tokenizer) -> None:
    text = "Ma sœur habite à Québec 🎉 你好"
    enc = tok.encode(text, add_special_tokens=False)
    assert all(0 <= s <= e <= len(text) for s, e in enc.offsets)
    assert enc.offsets[0][0] == 0 and enc.offsets[-1][1] == len(text)


def test_regenerate(tmp_path: Path, tok: Tokenizer) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLES / "make_demo_tokenizer.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    fresh = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert fresh.get_vocab_size() == tok.get_vocab_size()
    assert [fresh.token_to_id(s) for s in SPECIALS] == [0, 1, 2]
    committed = (TOKENIZER_DIR / "tokenizer_config.json").read_text(encoding="utf-8")
    assert (tmp_path / "tokenizer_config.json").read_text(encoding="utf-8") == committed


def test_demo_data_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLES / "make_demo_data.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for name in DATA_FILES:
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


def test_transformers_loads_it() -> None:
    """Optional: transformers is not a dependency, only a cross-check when installed."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    assert hf.eos_token == "<|im_end|>" and hf.pad_token == "<|endoftext|>" and hf.bos_token is None
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    out = hf.apply_chat_template(messages, tokenize=True)
    ids = out["input_ids"] if hasattr(out, "keys") else out
    assert ids[0] == 1 and ids.count(2) == 2
    assert hf.decode(ids) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
