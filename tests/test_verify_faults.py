"""``packer verify`` recounts every count of the manifest, and no reader opens a file outside the output
(issue 24, item 5).

The oracle: two good outputs (an eval split, records split at their turns, duplicates and untrained messages;
a mixture with truncation) and every numeric field of their manifests changed by one, each on its own: verify
must fail on each, but for the fields :data:`UNCHECKED` lists (the table in :mod:`packer.inspect.verify` says why).
Every file name the manifest lists, made absolute, ``..``, a folder path or a backslash path, and a shard
made a symbolic link leading out of the folder: verify fails, and every reader (``show``, ``inspect``, the
dataset, the rows reader) refuses it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from packer import build
from packer.cli import main
from packer.inspect.report import inspect, render_html
from packer.inspect.show import load_row
from packer.inspect.verify import check_output, verify
from packer.output.layout import ShardError
from packer.pipeline.manifest import up_to_date
from packer.train.dataset import PackedDataset
from packer.train.rows import ShardReader, open_root

from .helpers import DEMO_INPUTS

#: numeric manifest fields verify cannot check (dotted paths, ``[]`` for any list index): the output holds
#: nothing to check them against (packer.inspect.verify's docstring lists them)
UNCHECKED = [r"build_key\..*", r"build_seconds", r"tokenizer\..*", r"counts\.dropped_turns\..*",
             r"counts\.system_policy\..*", r"tokens\.control_absorbed_chars", r"eval\.(fraction|records|seed)",
             r"mix\.seed", r"mix\.inputs\[\]\.weight"]

#: conversations with an untrained message (in both splits), exact duplicates (kept: no --dedupe), a record
#: with no trained turn (rejected)
EXTRA = [
    *({"messages": [{"role": "user", "content": f"Name colour {i}."},
                    {"role": "assistant", "content": "Blue.", "weight": 0},
                    {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Green."}]}
      for i in range(12)),
    *[{"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]}] * 3,
    {"messages": [{"role": "user", "content": "Count to three."},
                  {"role": "assistant", "content": "One, two, three.", "training": False}]},
]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, demo_tok) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("verify-faults")
    extra = d / "extra.jsonl"
    extra.write_text("".join(json.dumps(r) + "\n" for r in EXTRA))
    inputs = [*DEMO_INPUTS, extra]
    split = build(inputs, d / "split", tokenizer=demo_tok, seq_len=256, shard_size=30_000 / 2**20, eval_fraction=0.2,
                  overlong="split")
    mixed = build(inputs, d / "mixed", tokenizer=demo_tok, seq_len=256, shard_size=30_000 / 2**20, overlong="truncate",
                  mix=[1.0, 0.5, 2.0], eval_fraction=0.1)
    # the fields the oracle is meant to reach are there, and not all zero
    assert split["tokens"]["untrained"] and split["counts"]["duplicates"] and split["counts"]["split"]
    assert split["eval"]["shards"] and mixed["counts"]["truncated"] and mixed["counts"]["unsampled"]
    out = {"split": d / "split", "mixed": d / "mixed"}
    for path in out.values():
        assert verify(path) == []
    return out


def _numeric_fields(value: object, path: tuple = ()) -> list[tuple]:
    """Paths (keys and indices) of every int and float in a manifest, booleans aside."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _numeric_fields(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _numeric_fields(v, (*path, i))]
    return [path] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _dotted(path: tuple) -> str:
    return re.sub(r"\.\[", "[", ".".join("[]" if isinstance(k, int) else str(k) for k in path))


def _set(m: dict, path: tuple, value: object) -> None:
    at = m
    for k in path[:-1]:
        at = at[k]
    at[path[-1]] = value


def _get(m: dict, path: tuple) -> object:
    for k in path:
        m = m[k]
    return m


@pytest.fixture(params=["split", "mixed"])
def copy(request, outputs, tmp_path) -> Path:
    """A copy of one good output, for a test to damage."""
    return shutil.copytree(outputs[request.param], tmp_path / "o")


def test_every_numeric_field_of_the_manifest_off_by_one_fails(copy):
    manifest = copy / "manifest.json"
    good = json.loads(manifest.read_text())
    fields = _numeric_fields(good)
    unchecked = [p for p in fields if any(re.fullmatch(u, _dotted(p)) for u in UNCHECKED)]
    passed = []
    for path in fields:
        if path in unchecked:
            continue
        m = json.loads(json.dumps(good))
        _set(m, path, _get(m, path) + 1)
        manifest.write_text(json.dumps(m))
        if verify(copy, hashes=False) == []:
            passed.append(_dotted(path) + f" {path}")
    manifest.write_text(json.dumps(good))
    assert verify(copy) == []
    assert passed == [], f"verify says ok with these fields off by one: {passed}"
    assert len(fields) - len(unchecked) > 90  # the oracle reaches the fields it should (99 and 100 now)


