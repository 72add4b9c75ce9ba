"""The columnar path of plain Alpaca records (issue 28, :mod:`packer.pipeline.flat`): the reader's runs are the
records it reads one by one, the batch digests, word counts and renders are the record path's, and a build that
takes the columnar path writes the same bytes as one that takes every record one by one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packer import build
from packer.pipeline import flat
from packer.pipeline.build import BuildEvents
from packer.pipeline.flat import FlatMapper, flat_digests, flat_words
from packer.pipeline.part import digest, resolve_template, words
from packer.read import formats
from packer.read.formats import RecordReader
from packer.read.records import FlatRun
from packer.tokens.assembly import _Assembly
from packer.tokens.tokenize import load_tokenizer
from packer.tokens.words import count_words_each

from .helpers import DEMO_TOKENIZER, EXAMPLES, ROOT, SHARED_DATA

SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
#: Alpaca records of every kind the columnar path must take, or leave to the record path, in one file
ODD_RECORDS: list[object] = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Add", "input": "2 3", "output": "5"},
    {"instruction": "", "input": "only an input", "output": "ok"},
    {"instruction": "  ", "input": "blank instruction", "output": "ok"},
    {"instruction": "Trim me ", "input": " \n", "output": "  padded  "},
    {"instruction": "x", "output": "no input key"},
    {"instruction": "x", "input": None, "output": "input null"},
    {"instruction": "x", "input": "", "output": "   "},  # empty_output
    {"instruction": "", "input": "", "output": "y"},  # empty_turn
    {"instruction": 3, "output": "y"},  # wrong_type
    {"instruction": "x", "input": ["a"], "output": "y"},  # wrong_type
    {"instruction": "x", "output": "y", "system": "Be brief."},  # a system message: the record path
    {"instruction": "x", "output": "y", "system": "  "},  # a blank one: none
    {"instruction": "x", "output": "y", "system": 5},  # wrong_type
    {"instruction": "a lone \ud800 surrogate", "output": "y"},  # invalid_utf8
    {"instruction": "x", "output": "<think>hm</think>y"},  # a reasoning shape: the record path
    {"instruction": "x <|im_start|> y", "output": "z"},  # a control token: special_token_in_content
    {"instruction": "x", "output": "y", "conversations": []},  # format_mismatch (a ranking record's keys)
    {"instruction": "x", "output": "y", "label": True},  # keys of another format, still Alpaca
    {"instruction": "x", "output": "y", "response": "ignored", "extra": 1},
    "not an object",
    {"instruction": "naïve\u3000café 🤖 %s %% {x}", "input": "é", "output": "ünïcode\u2028words"},
    {"instruction": "tab\tand\x0bvertical", "output": "NUL\x00in text"},
]


def write_json(path: Path, records: list[object]) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=True), encoding="utf-8")  # (\ud800 stays an escape)
    return path


def expand(items: list) -> list:
    return [r for it in items for r in ([it.conversation(k) for k in range(len(it))] if isinstance(it, FlatRun)
                                        else [it])]


@pytest.fixture
def odd_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "odd.json", ODD_RECORDS * 3)


@pytest.mark.parametrize("run", [1, 2, 5, 256])
def test_runs_are_the_records(odd_file, tmp_path, monkeypatch, run):
    """With ``flat=True`` the reader gives every record it gives without, in order, plain ones in runs (cut at
    FLAT_RUN records), with the same doc_ids and indexes, across files and with a column map or a forced format."""
    monkeypatch.setattr(formats, "FLAT_RUN", run)
    lines = tmp_path / "more.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in [*ODD_RECORDS[:5], "{broken"]), encoding="utf-8")
    paths = [odd_file, EXAMPLES / "alpaca_demo.json", lines, odd_file]
    for kw in ({}, {"fmt": "alpaca"}, {"columns": {"instruction": "question"}, "first_doc_id": 7}):
        if "columns" in kw:  # the same records under another column name
            renamed = [{("question" if k == "instruction" else k): v for k, v in r.items()} if isinstance(r, dict)
                       else r for r in ODD_RECORDS]
            paths = [write_json(tmp_path / "renamed.json", renamed)]
        one, runs = list(RecordReader(paths, **kw)), list(RecordReader(paths, flat=True, **kw))
        assert expand(runs) == one
        plain = [it for it in runs if isinstance(it, FlatRun)]
        assert plain and all(0 < len(it) <= run for it in plain)
        assert sum(map(len, plain)) >= len(runs) - len(plain)  # most records are plain


def test_shared_alpaca_files_read_the_same():
    paths = sorted(SHARED_DATA.glob("alpaca_*.json"))
    if not paths:
        pytest.skip(f"no shared Alpaca data at {SHARED_DATA}")
    one, runs = RecordReader(paths), list(RecordReader(paths, flat=True))
    assert expand(runs) == list(one)
    assert sum(len(it) for it in runs if isinstance(it, FlatRun)) == len(expand(runs)) - 2  # 2 empty outputs


TEXT = st.lists(st.sampled_from([*SPACES[:12], "a", "é", "你", "🤖", "\x00", "%", "\ud800", "xyz", "<think>"]),
                max_size=12).map("".join)


@settings(deadline=None, max_examples=200)  # the first example may compile the kernel
@given(st.lists(st.tuples(TEXT, TEXT, TEXT), min_size=1, max_size=8))
def test_batch_digests_and_words_are_the_record_paths(records):
    ins, inps, outs = (list(c) for c in zip(*records, strict=True))
    run = FlatRun("a.json", 0, 0, ins, inps, outs)
    convs = [run.conversation(k) for k in range(len(run))]
    assert flat_digests(ins, inps, outs).tobytes() == b"".join(map(digest, convs))
    prompt, response = flat_words(ins, inps, outs)
    assert [(p, r, 2) for p, r in zip(prompt.tolist(), response.tolist(), strict=True)] == list(map(words, convs))


@settings(deadline=None)
@given(st.lists(st.text(), max_size=10))
def test_count_words_each_is_str_split(texts):
    long = [t * 40 for t in texts]  # the kernel's side for count_words too
    assert count_words_each(texts).tolist() == [len(t.split()) for t in texts]
    assert count_words_each(long).tolist() == [len(t.split()) for t in long]


@pytest.mark.parametrize("template", ["chatml", "llama3", "alpaca", "tulu", "mistral"])
def test_batch_render_is_the_record_paths(template):
    """Each shape's records assembled at once (paste or trim) are the texts and segments the template renders."""
    tok = load_tokenizer(DEMO_TOKENIZER)
    tpl = resolve_template(template, tok)
    run = FlatRun("a.json", 100, 0, ["Add", "", "  Trim me ", "x"], ["2 3", "in", "", "é\n"], ["5", " y", "ok ", "z"])
    for k in range(len(run)):
        got = tpl.assembly_of(run.conversation(k))
        assert got is not None
        fixed, slots, asm = got
        values = [(run.instructions, run.inputs, run.outputs)[flat._COLUMN[s]][k] for s in slots]
        texts, lengths = asm.assemble_all(fixed, [[v] for v in values])
        r = tpl.render(run.conversation(k, doc_id=1))  # a checked doc_id: Jinja's render
        assert texts == [r.text] and lengths[0].tolist() == r.seg_lengths.tolist()
        assert asm.seg_roles.tolist() == r.seg_roles.tolist()


