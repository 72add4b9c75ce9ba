"""One home per option: the ``packer build`` flags, the recipe keys, ``build()``'s keywords and the README's
option table all come from :class:`packer.options.BuildOptions`, and agree."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import re
from pathlib import Path

import pytest

from packer import build
from packer.cli import build_cmd
from packer.options import ALIASES, BuildOptions, OptionError, cli_options, options
from packer.recipe import load_recipe, recipe_keys

from .helpers import DEMO_TOKENIZER, EXAMPLES, output_files

ROOT = Path(__file__).resolve().parent.parent
#: the flags of `packer build` that are not build settings
NOT_SETTINGS = {"inputs", "recipe", "output", "quiet", "debug"}


def _sample(o):
    """A valid value of option ``o`` other than its default: (command-line words, recipe TOML value, value)."""
    if o.kind == "bool":
        return [o.flag], "true", True
    if o.choices:
        v = next(c for c in reversed(o.choices) if c != o.default)
        return [o.flag, v], f'"{v}"', v
    if o.kind == "path":
        return [o.flag, "/abs/dir"], '"/abs/dir"', "/abs/dir"
    if o.kind == "int":
        v = (o.default or 0) + 3
        return [o.flag, str(v)], str(v), v
    if o.kind == "float":
        v = 0.25 if o.maximum == 1 or o.name == "eval_fraction" else 2.5
        return [o.flag, str(v)], str(v), v
    if o.kind == "strings":
        return [o.flag, "a=b", o.flag, "c=d"], '["a=b", "c=d"]', ("a=b", "c=d")
    if o.kind == "columns":
        return [o.flag, "instruction=q"], '{ instruction = "q" }', None  # the CLI's pairs, the recipe's table
    raise AssertionError(f"no sample for {o.name} ({o.kind})")


def test_the_command_line_flags_are_the_options():
    params = {p.name: p for p in build_cmd.params}
    assert set(params) - NOT_SETTINGS == {o.name for o in cli_options()}
    for o in cli_options():
        p = params[o.name]
        assert p.opts == [o.flag], o.name
        assert p.help.startswith(o.help), o.name
        if o.kind not in ("bool", "weights", "strings"):
            assert p.default == o.default, o.name
        if o.choices:
            assert tuple(p.type.choices) == o.choices, o.name


@pytest.mark.parametrize("o", list(cli_options()), ids=lambda o: o.name)
def test_every_flag_is_a_recipe_key_of_the_same_name(o, tmp_path):
    """``--seq-len 4099`` on the command line and ``seq_len = 4099`` in a recipe give the build the same value."""
    assert o.name in recipe_keys()
    if o.kind == "weights":  # --mix: a flag that makes the INPUTS PATH:WEIGHT; a recipe gives the weights
        recipe = tmp_path / "r.toml"
        recipe.write_text('tokenizer = "t"\nmix = [1.0, 0.5]\n[[inputs]]\npath = "a"\n[[inputs]]\npath = "b"\n')
        assert load_recipe(recipe)["mix"] == (1.0, 0.5)
        ctx = build_cmd.make_context("build", ["--mix", "a:1.0", "b:0.5"])
        assert ctx.params["mix"] is True
        return
    words, toml, value = _sample(o)
    ctx = build_cmd.make_context("build", [*words, "in.json"])
    recipe = tmp_path / "r.toml"
    tok = "" if o.name == "tokenizer" else 'tokenizer = "/t"\n'
    recipe.write_text(f'{tok}{o.name} = {toml}\n[[inputs]]\npath = "a"\n')
    from_recipe = load_recipe(recipe)[o.name]
    from_cli = ctx.params[o.name]
    if o.kind == "columns":
        assert dict(from_cli) == from_recipe == {"instruction": "q"}
    else:
        assert from_cli == from_recipe == value, o.name
    # and both are a valid BuildOptions value
    assert getattr(BuildOptions(**{o.name: from_recipe}), o.name) == from_recipe


def test_the_readme_table_is_the_options():
    spec = importlib.util.spec_from_file_location("options_table", ROOT / "scripts" / "options_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert table.with_table(readme) == readme, "the README's option table is stale: python scripts/options_table.py"
    for o in cli_options():
        assert f"| `{o.flag}" in table.table()


def test_options_object_and_keywords_build_the_same(tmp_path):
    data = [EXAMPLES / "alpaca_demo.json"]
    opts = BuildOptions(tokenizer=DEMO_TOKENIZER, seq_len=256, shard_size=0.01, dedupe=True)
    build(data, tmp_path / "a", options=opts)
    build(data, tmp_path / "b", tokenizer=DEMO_TOKENIZER, seq_len=256, shard_size=0.01, dedupe=True)
    # keywords beside options= override its fields
    build(data, tmp_path / "c", options=dataclasses.replace(opts, seq_len=999), seq_len=256)
    assert output_files(tmp_path / "a") == output_files(tmp_path / "b") == output_files(tmp_path / "c")


def test_older_keyword_names_still_work_with_a_deprecation_warning(tmp_path):
    data = [EXAMPLES / "alpaca_demo.json"]
    with pytest.warns(DeprecationWarning) as caught:
        build(data, tmp_path / "old", tokenizer=DEMO_TOKENIZER, seq_len=256, shard_bytes=20_000, fmt="alpaca",
              strategies=["p=instruction"])
    assert {str(w.message).split("'")[1] for w in caught} == {"shard_bytes", "fmt", "strategies"}
    assert "build(): 'shard_bytes' is deprecated; use 'shard_size' (in MiB)" in [str(w.message) for w in caught]
    build(data, tmp_path / "new", tokenizer=DEMO_TOKENIZER, seq_len=256, shard_size=20_000 / 2**20, format="alpaca",
          strategy=["p=instruction"])
    assert output_files(tmp_path / "old") == output_files(tmp_path / "new")
    assert set(ALIASES) == {"fmt", "strategies", "shard_bytes", "part_bytes"}


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"seq_lenn": 5}, "unknown option 'seq_lenn' (did you mean 'seq_len'?)"),
    ({"seq_len": 4096, "fmt": "alpaca", "format": "alpaca"}, "given twice"),
])
def test_an_unknown_keyword_names_the_closest_option(kwargs, error, tmp_path):
    with pytest.raises(TypeError, match=re.escape(error)):
        with pytest.warns(DeprecationWarning) if "fmt" in kwargs else _nothing():
            build([EXAMPLES / "alpaca_demo.json"], tmp_path / "o", tokenizer=DEMO_TOKENIZER, **kwargs)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"seq_len": 1}, "--seq-len must be at least 2, not 1"),
    ({"seq_len": "4096"}, "--seq-len must be an integer, not '4096'"),
    ({"packing": "best"}, "unknown --packing 'best'; choose bfd|ffd|nextfit"),
    ({"max_rejected": 1.5}, "--max-rejected must be at most 1, not 1.5"),
    ({"shard_size": 0}, "--shard-size must be above 0, not 0"),
    ({"workers": 0}, "--workers must be at least 1, not 0"),
    ({"strategy": "p=instruction"}, "--strategy must be a list of strings, not 'p=instruction'"),
    ({"dedupe": "yes"}, "--dedupe must be true or false, not 'yes'"),
])
def test_a_wrong_value_is_an_option_error_before_anything_is_read(kwargs, error, tmp_path):
    with pytest.raises(OptionError) as e:
        build([tmp_path / "missing.json"], tmp_path / "o", tokenizer=DEMO_TOKENIZER, **kwargs)
    assert str(e.value) == error
    assert not (tmp_path / "o").exists()


def test_every_field_has_help_and_a_kind():
    fields = {f.name for f in dataclasses.fields(BuildOptions)}
    assert fields == {o.name for o in options()}
    for o in options():
        assert o.help and o.kind in ("str", "int", "float", "bool", "path", "strings", "columns", "weights", "cuts")
        assert not (o.choices and o.default is not None and o.default not in o.choices), o.name
    # help(BuildOptions) shows every field with its default
    assert all(f"``{o.name}`` ({o.kind}, default " in help_text() for o in options())


def help_text() -> str:
    import pydoc

    return pydoc.render_doc(BuildOptions, renderer=pydoc.plaintext)


def test_a_build_from_python_warns_through_logging(tmp_path, caplog):
    """No events hook: a build with more than 5% rejected warns on the ``packer`` logger."""
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "hi", "output": "there"}\n{"instruction": "x", "output": ""}\n')
    with caplog.at_level(logging.WARNING, logger="packer"):
        build([data], tmp_path / "o", tokenizer=DEMO_TOKENIZER, seq_len=256)
    assert any(r.name == "packer" and r.levelno == logging.WARNING and "rejected" in r.getMessage()
               for r in caplog.records), caplog.text


def test_the_command_line_shows_the_packer_loggers_warnings(tmp_path, monkeypatch):
    """A library notice sent to the ``packer`` logger (not to the build's events) is a ``warning:`` line of the
    command on stderr, once."""
    from click.testing import CliRunner

    from packer.cli import main

    B = importlib.import_module("packer.pipeline.build")

    checked = B.check_inputs

    def check_and_warn(*args, **kwargs):
        logging.getLogger("packer").warning("a library notice")
        return checked(*args, **kwargs)

    monkeypatch.setattr(B, "check_inputs", check_and_warn)
    res = CliRunner().invoke(main, ["build", "-q", str(EXAMPLES / "alpaca_demo.json"), "-o", str(tmp_path / "o"),
                                    "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "256"])
    assert res.exit_code == 0, res.output
    assert res.output.count("warning: a library notice") == 1, res.output