def test_the_reported_case_a_shard_with_wrong_rows(copy):
    """The issue's case: verify said ok, the dataset then failed; now verify fails, naming the shard."""
    manifest = copy / "manifest.json"
    m = json.loads(manifest.read_text())
    m["shards"][0]["rows"] += 1
    manifest.write_text(json.dumps(m))
    problems = verify(copy)
    assert any(p.startswith(f"{m['shards'][0]['file']}: ") and "rows" in p for p in problems), problems
    res = CliRunner().invoke(main, ["verify", str(copy)])
    assert res.exit_code == 1 and "rows" in res.stderr


def _names(m: dict) -> list[tuple]:
    """Paths of every file name the manifest lists."""
    out = [("shards", i, "file") for i in range(len(m["shards"]))]
    out += [("eval", "shards", i, "file") for i in range(len(m.get("eval", {}).get("shards", [])))]
    return [*out, ("documents", "file"), ("rejected", "file")]


def _outside(copy: Path, name: str) -> list[str]:
    """Names for file ``name`` of ``copy`` that leave the folder, each reading the same bytes where it can."""
    elsewhere = copy.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    shutil.copy(copy / name, elsewhere / name)
    return [str(copy / name), str(elsewhere / name), f"../elsewhere/{name}", f"../{copy.name}/{name}",
            f"..\\elsewhere\\{name}", f"sub/{name}", f"C:{name}", "..", ""]


def test_every_file_name_leaving_the_folder_fails(copy):
    manifest = copy / "manifest.json"
    good = json.loads(manifest.read_text())
    passed = []
    for path in _names(good):
        for bad in _outside(copy, _get(good, path)):
            m = json.loads(json.dumps(good))
            _set(m, path, bad)
            manifest.write_text(json.dumps(m))
            problems = verify(copy)
            if not any(repr(bad) in p for p in problems):
                passed.append((path, bad, problems))
    assert passed == []


@pytest.mark.parametrize("name", ["shard-00000.arrow", "documents.arrow", "rejected.jsonl"])
def test_a_symbolic_link_out_of_the_folder_fails(copy, name):
    """The same bytes, reached through a link to another folder: not the output's file."""
    elsewhere = copy.parent / "elsewhere"
    elsewhere.mkdir()
    shutil.move(copy / name, elsewhere / name)
    (copy / name).symlink_to(elsewhere / name)
    problems = verify(copy)
    assert any("symbolic link" in p and str(elsewhere / name) in p for p in problems), problems
    # a link that stays inside the folder reads as the file itself
    (copy / name).unlink()
    shutil.move(elsewhere / name, copy / f".{name}.real")
    (copy / name).symlink_to(copy / f".{name}.real")
    assert verify(copy) == []


@pytest.fixture(params=["absolute", "dotdot", "link"])
def escaped(request, outputs, tmp_path) -> Path:
    """The split output whose first shard is read from another folder: its manifest names it there
    (absolute, ``..``), or the shard is a symbolic link there. The bytes are the shard's own."""
    out = shutil.copytree(outputs["split"], tmp_path / "o")
    name = "shard-00000.arrow"
    (tmp_path / "elsewhere").mkdir()
    shutil.move(out / name, tmp_path / "elsewhere" / name)
    if request.param == "link":
        (out / name).symlink_to(tmp_path / "elsewhere" / name)
    else:
        m = json.loads((out / "manifest.json").read_text())
        m["shards"][0]["file"] = (str(tmp_path / "elsewhere" / name) if request.param == "absolute"
                                  else f"../elsewhere/{name}")
        (out / "manifest.json").write_text(json.dumps(m))
    return out


def test_every_reader_refuses_a_shard_outside_the_folder(escaped):
    assert not check_output(escaped).ok
    with pytest.raises(ShardError, match="outside the output"):
        PackedDataset(escaped, shuffle=False)
    with pytest.raises(ShardError, match="outside the output"):
        load_row(escaped, 0)
    with pytest.raises(ShardError, match="outside the output"):
        render_html(inspect(escaped), escaped)
    for args in (["show", str(escaped), "--row", "0"], ["inspect", str(escaped)], ["verify", str(escaped)]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and "outside the output" in res.stderr, (args, res.output)
    m = json.loads((escaped / "manifest.json").read_text())
    assert not up_to_date(escaped, m, m["build_key"])


def test_the_rows_reader_refuses_a_name_from_a_manifest_it_did_not_check(outputs, tmp_path):
    """ShardReader and output_file take shard lists from any caller: a name leaving the folder is refused
    there too, locally and within a pyarrow filesystem."""
    from packer.output.layout import output_file

    out = outputs["split"]
    m = json.loads((out / "manifest.json").read_text())
    shard = {**m["shards"][0], "file": f"../{out.name}/{m['shards'][0]['file']}"}
    fs, root = open_root(out, None)
    with pytest.raises(ShardError, match="not a file name inside the output"):
        ShardReader(fs, root, [shard], None).row(0)
    import pyarrow.fs as pafs

    sub = pafs.SubTreeFileSystem(str(out.parent), pafs.LocalFileSystem())
    with pytest.raises(ShardError):
        output_file(out.name, "../x.arrow", sub)
    assert output_file(out.name, "shard-00000.arrow", sub) == f"{out.name}/shard-00000.arrow"
    assert output_file(out, "shard-00000.arrow") == os.path.join(out, "shard-00000.arrow")
