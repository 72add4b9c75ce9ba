"""The walk of token pieces (packer.tokens.spans) gives every token the character span ``Encoding.offsets``
gives it, for SentencePiece-style tokenizers: a small one trained here (Phi-3's shape: Prepend + Replace,
byte fallback, rstrip/lstrip added tokens; runs in a fresh clone), and the real ones of ../shared on slices
of every data file. Where the walk gives up, or a checked record shows it wrong, the build labels from
offsets, and the output is the offsets build's."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packer.tokens.spans import piece_spans, token_spans

from .helpers import DEMO_INPUTS, EXAMPLES, ROOT, SHARED_DATA, SHARED_TOKENIZERS, real_tokenizer, tokenizer_params

SPM = ["mistral-7b-instruct-v0.1", "phi-3-mini-instruct", "llama-2", "gemma-2"]
#: Phi-3's template, on the added tokens of the tokenizer made here
TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
#: added tokens of the tokenizer made here: (content, special, lstrip, rstrip)
ADDED = [("<|user|>", True, False, True), ("<|assistant|>", True, False, True), ("<|system|>", True, False, True),
         ("<|end|>", True, False, True), ("<|sep|>", True, True, False), ("[tag]", False, False, False)]


def make_spm(directory, *, prepend: bool = True):  # type: ignore[no-untyped-def]
    """A SentencePiece-style BPE tokenizer (as transformers converts Llama's): ``▁`` for spaces, one prepended
    to every piece between added tokens (``prepend``), byte fallback, and Phi-3's kinds of added tokens; trained
    on the bundled examples, written as tokenizer.json + tokenizer_config.json into ``directory``."""
    from tokenizers import Tokenizer, models, normalizers, trainers

    text = "".join((EXAMPLES / n).read_text(encoding="utf-8") for n in ("sharegpt_demo.json", "alpaca_demo.json"))
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    steps = [normalizers.Replace(" ", "\u2581")]
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), *steps] if prepend else steps)
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<unk>", "<s>", "</s>", *byte_pieces],
                                  show_progress=False)
    tok.train_from_iterator([text[i : i + 2000] for i in range(0, len(text), 2000)], trainer)
    spec = json.loads(tok.to_str())
    # the byte pieces are vocabulary, not added tokens (as in Llama's tokenizer.json)
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] not in byte_pieces]
    vocab = spec["model"]["vocab"]
    for content, special, lstrip, rstrip in ADDED:
        vocab[content] = len(vocab)
        spec["added_tokens"].append({"id": vocab[content], "content": content, "single_word": False, "lstrip": lstrip,
                                     "rstrip": rstrip, "normalized": False, "special": special})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "<|end|>", "chat_template": TEMPLATE}), encoding="utf-8")
    return Tokenizer.from_file(str(directory / "tokenizer.json"))


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("spm")
    make_spm(d)
    return d


@pytest.fixture(scope="module")
def spm(spm_dir):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(spm_dir / "tokenizer.json"))


def spans_and_offsets(tok, texts: list[str]) -> tuple[np.ndarray | None, np.ndarray]:  # type: ignore[no-untyped-def]
    """The walk's spans (None: it gave up) and ``Encoding.offsets``, both per text start, as (tokens, 2)."""
    encs = tok.encode_batch(texts, add_special_tokens=False)
    ids = np.array([i for e in encs for i in e.ids], dtype=np.int64)
    offsets = np.cumsum([0, *(len(e.ids) for e in encs)])
    want = np.array([o for e in encs for o in e.offsets], dtype=np.int64).reshape(-1, 2)
    table = piece_spans(tok)
    assert table is not None
    got = token_spans(table, texts, ids, offsets)
    if got is None:
        return None, want
    starts = np.repeat(np.cumsum([0, *map(len, texts)])[:-1], np.diff(offsets))
    return np.stack(got, axis=1) - starts[:, None], want


def test_the_alignment_rules(spm):
    """Each rule the walk reproduces (spans.py's docstring), on the tokenizer made here."""
    cases = [
        " lead",                       # a text starting with a space: a lone "▁", then "▁lead" over the space too
        "<s>[INST] hi",                # the ▁ prepended after an added token takes the next character's span
        "<|user|>\n  Can you<|end|>\n<|assistant|>\n\n ok",  # rstrip tokens swallow the whitespace after them
        "a \t<|sep|>b",                # an lstrip token swallows the whitespace before it
        "x\u3000<|end|>\u3000\u200by",   # Rust's whitespace: U+3000 is, U+200B is not
        "😀 é 你好 \x1c",                # byte fallback: each byte token spans its whole character
        "<s></s>x<|end|>",             # adjacent added tokens: no piece between them
        "[tag] [tag]x a\u2581b",        # a non-special added token; a ▁ in the text itself
        "", "   ", "<|end|>   ",
    ]
    for text in cases:
        got, want = spans_and_offsets(spm, [text])
        assert got is not None, text
        assert got.tolist() == want.tolist(), text


ALPHABET = st.sampled_from([*"ab Zé你😀\t\n\u3000\u200b\x1c\u2581.", " ", "  ", *(a[0] for a in ADDED), "<s>", "</s>"])
TEXTS = st.lists(ALPHABET, max_size=40).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=4))
def test_spans_equal_offsets_on_any_text(spm, texts):
    got, want = spans_and_offsets(spm, texts)
    assert got is not None
    assert got.tolist() == want.tolist()


