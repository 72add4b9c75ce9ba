"""What a newcomer tripped over (issue 24, item 8): show from another folder, -q, inspect --html, the demo
script's next steps, the training snippets of README and docs as pasted, and the tokenizer-loader warning."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from packer import build
from packer.cli import main

from .helpers import DEMO_INPUTS, DEMO_TOKENIZER, ROOT

# -- packer show finds the tokenizer from any folder ---------------------------------------------------------


def _project(tmp_path: Path) -> Path:
    """A project folder with its own tokenizer copy, built from inside it with relative paths (as typed)."""
    proj = tmp_path / "proj"
    shutil.copytree(DEMO_TOKENIZER, proj / "tokenizers" / "demo")
    shutil.copy(DEMO_INPUTS[0], proj / "data.json")
    return proj


def _show(out: Path) -> str:
    res = CliRunner().invoke(main, ["show", str(out), "--row", "0"])
    assert res.exit_code == 0, res.output
    return res.stdout


def test_show_finds_a_relative_tokenizer_from_another_folder(tmp_path, monkeypatch):
    proj = _project(tmp_path)
    monkeypatch.chdir(proj)
    res = CliRunner().invoke(main, ["build", "data.json", "--tokenizer", "tokenizers/demo", "-o", "shards",
                                    "--seq-len", "512", "-q"])
    assert res.exit_code == 0, res.output
    m = json.loads((proj / "shards" / "manifest.json").read_text())
    assert m["tokenizer"]["source"] == "tokenizers/demo"  # as typed
    assert m["tokenizer"]["resolved"] == str((proj / "tokenizers" / "demo").resolve())
    at_home = _show(proj / "shards")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _show(proj / "shards") == at_home and "cannot load the tokenizer" not in at_home
    # the project moved as a whole: the recorded absolute path is gone, the folder above the output has it
    moved = proj.rename(tmp_path / "moved")
    text = _show(moved / "shards")
    assert text == at_home, text[:300]


def test_the_build_key_does_not_hold_the_resolved_path(tmp_path, monkeypatch):
    # the same tokenizer reached by another path is the same build: nothing to do
    proj = _project(tmp_path)
    monkeypatch.chdir(proj)
    build([proj / "data.json"], proj / "shards", tokenizer="tokenizers/demo", seq_len=512)
    notices: list[str] = []
    from packer.pipeline.build import BuildEvents

    build([proj / "data.json"], proj / "shards", tokenizer=proj / "tokenizers" / "demo", seq_len=512,
          events=BuildEvents(on_notice=notices.append))
    assert any("nothing to do" in n for n in notices), notices


# -- quiet: nothing on stdout but what was asked ---------------------------------------------------------------


def test_quiet_build_prints_nothing(tmp_path):
    res = CliRunner().invoke(main, ["build", *map(str, DEMO_INPUTS), "--tokenizer", str(DEMO_TOKENIZER), "-o",
                                    str(tmp_path / "o"), "--seq-len", "512", "-q"])
    assert res.exit_code == 0, res.output
    assert res.stdout == "" and res.stderr == ""
    assert (tmp_path / "o" / "manifest.json").is_file()
    # without -q, the summary
    res = CliRunner().invoke(main, ["build", *map(str, DEMO_INPUTS), "--tokenizer", str(DEMO_TOKENIZER), "-o",
                                    str(tmp_path / "o2"), "--seq-len", "512"])
    assert "records read" in res.stdout


def test_quiet_build_still_says_its_warnings_and_errors(tmp_path):
    res = CliRunner().invoke(main, ["build", str(DEMO_INPUTS[0]), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0 and res.stdout == ""
    assert "warning: no --tokenizer given" in res.stderr  # the demo tokenizer
    res = CliRunner().invoke(main, ["build", str(tmp_path / "missing.json"), "-o", str(tmp_path / "p"), "-q"])
    assert res.exit_code != 0 and res.stdout == "" and res.stderr


def test_inspect_html_writes_the_page_and_leaves_stdout_alone(demo_output, tmp_path):
    page = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["inspect", str(demo_output), "--html", str(page)])
    assert res.exit_code == 0, res.output
    assert res.stdout == "" and res.stderr.strip() == f"wrote {page}"
    assert page.read_text().startswith("<!DOCTYPE html>")
    res = CliRunner().invoke(main, ["inspect", str(demo_output), "--json", "--html", str(tmp_path / "s.html")])
    assert json.loads(res.stdout)["strategies"]  # --json still prints what it was asked for


# -- scripts/demo.sh says how to run packer ------------------------------------------------------------------


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_demo_script_ends_with_the_next_commands(tmp_path):
    # a virtual environment of stubs: pip does nothing, packer says what it was asked
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _stub(venv / "bin" / "python", "exit 0")
    _stub(venv / "bin" / "packer", 'echo "packer $*"')
    res = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True,
                         env={**os.environ, "VENV": str(venv)}, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("packer build examples/alpaca_demo.json")
    assert f"  {venv}/bin/packer inspect demo-shards" in lines
    assert f"source {venv}/bin/activate" in res.stdout and "not on your PATH" in res.stdout


def test_readme_says_how_to_run_packer_after_the_demo():
    text = (ROOT / "README.md").read_text()
    demo = text.index("bash scripts/demo.sh")
    assert ".venv/bin/packer" in text[demo : demo + 600] and "source .venv/bin/activate" in text[demo : demo + 600]


# -- the runnable snippets of README and docs run as pasted ------------------------------------------------------------


def runnable_snippets(text: str) -> list[str]:
    """The python blocks of ``text`` right after a ``<!-- runnable ... -->`` line."""
    return re.findall(r"<!-- runnable[^\n]*-->\n```python\n(.*?)\n```", text, re.DOTALL)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # num_workers=4 on a small machine
@pytest.mark.parametrize("page", ["README.md", "docs/training.md"])
def test_the_training_snippets_run_as_pasted(page, demo_output, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch", reason="torch not installed (extra packer[torch])")
    transformers = pytest.importorskip("transformers", reason="transformers not installed (extra packer[hf])")
    snippets = runnable_snippets((ROOT / page).read_text())
    assert any("PackedDataset" in s for s in snippets), f"{page}: the PackedDataset snippet is marked runnable"
    shutil.copytree(demo_output, tmp_path / "shards")
    monkeypatch.chdir(tmp_path)
    vocab = json.loads((demo_output / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024)
    for dtype in (torch.float32, torch.bfloat16):  # the model's dtype, whatever it is
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa").to(dtype).eval()
        for code in snippets:
            scope = {"model": model}
            with torch.no_grad():
                exec(compile(code, page, "exec"), scope)  # the page's own code
            assert torch.isfinite(scope["loss"]), dtype


# -- the tokenizer-loader difference says what to do --------------------------------------------------------


@pytest.fixture
def loaders_differ(monkeypatch):
    """Builds with the demo tokenizer meet a difference between the two loaders (as Phi-3's under
    transformers 5), without loading transformers."""
    import packer.pipeline.part

    monkeypatch.setattr(packer.pipeline.part, "loaders_may_differ", lambda tok, byte_level: True)
    monkeypatch.setattr(packer.pipeline.part, "loader_difference",
                        lambda tok, texts: "3 of 64 texts tokenize differently, e.g. text 0 at token 5: ...")


def test_the_default_loader_warns_saying_which_stack_each_matches(tmp_path, loaders_differ):
    res = CliRunner().invoke(main, ["build", str(DEMO_INPUTS[0]), "--tokenizer", str(DEMO_TOKENIZER), "-o",
                                    str(tmp_path / "o"), "--seq-len", "512"])
    assert res.exit_code == 0, res.output
    warning = next(line for line in res.stderr.splitlines() if "other tokenizer loader" in line)
    assert warning.startswith("warning: the other tokenizer loader gives other ids: 3 of 64 texts")
    assert "--tokenizer-loader file, tokenizer.json as it is" in warning and "TGI" in warning
    assert "--tokenizer-loader transformers follows the installed transformers' AutoTokenizer" in warning
    assert "vLLM" in warning and "(--tokenizer-loader file|transformers), which also silences" in warning


@pytest.mark.parametrize("how", ["cli", "api"])
def test_a_chosen_loader_gets_one_info_line_not_a_warning(tmp_path, loaders_differ, how):
    if how == "api":
        from packer.pipeline.build import BuildEvents

        notices: list[str] = []
        infos: list[str] = []
        build([DEMO_INPUTS[0]], tmp_path / "o", tokenizer=DEMO_TOKENIZER, seq_len=512, tokenizer_loader="file",
              events=BuildEvents(on_notice=notices.append, on_info=infos.append))
        assert not [n for n in notices if "loader" in n] and len(infos) == 1
        assert infos[0].startswith("--tokenizer-loader file: the ids follow tokenizer.json as it is")
        return
    args = ["build", str(DEMO_INPUTS[0]), "--tokenizer", str(DEMO_TOKENIZER), "-o", str(tmp_path / "o"),
            "--seq-len", "512", "--tokenizer-loader", "file"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr
    notes = [line for line in res.stderr.splitlines() if "tokenizer-loader" in line]
    assert len(notes) == 1 and notes[0].startswith("note: --tokenizer-loader file: the ids follow")
    res = CliRunner().invoke(main, [*args[:5], str(tmp_path / "q"), *args[6:], "-q"])
    assert res.exit_code == 0 and res.stderr == "" and res.stdout == ""
