"""tiktoken as a second BPE core (issue 17, first part): which tokenizers qualify, and that those give the
ids ``tokenizers`` gives on real text (with the models' special tokens), while every disqualifying property
is refused with its reason."""

from __future__ import annotations

import copy
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from packer.tokens.assembly import CHECK_FIRST

from .helpers import DEMO_TOKENIZER, SHARED, need_shared, outputs_less_backend, read_documents

tiktoken = pytest.importorskip("tiktoken")

from packer.tokens.tiktoken_core import qualify  # noqa: E402

MODELS = ("qwen2.5-instruct", "qwen3", "llama-3-8b-instruct", "gpt2")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    need_shared()
    data = SHARED / "data"
    out = [t["value"] for r in json.loads((data / "sharegpt_v3_unfiltered_cleaned_split_first3000.json")
                                          .read_text())[:120] for t in r["conversations"]]
    out += [json.dumps(r, ensure_ascii=False)
            for r in json.loads((data / "alpaca_llamafactory_zh_demo.json").read_text())[:80]]
    out += ["Café ﬁ e\u0301 \u2028 x\r\n\r\n  \t 12345 don't I'LL", "", " ", "\n\n\n"]
    return out


@pytest.mark.parametrize("name", MODELS)
def test_a_qualifying_tokenizer_gives_the_same_ids(texts, name):
    from tokenizers import Tokenizer

    path = SHARED / "tokenizers" / name / "tokenizer.json"
    spec = json.loads(path.read_text())
    core = qualify(spec)
    assert not isinstance(core, str), core
    specials = [t["content"] for t in spec["added_tokens"] if t["special"]]
    batch = [f"{specials[0]}{t}{specials[-1]}\n" for t in texts]
    expected = [e.ids for e in Tokenizer.from_file(str(path)).encode_batch(batch, add_special_tokens=False)]
    got = core.encode_batch(batch)
    assert [i for i in range(len(batch)) if got[i] != expected[i]] == []


@pytest.fixture(scope="module")
def gpt2() -> dict:
    need_shared()
    return json.loads((SHARED / "tokenizers" / "gpt2" / "tokenizer.json").read_text())


def _with(spec: dict, path: tuple, value: object) -> dict:
    out = copy.deepcopy(spec)
    at = out
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return out


def _swapped_merge_ids(spec: dict) -> dict:
    """A tampered rank: the tokens of merges 10 and 20 trade ids."""
    out = copy.deepcopy(spec)
    vocab = out["model"]["vocab"]
    a, b = ("".join(m.split(" ") if isinstance(m, str) else m) for m in (out["model"]["merges"][10],
                                                                          out["model"]["merges"][20]))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    return out


