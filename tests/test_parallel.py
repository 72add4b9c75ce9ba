"""Parallel builds: the output must be the same bytes however the input is cut into parts and whoever maps
them (this process, a pool of 1 or 2 worker processes), and a worker killed mid-part changes nothing.

The inputs are slices of real public data sets (``../shared/data``): a JSON array, JSON Lines and a
ShareGPT array with tool calls, with bad and duplicate records added so that every outcome is met."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packer import BuildError, build
from packer.output.container import read_table
from packer.pipeline.engine import LocalEngine, ProcessEngine
from packer.pipeline.part import parts_of
from packer.read.formats import check_inputs
from packer.read.plan import plan_inputs

from .helpers import SHARED, need_shared, output_files, real_tokenizer

OPTIONS = {"seq_len": 1024, "dedupe": True, "overlong": "truncate", "shard_size": 200_000 / 2**20, "eval_fraction": 0.1}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    need_shared()
    d = tmp_path_factory.mktemp("parallel")
    data = SHARED / "data"
    alpaca = json.loads((data / "alpaca_code_alpaca_2k.json").read_text())[:86]
    alpaca += [alpaca[7], {"instruction": "", "output": "x"}, {"instruction": "long " * 3000, "output": "y"}]
    (d / "alpaca.json").write_text(json.dumps(alpaca, indent=1, ensure_ascii=False))
    lines = (data / "messages_lima.jsonl").read_text().splitlines()[:85]
    lines[20:20] = ["", "{broken", lines[3], '"not an object"']  # 89 records
    (d / "lima.jsonl").write_text("\n".join(lines) + "\n")
    tools = json.loads((data / "sharegpt_glaive_toolcall_en_demo.json").read_text())[:85]
    (d / "tools.json").write_text(json.dumps(tools, ensure_ascii=False))
    return [str(d / "alpaca.json"), str(d / "lima.jsonl"), str(d / "tools.json")]


@pytest.fixture(scope="module")
def tok():
    need_shared()

    return real_tokenizer("qwen2.5-instruct")


@pytest.fixture(scope="module")
def reference_out(inputs, tok, tmp_path_factory) -> Path:
    """Today's build: one process, the whole input as one part."""
    out = tmp_path_factory.mktemp("reference") / "out"
    m = build(inputs, out, tokenizer=tok, **OPTIONS)
    c = m["counts"]
    # every outcome is here: bad records, duplicates, a truncation, an eval split
    assert c["duplicates"] >= 2 and c["truncated"] >= 1 and len(c["rejected"]) >= 3, c
    assert len(m["shards"]) >= 2
    return out


@pytest.fixture(scope="module")
def reference(reference_out) -> dict[str, str]:
    return output_files(reference_out)


