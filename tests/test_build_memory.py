"""The lean build: tokens and rejections spilled to disk while building, a few numbers per record in
memory, the tokenizer in a thread. Its output must not depend on how the records were batched, and no
spill file may outlive the build."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from packer import BuildError, build
from packer.inspect.verify import verify
from packer.output.doctable import NULL, Columns, SeenTable
from packer.output.gather import ArrayTokens
from packer.pipeline.build import BuildEvents
from packer.pipeline.spill import SPILL_PREFIX, RejectionSpill, TokenSpillReader, TokenSpillWriter, merged_lines

from .helpers import DEMO_TOKENIZER, EXAMPLES, output_files

DEMO_INPUTS = [EXAMPLES / "alpaca_demo.json", EXAMPLES / "sharegpt_demo.json"]
BAD = Path(__file__).parent / "bad_inputs"


@pytest.fixture(scope="module")
def mixed_input(tmp_path_factory) -> list[Path]:
    """Demo records, duplicates, bad records and overlong ones: every kind of rejection and truncation."""
    d = tmp_path_factory.mktemp("mixed")
    records = json.loads((EXAMPLES / "alpaca_demo.json").read_text())
    path = d / "mixed.jsonl"
    with open(path, "w") as f:
        for k, r in enumerate(records):
            f.write(json.dumps(r) + "\n")
            if k % 7 == 0:
                f.write(json.dumps(r) + "\n")  # a duplicate
            if k % 11 == 0:
                f.write("{not json\n")
            if k % 13 == 0:  # overlong: truncated, or rejected if its response is cut off
                f.write(json.dumps({**r, "output": " ".join([r["output"]] * 40)}) + "\n")
                f.write(json.dumps({**r, "instruction": " ".join([r["instruction"]] * 80)}) + "\n")
    return [path, *DEMO_INPUTS, BAD / "duplicates.jsonl", BAD / "wrong_types.jsonl"]


@pytest.mark.parametrize("dedupe", [False, True])
def test_batching_does_not_change_a_byte(mixed_input, tmp_path, demo_tok, dedupe):
    outs = []
    for batch_size in (100_000, 1, 3, 64):
        out = tmp_path / f"b{batch_size}"
        m = build(mixed_input, out, tokenizer=demo_tok, seq_len=256, overlong="truncate", dedupe=dedupe,
                  shard_size=20_000 / 2**20, batch_size=batch_size)
        assert len(m["shards"]) > 2 and m["counts"]["truncated"] > 0
        assert m["counts"]["rejected"]["overlong_no_loss"] > 0 and m["counts"]["duplicates"] > 0
        assert verify(out) == []
        outs.append(output_files(out))
    assert all(o == outs[0] for o in outs[1:])
    # rejected.jsonl is in doc_id order although overlong records are found after the records read later
    lines = [json.loads(x) for x in (tmp_path / "b1" / "rejected.jsonl").read_text().splitlines()]
    assert [x["doc_id"] for x in lines] == sorted(x["doc_id"] for x in lines)
    assert len(lines) == len({x["doc_id"] for x in lines})


def test_no_spill_file_survives_a_finished_build(mixed_input, tmp_path, demo_tok):
    out = tmp_path / "o"
    build(mixed_input, out, tokenizer=demo_tok, seq_len=256, overlong="truncate", shard_size=20_000 / 2**20,
          batch_size=5)
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if n.startswith(SPILL_PREFIX)]
    assert {n for n in names if not n.startswith("shard-")} == {"manifest.json", "documents.arrow", "rejected.jsonl"}


def test_no_spill_file_survives_a_failed_build(tmp_path, demo_tok):
    out = tmp_path / "o"
    with pytest.raises(BuildError, match="--strict"):
        build([BAD / "wrong_types.jsonl"], out, tokenizer=demo_tok, strict=True)
    assert list(tmp_path.iterdir()) == []  # the staging folder, spill and all, is gone


@pytest.mark.parametrize("batch_size", [1, 512])
def test_strict_stops_at_the_first_bad_record_although_tokenizing_runs_behind(tmp_path, demo_tok, batch_size):
    # record 1 is overlong (found by the tokenizer thread), record 2 is not JSON (found by the reader)
    records = json.loads((EXAMPLES / "alpaca_demo.json").read_text())
    path = tmp_path / "in.jsonl"
    long = {**records[1], "output": " ".join([records[1]["output"]] * 200)}
    path.write_text(json.dumps(records[0]) + "\n" + json.dumps(long) + "\n{not json\n")
    with pytest.raises(BuildError, match=r"record 1\b.*overlong"):
        build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=256, strict=True, batch_size=batch_size)


def test_progress_events_reach_every_record(tmp_path, demo_tok):
    seen: list[tuple[int, int]] = []
    m = build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, seq_len=512, batch_size=16,
              events=BuildEvents(on_records=lambda n, t: seen.append((n, t))))
    assert len(seen) > 5
    assert [s[0] for s in seen] == sorted(s[0] for s in seen) and [s[1] for s in seen] == sorted(s[1] for s in seen)
    assert seen[-1] == (m["counts"]["records"], m["tokens"]["total"])


@pytest.mark.parametrize("cuts", [(), (120,), (1, 150, 151, 299)])
def test_token_spill_round_trip(tmp_path, cuts):
    # the documents spilled by one part, or by several (reads then span the parts' files)
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 50, 300)
    ids = rng.integers(0, 1 << 31, int(lengths.sum()), dtype=np.int64).astype(np.int32)
    roles = rng.integers(1, 12, len(ids)).astype(np.uint8)  # every role code
    last = rng.integers(0, 4, len(ids)).astype(np.uint8)  # flags: last turn, untrained, both, neither
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    bounds = [0, *cuts, 300]
    for tag, (d0, d1) in enumerate(itertools.pairwise(bounds)):
        w = TokenSpillWriter(tmp_path, tag)
        a, b = int(starts[d0]) if d0 < 300 else len(ids), int(starts[d1]) if d1 < 300 else len(ids)
        for x, y in ((a, min(a + 10, b)), (min(a + 10, b), b)):
            w.append(ids[x:y], roles[x:y], last[x:y])
        w.close()
    expected = ArrayTokens(ids, roles, last, starts, lengths)
    r = TokenSpillReader(tmp_path, lengths, range(len(bounds) - 1))
    for docs in (np.arange(300), rng.permutation(300)[:77], np.array([5]), np.zeros(0, np.int64)):
        for got, want in zip(r.gather(docs), expected.gather(docs), strict=True):
            assert got.dtype == want.dtype and np.array_equal(got, want)
    r.close()


def test_rejection_spill_merges_in_doc_id_order(tmp_path):
    s = RejectionSpill(tmp_path)
    for d in (0, 3, 4, 10):
        s.write(RejectionSpill.READ, d, json.dumps({"doc_id": d, "stage": "read"}) + "\n")
    for d in (1, 5, 11, 12):
        s.write(RejectionSpill.TOKENS, d, json.dumps({"doc_id": d, "stage": "tokens"}) + "\n")
    s.close()
    other = RejectionSpill(tmp_path, 1, stages=("more",))
    other.write("more", 2, '{"doc_id": 2}\n')
    other.close()
    paths = [*s.paths.values(), *other.paths.values()]
    assert [json.loads(x)["doc_id"] for x in merged_lines(paths)] == [0, 1, 2, 3, 4, 5, 10, 11, 12] and s.count == 8
    # a line can be left out by its file and doc_id (a duplicate's line replaces another stage's)
    kept = merged_lines(paths, lambda k, d: k == 0 and d > 3)
    assert [json.loads(x)["doc_id"] for x in kept] == [0, 1, 2, 3, 5, 11, 12]


def test_seen_table_matches_a_dict():
    rng = np.random.default_rng(1)
    digests = [rng.bytes(16) for _ in range(3000)]
    table, ref = SeenTable(capacity=8), {}
    for i in range(20_000):
        d = digests[int(rng.integers(0, len(digests)))]
        assert table.first(d, i) == ref.get(d, -1)
        ref.setdefault(d, i)
    assert len(ref) > 2000  # the table grew many times


def test_columns_grow_and_keep_their_fill():
    c = Columns(capacity=2, a=(np.int32, NULL), b=(np.uint8, 0))
    for i in range(5):
        c.add(b=i)
    c.extend(a=np.arange(3), b=np.full(3, 9))
    c.a[0] = 7
    assert c.a.tolist() == [7, -1, -1, -1, -1, 0, 1, 2] and c.b.tolist() == [0, 1, 2, 3, 4, 9, 9, 9]
    c.trim()
    assert len(c) == 8 and c.add(a=1) == 8 and c.b[8] == 0


def test_cli_progress_still_works(tmp_path):
    from click.testing import CliRunner

    from packer.cli import main

    res = CliRunner().invoke(main, ["build", *map(str, DEMO_INPUTS), "-o", str(tmp_path / "o"),
                                    "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "512"])
    assert res.exit_code == 0, res.output