def outputs(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("build_seconds")
    return {**files, "manifest.json": json.dumps(manifest, sort_keys=True).encode()}


def test_columnar_builds_are_byte_identical(odd_file, tmp_path, monkeypatch):
    """Builds that take the columnar path write the bytes of builds that take every record one by one, under
    templates that paste, trim or take an input field, with runs cut inside batches and batches inside runs."""
    taken = []
    add = FlatMapper.add
    monkeypatch.setattr(FlatMapper, "add", lambda self, run, first: (taken.append(len(run)), add(self, run, first)))
    monkeypatch.setattr(formats, "FLAT_RUN", 5)
    inputs = [odd_file, EXAMPLES / "alpaca_demo.json", ROOT / "tests" / "bad_inputs" / "empty_output.jsonl"]
    applies = FlatMapper.applies
    cases = [("chatml", {"batch_size": 7}), ("llama3", {}), ("alpaca", {"overlong": "truncate"}),
             ("tokenizer", {"seq_len": 96}), ("chatml", {"dedupe": True})]
    for n, (template, kw) in enumerate(cases):
        built = []
        for columnar in (True, False):
            monkeypatch.setattr(FlatMapper, "applies", staticmethod(
                lambda spec, tpl, columnar=columnar: columnar and applies(spec, tpl)))
            out = tmp_path / f"{n}-{columnar}"
            build(inputs, out, tokenizer=DEMO_TOKENIZER, template=template, **{"seq_len": 512, **kw})
            built.append(outputs(out))
        assert built[0] == built[1], template
    if not taken:
        pytest.skip("packer/pipeline/part.py does not route FlatRun records to FlatMapper yet (issue 28's hook)")
    assert sum(taken) > 100


def test_checked_records_check_the_batch_assembly(odd_file, tmp_path, monkeypatch):
    """The records :func:`checked` picks are rendered by Jinja on the columnar path too, and compared with the
    batch's assembly: a wrong one sends the build back to Jinja for every record (the output of a build without
    the mistake)."""
    notices: list[str] = []
    events = BuildEvents(on_notice=notices.append)
    build([odd_file], tmp_path / "ref", tokenizer=DEMO_TOKENIZER, template="chatml", seq_len=512)
    assemble_all = _Assembly.assemble_all

    def wrong(self, fixed, columns):
        texts, lengths = assemble_all(self, fixed, columns)
        return [t.replace("\n", " ", 1) for t in texts], lengths

    monkeypatch.setattr(_Assembly, "assemble_all", wrong)
    build([odd_file], tmp_path / "o", tokenizer=DEMO_TOKENIZER, template="chatml", seq_len=512, events=events)
    if not any("assembled" in n for n in notices):
        pytest.skip("packer/pipeline/part.py does not route FlatRun records to FlatMapper yet (issue 28's hook)")
    assert any("building again with every record rendered by the template" in n for n in notices), notices
    assert outputs(tmp_path / "o") == outputs(tmp_path / "ref")


def test_rejections_on_the_columnar_path_are_counted(odd_file, tmp_path):
    """Every record is packed or rejected with its reason, whichever path took it."""
    manifest = build([odd_file], tmp_path / "o", tokenizer=DEMO_TOKENIZER, template="chatml", seq_len=512)
    c = manifest["counts"]
    assert c["records"] == len(ODD_RECORDS) * 3 == c["packed"] + sum(c["rejected"].values())
    assert set(c["rejected"]) >= {"empty_output", "empty_turn", "wrong_type", "invalid_utf8", "format_mismatch",
                                  "special_token_in_content", "not_an_object"}