def test_without_prepend_too(tmp_path):
    """Gemma 2's shape: Replace only, no ▁ prepended to a piece."""
    tok = make_spm(tmp_path, prepend=False)
    assert piece_spans(tok).prepend == 0
    texts = [" lead", "<s>[INST] hi", "<|user|>\n  Can you<|end|>\n ok", "😀 é 你好"]
    got, want = spans_and_offsets(tok, texts)
    assert got is not None and got.tolist() == want.tolist()


def test_which_tokenizers_are_walked(spm, tmp_path):
    from tokenizers import Tokenizer

    from packer.tokens.tokenize import load_tokenizer

    assert piece_spans(spm) is not None
    assert piece_spans(load_tokenizer("packer/demo_tokenizer").tokenizer) is None  # byte-level BPE: byte lengths
    spec = json.loads(spm.to_str())
    spec["added_tokens"][-1]["normalized"] = True  # matched in the normalized text: not walked
    assert piece_spans(Tokenizer.from_str(json.dumps(spec))) is None
    spec = json.loads(spm.to_str())
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}
    assert piece_spans(Tokenizer.from_str(json.dumps(spec))) is None
    if SHARED_TOKENIZERS.is_dir():
        for name in ("qwen2.5-instruct", "gpt2", "llama-3-8b-instruct"):
            assert piece_spans(real_tokenizer(name).tokenizer) is None, name
        for name in SPM:
            assert piece_spans(real_tokenizer(name).tokenizer) is not None, name


def _slices(path, n: int = 40, seed: int = 0) -> list[str]:
    """``n`` slices of a data file's text, up to 1,500 characters each, with added tokens between some words."""
    rng = random.Random(seed)
    text = path.read_text(encoding="utf-8", errors="replace")[:2_000_000]
    out = []
    for _ in range(n):
        a = rng.randrange(max(1, len(text) - 1500))
        out.append(text[a : a + rng.randint(0, 1500)])
    return out


@pytest.mark.parametrize("name", tokenizer_params(SPM))
def test_spans_equal_offsets_on_every_shared_file(name):
    """Slices of every data file of ../shared, with the tokenizer's own added tokens put between some words
    (with and without whitespace around them): every token's span is its offsets."""
    tok = real_tokenizer(name).tokenizer
    added = [a.content for a in tok.get_added_tokens_decoder().values()]
    rng = random.Random(1)
    files = sorted(p for p in SHARED_DATA.iterdir() if p.suffix in (".json", ".jsonl"))
    assert len(files) >= 10
    for path in files:
        texts = []
        for s in _slices(path):
            words = s.split(" ")
            for k in rng.sample(range(len(words)), min(3, len(words))):
                words[k] += rng.choice(added) + rng.choice(["", " ", "\n", "  \n "])
            texts.append(" ".join(words))
        got, want = spans_and_offsets(tok, texts)
        assert got is not None, path.name
        bad = np.flatnonzero((got != want).any(axis=1))
        assert bad.size == 0, f"{path.name}: token {bad[0]}: walk {got[bad[0]]}, offsets {want[bad[0]]}"


