"""The two tokenizer loaders: ``tokenizer.json`` as it is (``file``) and the installed transformers
(``transformers``), and :func:`packer.tokens.loader.loader_difference`, which says when they give other ids.

transformers 5 builds SentencePiece-family tokenizers (Llama 2, Mistral, Phi-3) from their vocabulary and
config instead of running ``tokenizer.json``: Phi-3 ``<|user|>\\nHello`` is ``<|user|>``, ``Hello`` under 5.x and
``<|user|>``, ``▁Hello`` from ``tokenizer.json``. With the transformers loader the ids must be exactly
``apply_chat_template(tokenize=True)`` of the installed transformers, and the fast paths (byte widths,
template assembly) must give the bytes of the slow path under both loaders.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

import packer.tokens.loader as L
from packer import BuildError, build
from packer.output import roles as R
from packer.read.formats import RecordReader
from packer.read.records import Conversation
from packer.tokens.tokenize import byte_lengths, load_tokenizer

from .helpers import (
    CHAT_TOKENIZERS,
    DEMO_BUILD_OPTIONS,
    DEMO_TOKENIZER,
    EXAMPLES,
    SHARED_DATA,
    SHARED_TOKENIZERS,
    hf_tokenizer,
    need_shared,
    output_files,
    outputs_less_backend,
    read_documents,
    real_tokenizer,
    tokenizer_params,
)

#: templates that raise on a system message: records with one are not compared (packer merges them)
REFUSE_SYSTEM = {"mistral-7b-instruct-v0.1", "gemma-2"}
#: where transformers 5 and tokenizer.json part on rendered conversations, and where they agree
DIFFER_UNDER_5 = ("phi-3-mini-instruct", "mistral-7b-instruct-v0.1")
AGREE = ("qwen2.5-instruct", "llama-3-8b-instruct")
DEMO_INPUTS = [EXAMPLES / "alpaca_demo.json", EXAMPLES / "sharegpt_demo.json"]


def transformers_major() -> int:
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    return int(transformers.__version__.split(".")[0])


# -- without ../shared: the demo tokenizer ---------------------------------------------------------------------


def test_unknown_loader_is_an_error():
    with pytest.raises(BuildError, match="unknown tokenizer loader 'sentencepiece'"):
        load_tokenizer(DEMO_TOKENIZER, loader="sentencepiece")


def test_transformers_loader_without_transformers_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError

    def version(name: str) -> str:
        if name == "transformers":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", version)  # and no metadata: not installed
    needs = r"^--tokenizer-loader transformers needs transformers: pip install 'packer\[hf\]'$"
    with pytest.raises(BuildError, match=needs):
        load_tokenizer(DEMO_TOKENIZER, loader="transformers")
    tok = load_tokenizer(DEMO_TOKENIZER)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert L.loader_difference(tok, ["Hello"]) is None


def test_transformers_loader_on_the_demo_tokenizer():
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    file_tok = load_tokenizer(DEMO_TOKENIZER)
    hf_tok = load_tokenizer(DEMO_TOKENIZER, loader="transformers")
    assert (file_tok.loader, file_tok.transformers_version) == ("file", None)
    assert (hf_tok.loader, hf_tok.transformers_version) == ("transformers", transformers.__version__)
    for field in ("source", "vocab_size", "bos_token", "eos_token", "pad_token", "unk_token", "chat_template",
                  "special_tokens", "add_bos"):
        assert getattr(hf_tok, field) == getattr(file_tok, field), field
    assert isinstance(hf_tok.tokenizer, Tokenizer)
    # what made the ids: the files and the transformers version, not tokenizer.json's digest alone
    assert hf_tok.sha256 != file_tok.sha256 and len(hf_tok.sha256) == 64
    assert load_tokenizer(DEMO_TOKENIZER / "tokenizer.json", loader="transformers").sha256 == hf_tok.sha256
    texts = [r["instruction"] + "\n" + r["output"] for r in json.loads(DEMO_INPUTS[0].read_text())]
    hf = transformers.AutoTokenizer.from_pretrained(str(DEMO_TOKENIZER))
    want = hf(texts, add_special_tokens=False)["input_ids"]
    assert [e.ids for e in hf_tok.tokenizer.encode_batch(texts, add_special_tokens=False)] == want
    assert L.loader_difference(file_tok, texts) is None and L.loader_difference(hf_tok, texts) is None


def test_transformers_loader_errors_are_one_line(tmp_path):
    pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    with pytest.raises(BuildError, match="cannot load this tokenizer") as e:
        load_tokenizer(tmp_path, loader="transformers")  # an empty directory
    assert "\n" not in str(e.value)
    other = tmp_path / "vocab.json"
    other.write_text("{}")
    with pytest.raises(BuildError, match="needs a model directory"):
        load_tokenizer(other, loader="transformers")


class _PythonSide:
    """A transformers tokenizer that changes the text before its backend sees it."""

    def __init__(self, hf) -> None:  # type: ignore[no-untyped-def]
        self._hf, self.backend_tokenizer = hf, hf.backend_tokenizer

    def __call__(self, texts, **kwargs):  # type: ignore[no-untyped-def]
        return self._hf([t.lower() for t in texts], **kwargs)


def test_transformers_tokenizer_that_is_more_than_its_backend_is_refused(monkeypatch, tmp_path):
    pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path))  # no kept backend: transformers loads it
    real = L._quiet_from_pretrained
    monkeypatch.setattr(L, "_quiet_from_pretrained", lambda tf, d: _PythonSide(real(tf, d)))
    with pytest.raises(BuildError, match="does not encode 'Hello world' as its tokenizers backend does"):
        load_tokenizer(DEMO_TOKENIZER, loader="transformers")


def test_loader_difference_says_where_the_ids_part(monkeypatch):
    """The message, with another tokenizer standing in for the other loader's (no ../shared needed)."""
    tok = load_tokenizer(DEMO_TOKENIZER)
    texts = ["plain text", "<|im_start|>user\nHello there<|im_end|>", "Hello"]
    # the other tokenizer lacks the merge that makes the token " there"
    last = tok.tokenizer.encode(" there", add_special_tokens=False).tokens[-1]
    spec = json.loads(tok.tokenizer.to_str())
    merges = spec["model"]["merges"]  # "a b" strings or ["a", "b"] pairs, by tokenizers version
    spec["model"]["merges"] = [m for m in merges if "".join(m.split(" ") if isinstance(m, str) else m) != last]
    assert len(spec["model"]["merges"]) == len(merges) - 1
    other = L.TokenizerInfo(**{**tok.__dict__, "tokenizer": Tokenizer.from_str(json.dumps(spec)),
                               "loader": "transformers", "transformers_version": "9.9.9"})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(L, "_other_loader", lambda t: other)
    a = tok.tokenizer.encode(texts[1], add_special_tokens=False)
    b = other.tokenizer.encode(texts[1], add_special_tokens=False)
    assert a.ids != b.ids
    at = next(i for i, (x, y) in enumerate(zip(a.ids, b.ids, strict=False)) if x != y)
    line = L.loader_difference(tok, texts)
    assert line is not None and "\n" not in line
    assert line.startswith(f"1 of 3 texts tokenize differently, e.g. text 1 at token {at}: tokenizer.json: ")
    ours, theirs = line.split(": tokenizer.json: ")[1].split(" | transformers 9.9.9: ")
    assert ours == ", ".join(map(repr, a.tokens[max(0, at - 2) : at + 3]))
    assert theirs == ", ".join(map(repr, b.tokens[max(0, at - 2) : at + 3]))
    # the other way round: the chosen loader is named first
    monkeypatch.setattr(L, "_other_loader", lambda t: tok)
    assert L.loader_difference(other, texts).split(": ", 2)[1] == "transformers 9.9.9"  # type: ignore[union-attr]
    # equal ids: nothing to say
    assert L.loader_difference(tok, texts) is None


