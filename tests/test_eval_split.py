"""The held-out eval split (``build(eval_fraction=...)``/``eval_records=N``, ``--eval-fraction``/``--eval-records``):
records are dealt to train or eval by record, before packing, from a hash of (seed, doc_id); the eval rows
are shards of their own in the same output, which ``PackedDataset(out, split="eval")`` reads."""

from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import pyarrow.ipc as ipc
import pytest
from click.testing import CliRunner

from packer import BuildError, build
from packer.cli import main
from packer.inspect.report import inspect
from packer.inspect.verify import check_output
from packer.output.container import read_table
from packer.output.doctable import NULL
from packer.output.layout import ShardError
from packer.pipeline.combine import EvalSplit, assign_eval, split_hash

from .helpers import DEMO_INPUTS, DEMO_TOKENIZER, ROOT, output_files
from .test_stages import mixed  # noqa: F401  (the fixture: duplicates in different parts, rejects)

MANIFEST_SCHEMA = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())


def documents(out) -> dict[str, np.ndarray]:
    t = ipc.open_file(out / "documents.arrow").read_all()
    return {name: np.asarray(t.column(name).to_pylist(), dtype=object) for name in t.column_names}


def shard_doc_ids(out, shards: list[dict]) -> list[int]:
    ids: list[int] = []
    for s in shards:
        for row in read_table(out / s["file"]).column("doc_ids").to_pylist():
            ids += row
    return ids


@pytest.fixture(scope="module")
def eval_build(tmp_path_factory, demo_tok):
    out = tmp_path_factory.mktemp("eval") / "shards"
    m = build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512, shard_size=30_000 / 2**20, eval_fraction=0.2, seed=1)
    return out, m


def test_eval_and_train_share_no_record_and_verify_passes(eval_build):
    out, m = eval_build
    jsonschema.validate(m, MANIFEST_SCHEMA)
    docs = documents(out)
    packed = set(docs["doc_id"][np.isin(docs["status"], ["packed", "truncated"])].tolist())
    train = shard_doc_ids(out, m["shards"])
    held = shard_doc_ids(out, m["eval"]["shards"])
    assert len(set(train)) == len(train) and len(set(held)) == len(held)
    assert not set(train) & set(held)
    assert set(train) | set(held) == packed
    assert set(held) == set(docs["doc_id"][docs["split"] == "eval"].tolist())
    assert set(train) == set(docs["doc_id"][docs["split"] == "train"].tolist())
    assert all(s is None for s in docs["split"][~np.isin(docs["status"], ["packed", "truncated"])])
    assert m["eval"]["documents"] == len(held) and m["counts"]["packed"] == len(packed)
    assert m["tokens"]["total"] == sum(s["tokens"] for s in m["shards"])
    assert m["eval"]["tokens"]["total"] == sum(s["tokens"] for s in m["eval"]["shards"])
    assert all(s["file"].startswith("eval-shard-") for s in m["eval"]["shards"])
    result = check_output(out)
    assert result.ok, result.problems
    assert result.documents == len(packed)


def test_verify_finds_an_eval_document_moved_to_train(eval_build, tmp_path):
    import shutil

    out, m = eval_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / m["eval"]["shards"][0]["file"]).write_bytes(b"broken")
    assert any("eval-shard-00000.arrow" in p for p in check_output(copy).problems)


def test_same_seed_same_bytes_other_seed_other_split(tmp_path, demo_tok, eval_build):
    out, m = eval_build
    again = build(DEMO_INPUTS, tmp_path / "again", tokenizer=demo_tok, seq_len=512, shard_size=30_000 / 2**20,
                  eval_fraction=0.2, seed=1)
    assert output_files(tmp_path / "again") == output_files(out)
    assert again["eval"] == m["eval"]
    build(DEMO_INPUTS, tmp_path / "other", tokenizer=demo_tok, seq_len=512, shard_size=30_000 / 2**20,
          eval_fraction=0.2, seed=2)
    a, b = documents(out), documents(tmp_path / "other")
    assert set(a["doc_id"][a["split"] == "eval"].tolist()) != set(b["doc_id"][b["split"] == "eval"].tolist())


