"""tiktoken as a second BPE core (issue 17, first part): which tokenizers qualify, and that those give the
ids ``tokenizers`` gives on real text (with the models' special tokens), while every disqualifying property
is refused with its reason."""

from __future__ import annotations

import copy
import json

import pytest

from .helpers import SHARED, need_shared

tiktoken = pytest.importorskip("tiktoken")

from packer.tiktoken_core import qualify  # noqa: E402

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


def _outputs_less_backend(out) -> dict[str, str]:
    from .helpers import output_files

    m = json.loads((out / "manifest.json").read_text())
    backend = m["tokenizer"].pop("backend", "tokenizers")
    (out / "manifest.json").write_text(json.dumps(m, indent=2))
    files = output_files(out)
    files["backend"] = backend
    return files


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

    kw = {"tokenizer": SHARED / "tokenizers" / name, "seq_len": 4096, "overlong": "truncate",
          }
    build(data_inputs, tmp_path / "hf", **kw)
    m = build(data_inputs, tmp_path / "tk", tokenizer_backend="tiktoken", **kw)
    assert m["tokenizer"]["backend"] == "tiktoken"
    hf, tk = _outputs_less_backend(tmp_path / "hf"), _outputs_less_backend(tmp_path / "tk")
    assert (hf.pop("backend"), tk.pop("backend")) == ("tokenizers", "tiktoken")
    assert tk == hf


def test_a_tampered_core_is_caught_and_the_build_falls_back(data_inputs, tmp_path, monkeypatch):
    """The core gives one wrong id (as a tampered rank would): a checked record shows it, and the build starts
    over with tokenizers, with a notice; the output is the tokenizers build's."""
    import packer.tiktoken_core as tc
    from packer import build
    from packer.build import BuildEvents

    real = tc.qualify

    class Tampered:
        def __init__(self, encoding) -> None:
            self.encoding = encoding

        def encode_batch(self, texts, **kw):
            out = self.encoding.encode_batch(texts, **kw)
            return [[i + 1 if i == 13 else i for i in ids] for ids in out]  # "." -> another token

    def tampered(spec):
        core = real(spec)
        core.encoding = Tampered(core.encoding)
        return core

    monkeypatch.setattr(tc, "qualify", tampered)
    kw = {"tokenizer": SHARED / "tokenizers" / "qwen2.5-instruct", "seq_len": 4096, "overlong": "truncate"}
    notices: list[str] = []
    m = build(data_inputs, tmp_path / "tk", tokenizer_backend="tiktoken", events=BuildEvents(on_notice=notices.append),
              **kw)
    assert "backend" not in m["tokenizer"]
    assert any("tiktoken core gives other ids" in n and "encoded by tokenizers" in n for n in notices), notices
    build(data_inputs, tmp_path / "hf", **kw)
    assert _outputs_less_backend(tmp_path / "tk") == _outputs_less_backend(tmp_path / "hf")


def test_a_tokenizer_that_does_not_qualify_is_refused_by_name(tmp_path):
    from packer import BuildError, build

    need_shared()
    with pytest.raises(BuildError, match=r"--tokenizer-backend tiktoken: .*llama-2.* does not qualify"):
        build([str(SHARED / "data" / "messages_lima.jsonl")], tmp_path / "o", tokenizer_backend="tiktoken",
              tokenizer=SHARED / "tokenizers" / "llama-2")