def test_loader_difference_never_raises(monkeypatch, demo_tok):
    gone = L.TokenizerInfo(**{**demo_tok.__dict__, "source": "/nonexistent/tokenizer"})
    assert L.loader_difference(gone, ["Hello"]) is None
    assert L.loader_difference(demo_tok, []) is None

    def broken(t):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(L, "_other_loader", broken)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert L.loader_difference(demo_tok, ["Hello"]) is None


def test_demo_build_with_the_transformers_loader(tmp_path, demo_output):
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    m = build(
        DEMO_INPUTS, tmp_path / "hf", tokenizer=DEMO_TOKENIZER, tokenizer_loader="transformers", **DEMO_BUILD_OPTIONS
    )
    assert m["tokenizer"]["loader"] == "transformers"
    assert m["tokenizer"]["transformers_version"] == transformers.__version__
    # the demo tokenizer is byte-level BPE: both loaders give the same ids, so the same shards as the file loader's
    hf, file = output_files(tmp_path / "hf"), output_files(demo_output)
    assert hf.pop("manifest.json") != file.pop("manifest.json") and hf == file


# -- with ../shared: the real chat tokenizers on real conversations ---------------------------------------------


@pytest.fixture(scope="module")
def real_inputs(tmp_path_factory) -> list[Path]:
    """A few dozen real records each: LIMA (single and multi-turn), ShareGPT-3000 (some with a system turn),
    Alpaca with a non-empty input, in their own formats."""
    need_shared()
    d = tmp_path_factory.mktemp("real")
    lima = (SHARED_DATA / "messages_lima.jsonl").read_text().splitlines()
    (d / "lima.jsonl").write_text("\n".join(lima[:20] + lima[-6:]) + "\n")
    chats = json.loads((SHARED_DATA / "sharegpt_v3_unfiltered_cleaned_split_first3000.json").read_text())
    size = [sum(len(t["value"]) for t in c["conversations"]) for c in chats]
    system = [c for c in chats if [t["from"] for t in c["conversations"]] == ["system", "human", "gpt"]]  # 2
    short = [c for c, n in zip(chats, size, strict=True) if 200 < n < 2500][:24]
    (d / "sharegpt.json").write_text(json.dumps(short + system, ensure_ascii=False))
    alpaca = [r for r in json.loads((SHARED_DATA / "alpaca_llamafactory_en_demo.json").read_text()) if r["input"]]
    (d / "alpaca.json").write_text(json.dumps(alpaca[:24], ensure_ascii=False))
    return [d / "lima.jsonl", d / "sharegpt.json", d / "alpaca.json"]