def cuts_into(inputs: list[str], n: int, uneven: bool = False) -> dict[int, list[int]]:
    """Byte offsets that cut the inputs, as one run of bytes, into ``n`` parts (uneven: sizes 1, 2, 3, ...)."""
    sizes = [os.path.getsize(p) for p in inputs]
    weights = list(range(1, n + 1)) if uneven else [1] * n
    total, at, out = sum(sizes), 0, {i: [] for i in range(len(inputs))}
    bounds = [total * sum(weights[:k]) // sum(weights) for k in range(1, n)]
    for i, size in enumerate(sizes):
        out[i] = [b - at for b in bounds if at < b < at + size]
        at += size
    return out


@pytest.mark.parametrize(("name", "parts"), [("1 part", 1), ("7 uneven parts", 7), ("16 parts", 16)])
def test_parts_in_this_process_give_the_same_bytes(inputs, tok, reference, tmp_path, name, parts):
    cuts = cuts_into(inputs, parts, uneven=parts == 7)
    planned = plan_inputs(inputs, None, cuts=cuts)
    assert len(planned) >= parts  # a file boundary is a cut of its own
    build(inputs, tmp_path / "out", tokenizer=tok, cuts=cuts, **OPTIONS)
    assert output_files(tmp_path / "out") == reference, name


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_process_pool_gives_the_same_bytes(inputs, tok, reference, tmp_path, workers):
    pool = ProcessEngine(workers)
    try:
        build(inputs, tmp_path / "out", tokenizer=tok, engine=pool, part_size=40_000 / 2**20, **OPTIONS)
    finally:
        pool.close()
    assert output_files(tmp_path / "out") == reference


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_part_mapped_again(inputs, tok, reference, tmp_path, monkeypatch):
    once = tmp_path / "killed"
    monkeypatch.setenv("PACKER_TEST_KILL_AT", "tokens")  # SIGKILL inside a worker, mid-part (spawned workers
    monkeypatch.setenv("PACKER_TEST_KILL_ONCE", str(once))  # inherit the environment); only once
    pool = ProcessEngine(2)
    try:
        build(inputs, tmp_path / "out", tokenizer=tok, engine=pool, part_size=40_000 / 2**20, **OPTIONS)
    finally:
        pool.close()
    assert once.exists() and pool.restarts == 1
    assert output_files(tmp_path / "out") == reference


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_cuts_give_the_same_bytes(inputs, tok, reference, tmp_path_factory, data):
    cuts = {i: data.draw(st.lists(st.integers(1, os.path.getsize(p) - 1), max_size=6), label=f"cuts {i}")
            for i, p in enumerate(inputs)}
    out = tmp_path_factory.mktemp("random") / "out"
    build(inputs, out, tokenizer=tok, cuts=cuts, **OPTIONS)
    assert output_files(out) == reference


def test_parts_are_fixed_by_the_input(inputs):
    """Cuts land on record starts; every record is in exactly one part, numbered in input order."""
    formats = check_inputs(inputs)
    for part_bytes in (1, 5_000, 60_000, 10**9):
        parts = parts_of(inputs, plan_inputs(inputs, part_bytes), formats)
        assert [p.tag for p in parts] == list(range(len(parts)))
        assert parts[0].first_doc_id == 0
        for a, b in itertools.pairwise(parts):
            assert b.first_doc_id == a.first_doc_id + a.records
    one_record_each = plan_inputs(inputs, 1)  # a part per record (a blank line of JSON Lines: a part of none)
    assert {p.records for p in one_record_each} == {0, 1} and sum(p.records for p in one_record_each) == 89 + 88 + 85
    # a JSON Lines part starts on a line; its line and record numbers count from the file's start
    lines = [p for p in plan_inputs(inputs, 5_000) if p.input == 1]
    text = Path(inputs[1]).read_bytes()
    assert all(p.piece.start == 0 or text[p.piece.start - 1 : p.piece.start] == b"\n" for p in lines)
    assert [p.piece.first_line for p in lines] == [text[: p.piece.start].count(b"\n") for p in lines]


def test_a_bad_record_names_the_same_line_in_any_part(inputs, tok, tmp_path):
    with pytest.raises(BuildError) as whole:
        build(inputs[1:2], tmp_path / "a", tokenizer=tok, strict=True)
    with pytest.raises(BuildError) as parts:
        build(inputs[1:2], tmp_path / "b", tokenizer=tok, strict=True, part_size=5_000 / 2**20)
    assert str(whole.value) == str(parts.value)
    assert "lima.jsonl: record 20: malformed_json: line 22" in str(whole.value)


def test_the_engine_keeps_the_order_of_its_calls():
    assert LocalEngine().map(pow, [(2, 3), (3, 2)]) == [8, 9]


@pytest.mark.slow
def test_pack_scope_part_packs_each_part_alone(inputs, tok, reference_out, tmp_path):
    import numpy as np

    out = tmp_path / "scoped"
    m = build(inputs, out, tokenizer=tok, pack_scope="part", part_size=40_000 / 2**20, **OPTIONS)
    assert m["packing"]["scope"] == "part"
    jsonschema.validate(m, json.loads((Path(__file__).parents[1] / "schemas" / "manifest.schema.json").read_text()))
    parts = parts_of(inputs, plan_inputs(inputs, 40_000), check_inputs(inputs))
    firsts = np.array([p.first_doc_id for p in parts])
    assert len(parts) >= 4
    rows = 0
    for shard in m["shards"]:
        for doc_ids in read_table(str(out / shard["file"]))["doc_ids"].to_pylist():
            assert len(set(np.searchsorted(firsts, doc_ids, side="right") - 1)) == 1, "a row mixes parts"
            rows += 1
    assert rows == m["packing"]["rows"]
    # the same records and tokens as the global packing, in more rows: each part's last rows are part-full
    whole = json.loads((reference_out / "manifest.json").read_text())
    assert m["counts"] == whole["counts"] and m["tokens"] == whole["tokens"]
    assert whole["packing"]["rows"] < m["packing"]["rows"] <= whole["packing"]["rows"] + 2 * len(parts)
    # the rows depend on the parts, so on --part-size: another size is another build, never "nothing to do"
    with pytest.raises(BuildError, match="other inputs or options"):
        build(inputs, out, tokenizer=tok, pack_scope="part", part_size=20_000 / 2**20, **OPTIONS)
    pool = ProcessEngine(2)
    try:
        build(inputs, tmp_path / "pool", tokenizer=tok, engine=pool, pack_scope="part", part_size=40_000 / 2**20,
              **OPTIONS)
    finally:
        pool.close()
    assert output_files(tmp_path / "pool") == output_files(out)


def test_parquet_row_groups_and_arrow_files_as_parts(tmp_path, demo_tok):
    """Parquet cut at row groups, an Arrow file as one part, a JSON object file as one part: the same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from packer.read.plan import scan_file

    from .helpers import EXAMPLES

    records = json.loads((EXAMPLES / "alpaca_demo.json").read_text())
    table = pa.Table.from_pylist(records)
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=16)
    with pa.OSFile(str(tmp_path / "b.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table.slice(0, 40), max_chunksize=8)
    (tmp_path / "c.json").write_text(json.dumps(records[7]))
    inputs = [str(tmp_path / n) for n in ("a.parquet", "b.arrow", "c.json")]
    pieces = scan_file(inputs[0], part_bytes=3_000)
    assert len(pieces) > 3 and {p.kind for p, _ in pieces} == {"row_groups"}
    assert sum(n for _, n in pieces) == len(records)
    kw = {"tokenizer": demo_tok, "seq_len": 512, "dedupe": True}
    build(inputs, tmp_path / "whole", **kw)
    build(inputs, tmp_path / "parts", part_size=3_000 / 2**20, **kw)
    assert output_files(tmp_path / "parts") == output_files(tmp_path / "whole")
