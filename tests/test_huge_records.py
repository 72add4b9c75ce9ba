"""A record far longer than seq_len is never tokenized whole (issue 24, item 2): a cheap lower bound on its
tokens (packer.tokens.bound) rejects it, and truncation and splitting work from prefixes and single exchanges, with
the same tokens as tokenizing it whole."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

import packer.pipeline.part
import packer.tokens.bound
from packer import BuildError, build
from packer.pipeline.build import BuildEvents
from packer.pipeline.part import digest, words
from packer.read.formats import RecordReader
from packer.read.records import Conversation
from packer.tokens.bound import TokenBound, token_bound

from .helpers import (
    DEMO_TOKENIZER,
    EXAMPLES,
    ROOT,
    SHARED_TOKENIZERS,
    need_shared,
    output_files,
    real_tokenizer,
    tokenizer_params,
)

#: byte-level BPE (Qwen: NFC, GPT-2, Llama 3), SentencePiece BPE with byte fallback (Llama 2, Mistral; Phi-3's
#: added tokens swallow whitespace; Gemma's tab has no byte piece)
REAL = ["qwen2.5-instruct", "gpt2", "llama-3-8b-instruct", "llama-2", "mistral-7b-instruct-v0.1",
        "phi-3-mini-instruct", "gemma-2"]
#: what the random texts are drawn from: ASCII, Latin with combining marks, Hangul jamo and syllables, CJK, emoji,
#: Unicode whitespace, characters normalization shrinks (Kelvin sign, Ohm, compatibility forms) and added tokens
PIECES = st.sampled_from([
    "a", "e", " ", "  ", "\n", "\t", "word", "Hello", "0123", "é", "e\u0301", "\u0301", "\u0316", "\u1100",
    "\u1161", "\u11a8", "한", "你好", "🤖", "👍🏽", "\u212a", "\u2126", "\ufb01", "\uff76\uff9e", "\U0001d400",
    "\u3000", "\u00a0", "\u2028", "İ", "ß", "ς", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<|end|>", "▁",
    "ĠĠ", "    ", "!!!!", "\u0958",
])
TEXTS = st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=60).map("".join)


def _tokenizer(name: str) -> Tokenizer:
    if name != "demo":
        need_shared()
    return _load(name)[0]


@functools.cache
def _load(name: str) -> tuple[Tokenizer, TokenBound | str]:
    tok = Tokenizer.from_file(str((DEMO_TOKENIZER if name == "demo" else SHARED_TOKENIZERS / name) / "tokenizer.json"))
    return tok, token_bound(tok)


def _bound(name: str) -> TokenBound:
    _tokenizer(name)
    bound = _load(name)[1]
    assert not isinstance(bound, str), bound
    return bound


def test_max_token_bytes_of_known_tokenizers():
    assert _bound("demo").max_bytes == 14  # "ĠbibliothÃ¨que": " bibliothèque"
    got = {name: _bound(name) for name in REAL}
    assert {n: b.max_bytes for n, b in got.items()} == {
        "qwen2.5-instruct": 128, "gpt2": 128, "llama-3-8b-instruct": 128,  # 128 byte-level spaces / bytes
        "llama-2": 48, "mistral-7b-instruct-v0.1": 48, "phi-3-mini-instruct": 48,  # 16 x "▁"
        "gemma-2": 93,  # 31 x "▁", an added token
    }
    assert got["qwen2.5-instruct"].form == "NFC" and got["llama-2"].normalizer is None  # Prepend/Replace grow
    assert got["phi-3-mini-instruct"].whitespace and not got["llama-2"].whitespace  # rstrip added tokens


@pytest.mark.parametrize("name", tokenizer_params(["demo", *REAL]))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, chunk=st.sampled_from([1, 3, 7, 1 << 16]))
def test_no_text_holds_fewer_tokens_than_the_bound(name, text, chunk, monkeypatch):
    # the whole point: a record that fits is never rejected by the bound (cut in chunks anywhere it may be)
    tok, bound = _tokenizer(name), _bound(name)
    monkeypatch.setattr(packer.tokens.bound, "CHUNK", chunk)
    measured, end = bound.measure(text)
    assert end == len(text)
    assert bound.tokens_at_least(measured) <= len(tok.encode(text, add_special_tokens=False).ids)
    if bound.normalizer is not None and not bound.whitespace and not bound.prepend:
        # a chunked measure is the normalized length itself: chunks are cut where no normal form reaches over
        assert measured == len(tok.normalizer.normalize_str(text).encode("utf-8"))


def test_measure_stops_early_and_normalizes_only_where_it_may_shrink(monkeypatch):
    qwen = _bound("qwen2.5-instruct")
    text = "e\u0301" * 100_000  # NFC: 3 bytes -> 2
    assert qwen.measure(text) == (200_000, len(text))
    measured, end = qwen.measure(text, stop=1000)
    assert 1000 < measured < 200_000 and end < len(text)
    # a long run of characters no chunk may be cut before is not counted where it would need normalizing
    # (never normalized at once); one in NFC already counts as it is
    monkeypatch.setattr(packer.tokens.bound, "CHUNK", 10)
    assert qwen.measure("\u0301\u0316" * 500)[0] == 0 and qwen.measure("\u0316" * 1000)[0] == 2000


def test_no_bound_where_text_may_vanish():
    tok = _tokenizer("demo")
    for state in ({"type": "Strip", "strip_left": True, "strip_right": True},
                  {"type": "Replace", "pattern": {"Regex": "a+"}, "content": ""}):
        t = Tokenizer.from_str(json.dumps({**json.loads(tok.to_str()), "normalizer": state}))
        assert isinstance(token_bound(t), str)
    t = Tokenizer.from_str(json.dumps({**json.loads(tok.to_str()), "pre_tokenizer": {"type": "Whitespace"}}))
    assert "pre-tokenizer Whitespace" in token_bound(t)


def _jsonl(path: Path, huge: dict, at: int = 3) -> Path:
    records = json.loads((EXAMPLES / "alpaca_demo.json").read_text())[:8]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [*records[:at], huge, *records[at:]]))
    return path


def _story(n_chars: int, seed: int = 0) -> str:
    """Words, numbers, CJK, emoji, long whitespace and letter runs: tokens that reach over any prefix cut."""
    rng = np.random.default_rng(seed)
    kinds = ["word", "the", "café", "naïve", "你好世界", "🤖", "1234567", "   ", "\n\n", "\t", "e\u0301",
             "x" * 300, " " * 200, "!!?", "한국어"]
    out, n = [], 0
    while n < n_chars:
        w = kinds[int(rng.integers(len(kinds)))]
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


@pytest.fixture
def small_bound(monkeypatch):
    """Records are bounded from 1 KiB on (not 1 MiB), so small records take the bounded paths."""
    monkeypatch.setattr(packer.pipeline.part, "BOUNDED_ABOVE", 1024)


def _build_both(monkeypatch, tmp_path, inputs, tok, **kw) -> tuple[Path, Path, dict, dict]:
    """The build with the bound (small_bound) and with every record tokenized whole."""
    bounded = build(inputs, tmp_path / "bounded", tokenizer=tok, **kw)
    with monkeypatch.context() as m:
        m.setattr(packer.pipeline.part, "BOUNDED_ABOVE", 1 << 62)
        whole = build(inputs, tmp_path / "whole", tokenizer=tok, **kw)
    return tmp_path / "bounded", tmp_path / "whole", bounded, whole


def _same_tokens(a: Path, b: Path) -> None:
    fa, fb = output_files(a), output_files(b)
    assert {k: v for k, v in fa.items() if k.startswith("shard-") or k == "documents.arrow"} == {
        k: v for k, v in fb.items() if k.startswith("shard-") or k == "documents.arrow"}


def test_an_overlong_record_is_rejected_from_the_bound(tmp_path, demo_tok, small_bound, monkeypatch):
    story = _story(40_000)
    path = _jsonl(tmp_path / "in.jsonl", {"instruction": "Tell it.", "output": story})
    tokens = len(demo_tok.tokenizer.encode(story).ids)
    out, whole, m, _ = _build_both(monkeypatch, tmp_path, [path], demo_tok, seq_len=256)
    assert m["counts"]["rejected"] == {"overlong": 1} and m["counts"]["packed"] == 8
    line = json.loads((out / "rejected.jsonl").read_text())
    n = int(line["detail"].split()[2])
    assert line["record"] == 3 and line["detail"] == f"at least {n} tokens > seq_len 256"
    assert 256 < len(story.encode()) / 14 <= n <= tokens  # from the bound: 14 bytes a token at most
    assert "at least" not in (whole / "rejected.jsonl").read_text()
    _same_tokens(out, whole)
    # lost tokens are counted from the bound for --max-rejected
    with pytest.raises(BuildError, match=f"{n:,} of their tokens not packed"):
        build([path], tmp_path / "strict", tokenizer=demo_tok, seq_len=256, max_rejected=0.01)


@pytest.mark.parametrize("margin", [None, 8])
def test_truncating_a_bounded_record_gives_the_whole_texts_tokens(tmp_path, demo_tok, small_bound, monkeypatch,
                                                                  margin):
    if margin is not None:  # a tiny margin: the prefixes' agreement alone must keep the tokens right
        monkeypatch.setattr(packer.pipeline.part, "_PREFIX_MARGIN", margin)
    path = _jsonl(tmp_path / "in.jsonl", {"instruction": "Tell it.", "output": _story(30_000, 1)})
    no_loss = {"instruction": _story(30_000, 2), "output": "Short."}  # no response in the first seq_len
    path.write_text(path.read_text() + json.dumps(no_loss) + "\n")
    out, whole, m, _ = _build_both(monkeypatch, tmp_path, [path], demo_tok, seq_len=128, overlong="truncate")
    # two demo records are over 128 tokens too (counted exactly: too small for the bound)
    assert m["counts"]["truncated"] == 2 and m["counts"]["rejected"] == {"overlong_no_loss": 2}
    lines = {x["record"]: x["detail"] for x in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert lines[3].startswith("truncated from at least ") and lines[3].endswith(" to 128 tokens")
    assert lines[9].startswith("at least ") and lines[9].endswith("the first 128 hold no response")
    assert lines[0] == "truncated from 199 to 128 tokens"
    _same_tokens(out, whole)


@pytest.mark.parametrize("name", tokenizer_params(REAL))
def test_truncation_from_prefixes_equals_whole_text_truncation_on_real_tokenizers(name, tmp_path, small_bound,
                                                                                  monkeypatch):
    need_shared()
    tok = real_tokenizer(name)
    records = [{"instruction": "Tell it.", "output": _story(60_000, seed)} for seed in range(3)]
    records.append({"instruction": "Spaces.", "output": "A" + " " * 50_000 + "B" + "\u0301" * 5000 + "7" * 40_000})
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out, whole, m, _ = _build_both(monkeypatch, tmp_path, [path], tok, seq_len=96, overlong="truncate",
                                   template="alpaca", tokenizer_backend="tokenizers")
    assert m["counts"]["truncated"] == 4
    assert "at least" in (out / "rejected.jsonl").read_text()
    _same_tokens(out, whole)


def test_split_bounds_each_exchange(tmp_path, demo_tok, small_bound, monkeypatch):
    records = json.loads((EXAMPLES / "sharegpt_demo.json").read_text())
    turns = [t for r in records[:8] for t in r["conversations"] if t["from"] in ("human", "gpt")]
    long = {"id": "long", "conversations": [{"from": "system", "value": "Answer briefly."}, *turns * 4]}
    huge = {"id": "huge", "conversations": [*turns[:2], {"from": "human", "value": _story(20_000)},
                                            {"from": "gpt", "value": "No."}]}
    path = tmp_path / "in.json"
    path.write_text(json.dumps([*records[8:12], long, huge, *records[12:16]]))
    assert len(json.dumps(long)) > 4 * 1024  # the whole conversation is bounded, its exchanges are not
    out, whole, m, _ = _build_both(monkeypatch, tmp_path, [path], demo_tok, seq_len=256, overlong="split")
    assert m["counts"]["split"] == 2 and m["counts"]["rejected"] == {"overlong": 1}  # a demo record split too
    lines = {x["record"]: x for x in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert lines[4]["action"] == "split" and lines[4]["detail"].startswith("split at least ")
    assert lines[5]["action"] == "rejected" and lines[5]["detail"].startswith("exchange 2 alone is at least ")
    assert lines[1]["detail"] == "split 307 tokens into 2 documents of 253, 54 tokens"
    _same_tokens(out, whole)


def test_no_bound_is_said_once_and_the_record_tokenized_whole(tmp_path, demo_tok, monkeypatch):
    folder = tmp_path / "tok"
    folder.mkdir()
    for p in DEMO_TOKENIZER.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    state = json.loads((folder / "tokenizer.json").read_text())
    state["normalizer"] = {"type": "Strip", "strip_left": True, "strip_right": True}  # can drop any text
    (folder / "tokenizer.json").write_text(json.dumps(state))
    monkeypatch.setattr(packer.pipeline.part, "BOUNDED_ABOVE", 1024)
    path = _jsonl(tmp_path / "in.jsonl", {"instruction": "Tell it.", "output": _story(20_000)})
    notices: list[str] = []
    m = build([path], tmp_path / "o", tokenizer=str(folder), seq_len=256, events=BuildEvents(on_notice=notices.append))
    assert m["counts"]["rejected"] == {"overlong": 1}
    told = [n for n in notices if "no cheap bound" in n]
    assert len(told) == 1 and "record 3" in told[0] and "normalizer Strip" in told[0], notices
    assert "at least" not in (tmp_path / "o" / "rejected.jsonl").read_text()  # counted exactly, as before


def test_words_and_digest_of_a_huge_record_are_the_joined_ones(monkeypatch):
    convs = [c for c in RecordReader([str(p) for p in (EXAMPLES / "sharegpt_demo.json", EXAMPLES / "alpaca_demo.json")])
             if isinstance(c, Conversation)]
    want = [(words(c), digest(c)) for c in convs]
    monkeypatch.setattr(packer.pipeline.part, "JOIN_BELOW", 0)  # every record counted and hashed text by text
    assert [(words(c), digest(c)) for c in convs] == want


_BUILD_40MB = r"""
import json, resource, subprocess, sys
rc = subprocess.call([sys.executable, "-c", "import sys; from packer.cli import main; sys.argv[0] = 'packer'; main()",
                      "build", sys.argv[1], "-o", sys.argv[2], "--seq-len", "8192", "--overlong", sys.argv[3], "-q"])