@pytest.mark.parametrize(("change", "reason"), [
    (lambda s: _with(s, ("model", "type"), "WordPiece"), "not BPE"),
    (lambda s: _with(s, ("model", "dropout"), 0.1), "dropout"),
    (lambda s: _with(s, ("model", "byte_fallback"), True), "byte_fallback"),
    (lambda s: _with(s, ("normalizer",), {"type": "Lowercase"}), "normalizer 'Lowercase'"),
    (lambda s: _with(s, ("pre_tokenizer",), {"type": "Metaspace", "replacement": "▁"}), "not Split + ByteLevel"),
    (lambda s: _with(s, ("pre_tokenizer", "add_prefix_space"), True), "prefix space"),
    (lambda s: _with(s, ("pre_tokenizer",), {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": True},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}), "not one isolated"),
    (lambda s: _with(s, ("added_tokens", 0, "lstrip"), True), "strips"),
    (lambda s: _with(s, ("model", "vocab"), {**s["model"]["vocab"], "\u4e00": 99999}), "outside the byte-level"),
    (_swapped_merge_ids, "merge order is not id order"),
], ids=["wordpiece", "dropout", "byte-fallback", "lowercase", "metaspace", "prefix-space", "inverted-split",
        "lstrip", "alphabet", "tampered-rank"])
def test_each_disqualifying_property_is_refused(gpt2, change, reason):
    assert not isinstance(qualify(gpt2), str)
    got = qualify(change(gpt2))
    assert isinstance(got, str) and reason in got, got


@pytest.fixture(scope="module")
def data_inputs(tmp_path_factory) -> list[str]:
    """Slices of real data: a ShareGPT array (long turns, code), LIMA JSON Lines, Chinese Alpaca."""
    need_shared()
    d = tmp_path_factory.mktemp("tiktoken")
    data = SHARED / "data"
    (d / "sg.json").write_text(json.dumps(json.loads(
        (data / "sharegpt_v3_unfiltered_cleaned_split_first3000.json").read_text())[:40], ensure_ascii=False))
    (d / "lima.jsonl").write_text("".join((data / "messages_lima.jsonl").read_text().splitlines(True)[:40]))
    (d / "zh.json").write_text(json.dumps(json.loads((data / "alpaca_llamafactory_zh_demo.json").read_text())[:40],
                                          ensure_ascii=False))
    return [str(d / n) for n in ("sg.json", "lima.jsonl", "zh.json")]


@pytest.mark.parametrize("name", ["qwen2.5-instruct", "llama-3-8b-instruct"])  # GPT-2's ids: the test above
def test_a_build_with_the_tiktoken_core_is_the_tokenizers_build(data_inputs, tmp_path, name):
    from packer import build

    kw = {"tokenizer": SHARED / "tokenizers" / name, "seq_len": 4096, "overlong": "truncate"}
    build(data_inputs, tmp_path / "hf", tokenizer_backend="tokenizers", **kw)
    m = build(data_inputs, tmp_path / "tk", tokenizer_backend="tiktoken", **kw)
    assert m["tokenizer"]["backend"] == "tiktoken"
    hf, tk = outputs_less_backend(tmp_path / "hf"), outputs_less_backend(tmp_path / "tk")
    assert (hf.pop("backend"), tk.pop("backend")) == ("tokenizers", "tiktoken")
    assert tk == hf


def tamper_core(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The tiktoken core qualified from now on gives one wrong id (as a tampered rank would): "." -> another
    token; not the qualified core of an earlier test, nor a kept one."""
    import packer.tokens.tiktoken_core as tc

    real = tc.qualify

    class Tampered:
        def __init__(self, encoding) -> None:
            self.encoding = encoding

        def encode_to_numpy(self, text, **kw):
            ids = self.encoding.encode_to_numpy(text, **kw).copy()
            ids[ids == 13] = 14
            return ids

    def tampered(spec):
        core = real(spec)
        core.encoding = Tampered(core.encoding)
        return core

    monkeypatch.setattr(tc, "_CORES", {})
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tc, "qualify", tampered)


def test_a_tampered_core_is_caught_and_the_build_falls_back(data_inputs, tmp_path, monkeypatch):
    """The core gives one wrong id (as a tampered rank would): a checked record shows it, and the build starts
    over with tokenizers, with a notice; the output is the tokenizers build's."""
    from packer import build
    from packer.pipeline.build import BuildEvents

    tamper_core(monkeypatch, tmp_path)
    kw = {"tokenizer": SHARED / "tokenizers" / "qwen2.5-instruct", "seq_len": 4096, "overlong": "truncate"}
    notices: list[str] = []
    m = build(data_inputs, tmp_path / "tk", tokenizer_backend="tiktoken", events=BuildEvents(on_notice=notices.append),
              **kw)
    assert "backend" not in m["tokenizer"]
    assert any("tiktoken core gives other ids" in n and "encoded by tokenizers" in n for n in notices), notices
    build(data_inputs, tmp_path / "hf", tokenizer_backend="tokenizers", **kw)
    assert outputs_less_backend(tmp_path / "tk") == outputs_less_backend(tmp_path / "hf")


def test_a_tampered_core_is_caught_in_a_pair_build_too(tmp_path, monkeypatch):
    """Preference pairs are labelled on their own path (packer.pipeline.pairs): the checked pairs' sides are
    encoded by tokenizers too, so a wrong core id is caught there as in a conversation, and the build falls back."""
    need_shared()
    from packer import build
    from packer.pipeline.build import BuildEvents

    tamper_core(monkeypatch, tmp_path)
    data = [SHARED / "data" / "llamafactory_v1_dpo_demo.jsonl"]
    kw = {"tokenizer": SHARED / "tokenizers" / "qwen2.5-instruct", "seq_len": 4096}
    notices: list[str] = []
    build(data, tmp_path / "tk", tokenizer_backend="tiktoken", events=BuildEvents(on_notice=notices.append), **kw)
    assert any("tiktoken core gives other ids" in n and "encoded by tokenizers" in n for n in notices), notices
    build(data, tmp_path / "hf", tokenizer_backend="tokenizers", **kw)
    assert outputs_less_backend(tmp_path / "tk") == outputs_less_backend(tmp_path / "hf")


def test_a_tokenizer_that_does_not_qualify_is_refused_by_name(tmp_path):
    from packer import BuildError, build

    need_shared()
    with pytest.raises(BuildError, match=r"--tokenizer-backend tiktoken: .*llama-2.* does not qualify"):
        build([str(SHARED / "data" / "messages_lima.jsonl")], tmp_path / "o", tokenizer_backend="tiktoken",
              tokenizer=SHARED / "tokenizers" / "llama-2")


def test_a_split_records_pieces_are_checked_too(data_inputs, tmp_path, monkeypatch):
    """``--overlong split`` encodes each piece of a long record on its own: a checked record's pieces are checked
    as well, so a core wrong only there is caught (the build starts over with tokenizers, same output)."""
    import packer.tokens.tiktoken_core as tc
    from packer import build
    from packer.pipeline.build import BuildEvents
    from packer.pipeline.part import PartMapper

    splitting = []
    real_qualify, real_split = tc.qualify, PartMapper.split_record

    class WrongInPieces:  # wrong ids only while a record is being split
        def __init__(self, encoding) -> None:
            self.encoding = encoding

        def encode_to_numpy(self, text, **kw):
            ids = self.encoding.encode_to_numpy(text, **kw).copy()
            if splitting:
                ids[ids == 13] = 14
            return ids

    def tampered(spec):
        core = real_qualify(spec)
        core.encoding = WrongInPieces(core.encoding)
        return core

    def split_record(self, *args):  # type: ignore[no-untyped-def]
        splitting.append(1)
        try:
            return real_split(self, *args)
        finally:
            splitting.pop()

    monkeypatch.setattr(tc, "_CORES", {})
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tc, "qualify", tampered)
    monkeypatch.setattr(PartMapper, "split_record", split_record)
    kw = {"tokenizer": SHARED / "tokenizers" / "qwen2.5-instruct", "seq_len": 1024, "overlong": "split"}
    notices: list[str] = []
    m = build(data_inputs, tmp_path / "tk", tokenizer_backend="tiktoken", events=BuildEvents(on_notice=notices.append),
              **kw)
    assert "backend" not in m["tokenizer"]
    assert any("tiktoken core gives other ids" in n for n in notices), notices
    build(data_inputs, tmp_path / "hf", tokenizer_backend="tokenizers", **kw)
    assert outputs_less_backend(tmp_path / "tk") == outputs_less_backend(tmp_path / "hf")


def test_auto_takes_the_core_where_the_tokenizer_qualifies_and_tokenizers_elsewhere(tmp_path):
    """The default backend: tiktoken for byte-level BPE it reproduces (the demo tokenizer, Llama 3), the library
    for any other (Llama 2's SentencePiece-style BPE), with nothing to choose."""
    from packer import build
    from packer.options import DEMO_TOKENIZER

    need_shared()
    lima = tmp_path / "lima.jsonl"
    lima.write_text("".join((SHARED / "data" / "messages_lima.jsonl").read_text().splitlines(True)[:10]))
    for name, tok, backend in (("demo", DEMO_TOKENIZER, "tiktoken"),
                               ("llama3", SHARED / "tokenizers" / "llama-3-8b-instruct", "tiktoken"),
                               ("llama2", SHARED / "tokenizers" / "llama-2", "tokenizers")):
        m = build([lima], tmp_path / name, tokenizer=tok, template="chatml", seq_len=4096)
        assert m["tokenizer"].get("backend", "tokenizers") == backend, name


def test_texts_are_joined_only_by_a_special_token_none_of_them_holds(gpt2):
    """One tiktoken call per thread for many texts, joined by a special token: the ids are each text's own,
    also where texts hold the joiner (then each text is encoded alone), are empty, or outnumber the threads."""
    from tokenizers import Tokenizer

    from packer.tokens.tiktoken_core import _joiners

    core = qualify(gpt2)
    assert not isinstance(core, str) and core.joiners == [("<|endoftext|>", 50256)]
    hf = Tokenizer.from_str(json.dumps(gpt2))
    for texts in (["Hi", "", "Yo!"], ["a<|endoftext|>b", "c"], [""], ["x"] * 7, ["<|endoftext|>"] * 3):
        ids, offsets = core.encode_flat(texts, threads=3)
        want = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
        assert [ids[a:b].tolist() for a, b in pairwise(offsets)] == want, texts
    # a special token that could form another across a joint is never a joiner
    assert _joiners({"<a>": 1, "<a>x": 2, "<b>": 3, "y<c>": 4, "<c>": 5, "aa": 6}) == [("<b>", 3)]


def _joiners_by_pairs(special: dict[str, int]) -> list[tuple[str, int]]:
    """The joiner rule as first written (every pair of special tokens at every overlap): the reference."""
    return [(sep, i) for sep, i in special.items()
            if all((s == sep or sep not in s) and not any(s.endswith(sep[:k]) or s.startswith(sep[-k:])
                                                         for k in range(1, len(sep))) for s in special)]


def test_the_joiners_are_those_of_the_pairwise_rule():
    """:func:`_joiners` looks prefixes and suffixes up in sets (Llama 3's 256 special tokens: 0.9 s -> 7 ms): the
    same joiners as comparing every pair, on random token sets over a small alphabet (many overlaps) and on the
    real tokenizers' added tokens."""
    import random

    from packer.tokens.tiktoken_core import _joiners

    rng = random.Random(0)
    for _ in range(300):
        words = {"".join(rng.choices("<>ab|", k=rng.randint(1, 5))) for _ in range(rng.randint(1, 8))}
        special = {w: i for i, w in enumerate(sorted(words))}
        assert _joiners(special) == _joiners_by_pairs(special), special
    for path in sorted(SHARED.glob("tokenizers/*/tokenizer.json")):
        special = {t["content"]: t["id"] for t in json.loads(path.read_text())["added_tokens"]}
        assert _joiners(special) == _joiners_by_pairs(special), path


@pytest.mark.parametrize("name", ["gpt2", "qwen2.5-instruct"])  # ignore_merges false (Qwen3 has Qwen2.5's merges)
def test_the_merges_make_every_token_whole_where_tokenizers_merges_whole_pieces(name):
    """With ``ignore_merges: false`` tokenizers merges a piece that is a whole token from its bytes, tiktoken takes
    it whole: the same where the merges make every token, proven here over the whole vocabulary."""
    from packer.tokens.tiktoken_core import unreachable_tokens

    need_shared()
    spec = json.loads((SHARED / "tokenizers" / name / "tokenizer.json").read_text())
    assert spec["model"].get("ignore_merges", False) is False
    assert unreachable_tokens(spec) == []


def test_a_qualified_core_is_kept_for_the_next_process(tmp_path, monkeypatch):
    """Qualifying reads the whole vocabulary (~1 s for Llama 3): the core is kept on disk, keyed by the
    tokenizer's sha256, and the next process loads it (same ids) without qualifying; a damaged file is
    qualified again; a tokenizer that does not qualify is kept with its reason."""
    import packer.tokens.tiktoken_core as tc
    from packer.tokens.tokenize import load_tokenizer

    need_shared()
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tc, "_CORES", {})
    tok = load_tokenizer(SHARED / "tokenizers" / "qwen2.5-instruct")
    fresh = tc.core_of(tok)
    (kept,) = tmp_path.glob("tiktoken-core-*.npz")
    assert not isinstance(fresh, str)

    def no_qualify(spec):  # type: ignore[no-untyped-def]
        raise AssertionError("qualified again")

    monkeypatch.setattr(tc, "_CORES", {})  # as a new process
    monkeypatch.setattr(tc, "qualify", no_qualify)
    loaded = tc.core_of(tok)
    texts = ["<|im_start|>user\nnaïve café 你好 🤖<|im_end|>\n", "  x\r\n12345 don't", ""]
    assert not isinstance(loaded, str) and loaded.encode_batch(texts) == fresh.encode_batch(texts)
    assert (loaded.verify, loaded.joiners, loaded.widths.tolist()) == (fresh.verify, fresh.joiners,
                                                                       fresh.widths.tolist())

    kept.write_bytes(kept.read_bytes()[:1000])  # damaged: qualified again
    monkeypatch.setattr(tc, "_CORES", {})
    monkeypatch.setattr(tc, "qualify", qualify)
    again = tc.core_of(tok)
    assert not isinstance(again, str) and again.encode_batch(texts) == fresh.encode_batch(texts)

    llama2 = load_tokenizer(SHARED / "tokenizers" / "llama-2")
    assert tc.core_of(llama2) == "BPE with byte_fallback"
    monkeypatch.setattr(tc, "_CORES", {})
    monkeypatch.setattr(tc, "qualify", no_qualify)
    assert tc.core_of(llama2) == "BPE with byte_fallback"


# -- a kept core is checked against the tokenizer when it is loaded (issue 24) ------------------------------


def _kept(cache: Path) -> tuple[Path, dict[str, np.ndarray]]:
    (kept,) = cache.glob("tiktoken-core-*.npz")
    with np.load(kept) as z:
        return kept, dict(z)


def test_a_kept_core_with_swapped_ranks_is_qualified_again(tmp_path, monkeypatch, caplog):
    """Issue 24: the ranks of two tokens of one width swapped in the kept core (an edit, which a checksum would
    not catch), one of them only in a record the build does not check against ``tokenizers``: that record's ids
    were wrong, silently. Now the kept ranks are compared with the tokenizer's vocabulary when loaded, the core
    disagrees and is qualified again: the tiktoken build is the tokenizers build, and the file is mended."""
    import packer.tokens.tiktoken_core as tc
    from packer import build
    from packer.tokens.assembly import checked
    from packer.tokens.tokenize import load_tokenizer

    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tc, "_CORES", {})
    records = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)} for i in range(40)]
    odd = next(d for d in range(CHECK_FIRST, 40) if not checked(d))
    records[odd] = {"instruction": "Spell quokka.", "input": "", "output": "q u o k k a"}
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    kw = {"tokenizer": DEMO_TOKENIZER, "seq_len": 256}
    build([data], tmp_path / "hf", tokenizer_backend="tokenizers", **kw)
    docs = read_documents(tmp_path / "hf")
    tok = load_tokenizer(DEMO_TOKENIZER)
    assert not isinstance(tc.core_of(tok), str)

    kept, arrays = _kept(tmp_path / "cache")
    ids, width = arrays["ids"], dict(zip(arrays["ids"].tolist(), arrays["lengths"].tolist(), strict=True))
    others = set(np.concatenate([d["input_ids"] for k, d in docs.items() if k != odd]).tolist())
    mine = docs[odd]["input_ids"].tolist()
    a = next(i for i in mine if i not in others and width.get(i, 0) > 1)
    b = next(i for i in ids.tolist() if width[i] == width[a] and i not in others and i not in mine)
    ka, kb = int(np.flatnonzero(ids == a)[0]), int(np.flatnonzero(ids == b)[0])
    ids[ka], ids[kb] = b, a
    with open(kept, "wb") as f:
        np.savez(f, **arrays)
    # the tampered ranks give that record other ids (what a build wrote before the check)
    blob = arrays["blob"].tobytes()
    ends = np.cumsum(arrays["lengths"]).tolist()
    swapped = {blob[s:e]: i for s, e, i in zip([0, *ends[:-1]], ends, ids.tolist(), strict=True)}
    frame = tc._frame(tc._frame_spec(tok.tokenizer))
    assert tc._core(swapped, frame, tied=True).encode_batch(["Spell quokka."]) != [
        tok.tokenizer.encode("Spell quokka.", add_special_tokens=False).ids]

    monkeypatch.setattr(tc, "_CORES", {})  # a new process
    with caplog.at_level("WARNING", logger="packer"):
        m = build([data], tmp_path / "tk", tokenizer_backend="tiktoken", **kw)
    assert m["tokenizer"]["backend"] == "tiktoken"
    assert any("the kept tiktoken core disagrees with the tokenizer" in r.getMessage() for r in caplog.records)
    hf, tk = outputs_less_backend(tmp_path / "hf"), outputs_less_backend(tmp_path / "tk")
    assert (hf.pop("backend"), tk.pop("backend")) == ("tokenizers", "tiktoken") and tk == hf
    assert _kept(tmp_path / "cache")[1]["ids"][ka] == a  # qualified again, and kept as qualified