def test_fraction_within_sampling_error(eval_build):
    _, m = eval_build
    n, p = m["counts"]["packed"], 0.2
    assert abs(m["eval"]["documents"] - n * p) <= 4 * math.sqrt(n * p * (1 - p))
    # and over many records, for a small fraction
    n, p = 200_000, 0.05
    ids = np.arange(n, dtype=np.int64)
    in_eval, leaked = assign_eval(ids, np.full(n, NULL, dtype=np.int64), EvalSplit(fraction=p, seed=7))
    assert abs(int(in_eval.sum()) - n * p) <= 4 * math.sqrt(n * p * (1 - p)) and leaked == 0


def test_eval_records_is_exact_and_the_smallest_hashes(tmp_path, demo_tok):
    m = build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, seq_len=512, eval_records=17, seed=5)
    assert m["eval"]["documents"] == 17 and m["eval"]["records"] == 17 and m["eval"]["fraction"] is None
    docs = documents(tmp_path / "o")
    kept = docs["doc_id"][np.isin(docs["status"], ["packed", "truncated"])].astype(np.int64)
    smallest = kept[np.argsort(split_hash(kept, 5), kind="stable")[:17]]
    assert set(docs["doc_id"][docs["split"] == "eval"].tolist()) == set(smallest.tolist())
    assert check_output(tmp_path / "o").ok


@pytest.mark.parametrize("kwargs", [{"eval_fraction": 0.3}, {"eval_records": 25, "dedupe": True}])
def test_one_or_three_parts_give_the_same_bytes(mixed, tmp_path, demo_tok, kwargs):  # noqa: F811
    one = build(mixed, tmp_path / "p1", tokenizer=demo_tok, seq_len=512, seed=3, **kwargs)
    three = build(mixed, tmp_path / "p3", tokenizer=demo_tok, seq_len=512, seed=3, part_size=2_000 / 2**20, **kwargs)
    assert {k: v for k, v in one.items() if k != "build_seconds"} == {
        k: v for k, v in three.items() if k != "build_seconds"}
    assert output_files(tmp_path / "p3") == output_files(tmp_path / "p1")
    assert check_output(tmp_path / "p1").ok


def test_copies_of_a_conversation_share_a_split(mixed, tmp_path, demo_tok):  # noqa: F811
    # without --dedupe exact copies are all packed: they go where their first copy goes, so eval does not leak
    build(mixed, tmp_path / "o", tokenizer=demo_tok, seq_len=512, eval_fraction=0.5, seed=0)
    docs = documents(tmp_path / "o")
    copies = [i for i, d in enumerate(docs["duplicate_of"]) if d is not None and docs["split"][i] is not None]
    assert len(copies) >= 3
    for i in copies:
        assert docs["split"][i] == docs["split"][docs["duplicate_of"][i]]
    # each record's split depends on (seed, its first copy's doc_id) only
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["eval"]["leaked_duplicates"] == 0


def test_packed_dataset_streams_exactly_the_eval_rows(eval_build):
    pytest.importorskip("torch")
    from packer import PackedDataset

    out, m = eval_build
    held = PackedDataset(out, split="eval", shuffle=False, return_doc_ids=True)
    assert held.num_rows == len(held) == m["eval"]["packing"]["rows"]
    items = list(held)
    assert len(items) == m["eval"]["packing"]["rows"]
    assert sorted(i for it in items for i in it["doc_ids"].tolist()) == sorted(shard_doc_ids(out, m["eval"]["shards"]))
    train = PackedDataset(out, shuffle=False, return_doc_ids=True)
    assert train.num_rows == m["packing"]["rows"]
    train_ids = {i for it in train for i in it["doc_ids"].tolist()}
    assert train_ids == set(shard_doc_ids(out, m["shards"]))
    assert not train_ids & {i for it in items for i in it["doc_ids"].tolist()}
    with pytest.raises(ValueError, match="unknown split"):
        PackedDataset(out, split="test")


def test_no_eval_split_is_one_clear_error(tmp_path, demo_tok):
    pytest.importorskip("torch")
    from packer import PackedDataset

    m = build(DEMO_INPUTS[:1], tmp_path / "o", tokenizer=demo_tok, seq_len=512)
    assert "eval" not in m and "eval" not in m["build_key"]
    assert set(documents(tmp_path / "o")["split"].tolist()) <= {"train", None}
    with pytest.raises(ShardError, match="has no eval split"):
        PackedDataset(tmp_path / "o", split="eval")