print(json.dumps({"rc": rc, "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


@pytest.mark.slow  # a memory measurement: a 40 MB record, a fresh process
@pytest.mark.parametrize("overlong", ["drop", "truncate"])
def test_a_40mb_record_among_normal_ones_takes_under_1gb(tmp_path, overlong):
    words_ = ["word", "and", "more", "café", "naïve", "你好", "🤖", "the", "story", "goes", "on"]
    story = " ".join(f"{words_[i % len(words_)]}{i % 997}" for i in range(5_000_000))
    assert len(story.encode()) > 40e6  # 40 MB, an emoji in it: a 160 MB Python str
    path = _jsonl(tmp_path / "in.jsonl", {"instruction": "Tell a very long story.", "output": story})
    del story
    # measured in a fresh waiter process: a child forked from pytest would inherit its high-water mark
    got = subprocess.run([sys.executable, "-c", _BUILD_40MB, str(path), str(tmp_path / "o"), overlong],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    report = json.loads(got.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0, got.stderr
    assert report["peak_mb"] < 1000, report
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    line = json.loads((tmp_path / "o" / "rejected.jsonl").read_text())
    assert line["record"] == 3 and "at least" in line["detail"]
    if overlong == "drop":
        assert m["counts"]["rejected"] == {"overlong": 1} and m["counts"]["packed"] == 8
    else:
        assert m["counts"]["truncated"] == 1 and m["counts"]["packed"] == 9
