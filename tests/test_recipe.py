"""Recipe files (``packer build --recipe recipe.toml``, :func:`packer.recipe.load_recipe`): the same build as the
command-line flags, paths read from the recipe's folder, command-line options over the recipe's, one-line errors."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from packer import build
from packer.cli import main
from packer.recipe import RecipeError, load_recipe

from .helpers import DEMO_TOKENIZER, EXAMPLES, output_files


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "recipes"
    d.mkdir()
    shutil.copy(EXAMPLES / "alpaca_demo.json", d / "a.json")
    shutil.copy(EXAMPLES / "alpaca_demo.json", d / "b.json")
    return d


def write(folder, body: str, name: str = "recipe.toml"):
    path = folder / name
    path.write_text(f'tokenizer = "{DEMO_TOKENIZER.as_posix()}"\n' + body)
    return path


def run(*args: str):
    return CliRunner().invoke(main, ["build", "-q", *map(str, args)])


BODY = 'output = "out"\nseq_len = 512\nseed = 1\neval_fraction = 0.1\nshard_size = 1\n' \
       '[[inputs]]\npath = "a.json"\n[[inputs]]\npath = "b.json"\n'


def test_recipe_build_equals_the_flags(folder):
    res = run("--recipe", write(folder, BODY))
    assert res.exit_code == 0, res.output
    flags = run(folder / "a.json", folder / "b.json", "-o", folder / "flags", "--tokenizer", DEMO_TOKENIZER,
                "--seq-len", "512", "--seed", "1", "--eval-fraction", "0.1", "--shard-size", "1")
    assert flags.exit_code == 0, flags.output
    assert output_files(folder / "out") == output_files(folder / "flags")


def test_paths_are_read_from_the_recipe_folder(folder, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    write(folder, BODY)
    kwargs = load_recipe("recipes/recipe.toml")
    assert kwargs["inputs"] == ["recipes/a.json", "recipes/b.json"] and kwargs["output"] == "recipes/out"
    assert kwargs["tokenizer"] == DEMO_TOKENIZER.as_posix() and kwargs["shard_size"] == 1


def test_command_line_options_override_the_recipe(folder):
    res = run("--recipe", write(folder, BODY), "--seq-len", "256", "-o", folder / "o2", "--seed", "1")
    assert res.exit_code == 0, res.output
    flags = run(folder / "a.json", folder / "b.json", "-o", folder / "flags", "--tokenizer", DEMO_TOKENIZER,
                "--seq-len", "256", "--seed", "1", "--eval-fraction", "0.1", "--shard-size", "1")
    assert flags.exit_code == 0, flags.output
    assert output_files(folder / "o2") == output_files(folder / "flags")
    assert not (folder / "out").exists()


def test_weights_match_build_mix(folder):
    body = 'output = "out"\nseq_len = 512\nseed = 3\nmix = [1, 0.3]\n[[inputs]]\npath = "a.json"\n' \
           '[[inputs]]\npath = "b.json"\n'
    kwargs = load_recipe(write(folder, body))
    assert kwargs["mix"] == (1.0, 0.3)
    assert run("--recipe", folder / "recipe.toml").exit_code == 0
    build([folder / "a.json", folder / "b.json"], folder / "api", tokenizer=DEMO_TOKENIZER, seq_len=512, seed=3,
          mix=[1.0, 0.3])
    assert output_files(folder / "out") == output_files(folder / "api")


def test_one_column_map_for_all_inputs(folder):
    cols = 'columns = { instruction = "q", output = "a" }\n'
    same = f'[[inputs]]\npath = "a.json"\n{cols}[[inputs]]\npath = "b.json"\n{cols}'
    assert load_recipe(write(folder, same))["columns"] == {"instruction": "q", "output": "a"}
    differ = f'[[inputs]]\npath = "a.json"\n{cols}[[inputs]]\npath = "b.json"\ncolumns = {{ output = "x" }}\n'
    with pytest.raises(RecipeError, match="inputs #2: columns differ from inputs #1"):
        load_recipe(write(folder, differ))


INPUT = '[[inputs]]\npath = "a.json"\n'


@pytest.mark.parametrize(("body", "what"), [
    ('seq_ln = 512\n' + INPUT, "unknown key 'seq_ln' (did you mean 'seq_len'?)"),
    ('seq_len = "512"\n' + INPUT, "seq_len must be an integer"),
    ('seq_len = 1\n' + INPUT, "seq_len must be at least 2, not 1"),
    ('dedupe = 1\n' + INPUT, "dedupe must be true or false"),
    ('packing = "best"\n' + INPUT, "unknown packing 'best'; choose bfd|ffd|nextfit"),
    ('strategy = "a=b"\n' + INPUT, "strategy must be a list of strings"),
    ('mix = [1.0]\n' + INPUT + INPUT, "mix gives 1 weights for 2 inputs"),
    ('mix = [1.0]\n[[inputs]]\npath = "a.json"\nweight = 1.0\n', "give the weights once"),
    ('[[inputs]]\npth = "a.json"\n', "inputs #1: unknown key 'pth' (did you mean 'path'?)"),
    ('[[inputs]]\npath = "a.json"\nweight = "x"\n', "inputs #1: weight must be a number"),
    ('[[inputs]]\npath = "a.json"\nweight = -1\n', "weight must be a number >= 0"),
    ('seed = 1\n', "missing key 'inputs'"),
    ('[[inputs]]\npath = "a.json"\nweight = 1.0\n[[inputs]]\npath = "b.json"\n', "inputs #2 have no weight"),
    ('seq_len = [\n', "not valid TOML"),
])
def test_errors_are_one_line_naming_file_and_key(folder, body, what):
    path = write(folder, body)
    res = run("--recipe", path)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and what in lines[0] and "recipe.toml" in lines[0], \
        res.output


def test_missing_tokenizer_and_file_and_inputs_beside_it(folder):
    (folder / "r.toml").write_text(INPUT)
    for args, what in (
        (["--recipe", folder / "r.toml"], "r.toml: missing key 'tokenizer'"),
        (["--recipe", folder / "none.toml"], "none.toml: no such recipe file"),
        (["--recipe", write(folder, INPUT), folder / "b.json"], "not as INPUTS beside it"),
        (["--recipe", write(folder, INPUT), "--mix", f"{folder / 'b.json'}:1"], "not as --mix beside it"),
    ):
        res = run(*args)
        assert res.exit_code == 2, res.output
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and what in lines[0], res.output
    assert run().exit_code == 2  # neither INPUTS nor --recipe: click's usage error


def test_older_names_still_read_with_a_warning(folder):
    """The recipe keys of before BuildOptions (``strategies``, a ``weight`` on each input) still build the same
    output, each with a DeprecationWarning (a warning line on the command line)."""
    old = 'output = "old"\nseq_len = 512\nseed = 3\nstrategies = ["p=instruction"]\n' \
          '[[inputs]]\npath = "a.json"\nweight = 1\n[[inputs]]\npath = "b.json"\nweight = 0.3\n'
    new = 'output = "new"\nseq_len = 512\nseed = 3\nstrategy = ["p=instruction"]\nmix = [1, 0.3]\n' \
          '[[inputs]]\npath = "a.json"\n[[inputs]]\npath = "b.json"\n'
    with pytest.warns(DeprecationWarning) as caught:
        kwargs = load_recipe(write(folder, old, "old.toml"))
    said = " ".join(str(w.message) for w in caught)
    assert "'strategies' is deprecated; use 'strategy'" in said and "mix = [1.0, 0.3]" in said
    assert kwargs["strategy"] == ("p=instruction",) and kwargs["mix"] == (1.0, 0.3)
    res = run("--recipe", folder / "old.toml")
    assert res.exit_code == 0 and res.output.count("warning:") == 2 and "deprecated" in res.output, res.output
    assert run("--recipe", write(folder, new, "new.toml")).exit_code == 0
    assert output_files(folder / "old") == output_files(folder / "new")