@pytest.fixture(scope="module")
def real_convs(real_inputs) -> dict[int, Conversation]:
    return {c.source.doc_id: c for c in RecordReader(real_inputs) if isinstance(c, Conversation)}


def hf_messages(conv: Conversation) -> list[dict]:
    """The conversation as transformers gets it: an Alpaca input follows its instruction after a blank line."""
    return [{"role": m.role, "content": m.content + ("\n\n" + m.input if m.input else "")} for m in conv.messages]


def squash(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("name", tokenizer_params(CHAT_TOKENIZERS))
def test_transformers_loader_ids_equal_apply_chat_template(name, real_inputs, real_convs, tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    tok_dir = SHARED_TOKENIZERS / name
    m = build(real_inputs, tmp_path / "o", tokenizer=tok_dir, tokenizer_loader="transformers", template="tokenizer",
              seq_len=8192)
    assert (m["tokenizer"]["loader"], m["tokenizer"]["transformers_version"]) == ("transformers",
                                                                                  transformers.__version__)
    hf = hf_tokenizer(tok_dir)
    docs = read_documents(tmp_path / "o")
    checked = systems = 0
    for doc_id, doc in docs.items():
        conv = real_convs[doc_id]
        if name in REFUSE_SYSTEM and conv.messages[0].role == "system":
            continue  # merged into the first user turn by packer; transformers' template refuses it
        out = hf.apply_chat_template(hf_messages(conv), tokenize=True)
        want = list(out["input_ids"] if hasattr(out, "keys") else out)
        assert doc["input_ids"].tolist() == want, conv.source.where()
        # the roles follow this backend's tokens: the response tokens hold every answer, in order (a token
        # straddling template text and an answer, such as Mistral's "];" of "[/INST];)", is response too)
        response = squash(hf.decode(doc["input_ids"][doc["roles"] == R.RESPONSE].tolist()))
        pos = extra = 0
        for answer in (squash(x.content) for x in conv.messages if x.role == "assistant"):
            at = response.find(answer, pos)
            assert at >= 0, conv.source.where()
            extra, pos = extra + at - pos, at + len(answer)
        assert extra + len(response) - pos <= 4 * len(conv.messages), conv.source.where()
        checked += 1
        systems += conv.messages[0].role == "system"
    assert checked >= 60, m["counts"]
    assert systems >= (0 if name in REFUSE_SYSTEM else 2)
    if transformers_major() >= 5 and name in DIFFER_UNDER_5:
        assert m["tokenizer"]["loader_difference"].startswith("64 of 64 texts tokenize differently")
    elif name in AGREE:
        assert m["tokenizer"]["loader_difference"] is None


@pytest.fixture(scope="module")
def rendered_texts(real_inputs, real_convs) -> dict[str, list[str]]:
    """Per tokenizer: the rendered texts of the real records (as the build's first batch)."""
    from packer.pipeline.build import resolve_template

    out = {}
    for name in (*DIFFER_UNDER_5, *AGREE):
        tpl = resolve_template("tokenizer", real_tokenizer(name))
        rendered = (tpl.render(c) for c in real_convs.values())
        out[name] = [r.text for r in rendered if hasattr(r, "text")][:64]
    return out


@pytest.mark.parametrize("name", [*DIFFER_UNDER_5, *AGREE])
def test_loader_difference_on_real_tokenizers(name, rendered_texts):
    major = transformers_major()
    texts = rendered_texts[name]
    assert len(texts) == 64
    file_tok = real_tokenizer(name)
    line = L.loader_difference(file_tok, texts)
    if name in AGREE or major < 5:
        assert line is None
        return
    assert line is not None and "\n" not in line
    assert line.startswith("64 of 64 texts tokenize differently, e.g. text 0 at token ")
    assert " tokenizer.json: " in line and f" | transformers {L._transformers().__version__}: " in line
    if name == "phi-3-mini-instruct":  # the example: the first word after <|user|>\n
        assert line.endswith(" at token 1: tokenizer.json: '<|user|>', '▁Can', '▁brain', '▁cells' | "
                             f"transformers {L._transformers().__version__}: '<|user|>', 'Can', '▁brain', "
                             "'▁cells'")
    # from the other side, the same texts and the two loaders named the other way round
    hf_line = L.loader_difference(load_tokenizer(SHARED_TOKENIZERS / name, loader="transformers"), texts)
    assert hf_line is not None and hf_line.split(":")[0] == line.split(":")[0]
    assert hf_line.split(": ", 2)[1].startswith("transformers ")


# -- the fast paths give the slow path's bytes under both loaders ---------------------------------------------


@pytest.fixture(scope="module")
def loaded() -> dict:
    return {}


def tokenizer(loaded: dict, name: str, loader: str):  # type: ignore[no-untyped-def]
    if loader == "transformers":
        pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    if (name, loader) not in loaded:
        loaded[name, loader] = load_tokenizer(SHARED_TOKENIZERS / name, loader=loader)
    return loaded[name, loader]


@pytest.mark.parametrize("loader", ["file", "transformers"])
@pytest.mark.parametrize("name", ["qwen2.5-instruct", "llama-3-8b-instruct", "phi-3-mini-instruct"])
def test_fast_paths_give_the_slow_paths_bytes(name, loader, loaded, real_inputs, tmp_path, monkeypatch):
    tok = tokenizer(loaded, name, loader)
    assert (byte_lengths(tok.tokenizer) is not None) == (name != "phi-3-mini-instruct")  # byte-level BPE
    build(real_inputs, tmp_path / "fast", tokenizer=tok, template="tokenizer", seq_len=8192)
    build_module = importlib.import_module("packer.pipeline.build")  # ``packer.build`` is also the function
    resolve = build_module.resolve_template

    def exact(*args, **kwargs):  # type: ignore[no-untyped-def]
        tpl = resolve(*args, **kwargs)
        tpl.assemble = False  # every record rendered by Jinja
        return tpl

    monkeypatch.setattr(build_module, "resolve_template", exact)
    tokenize_module = importlib.import_module("packer.tokens.tokenize")
    monkeypatch.setattr(tokenize_module, "byte_lengths", lambda t: None)  # every token placed by its offsets

    def never(*args):  # type: ignore[no-untyped-def]
        raise AssertionError("the slow build labelled tokens by byte widths")

    monkeypatch.setattr(tokenize_module, "label_by_bytes", never)
    build(real_inputs, tmp_path / "slow", tokenizer=tok, template="tokenizer", seq_len=8192)
    # the fast build also encodes with the tiktoken core where the tokenizer qualifies; the slow one cannot (its
    # tokens are placed by offsets), so only the manifest's tokenizer.backend may differ
    fast, slow = outputs_less_backend(tmp_path / "fast"), outputs_less_backend(tmp_path / "slow")
    assert (fast.pop("backend"), slow.pop("backend")) == (
        "tokenizers" if name == "phi-3-mini-instruct" else "tiktoken", "tokenizers")
    assert fast == slow


# -- the build says so: on stderr, in the manifest, in `packer inspect` --------------------------------------


def test_a_build_reports_the_difference_where_the_loaders_part(tmp_path):
    need_shared()
    major = transformers_major()
    from packer.inspect.report import inspect
    from packer.pipeline.build import BuildEvents

    notices: list[str] = []
    path = tmp_path / "lima.jsonl"
    path.write_text("".join((SHARED_DATA / "messages_lima.jsonl").read_text().splitlines(True)[:80]))
    m = build([path], tmp_path / "o", tokenizer=SHARED_TOKENIZERS / "phi-3-mini-instruct", template="tokenizer",
              events=BuildEvents(on_notice=notices.append))
    line = m["tokenizer"]["loader_difference"]
    report = inspect(tmp_path / "o")["tokenizer_loader"]
    assert report == {"loader": "file", "transformers_version": None, "difference": line}
    if major < 5:  # transformers 4 runs tokenizer.json as it is: nothing to compare
        assert line is None and not [n for n in notices if "other tokenizer loader" in n]
        return
    assert line.startswith("64 of 64 texts tokenize differently")
    assert [n for n in notices if n.startswith(f"the other tokenizer loader gives other ids: {line}")]


def test_byte_level_builds_never_import_transformers(tmp_path):
    """The check costs seconds and ~300 MB (transformers imports torch); byte-level BPE needs none."""
    import subprocess

    code = ("import sys; from packer import build; "
            f"m = build([{str(DEMO_INPUTS[0])!r}], {str(tmp_path / 'o')!r}, tokenizer={str(DEMO_TOKENIZER)!r}); "
            "print(m['tokenizer']['loader_difference'], 'transformers' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["None", "False"]


# -- the kept transformers backend --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo", "phi-3-mini-instruct", "mistral-7b-instruct-v0.1"])
def test_kept_transformers_backend_gives_transformers_ids(name, monkeypatch, tmp_path):
    """The transformers loader keeps the backend transformers built (after its check); the next load reads it,
    importing nothing, and gives transformers' ids; a damaged kept file is made again."""
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    if name != "demo":
        need_shared()
    path = DEMO_TOKENIZER if name == "demo" else SHARED_TOKENIZERS / name
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path))
    first = load_tokenizer(path, loader="transformers")
    kept = list(tmp_path.glob("transformers-backend-*.json"))
    assert len(kept) == 1

    def no_transformers(directory):  # type: ignore[no-untyped-def]
        raise AssertionError("transformers loaded again")

    monkeypatch.setattr(L, "_hf_backend", no_transformers)
    again = load_tokenizer(path, loader="transformers")
    assert (again.sha256, again.special_tokens, again.transformers_version) == (
        first.sha256, first.special_tokens, transformers.__version__)
    texts = ["Hello world", "<s>[INST] Hi [/INST] Hello</s>", "<|user|>\nHi<|end|>\n<|assistant|>\n Yo",
             "  two  spaces\n\n\tand tabs ", "naïve café 你好 🤖", *L._PROBES]
    hf = transformers.AutoTokenizer.from_pretrained(str(path))
    want = hf(texts, add_special_tokens=False)["input_ids"]
    assert [e.ids for e in again.tokenizer.encode_batch(texts, add_special_tokens=False)] == want
    kept[0].write_text("{not json")
    monkeypatch.undo()
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path))
    assert load_tokenizer(path, loader="transformers").sha256 == first.sha256
    assert json.loads(kept[0].read_text())["tokenizer"]