def _rendered(tok_dir):  # type: ignore[no-untyped-def]
    """The tokenizer of ``tok_dir`` and conversations rendered by its template, some of whose answers start with
    whitespace (which ``<|assistant|>`` swallows), with text it falls back to bytes for."""
    from packer.read.records import Conversation, Message, Source
    from packer.tokens.templates import ChatTemplate
    from packer.tokens.tokenize import load_tokenizer

    tok = load_tokenizer(tok_dir)
    tpl = ChatTemplate.named("tokenizer", tok)
    answers = ["Paris.", "\n  Two lines\nhere", " 😀 é 你好", "x [tag] y\t"]
    convs = [Conversation(Source(k, "t.jsonl", k), "messages", (
        Message("system", "Be brief."), Message("user", f"Question {k}: what is it?"), Message("assistant", a)))
        for k, a in enumerate(answers * 3)]
    rendered = [tpl.render(c) for c in convs]
    assert all(hasattr(r, "text") for r in rendered), rendered
    return tok, rendered


def test_labeller_walks_and_gives_the_offsets_labels(spm_dir):
    """The build's labeller takes the walk for this tokenizer, with the labels the offsets path gives; where
    the walk gives up (a piece of unknown length), the batch is labelled from offsets."""
    from packer.tokens.tokenize import Labeller

    tok, rendered = _rendered(spm_dir)
    walked, reference = Labeller(tok), Labeller(tok, "offsets")
    assert walked.spans is not None and reference.spans is None and walked.checks
    a, b = walked(rendered), reference(rendered)
    assert a.spans is not None and b.spans is None
    for x in ("ids", "roles", "flags", "offsets"):
        assert np.array_equal(getattr(a, x), getattr(b, x)), x
    assert a.absorbed == b.absorbed > 0  # <|assistant|> swallows the newline of some answers
    walked.spans._width[:] = 0  # every piece of unknown length: the walk gives up on the batch
    walked.spans._piece_bytes = lambda i: 0
    c = walked(rendered)
    assert c.spans is None and np.array_equal(c.roles, b.roles)


def test_a_wrong_walk_is_caught_and_the_build_falls_back(spm_dir, tmp_path, monkeypatch):
    """The walk gives one wrong span (its token keeps its characters, one moves to the next token): a checked
    record shows it, and the build starts over labelling from offsets, with a notice; the output is the
    offsets build's."""
    import packer.tokens.spans as sp
    from packer import build
    from packer.pipeline.build import BuildEvents

    real = sp.PieceSpans.walk

    def wrong(self, texts, ids, offsets):  # type: ignore[no-untyped-def]
        got = real(self, texts, ids, offsets)
        if got is not None:
            starts, ends = got
            k = int(np.flatnonzero(ends[:-1] - starts[:-1] > 1)[0])  # a token of two characters or more
            ends[k] -= 1
            starts[k + 1] -= 1
        return got

    monkeypatch.setattr(sp.PieceSpans, "walk", wrong)
    notices: list[str] = []
    kw = {"tokenizer": spm_dir, "seq_len": 512}
    m = build(DEMO_INPUTS, tmp_path / "walk", events=BuildEvents(on_notice=notices.append), **kw)
    assert any("other character spans than tokenizers' offsets" in n and "labelled from its offsets" in n
               for n in notices), notices
    assert m["tokenizer"]["backend"] == "offsets"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(m, json.loads((ROOT / "schemas" / "manifest.schema.json").read_text()))
    monkeypatch.setattr(sp.PieceSpans, "walk", real)
    build(DEMO_INPUTS, tmp_path / "offsets", tokenizer_backend="offsets", **kw)
    build(DEMO_INPUTS, tmp_path / "good", **kw)
    for f in (tmp_path / "offsets").iterdir():
        if f.name != "manifest.json":
            assert f.read_bytes() == (tmp_path / "walk" / f.name).read_bytes() == (tmp_path / "good" / f.name
                                                                                   ).read_bytes(), f.name
