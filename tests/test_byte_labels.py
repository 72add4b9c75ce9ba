"""Labelling tokens from their byte lengths (byte-level BPE: GPT-2, Llama 3, Qwen) instead of from
``Encoding.offsets``: the tokenizer can then skip tracking offsets (``encode_batch_fast``). The roles
must be exactly those the offsets give, and whatever this path cannot vouch for (NFC-normalizing
tokenizers on non-NFC text, SentencePiece-style tokenizers, a token of unknown length) must take the
offsets path, with the same output."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from packer import build
from packer.read.formats import RecordReader
from packer.read.records import Conversation
from packer.tokens.templates import ChatTemplate, Rendered
from packer.tokens.tokenize import (
    ByteLengths,
    batch_chars,
    byte_lengths,
    byte_values,
    char_codes,
    encode_texts,
    encode_texts_fast,
    label_by_bytes,
    label_by_offsets,
    load_tokenizer,
)

from .helpers import (
    DEMO_TOKENIZER,
    EXAMPLES,
    SHARED_DATA,
    need_shared,
    output_files,
    outputs_less_backend,
    read_documents,
    real_tokenizer,
    tokenizer_params,
)

TEXTS = [
    "plain ascii <|im_start|>user\nHi<|im_end|>",
    "accents: café, naïve, Ångström; emoji 😀👍🏽 and flags 🇫🇷",
    "CJK 中文字符 and 日本語のテキスト, Hangul 한국어",
    "  leading and trailing whitespace \n\n\t",
    "mixed\u00e9\U0001f600<|im_end|>\u4e2d",
    "",
    "x",
]


def random_segments(text: str, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """Tile ``text`` with random segments carrying random roles and last-turn flags."""
    cuts = sorted({0, len(text), *(rng.randrange(len(text) + 1) for _ in range(rng.randrange(6)))})
    lengths = np.diff(cuts).astype(np.int64)
    roles = np.array([rng.choice([1, 2, 3, 4, 5, 6, 7, 8]) for _ in lengths], dtype=np.uint8)
    last = np.array([rng.random() < 0.3 for _ in lengths], dtype=bool)
    return lengths, char_codes(roles, last)


def both_ways(tok: Tokenizer, table: ByteLengths, texts: list[str], seed: int = 0):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    segs = [random_segments(t, rng) for t in texts]
    chars, starts = batch_chars([s[0] for s in segs], [s[1] for s in segs])
    by_offsets = label_by_offsets(encode_texts(tok, texts), chars, starts)
    by_bytes = label_by_bytes(encode_texts_fast(tok, texts), *byte_values(chars, starts, texts), table)
    return by_offsets, by_bytes


def assert_same(a, b) -> None:  # type: ignore[no-untyped-def]
    assert b is not None, "the byte path gave up"
    for field in ("ids", "roles", "last", "offsets"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_demo_tokenizer_byte_labels_equal_offset_labels(demo_tok):
    table = byte_lengths(demo_tok.tokenizer)
    assert table is not None and not table.nfc
    for seed in range(20):
        assert_same(*both_ways(demo_tok.tokenizer, table, TEXTS, seed))


@pytest.mark.parametrize("name", tokenizer_params(["qwen2.5-instruct", "llama-3-8b-instruct", "gpt2", "qwen3"]))
def test_real_byte_level_tokenizers_on_real_conversations(name):
    need_shared()
    tok = real_tokenizer(name)
    table = byte_lengths(tok.tokenizer)
    assert table is not None
    tpl = ChatTemplate.named("chatml" if tok.chat_template is None else "tokenizer", tok)
    texts = []
    for item in RecordReader([SHARED_DATA / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"]):
        r = tpl.render(item) if isinstance(item, Conversation) else None
        if isinstance(r, Rendered) and table.fits([r.text]):
            texts.append(r.text)
        if len(texts) == 300:
            break
    assert any(not t.isascii() for t in texts)
    for k in range(0, len(texts), 100):
        assert_same(*both_ways(tok.tokenizer, table, texts[k : k + 100], k))


def nfc_variant(tmp_path: Path) -> Path:
    """The demo tokenizer with an NFC normalizer (as Qwen's)."""
    d = tmp_path / "nfc-tok"
    d.mkdir()
    spec = json.loads((DEMO_TOKENIZER / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "NFC"}
    (d / "tokenizer.json").write_text(json.dumps(spec))
    (d / "tokenizer_config.json").write_text((DEMO_TOKENIZER / "tokenizer_config.json").read_text())
    return d


def test_nfc_tokenizer_on_text_not_in_nfc_takes_the_offsets_path(tmp_path):
    tok = load_tokenizer(nfc_variant(tmp_path))
    table = byte_lengths(tok.tokenizer)
    assert table is not None and table.nfc
    decomposed = "cafe\u0301 and A\u030a"  # NFC composes these: the tokenizer sees other characters
    assert table.fits(["café", "plain"]) and not table.fits(["plain", decomposed])
    # built end to end, roles come out as for the composed text: the response holds all of it
    data = tmp_path / "d.jsonl"
    rows = [{"instruction": "Spell it.", "output": decomposed}, {"instruction": "Again.", "output": "café"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build([data], tmp_path / "o", tokenizer=tok, template="chatml", seq_len=256)
    docs = read_documents(tmp_path / "o")
    for k, want in enumerate([decomposed, "café"]):
        response = docs[k]["input_ids"][docs[k]["roles"] == 7]  # R.RESPONSE
        got = tok.tokenizer.decode(response.tolist())
        assert got == unicodedata.normalize("NFC", want)


def test_a_text_not_in_nfc_sends_only_its_own_run_to_the_offsets_path(tmp_path, monkeypatch):
    """One decomposed text in a batch: the batch is cut around it (:meth:`ByteLengths.runs`), so only that run is
    encoded with offsets, the rest by byte widths (with the tiktoken core too); the output is the build whose
    every token is placed by offsets."""
    import packer.tokens.tokenize as T

    tok = load_tokenizer(nfc_variant(tmp_path))
    table = byte_lengths(tok.tokenizer)
    assert table is not None
    runs = table.runs(["a", "b", "cafe\u0301", "d", "e\u0301", "o\u0301", "g"])
    assert [(a, b) for a, b, _ in runs] == [(0, 2), (2, 3), (3, 4), (4, 6), (6, 7)]
    assert [fits for _, _, fits in runs] == [True, False, True, False, True]
    rows = [{"instruction": f"Spell {k}.", "output": "cafe\u0301" if k == 5 else f"café {k}"} for k in range(12)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths: list[str] = []
    real_bytes, real_offsets = T.label_by_bytes, T.label_by_offsets

    def by_bytes(encs, *args):  # type: ignore[no-untyped-def]
        paths.append(f"bytes {len(encs[1]) - 1 if isinstance(encs, tuple) else len(encs)}")
        return real_bytes(encs, *args)

    def by_offsets(encs, *args):  # type: ignore[no-untyped-def]
        paths.append(f"offsets {len(encs)}")
        return real_offsets(encs, *args)

    monkeypatch.setattr(T, "label_by_bytes", by_bytes)
    monkeypatch.setattr(T, "label_by_offsets", by_offsets)
    m = build([data], tmp_path / "o", tokenizer=tok, template="chatml", seq_len=256)
    assert m["tokenizer"]["backend"] == "tiktoken"
    assert paths == ["bytes 5", "offsets 1", "bytes 6"]
    monkeypatch.setattr(T, "byte_lengths", lambda t: None)  # every token placed by its offsets
    build([data], tmp_path / "slow", tokenizer=tok, template="chatml", seq_len=256)
    fast, slow = outputs_less_backend(tmp_path / "o"), outputs_less_backend(tmp_path / "slow")
    assert (fast.pop("backend"), slow.pop("backend")) == ("tiktoken", "tokenizers")
    assert fast == slow


def test_tokenizers_that_rewrite_text_use_offsets(tmp_path):
    spec = json.loads((DEMO_TOKENIZER / "tokenizer.json").read_text())

    def variant(**changes: object) -> Tokenizer:
        return Tokenizer.from_str(json.dumps({**spec, **changes}))

    assert byte_lengths(variant()) is not None
    # SentencePiece style: spaces become "▁" (3 bytes for 1)
    assert byte_lengths(variant(normalizer={"type": "Replace", "pattern": {"String": " "}, "content": "▁"})) is None
    assert byte_lengths(variant(pre_tokenizer={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                                               "split": True})) is None
    # a prefix space the text does not have
    bl = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    assert byte_lengths(variant(pre_tokenizer=bl)) is None
    # trimmed offsets label whitespace otherwise
    assert byte_lengths(variant(post_processor={**bl, "add_prefix_space": False, "trim_offsets": True})) is None
    # an added token that swallows the spaces around it
    added = [{**a, "lstrip": True} if a["content"] == "<|im_end|>" else a for a in spec["added_tokens"]]
    assert byte_lengths(variant(added_tokens=added)) is None


def test_a_token_of_unknown_length_sends_its_batch_to_the_offsets_path(tmp_path, monkeypatch, demo_tok):
    inputs = [EXAMPLES / "alpaca_demo.json", EXAMPLES / "sharegpt_demo.json"]
    # tokenizers' encodings, whose widths are looked up as they occur (the tiktoken core knows them all)
    kw = {"tokenizer": demo_tok, "seq_len": 1024, "batch_size": 64, "tokenizer_backend": "tokenizers"}
    build(inputs, tmp_path / "normal", **kw)
    gave_up = []
    space = demo_tok.tokenizer.token_to_id("Ġ")  # a common token: most batches hold it
    real = ByteLengths._width

    def unknown_space(self: ByteLengths, i: int) -> int:
        return -1 if i == space else real(self, i)

    monkeypatch.setattr(ByteLengths, "_width", unknown_space)
    import packer.tokens.tokenize as T

    original = T.label_by_bytes

    def counting(*args):  # type: ignore[no-untyped-def]
        out = original(*args)
        gave_up.append(out is None)
        return out

    monkeypatch.setattr(T, "label_by_bytes", counting)
    build(inputs, tmp_path / "fallback", **kw)
    assert any(gave_up)
    assert output_files(tmp_path / "fallback") == output_files(tmp_path / "normal")


def test_widths_are_the_bytes_each_token_decodes_to(demo_tok):
    tok = demo_tok.tokenizer
    ids = np.arange(tok.get_vocab_size(with_added_tokens=True))
    # a table filled as ids occur (in pieces, any order, repeated) gives what one lookup of them all gives
    table, fresh = byte_lengths(tok), byte_lengths(tok)
    assert table is not None and fresh is not None
    rng = np.random.default_rng(0)
    for part in np.array_split(rng.permutation(np.concatenate([ids, ids[:50]])), 7):
        assert np.array_equal(table.widths(part), fresh.widths(part))
    widths = table.widths(ids)
    # GPT-2's byte <-> character table, written out here as the oracle
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    to_byte = {chr(b): b for b in printable}
    to_byte.update({chr(256 + n): b for n, b in enumerate(b for b in range(256) if b not in printable)})
    added = {i: a.content for i, a in tok.get_added_tokens_decoder().items()}
    for i, w in zip(ids.tolist(), widths.tolist(), strict=True):
        text = added[i].encode() if i in added else bytes(to_byte[c] for c in tok.id_to_token(i))
        assert w == len(text), i


@pytest.mark.parametrize(
    "texts",
    [["hé", "x"], ["", "😀a", "", "中", ""], ["plain", "ascii"], [""], ["a\u0301", "𝔘𝔫𝔦"]],
)
def test_byte_values_spread_each_character_over_its_bytes(texts):
    rng = np.random.default_rng(1)
    chars = rng.integers(1, 200, size=sum(map(len, texts)), dtype=np.uint8)
    starts = np.cumsum([0, *map(len, texts)])[:-1]
    values, byte_starts = byte_values(chars, starts, texts)
    want = [v for t, off in zip(texts, starts, strict=True) for k, ch in enumerate(t)
            for v in [chars[off + k]] * len(ch.encode())]
    assert values.tolist() == want
    assert byte_starts.tolist() == np.cumsum([0, *(len(t.encode()) for t in texts)])[:-1].tolist()