def test_sentencepiece_builds_never_import_transformers(tmp_path):
    """A file-loader build of a SentencePiece-family tokenizer still says where transformers 5's ids part from
    tokenizer.json, but the comparison's transformers (and torch) load in a child process, once per tokenizer:
    the build's own process imports neither (issue 28: seconds and ~300 MB a build)."""
    need_shared()
    if transformers_major() < 5:
        pytest.skip("transformers 4 runs tokenizer.json as it is: nothing to compare")
    import subprocess

    path = tmp_path / "lima.jsonl"
    path.write_text("".join((SHARED_DATA / "messages_lima.jsonl").read_text().splitlines(True)[:20]))
    code = ("import sys; from packer import build; "
            f"m = build([{str(path)!r}], sys.argv[1], tokenizer={str(SHARED_TOKENIZERS / 'phi-3-mini-instruct')!r}); "
            "print(m['tokenizer']['loader_difference'] is not None, 'transformers' in sys.modules, "
            "'torch' in sys.modules)")
    env = {**os.environ, "PACKER_CACHE_DIR": str(tmp_path / "cache")}
    for run in ("first", "kept"):
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path / run)], capture_output=True, text=True,
                             check=True, env=env)
        assert res.stdout.split() == ["True", "False", "False"], (run, res.stderr[-2000:])
    assert list((tmp_path / "cache").glob("transformers-backend-*.json"))
