"""inspect, show and verify of preference outputs (issue 27)."""

from __future__ import annotations

import io
import json

import jsonschema
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from rich.console import Console

from packer import build
from packer.inspect.report import inspect
from packer.inspect.show import show_row
from packer.inspect.verify import verify
from packer.output.container import read_table

from .helpers import DEMO_TOKENIZER, EXAMPLES, ROOT, write_stream_shard

SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
DPO_DEMO = EXAMPLES / "dpo_demo.jsonl"


@pytest.fixture(scope="module")
def dpo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "o"
    build([DPO_DEMO], out, tokenizer=DEMO_TOKENIZER, seq_len=1024)
    return out


def test_inspect_pairs(dpo_out):
    r = inspect(dpo_out)
    jsonschema.validate(r, SCHEMA)
    p = r["preference"]
    docs = ipc.open_file(dpo_out / "documents.arrow").read_all().to_pylist()
    prefix = [d["shared_tokens"] for d in docs]
    both = sum(2 * d["shared_tokens"] + d["chosen_tokens"] + d["rejected_tokens"] for d in docs)
    assert p["pairs"] == len(docs) == 240
    assert p["tokens_stored"] == r["tokens"]["total"] == sum(d["tokens"] for d in docs)
    assert p["tokens_both_sides"] == both
    assert p["saved_share"] == pytest.approx(sum(prefix) / both, abs=1e-6)
    longer = sum(d["chosen_tokens"] > d["rejected_tokens"] for d in docs) / len(docs)
    assert p["chosen_minus_rejected"]["chosen_longer_share"] == pytest.approx(longer, abs=1e-6)


def test_inspect_kto_and_sft(tmp_path):
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}.", "label": i < 3}) + "\n"
                            for i in range(5)))
    build([path], tmp_path / "k", tokenizer=DEMO_TOKENIZER, seq_len=64)
    r = inspect(tmp_path / "k")
    jsonschema.validate(r, SCHEMA)
    assert r["preference"] == {"kind": "kto", "desirable": 3, "undesirable": 2}
    build([EXAMPLES / "alpaca_demo.json"], tmp_path / "s", tokenizer=DEMO_TOKENIZER, seq_len=512)
    assert inspect(tmp_path / "s")["preference"] is None


def test_show_pair_branches(dpo_out):
    buf = io.StringIO()
    show_row(dpo_out, 0, console=Console(file=buf, force_terminal=False, width=200))
    text = buf.getvalue()
    row = read_table(dpo_out / "shard-00000.arrow").slice(0, 1).to_pylist()[0]
    n = len(row["seq_lens"])
    assert f"{n} pairs" in text
    assert text.count("· chosen ·") == text.count("· rejected ·") == n
    assert text.count("· prefix (shared) ·") == n  # every demo pair shares its prompt


def test_verify_pairs_and_a_broken_branch(dpo_out, tmp_path):
    assert verify(dpo_out) == []
    broken = tmp_path / "b"
    broken.mkdir()
    for f in dpo_out.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    shard = broken / "shard-00000.arrow"
    table = read_table(shard)
    rows = table.column("branch").to_pylist()
    rows[0] = [2 if b == 1 else 1 if b == 2 else b for b in rows[0]]  # rejected before chosen
    table = table.set_column(table.schema.get_field_index("branch"), table.schema.field("branch"),
                             pa.array(rows, type=table.schema.field("branch").type))
    write_stream_shard(shard, table)  # the same sizes: the manifest's index holds
    problems = verify(broken, hashes=False)
    assert any("prefix, chosen, rejected" in p for p in problems), problems