def _tamper_meta(arrays: dict) -> None:
    """What a kept core of cache version 1 held besides the ranks, made wrong: packer reads none of it."""
    meta = {"pattern": r"\S+|\s+", "special": {"<|im_start|>": 5}, "nfc": True, "verify": False,
            "joiners": [["x", 7]]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    arrays["widths"] = np.ones(4096, np.int64)


def _drop_last(arrays: dict) -> None:
    n = int(arrays["lengths"][-1])
    arrays["blob"], arrays["lengths"], arrays["ids"] = arrays["blob"][:-n], arrays["lengths"][:-1], arrays["ids"][:-1]


def _duplicate_first(arrays: dict) -> None:
    n = int(arrays["lengths"][0])
    arrays["blob"] = np.concatenate([arrays["blob"], arrays["blob"][:n]])
    arrays["lengths"] = np.append(arrays["lengths"], n)
    arrays["ids"] = np.append(arrays["ids"], arrays["ids"][0])


def _rank_of_a_special_token(arrays: dict) -> None:
    arrays["ids"][-1] = 2  # <|im_end|>'s id


def _shift_bytes(arrays: dict) -> None:
    blob = arrays["blob"].copy()
    blob[-1] ^= 1
    arrays["blob"] = blob


@pytest.mark.parametrize("tamper, requalified", [(_tamper_meta, False), (_drop_last, True), (_duplicate_first, True),
                                                 (_rank_of_a_special_token, True), (_shift_bytes, True)])
def test_a_tampered_kept_core_never_gives_other_ids(tmp_path, monkeypatch, caplog, tamper, requalified):
    """Whatever is changed in the kept file: the core loaded from it gives the ids, widths and joiners of a core
    qualified afresh. The pattern, normalizer, special tokens, widths and joiners are read from the tokenizer
    (a file's are ignored); ranks that are not exactly the vocabulary's are qualified again. (Merges are not
    kept: their order is the ranks.)"""
    import packer.tokens.tiktoken_core as tc
    from packer.tokens.tokenize import load_tokenizer

    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tc, "_CORES", {})
    tok = load_tokenizer(DEMO_TOKENIZER)
    fresh = tc.core_of(tok)
    assert not isinstance(fresh, str)
    kept, arrays = _kept(tmp_path)
    tamper(arrays)
    with open(kept, "wb") as f:
        np.savez(f, **arrays)
    monkeypatch.setattr(tc, "_CORES", {})
    with caplog.at_level("WARNING", logger="packer"):
        loaded = tc.core_of(tok)
    assert not isinstance(loaded, str)
    texts = ["<|im_start|>user\nnaïve café 🤖 quokka<|im_end|>\n", "  x\r\n12345 don't", "", "<|endoftext|>"]
    assert loaded.encode_batch(texts) == [e.ids for e in tok.tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert (loaded.nfc, loaded.joiners, loaded.widths.tolist()) == (fresh.nfc, fresh.joiners, fresh.widths.tolist())
    assert any("disagrees" in r.getMessage() for r in caplog.records) == requalified
