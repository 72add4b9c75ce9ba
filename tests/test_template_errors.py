"""A chat template's faults are the template's (issue 24, item 7): one line naming its file, never "a bug
in packer"; bounded in time (PACKER_TEMPLATE_TIMEOUT) and size (PACKER_TEMPLATE_MAX_CHARS). A template
broken for every record fails the build before anything is written; one that faults on a record's content
rejects that record (template_error)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from packer import build
from packer.cli import main
from packer.read.records import BuildError

from .helpers import DEMO_TOKENIZER

#: renders every message as it is (a fault, where there is one, comes before)
_PLAIN = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"


def _tokenizer(tmp_path: Path, template: str, *, jinja_file: bool = False) -> Path:
    """The demo tokenizer, copied, with ``template`` as its chat template (in tokenizer_config.json, or in a
    chat_template.jinja beside it)."""
    d = tmp_path / "tok"
    shutil.copytree(DEMO_TOKENIZER, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    if jinja_file:
        del cfg["chat_template"]
        (d / "chat_template.jinja").write_text(template)
    else:
        cfg["chat_template"] = template
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


def _data(tmp_path: Path, contents: list[str]) -> Path:
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps({"messages": [{"role": "user", "content": c},
                                                  {"role": "assistant", "content": "fine"}]}) + "\n"
                         for c in contents))
    return p


_BROKEN = {
    "include": ("{% include 'header.jinja' %}" + _PLAIN, "includes, imports or extends 'header.jinja'"),
    "import": ("{% import 'macros.jinja' as m %}" + _PLAIN, "includes, imports or extends 'macros.jinja'"),
    "extends": ("{% extends 'base.jinja' %}", "includes, imports or extends 'base.jinja'"),
    "recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}" + _PLAIN, "calls itself without end"),
    "repeat": ("{{ 'x' * 1000000000 }}" + _PLAIN, "PACKER_TEMPLATE_MAX_CHARS"),
    "doubling": ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
                 + _PLAIN, "PACKER_TEMPLATE_MAX_CHARS"),
    "center": ("{{ 'x' | center(1000000000) }}" + _PLAIN, "PACKER_TEMPLATE_MAX_CHARS"),
    "format": ("{{ '%0999999999d' % 1 }}" + _PLAIN, "PACKER_TEMPLATE_MAX_CHARS"),
    "str_format": ("{{ '{:0999999999}'.format(1) }}" + _PLAIN, "PACKER_TEMPLATE_MAX_CHARS"),
    "power": ("{{ 7 ** 999999999 }}" + _PLAIN, "PACKER_TEMPLATE_MAX_CHARS"),
    "type_error": ("{{ messages | length + 'x' }}" + _PLAIN, "fails: TypeError"),
    "slow": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}" + _PLAIN,
             "ran for more than 0.5 s"),
    "slow_output": ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}" + _PLAIN,
                    "ran for more than 0.5 s"),
}


@pytest.mark.parametrize("case", sorted(_BROKEN))
def test_a_template_broken_for_every_record_fails_the_build_naming_its_file(tmp_path, monkeypatch, case):
    monkeypatch.setenv("PACKER_TEMPLATE_TIMEOUT", "0.5")
    template, what = _BROKEN[case]
    tok = _tokenizer(tmp_path, template)
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["build", str(_data(tmp_path, ["Hi"])), "--tokenizer", str(tok),
                                    "-o", str(tmp_path / "out")])
    assert time.perf_counter() - t0 < 30
    assert res.exit_code == 1, res.output
    assert res.stderr.count("\n") == 1, res.stderr
    assert str(tok / "tokenizer_config.json") in res.stderr and what in res.stderr
    assert "an error in the template, not in packer" in res.stderr and "bug in packer" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_template_in_chat_template_jinja_is_named_so(tmp_path):
    tok = _tokenizer(tmp_path, "{% include 'x.jinja' %}" + _PLAIN, jinja_file=True)
    with pytest.raises(BuildError, match=r"chat_template\.jinja: the chat template includes"):
        build([_data(tmp_path, ["Hi"])], tmp_path / "out", tokenizer=tok)


def test_a_template_that_faults_on_a_records_content_rejects_that_record(tmp_path, monkeypatch):
    monkeypatch.setenv("PACKER_TEMPLATE_TIMEOUT", "0.5")
    template = ("{% for m in messages %}{% if m.content == 'include me' %}{% include 'x.jinja' %}{% endif %}"
                "{% if m.content == 'slow' %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                "{% endfor %}{% endif %}{% if m.content == 'recurse' %}{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}"
                "{{ f(0) }}{% endif %}{% endfor %}" + _PLAIN)
    tok = _tokenizer(tmp_path, template)
    m = build([_data(tmp_path, ["Hi", "include me", "slow", "recurse", "Hello"])], tmp_path / "out", tokenizer=tok)
    assert m["counts"]["packed"] == 2 and m["counts"]["rejected"] == {"template_error": 3}
    lines = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    why = {line["record"]: json.dumps(line) for line in lines}
    cfg = str(tok / "tokenizer_config.json")
    assert cfg in why[1] and "includes, imports or extends 'x.jinja'" in why[1]
    assert cfg in why[2] and "ran for more than 0.5 s" in why[2] and "PACKER_TEMPLATE_TIMEOUT" in why[2]
    assert cfg in why[3] and "calls itself without end" in why[3]


def test_a_long_record_is_not_refused_by_the_size_cap(tmp_path, monkeypatch):
    # the cap grows with the record: a template that writes a long record's content is fine
    monkeypatch.setenv("PACKER_TEMPLATE_MAX_CHARS", "1000")
    tok = _tokenizer(tmp_path, "{% set twice = messages[0].content * 2 %}{{ '' if twice else '' }}" + _PLAIN)
    m = build([_data(tmp_path, ["a " * 2000])], tmp_path / "out", tokenizer=tok, seq_len=100_000)
    assert m["counts"]["packed"] == 1
    # ... while one that repeats it further is refused
    tok2 = _tokenizer(tmp_path / "b", "{% set more = messages[0].content * 20 %}{{ '' if more else '' }}" + _PLAIN)
    m = build([_data(tmp_path, ["a " * 2000, "Hi"])], tmp_path / "out2", tokenizer=tok2, seq_len=100_000)
    assert m["counts"]["rejected"] == {"template_error": 1}
    assert "PACKER_TEMPLATE_MAX_CHARS" in (tmp_path / "out2" / "rejected.jsonl").read_text()


def test_a_wrong_bound_setting_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PACKER_TEMPLATE_TIMEOUT", "soon")
    with pytest.raises(BuildError, match=r"PACKER_TEMPLATE_TIMEOUT='soon': give a number greater than 0"):
        build([_data(tmp_path, ["Hi"])], tmp_path / "out", tokenizer=DEMO_TOKENIZER)
