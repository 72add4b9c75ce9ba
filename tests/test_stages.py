"""The build as three stages (map a part, gather, write): the output must not depend on how the input
is split into parts, and a part can be mapped from a pickled spec alone, as another process would."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from packer import BuildError, build
from packer.pipeline.part import MapSpec, Part, map_part, parts_of
from packer.read.formats import check_inputs
from packer.read.plan import plan_inputs

from .helpers import DEMO_TOKENIZER, EXAMPLES, output_files

BAD = Path(__file__).parent / "bad_inputs"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> list[Path]:
    """Demo records with copies far apart (they land in different parts), overlong records, bad records."""
    d = tmp_path_factory.mktemp("stages")
    records = json.loads((EXAMPLES / "alpaca_demo.json").read_text())
    long = {**records[3], "output": " ".join([records[3]["output"]] * 60)}
    first = d / "first.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in [*records[:40], long, records[5], "not an object"]))
    last = d / "last.json"
    last.write_text(json.dumps([records[5], long, *records[40:80], records[0], {"instruction": "x", "output": ""}]))
    return [first, EXAMPLES / "sharegpt_demo.json", BAD / "wrong_types.jsonl", last, BAD / "duplicates.jsonl"]


CONFIGS = {
    "defaults": {},
    "dedupe-truncate": {"dedupe": True, "overlong": "truncate", "seq_len": 200},
    "drop-small-batches": {"seq_len": 200, "batch_size": 3, "packing": "ffd"},
    "dedupe-split": {"dedupe": True, "overlong": "split", "seq_len": 200, "batch_size": 5},
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_any_number_of_parts_gives_the_same_bytes(mixed, tmp_path, demo_tok, config):
    kwargs = {"seq_len": 512, **CONFIGS[config]}
    one = build(mixed, tmp_path / "p1", tokenizer=demo_tok, **kwargs)
    assert one["counts"]["duplicates"] >= 3 and sum(one["counts"]["rejected"].values()) >= 5
    if kwargs.get("dedupe"):
        assert one["counts"]["rejected"]["duplicate"] == one["counts"]["duplicates"]
    if kwargs.get("overlong") == "truncate":
        assert one["counts"]["truncated"] >= 2
    if kwargs.get("overlong") == "split":
        assert one["counts"]["split"] >= 1
    expected = output_files(tmp_path / "p1")
    for part_bytes in (5_000, 900):
        m = build(mixed, tmp_path / f"p{part_bytes}", tokenizer=demo_tok, part_size=part_bytes / 2**20, **kwargs)
        assert {k: v for k, v in m.items() if k != "build_seconds"} == {
            k: v for k, v in one.items() if k != "build_seconds"
        }
        assert output_files(tmp_path / f"p{part_bytes}") == expected, f"parts of {part_bytes} bytes"


def test_a_part_maps_from_its_pickled_spec_alone(mixed, tmp_path, demo_tok):
    # what a worker process gets: the spec and the part, as bytes; it loads the tokenizer and template itself
    spec = MapSpec(tokenizer=str(DEMO_TOKENIZER), tokenizer_sha256=demo_tok.sha256, seq_len=256, dedupe=True)
    names = [str(p) for p in mixed]
    parts = parts_of(names, plan_inputs(names, 20_000), check_inputs(names))
    assert [p.first_doc_id for p in parts] == [0, 43, 70, 98, 107, 114, 158]
    assert [p.piece.kind for p in parts] == ["lines", "array", "array", "array", "lines", "file", "lines"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    here = map_part(spec, parts[1], tmp_path / "a", tok=demo_tok)
    there = map_part(*pickle.loads(pickle.dumps((spec, parts[1]))), tmp_path / "b")
    assert len(here) == len(there) == 27 and here.part.first_doc_id == 43
    for name in ("status", "tokens", "prompt_words", "digest_hi", "spilled"):
        assert np.array_equal(getattr(here.docs, name), getattr(there.docs, name)), name
    for f in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {".packer-spill-1-ids", ".packer-spill-1-roles"}


def test_a_changed_tokenizer_is_refused_by_the_part(tmp_path, demo_tok):
    spec = MapSpec(tokenizer=str(DEMO_TOKENIZER), tokenizer_sha256="0" * 64)
    with pytest.raises(BuildError, match="tokenizer changed"):
        map_part(spec, Part((str(EXAMPLES / "alpaca_demo.json"),)), tmp_path)


def test_strict_fails_on_a_duplicate_in_another_part(tmp_path, demo_tok):
    records = json.loads((EXAMPLES / "alpaca_demo.json").read_text())[:10]
    path = tmp_path / "in.json"
    path.write_text(json.dumps([*records, records[2]]))
    for part_bytes in (None, 700):
        with pytest.raises(BuildError, match=r"record 10: duplicate: same conversation as .*record 2 \(--strict\)"):
            build([path], tmp_path / f"o{part_bytes}", tokenizer=demo_tok, dedupe=True, strict=True,
                  part_size=part_bytes and part_bytes / 2**20)


def test_more_parts_than_records(tmp_path, demo_tok):
    records = json.loads((EXAMPLES / "alpaca_demo.json").read_text())[:2]
    path = tmp_path / "two.json"
    path.write_text(json.dumps(records))
    build([path], tmp_path / "p1", tokenizer=demo_tok)
    m = build([path], tmp_path / "p5", tokenizer=demo_tok, part_size=1 / 2**20)
    assert m["counts"]["packed"] == 2
    assert output_files(tmp_path / "p5") == output_files(tmp_path / "p1")
    assert [(p.piece.first_record, p.records) for p in plan_inputs([str(path)], 1)] == [(0, 1), (1, 1)]


def test_duplicates_are_found_by_the_whole_digest():
    """The duplicate search against a plain dictionary: digests whose halves collide (high halves equal, low
    halves apart; high halves equal in their low 24 bits, the search's table) are told apart."""
    from packer.output.doctable import NULL
    from packer.pipeline.combine import _duplicate_of

    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 80))
        has = rng.integers(0, 2, n).astype(np.uint8)
        hi = rng.integers(-3, 4, n).astype(np.int64) << 24  # equal low bits: the table cannot tell them apart
        lo = rng.integers(0, 3, n).astype(np.int64)
        first: dict[tuple[int, int], int] = {}
        expected = np.full(n, NULL, dtype=np.int64)
        for i in np.flatnonzero(has).tolist():
            expected[i] = first.setdefault((int(hi[i]), int(lo[i])), i)
            if expected[i] == i:
                expected[i] = NULL
        assert _duplicate_of(has, hi, lo).tolist() == expected.tolist()