def test_inspect_and_show_report_both_splits(eval_build):
    out, m = eval_build
    r = inspect(out)
    jsonschema.validate(r, REPORT_SCHEMA)
    assert r["splits"]["eval"]["documents"] == m["eval"]["documents"]
    assert r["splits"]["train"]["documents"] + r["splits"]["eval"]["documents"] == m["counts"]["packed"]
    assert r["splits"]["train"]["rows"] == m["packing"]["rows"]
    res = CliRunner().invoke(main, ["inspect", str(out)])
    assert res.exit_code == 0 and "eval split" in res.stdout
    res = CliRunner().invoke(main, ["show", str(out), "--split", "eval", "--row", "-1"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["show", str(out), "--split", "eval", "--row", "999"])
    assert res.exit_code == 1 and "the eval split of" in res.stderr
    res = CliRunner().invoke(main, ["verify", str(out)])
    assert res.exit_code == 0 and res.stdout.startswith("ok: ")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eval_fraction": 0.0}, "--eval-fraction is a fraction between 0 and 1"),
    ({"eval_fraction": 1.0}, "--eval-fraction is a fraction between 0 and 1"),
    ({"eval_fraction": -0.5}, "--eval-fraction is a fraction between 0 and 1"),
    ({"eval_records": 0}, "--eval-records is a number of records, at least 1"),
    ({"eval_fraction": 0.1, "eval_records": 3}, "not both"),
    ({"eval_records": 100_000}, r"--eval-records 100000: only 189 records can be packed"),
])
def test_bad_values_are_one_line_and_write_nothing(tmp_path, demo_tok, kwargs, message):
    with pytest.raises(BuildError, match=message) as e:
        build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, seq_len=512, **kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_cli_flags_and_errors(tmp_path):
    args = ["build", *map(str, DEMO_INPUTS), "-o", str(tmp_path / "o"), "--seq-len", "512", "-q",
            "--tokenizer", str(DEMO_TOKENIZER)]
    res = CliRunner().invoke(main, [*args, "--eval-fraction", "1.5"])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1 and "--eval-fraction" in res.stderr
    res = CliRunner().invoke(main, [*args, "--eval-records", "189"])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1 and "at least one must stay for training" in res.stderr
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(main, [a for a in args if a != "-q"] + ["--eval-records", "10", "--seed", "4"])
    assert res.exit_code == 0, res.output
    assert "eval split" in res.stdout  # the summary (not printed with -q)
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["eval"]["documents"] == 10 and m["build_key"]["eval"] == {"fraction": None, "records": 10, "seed": 4}


def test_rebuilds_own_the_eval_files(tmp_path, demo_tok):
    out = tmp_path / "o"
    opts = {"tokenizer": demo_tok, "seq_len": 512}
    build(DEMO_INPUTS, out, eval_fraction=0.1, **opts)
    assert any(p.name.startswith("eval-shard-") for p in out.iterdir())
    build(DEMO_INPUTS, out, eval_fraction=0.1, **opts)  # the same key: nothing to do
    with pytest.raises(BuildError, match="add --overwrite"):  # the eval options are part of the key
        build(DEMO_INPUTS, out, eval_fraction=0.1, seed=9, **opts)
    build(DEMO_INPUTS, out, overwrite=True, **opts)  # without eval: the eval shards go
    assert not any(p.name.startswith("eval-shard-") for p in out.iterdir())
    build(DEMO_INPUTS, out, overwrite=True, eval_records=5, **opts)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BuildError, match=r"notes\.txt"):
        build(DEMO_INPUTS, out, overwrite=True, **opts)
    assert (out / "notes.txt").read_text() == "mine"
    assert any(p.name.startswith("eval-shard-") for p in out.iterdir())


def test_a_fraction_that_takes_no_record_warns_and_the_split_is_empty(tmp_path, demo_tok):
    pytest.importorskip("torch")
    from packer import PackedDataset
    from packer.pipeline.build import BuildEvents

    notices: list[str] = []
    m = build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, seq_len=512, eval_fraction=1e-9,
              events=BuildEvents(on_notice=notices.append))
    assert m["eval"]["documents"] == 0 and m["eval"]["shards"] == [] and m["eval"]["packing"]["rows"] == 0
    assert any("the eval split is empty" in n for n in notices)
    assert check_output(tmp_path / "o").ok
    assert len(PackedDataset(tmp_path / "o", split="eval")) == 0
