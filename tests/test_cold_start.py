"""Cold start: each command imports only what it needs.

``import packer`` costs nothing; ``packer --help``, ``inspect``, ``show`` and
``verify`` run without loading numba or packer's tokenizer-labelling and
packing stack (those cost ~0.5 s before the command does anything). Each
command runs in a fresh interpreter, which reports the modules loaded at exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import EXAMPLES, ROOT, SHARED_TOKENIZERS

#: loaded by a build only: numba and the modules that compile or load numba kernels, and torch
BUILD_ONLY = ("numba", "packer.tokens.tokenize", "packer.pipeline.pack", "packer.output.doctable",
              "packer.output.gather", "packer.pipeline.build", "torch")
#: ``--help`` needs none of the data stack either
DATA_STACK = ("numpy", "pyarrow", "tokenizers", "jinja2")

#: runs ``packer ARGS...`` in-process, then writes the names in sys.modules to the file argv[1]
_PROBE = """
import json, sys
path, args = sys.argv[1], sys.argv[2:]
from packer.cli import main
try:
    main(args, prog_name="packer", standalone_mode=False)
finally:
    with open(path, "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def loaded(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """Modules loaded by ``packer ARGS`` in a fresh interpreter (``env``: beside the environment), and its stdout."""
    report = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(report), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return set(json.loads(report.read_text())), done.stdout


def heavy(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` that were loaded (a package counts when any module of it was)."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def test_import_packer_loads_nothing_heavy(tmp_path):
    code = "import sys, packer; print(packer.__version__); print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", "import json; " + code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    version, modules = done.stdout.splitlines()
    assert version
    assert heavy(set(json.loads(modules)), BUILD_ONLY + DATA_STACK) == []


def test_public_names_still_import():
    # packer.build is the function, also after the command line imported the module that defines it
    code = (
        "import packer, packer.cli, packer.pipeline.build\n"
        "from packer import build, BuildError, load_tokenizer, __version__\n"
        "import sys\n"
        "assert callable(build) and build is packer.build and build.__module__ == 'packer.pipeline.build', build\n"
        "assert sys.modules['packer.pipeline.build'].build is build\n"
        "assert issubclass(BuildError, Exception) and load_tokenizer.__module__ == 'packer.tokens.loader'\n"
        "assert {'build', 'BuildError', 'load_tokenizer', 'PackedDataset', '__version__'} <= set(dir(packer))\n"
        "from packer.tokens.tokenize import TokenizerInfo, load_tokenizer as lt\n"
        "from packer.output.shards import ArrayTokens, gather_index\n"
        "assert lt is load_tokenizer and ArrayTokens.__module__ == 'packer.output.gather'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_help(tmp_path):
    modules, stdout = loaded(tmp_path, "--help")
    assert "Usage" in stdout
    assert heavy(modules, BUILD_ONLY + DATA_STACK) == []


@pytest.mark.parametrize("args", [["inspect"], ["verify"], ["show", "--row", "0"]], ids=lambda a: a[0])
def test_read_commands_do_not_load_the_build_stack(tmp_path, demo_output, args):
    modules, stdout = loaded(tmp_path, *args[:1], str(demo_output), *args[1:])
    assert stdout.strip()
    assert heavy(modules, BUILD_ONLY) == []


#: never needed to build shards: the training stack, and what pyarrow loads on some calls (pandas, to ask whether
#: an array is a pandas categorical; pyarrow.compute, for ``take``): ~0.3 s of a small build's start
NOT_FOR_A_BUILD = ("torch", "transformers", "datasets", "trl", "pandas", "pyarrow.compute")


@pytest.mark.parametrize("tokenizer", ["demo", "qwen2.5-instruct"])
def test_a_small_build_loads_only_what_it_uses(tmp_path, tokenizer):
    """A one-record build: nothing of :data:`NOT_FOR_A_BUILD`, and no numba (its kernels run as Python on inputs
    this small, :mod:`packer.jit`), in the default mode (the suite sets PACKER_JIT=numba)."""
    one = tmp_path / "one.json"
    one.write_text(json.dumps(json.loads((EXAMPLES / "alpaca_demo.json").read_text())[:1]))
    args = ["build", str(one), "-o", str(tmp_path / "out")]
    if tokenizer != "demo":
        if not (SHARED_TOKENIZERS / tokenizer / "tokenizer.json").is_file():
            pytest.skip(f"{tokenizer} not in {SHARED_TOKENIZERS}")
        args += ["--tokenizer", str(SHARED_TOKENIZERS / tokenizer)]
    modules, stdout = loaded(tmp_path, *args, env={"PACKER_JIT": "auto"})
    assert "packed" in stdout and json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["packed"] == 1
    assert heavy(modules, (*NOT_FOR_A_BUILD, "numba")) == []
    assert "packer.pipeline.build" in modules and "tokenizers" in modules  # it did build


def test_verify_says_what_it_checked(demo_output):
    from packer.inspect.verify import check_output, verify

    result = check_output(demo_output)
    manifest = json.loads((demo_output / "manifest.json").read_text())
    assert result.ok and result.problems == [] == verify(demo_output)
    assert result.shards == len(manifest["shards"])
    assert result.rows == manifest["packing"]["rows"]
    assert result.documents == manifest["counts"]["packed"]
    assert result.tokens == sum(s["tokens"] for s in manifest["shards"])
    assert result.hashes and not check_output(demo_output, hashes=False).hashes
    assert result.summary().startswith(f"{result.shards} shard")
    assert "sha256" in result.summary()


def test_verify_result_counts_only_what_it_read(tmp_path):
    from packer.inspect.verify import check_output

    missing = check_output(tmp_path)
    assert not missing.ok and (missing.shards, missing.rows, missing.tokens) == (0, 0, 0)
