"""Data mixtures (``build(..., mix=[w, ...])``, ``packer build --mix PATH:WEIGHT ...``): each record of an
input of weight w is packed floor(w) times, plus once more with probability frac(w), drawn per record from a
hash of (seed, doc_id); a record used 0 times is ``unsampled``, one used k times is k documents."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter

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
from packer.train.dataset import PackedDataset

from .helpers import DEMO_TOKENIZER, EXAMPLES, ROOT, output_files

MANIFEST_SCHEMA = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
WEIGHTS = [1.0, 0.3, 2.0]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list:
    """Three copies of the demo Alpaca file (127 records)."""
    d = tmp_path_factory.mktemp("mix-inputs")
    out = []
    for name in ("a.json", "b.json", "c.json"):
        shutil.copy(EXAMPLES / "alpaca_demo.json", d / name)
        out.append(d / name)
    return out


@pytest.fixture(scope="module")
def mixed_build(tmp_path_factory, sources, demo_tok):
    out = tmp_path_factory.mktemp("mix") / "shards"
    m = build(sources, out, tokenizer=demo_tok, seq_len=512, shard_size=30_000 / 2**20, mix=WEIGHTS, seed=0)
    return out, m


def documents(out) -> dict[str, np.ndarray]:
    t = ipc.open_file(out / "documents.arrow").read_all()
    return {name: np.asarray(t.column(name).to_pylist(), dtype=object) for name in t.column_names}


def shard_doc_ids(out, shards) -> list[int]:
    return [d for s in shards for row in read_table(out / s["file"]).column("doc_ids").to_pylist()
            for d in row]


def test_counts_per_source_follow_the_weights(mixed_build):
    out, m = mixed_build
    jsonschema.validate(m, MANIFEST_SCHEMA)
    mix = m["mix"]["inputs"]
    kept = 127 - sum(m["counts"]["rejected"].values()) // 3  # records of one copy that can be packed
    assert [i["weight"] for i in mix] == WEIGHTS and [i["records"] for i in mix] == [127] * 3
    assert mix[0]["documents"] == kept and mix[2]["documents"] == 2 * kept  # whole weights are exact
    sd = math.sqrt(kept * 0.3 * 0.7)
    assert abs(mix[1]["documents"] - 0.3 * kept) < 4 * sd
    assert sum(i["tokens"] for i in mix) == m["tokens"]["total"]
    assert math.isclose(sum(i["token_share"] for i in mix), 1.0, abs_tol=1e-5)
    c = m["counts"]
    assert c["unsampled"] == kept - mix[1]["documents"]
    assert c["packed"] == 3 * kept - c["unsampled"]
    assert c["records"] == c["packed"] + sum(c["rejected"].values()) + c["unsampled"]
    docs = documents(out)
    assert (docs["status"] == "unsampled").sum() == c["unsampled"]
    assert set(docs["copies"][docs["status"] == "unsampled"]) == {0}
    # unsampled records are not rejections
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == m["rejected"]["records"] == sum(c["rejected"].values())
    assert all(r["reason"] != "unsampled" for r in rejected)


def test_copies_are_in_the_shards_and_streamed(mixed_build):
    out, m = mixed_build
    docs = documents(out)
    seen = Counter(shard_doc_ids(out, m["shards"]))
    expected = {int(d): int(k) for d, k in zip(docs["doc_id"], docs["copies"], strict=True) if k}
    assert dict(seen) == expected
    assert max(seen.values()) == 2
    # documents.arrow's shard/row/offset name a copy that is there
    twice = next(int(d) for d, k in expected.items() if k == 2)
    shard = m["shards"][docs["shard"][twice]]["file"]
    row = read_table(out / shard).slice(docs["row"][twice], 1).to_pylist()[0]
    assert twice in row["doc_ids"]
    result = check_output(out)
    assert result.ok, result.problems
    streamed = Counter()
    for item in PackedDataset(out, shuffle=False, return_doc_ids=True):
        streamed.update(item["doc_ids"].tolist())
    assert dict(streamed) == expected


def test_inspect_shows_the_sources(mixed_build):
    out, m = mixed_build
    r = inspect(out)
    jsonschema.validate(r, REPORT_SCHEMA)
    assert r["mix"] == m["mix"] and r["records"]["unsampled"] == m["counts"]["unsampled"]
    assert r["splits"]["train"]["documents"] == sum(i["documents"] for i in m["mix"]["inputs"])
    res = CliRunner().invoke(main, ["inspect", str(out)])
    assert res.exit_code == 0 and "Mixture" in res.output and "token share" in res.output


def test_same_seed_same_bytes_other_seed_other_sample(tmp_path, sources, demo_tok, mixed_build):
    out, m = mixed_build
    again = build(sources, tmp_path / "again", tokenizer=demo_tok, seq_len=512, shard_size=30_000 / 2**20, mix=WEIGHTS)
    assert output_files(tmp_path / "again") == output_files(out)
    assert again["mix"] == m["mix"]
    build(sources, tmp_path / "other", tokenizer=demo_tok, seq_len=512, shard_size=30_000 / 2**20, mix=WEIGHTS, seed=1)
    assert not (documents(tmp_path / "other")["copies"] == documents(out)["copies"]).all()


def test_parts_do_not_change_the_output(tmp_path, sources, demo_tok, mixed_build):
    out, _ = mixed_build
    build(sources, tmp_path / "p3", tokenizer=demo_tok, seq_len=512, shard_size=30_000 / 2**20, mix=WEIGHTS,
          part_size=2_000 / 2**20)
    assert output_files(tmp_path / "p3") == output_files(out)


def test_weight_zero_leaves_every_record_unsampled(tmp_path, sources, demo_tok):
    m = build(sources[:2], tmp_path / "o", tokenizer=demo_tok, seq_len=512, mix=[0, 1.0])
    docs = documents(tmp_path / "o")
    first = docs["input"] == str(sources[0])
    assert set(docs["status"][first]) == {"unsampled"}
    assert first.sum() == m["counts"]["unsampled"] == 127
    assert m["mix"]["inputs"][0]["documents"] == 0 and m["mix"]["inputs"][0]["token_share"] == 0
    assert check_output(tmp_path / "o").ok
    with pytest.raises(BuildError, match="no record was sampled"):
        build(sources[:2], tmp_path / "none", tokenizer=demo_tok, seq_len=512, mix=[0, 0])


def test_mixture_with_eval_split_keeps_copies_together(tmp_path, sources, demo_tok):
    out = tmp_path / "o"
    m = build(sources, out, tokenizer=demo_tok, seq_len=512, mix=[1.0, 0.5, 3.0], eval_fraction=0.2, seed=3)
    jsonschema.validate(m, MANIFEST_SCHEMA)
    train, held = Counter(shard_doc_ids(out, m["shards"])), Counter(shard_doc_ids(out, m["eval"]["shards"]))
    assert held and not set(train) & set(held)
    docs = documents(out)
    for d, k in held.items():
        assert docs["copies"][d] == k and docs["split"][d] == "eval"
    assert m["eval"]["documents"] == sum(held.values())
    assert check_output(out).ok, check_output(out).problems


def test_without_mix_nothing_changes(demo_output):
    m = json.loads((demo_output / "manifest.json").read_text())
    assert "mix" not in m and "unsampled" not in m["counts"] and "mix" not in m["build_key"]
    assert "copies" not in ipc.open_file(demo_output / "documents.arrow").schema.names


def test_bad_weights_are_one_line(tmp_path, sources, demo_tok):
    for mix, match in (([1.0], "2 inputs"), ([1.0, -1], "finite number >= 0"), ([1.0, float("nan")], ">= 0")):
        with pytest.raises(BuildError, match=match):
            build(sources[:2], tmp_path / "o", tokenizer=demo_tok, mix=mix)


def test_cli_mix(tmp_path, sources):
    out = tmp_path / "cli"
    args = ["build", "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "512", "-q", "-o", str(out)]
    res = CliRunner().invoke(main, [*args, "--mix", f"{sources[0]}:1.0", f"{sources[1]}:0.3"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert [i["weight"] for i in m["mix"]["inputs"]] == [1.0, 0.3]
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0
    for bad, what in (
        (["--mix", f"{sources[0]}:x"], "weight 'x'"),
        (["--mix", f"{sources[0]}:-2"], "weight '-2'"),
        ([str(sources[0]), "--mix", f"{sources[1]}:0.3"], "has no weight"),
        ([f"{sources[0]}:0.3"], "give --mix"),
    ):
        res = CliRunner().invoke(main, [*args, "--overwrite", *bad])
        assert res.exit_code == 2, res.output
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and what in lines[0] and lines[0].startswith("error:"), res.output
