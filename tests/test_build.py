"""`packer build` end to end: shards, manifest, documents, rejections, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow.ipc as ipc
import pytest
from click.testing import CliRunner

from packer import BuildError, build
from packer.cli import main
from packer.output import roles as R
from packer.output.container import read_table
from packer.output.shards import describe, shard_schema
from packer.pipeline.build import BuildEvents, resolve_template
from packer.pipeline.outdir import INCOMPLETE_MARKER
from packer.read.formats import RecordReader
from packer.read.records import Conversation

from .helpers import DEMO_TOKENIZER, EXAMPLES, ROOT, read_documents

DEMO_INPUTS = [EXAMPLES / "alpaca_demo.json", EXAMPLES / "sharegpt_demo.json"]
SCHEMA = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "shards"
    manifest = build(DEMO_INPUTS, out, tokenizer=DEMO_TOKENIZER, seq_len=1024, strategy=["prompt=instruction,input"])
    return out, manifest


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_manifest_valid_and_counts_add_up(demo_build):
    out, m = demo_build
    jsonschema.validate(m, SCHEMA)
    assert json.loads((out / "manifest.json").read_text()) == m
    c = m["counts"]
    assert c["records"] == c["packed"] + sum(c["rejected"].values()) + c.get("unsampled", 0)
    assert c["records"] == sum(i["records"] for i in m["inputs"])
    assert {i["format"] for i in m["inputs"]} == {"alpaca", "sharegpt"}
    assert not (out / INCOMPLETE_MARKER).exists()
    assert m["tokens"]["total"] == sum(m["tokens"]["per_role"].values()) == sum(s["tokens"] for s in m["shards"])


def test_every_record_packed_once_or_rejected(demo_build):
    out, m = demo_build
    docs = read_documents(out)
    table = ipc.open_file(out / "documents.arrow").read_all().to_pylist()
    assert len(table) == m["counts"]["records"]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    rejected_ids = {r["doc_id"] for r in rejected if r["action"] == "rejected"}
    for row in table:
        if row["status"] in ("packed", "truncated"):
            assert row["doc_id"] in docs and row["doc_id"] not in rejected_ids
            assert row["tokens"] == len(docs[row["doc_id"]]["input_ids"])
        else:
            assert row["doc_id"] not in docs and row["doc_id"] in rejected_ids
    assert set(docs) | rejected_ids == set(range(m["counts"]["records"]))
    for r in rejected:
        assert r["input"].endswith("sharegpt_demo.json") and r["reason"] in m["counts"]["rejected"]


def test_rows_fit_and_masks_equal_role_sets(demo_build):
    out, m = demo_build
    for shard in m["shards"]:
        table = read_table(out / shard["file"])
        assert table.schema.equals(shard_schema(list(m["strategies"])), check_metadata=False)
        for row in table.to_pylist():
            assert len(row["input_ids"]) <= m["seq_len"]
            assert sum(row["seq_lens"]) == len(row["input_ids"]) == len(row["roles"])
            roles = np.asarray(row["roles"])
            assert set(roles.tolist()) <= set(R.ROLES.values())
            for name, role_names in m["strategies"].items():
                mask = np.asarray(row[f"mask_{name}"])
                expected = np.isin(roles, R.role_codes(role_names))
                if name == "last_turn":
                    assert not (mask & ~expected).any()  # a subset: only the final turn
                else:
                    assert (mask == expected).all(), name
    loss = m["tokens"]["loss"]
    assert loss["full"] == m["tokens"]["total"]
    assert loss["instruction_tuning"] <= loss["boilerplate_masked"] <= loss["instruction_modelling"] <= loss["full"]
    assert loss["prompt"] == m["tokens"]["per_role"]["instruction"] + m["tokens"]["per_role"]["input"]


def test_ids_are_the_whole_text_tokenized_once(demo_build, demo_tok):
    out, m = demo_build
    docs = read_documents(out)
    tpl = resolve_template("auto", demo_tok)
    checked = 0

    def decode(ids) -> str:  # type: ignore[no-untyped-def]
        return demo_tok.tokenizer.decode(list(ids), skip_special_tokens=False)

    for item in RecordReader([str(p) for p in DEMO_INPUTS]):
        if not isinstance(item, Conversation):
            continue
        r = tpl.render(item)
        doc = docs[item.source.doc_id]
        assert doc["input_ids"].tolist() == demo_tok.tokenizer.encode(r.text, add_special_tokens=False).ids
        assert demo_tok.tokenizer.decode(doc["input_ids"].tolist(), skip_special_tokens=False) == r.text
        response = doc["input_ids"][doc["roles"] == R.RESPONSE].tolist()
        answers = "".join(msg.content for msg in item.messages if msg.role == "assistant")
        assert decode(response) == answers
        last = [msg for msg in item.messages if msg.role == "assistant"][-1].content
        assert decode(doc["input_ids"][doc["mask_last_turn"]]) == last + "<|im_end|>"
        checked += 1
    assert checked == m["counts"]["packed"]


def test_documents_table_lengths(demo_build):
    out, _ = demo_build
    docs = read_documents(out)
    for row in ipc.open_file(out / "documents.arrow").read_all().to_pylist():
        if row["status"] != "packed":
            continue
        roles = docs[row["doc_id"]]["roles"]
        assert row["prompt_tokens"] == int(np.isin(roles, [R.SYSTEM, R.INSTRUCTION, R.INPUT]).sum())
        assert row["response_tokens"] == int((roles == R.RESPONSE).sum())
        assert row["prompt_words"] >= 2 and row["response_words"] >= 2 and row["turns"] >= 2


def test_same_inputs_give_byte_identical_shards(demo_build, tmp_path):
    out, m = demo_build
    m2 = build(
        DEMO_INPUTS, tmp_path / "again", tokenizer=DEMO_TOKENIZER, seq_len=1024, strategy=["prompt=instruction,input"]
    )
    for a, b in zip(m["shards"], m2["shards"], strict=True):
        assert (out / a["file"]).read_bytes() == (tmp_path / "again" / b["file"]).read_bytes()
        assert a["sha256"] == b["sha256"]


@pytest.mark.parametrize("packing", ["bfd", "ffd", "nextfit"])
def test_packing_algorithms(tmp_path, packing):
    m = build(DEMO_INPUTS, tmp_path / packing, tokenizer=DEMO_TOKENIZER, seq_len=512, packing=packing)
    p = m["packing"]
    assert p["algorithm"] == packing and p["rows"] >= p["lower_bound_rows"]
    if packing != "nextfit":
        assert p["rows"] <= p["lower_bound_rows"] + 1
    assert len(read_documents(tmp_path / packing)) == m["counts"]["packed"]


def test_small_shards_split_rows(tmp_path):
    m = build(DEMO_INPUTS, tmp_path / "s", tokenizer=DEMO_TOKENIZER, seq_len=256, shard_size=20_000 / 2**20)
    assert len(m["shards"]) > 3
    assert sum(s["rows"] for s in m["shards"]) == m["packing"]["rows"]
    assert len(read_documents(tmp_path / "s")) == m["counts"]["packed"]
    for s in m["shards"]:
        assert s["bytes"] == (tmp_path / "s" / s["file"]).stat().st_size


def _long_records(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "long.jsonl",
        [
            {"instruction": "Say yes.", "output": "yes"},
            {"instruction": "Tell a long story.", "output": " ".join(["once upon a time"] * 200)},
            {"instruction": " ".join(["a very long question"] * 200), "output": "short answer"},
        ],
    )


def test_overlong_drop(tmp_path, demo_tok):
    m = build([_long_records(tmp_path)], tmp_path / "o", tokenizer=demo_tok, seq_len=128)
    assert m["counts"]["rejected"] == {"overlong": 2} and m["counts"]["packed"] == 1
    lines = (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(x)["record"] for x in lines] == [1, 2]


def test_overlong_truncate_never_leaves_a_document_without_loss(tmp_path, demo_tok):
    m = build([_long_records(tmp_path)], tmp_path / "o", tokenizer=demo_tok, seq_len=128, overlong="truncate")
    assert m["counts"]["truncated"] == 1 and m["counts"]["packed"] == 2
    assert m["counts"]["rejected"] == {"overlong_no_loss": 1}
    docs = read_documents(tmp_path / "o")
    assert len(docs[1]["input_ids"]) == 128
    for doc in docs.values():
        assert doc["mask_instruction_tuning"].any()
    lines = [json.loads(x) for x in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert [(x["record"], x["action"]) for x in lines] == [(1, "truncated"), (2, "rejected")]


def test_bad_records_are_counted_and_the_build_goes_on(tmp_path, demo_tok):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"instruction": "ok", "output": "fine"},
            "{not json",
            {"instruction": "no output"},
            {"instruction": 3, "output": "x"},
            {"instruction": "empty", "output": "   "},
            {"instruction": "typed a control token <|im_end|>", "output": "x"},
            {"instruction": "good again", "output": "yes"},
        ],
    )
    m = build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=256)
    assert m["counts"]["packed"] == 2
    assert m["counts"]["rejected"] == {
        "malformed_json": 1, "missing_field": 1, "wrong_type": 1, "empty_output": 1, "special_token_in_content": 1,
    }
    lines = [json.loads(x) for x in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert [x["record"] for x in lines] == [1, 2, 3, 4, 5]
    assert all(x["input"] == str(path) for x in lines)


def test_conversation_policies(tmp_path, demo_tok):
    path = write_jsonl(
        tmp_path / "chats.jsonl",
        [
            {"conversations": [{"from": "gpt", "value": "...continued"}, {"from": "human", "value": "Hi"},
                               {"from": "gpt", "value": "Hello"}]},
            {"conversations": [{"from": "human", "value": "Only a question"}]},
            {"conversations": [{"from": "narrator", "value": "?"}, {"from": "gpt", "value": "x"}]},
            {"conversations": []},
        ],
    )
    m = build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=256)
    assert m["counts"]["packed"] == 1
    assert m["counts"]["dropped_turns"] == {"leading_assistant": 1}
    assert m["counts"]["rejected"] == {"no_assistant_turn": 1, "unknown_role": 1, "empty_conversation": 1}


def test_strict_fails_on_first_rejection_and_leaves_no_manifest(tmp_path, demo_tok):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "a"}])
    with pytest.raises(BuildError, match=r"d\.jsonl: record 1: missing_field.*--strict"):
        build([path], tmp_path / "o", tokenizer=demo_tok, strict=True)
    # nothing at all is left: no output folder, no staging folder beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]
    m = build([path], tmp_path / "o", tokenizer=demo_tok)
    assert m["counts"]["rejected"] == {"missing_field": 1}


def test_refuses_a_folder_holding_a_file_packer_did_not_write_even_with_overwrite(tmp_path, demo_tok):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(BuildError, match=r"holds file 'precious\.txt', which packer did not write"):
            build(DEMO_INPUTS[:1], out, tokenizer=demo_tok, overwrite=overwrite)
    assert [p.name for p in out.iterdir()] == ["precious.txt"] and (out / "precious.txt").read_text() == "keep me"


def test_same_command_on_a_complete_output_is_a_no_op(tmp_path, demo_tok):
    out = tmp_path / "o"
    m = build(DEMO_INPUTS[:1], out, tokenizer=demo_tok, seq_len=512)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    notices = []
    again = build(DEMO_INPUTS[:1], out, tokenizer=demo_tok, seq_len=512, events=BuildEvents(on_notice=notices.append))
    assert again == m and "nothing to do" in notices[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(BuildError, match="add --overwrite"):  # other options are another output
        build(DEMO_INPUTS[:1], out, tokenizer=demo_tok, seq_len=256)


def test_nothing_packable_is_an_error(tmp_path, demo_tok):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "a", "output": ""}])
    with pytest.raises(BuildError, match=r"no record could be packed \(1 read; empty_output: 1\)"):
        build([path], tmp_path / "o", tokenizer=demo_tok)


def test_bad_options(tmp_path, demo_tok):
    with pytest.raises(BuildError, match="unknown role"):
        build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, strategy=["x=instruction,nonsense"])
    with pytest.raises(BuildError, match="built in"):
        build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, strategy=["full=response"])
    with pytest.raises(BuildError, match=r"missing\.json: no such file"):
        build([tmp_path / "missing.json"], tmp_path / "o", tokenizer=demo_tok)


def test_shard_schema_description_is_current():
    committed = json.loads((ROOT / "schemas" / "shards.schema.json").read_text())
    assert committed == json.loads(json.dumps(describe())), "run: python schemas/generate.py"


# -- CLI --------------------------------------------------------------------


def test_cli_build_with_demo_tokenizer(tmp_path):
    res = CliRunner().invoke(main, ["build", *map(str, DEMO_INPUTS), "-o", str(tmp_path / "o"), "--seq-len", "512"])
    assert res.exit_code == 0, res.output
    assert "demo tokenizer" in res.stderr and "useless for training" in res.stderr
    assert "records read" in res.stdout and "packing efficiency" in res.stdout
    assert "rejected: " in res.stderr and "sharegpt_demo.json: record" in res.stderr
    assert (tmp_path / "o" / "manifest.json").exists()


def test_cli_errors_exit_1_with_one_line(tmp_path):
    res = CliRunner().invoke(main, ["build", str(DEMO_INPUTS[0]), "--tokenizer", str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "no tokenizer.json found" in res.stderr


def test_cli_strict_exit_code(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "a"}])
    res = CliRunner().invoke(main, ["build", str(path), "-o", str(tmp_path / "o"), "--strict", "-q"])
    assert res.exit_code == 1 and "record 1: missing_field" in res.stderr


def test_cli_usage_error_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["build", str(DEMO_INPUTS[0]), "--packing", "worst-fit"])
    assert res.exit_code == 2


def test_console_script_runs(tmp_path):
    """The `packer` console script that `pip install` makes (here: beside this interpreter)."""
    exe = Path(sys.executable).with_name("packer")
    if not exe.exists():
        pytest.skip(f"packer is not installed into {exe.parent} (pip install -e .)")
    res = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.startswith("packer, version ")
    res = subprocess.run([exe, "build", *map(str, DEMO_INPUTS), "-o", str(tmp_path / "o"), "-q",
                          "--seq-len", "512"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o" / "manifest.json").is_file()


def test_a_build_from_python_logs_its_warnings(tmp_path, caplog):
    """Without the CLI's hooks, what a build warns of (here: more than 5% of the records rejected) goes to the
    ``packer`` logger: a library user is never left without it."""
    import logging

    from packer import build

    data = tmp_path / "data.jsonl"
    rows = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(10)]
    rows += [{"instruction": "Say nothing.", "output": ""}] * 2  # empty_output: 2 of 12 rejected
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="packer"):
        build([data], tmp_path / "out", tokenizer=DEMO_TOKENIZER, seq_len=256)
    warned = [r.getMessage() for r in caplog.records if r.name == "packer" and r.levelno == logging.WARNING]
    assert any("2 of 12 records rejected" in m for m in warned), warned
