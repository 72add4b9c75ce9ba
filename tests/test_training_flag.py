"""``"training": true`` / ``"weight": 1`` on a message that is not the assistant's (issue 25, item 4).

Axolotl's ``message_field_training`` trains a message marked ``true`` whatever its role; packer did read
the flag but honoured only ``false``. Now the flag overrides the role: the message's content gets loss under
every strategy (built in, ``--strategy`` role sets, role sets chosen at load time), the template's markup
around it stays masked, the shards record it per token (the ``forced`` column, added in format version 3) and
the manifest, ``packer inspect`` and ``PackedDataset`` count it. Builds without such a flag are unchanged: no
``forced`` column, the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from packer import build, load_tokenizer
from packer.cli import main
from packer.inspect.report import inspect
from packer.inspect.verify import verify
from packer.output import roles as R
from packer.output.container import read_table
from packer.tokens.tokenize import _token_roles, char_codes
from packer.train.dataset import PackedDataset

from .helpers import (
    DEMO_TOKENIZER,
    ROOT,
    SHARED_TOKENIZERS,
    need_shared,
    output_files,
    read_documents,
    real_tokenizer,
    shard_rows,
    write_stream_shard,
)
from .test_tools import WEATHER, call, check_masks, text_of, write_jsonl

#: a user-chosen role set, given at build time
PROMPT_ONLY = "prompt_only=instruction"

FLAGGED = [
    # 0: a user message marked training true (Axolotl)
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Name a tree.", "training": True},
                  {"role": "assistant", "content": "Oak."}]},
    # 1: the first user message marked weight 1 (OpenAI's field), in a two-exchange conversation
    {"messages": [{"role": "user", "content": "What is 2+2?", "weight": 1}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6"}]},
    # 2: a system message marked training true
    {"messages": [{"role": "system", "content": "You are terse.", "training": True},
                  {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
    # 3: every assistant turn untrained, a user message trained: something to learn after all
    {"messages": [{"role": "user", "content": "Say yes.", "training": True},
                  {"role": "assistant", "content": "Yes.", "training": False}]},
    # 4: a tool result marked training true
    {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                  {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Oslo"}, "a")]},
                  {"role": "tool", "tool_call_id": "a", "content": "sunny", "training": True},
                  {"role": "assistant", "content": "It is sunny."}],
     "tools": [WEATHER]},
    # 5: both flags on the user message, agreeing; the assistant's flag changes nothing
    {"messages": [{"role": "user", "content": "Name a fruit.", "training": True, "weight": 1},
                  {"role": "assistant", "content": "Apple.", "training": True}]},
    # 6: the same conversation as 0 without the flag
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a tree."},
                  {"role": "assistant", "content": "Oak."}]},
]
#: record -> the text of its forced tokens: the message's content alone, no markup around it
FORCED_TEXT = {0: "Name a tree.", 1: "What is 2+2?", 2: "You are terse.", 3: "Say yes.", 4: "sunny",
               5: "Name a fruit.", 6: ""}


@pytest.fixture(scope="module")
def demo_tok():  # type: ignore[no-untyped-def]
    return load_tokenizer(DEMO_TOKENIZER)


@pytest.fixture(scope="module")
def flagged(tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("flagged")
    path = write_jsonl(tmp / "f.jsonl", FLAGGED)
    m = build([path], tmp / "o", tokenizer=DEMO_TOKENIZER, template="chatml", seq_len=512, strategy=[PROMPT_ONLY])
    return m, tmp / "o"


def test_forced_tokens_are_the_messages_content_and_have_loss_under_every_strategy(flagged, demo_tok):
    m, out = flagged
    assert m["format"]["version"] == 5 and "forced" in read_table(out / m["shards"][0]["file"]).column_names
    assert m["counts"]["packed"] == len(FLAGGED) and m["counts"]["rejected"] == {}
    docs = read_documents(out)
    for i, expected in FORCED_TEXT.items():
        doc = docs[i]
        forced = doc["forced"].astype(bool)
        where = np.flatnonzero(forced)
        # one run of tokens, decoding to exactly the message's content: the markup around it is not forced
        assert len(where) == 0 or (np.diff(where) == 1).all(), i
        assert text_of(demo_tok, doc["input_ids"][forced]) == expected, i
        assert doc["trainable"][forced].all()
        for name in m["strategies"]:
            mask = doc[f"mask_{name}"].astype(bool)
            assert mask[forced].all(), (i, name)
            if len(where) and name in ("instruction_tuning", "answer_only", "prompt_only"):
                # the tokens just before and after (the template's markup) have no loss
                before, after = where[0] - 1, where[-1] + 1
                assert not mask[before] and (after == len(mask) or not mask[after]), (i, name)
    # instruction tuning trains on the marked user message and the answer, the system prompt not
    it = docs[0]["input_ids"][docs[0]["mask_instruction_tuning"].astype(bool)]
    assert text_of(demo_tok, it) == "Name a tree.Oak.<|im_end|>"
    # a role set of the prompt alone: the marked message, not the other user messages
    po = docs[1]["input_ids"][docs[1]["mask_prompt_only"].astype(bool)]
    assert text_of(demo_tok, po) == "What is 2+2?And 3+3?"
    assert text_of(demo_tok, docs[1]["input_ids"][docs[1]["mask_last_turn"].astype(bool)]) == "What is 2+2?6<|im_end|>"
    assert not docs[6]["forced"].any()  # the same record without the flag
    assert check_masks(out) == len(FLAGGED)
    assert verify(out) == []


def test_manifest_and_report_count_the_forced_tokens(flagged, tmp_path):
    m, out = flagged
    docs = read_documents(out)
    forced = np.concatenate([d["roles"][d["forced"].astype(bool)] for d in docs.values()])
    per_role = {R.ROLE_NAMES[int(c)]: int(n) for c, n in zip(*np.unique(forced, return_counts=True), strict=True)}
    assert m["tokens"]["forced"] == len(forced) > 0
    assert m["tokens"]["forced_per_role"] == per_role
    assert set(per_role) == {"instruction", "system", "tool"}
    # the manifest's loss tokens are the mask columns' (forced tokens of roles outside a strategy included)
    for name in m["strategies"]:
        assert m["tokens"]["loss"][name] == sum(int(d[f"mask_{name}"].sum()) for d in docs.values()), name
    r = inspect(out)
    assert r["tokens"]["forced"] == len(forced) and r["tokens"]["forced_per_role"] == per_role
    assert r["tokens"]["forced_share"] == pytest.approx(len(forced) / r["tokens"]["total"], abs=1e-6)
    # a tool result marked trained: loss under instruction_tuning, which has no tool role
    tool = sum(int((d["roles"] == R.TOOL)[d["mask_instruction_tuning"].astype(bool)].sum()) for d in docs.values())
    assert r["strategies"]["instruction_tuning"]["tool_roles"]["tool"]["loss_tokens"] == tool == per_role["tool"]
    jsonschema.validate(r, json.loads((ROOT / "schemas" / "report.schema.json").read_text()))
    res = CliRunner().invoke(main, ["inspect", str(out)], terminal_width=200)
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    res = CliRunner().invoke(main, ["inspect", str(out), "--html", str(tmp_path / "r.html")], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert (f"forced: {len(forced)} tokens" in text
            and "marked \"training\": true; they carry loss under every strategy" in text)
    assert f"forced: {len(forced)} tokens" in (tmp_path / "r.html").read_text()




@pytest.mark.parametrize(
    ("strategy", "prompt_loss_weight", "normalize"),
    [({"response", "end"}, None, None), ({"instruction"}, None, None), ("instruction_tuning", None, None),
     ("instruction_tuning", 0.25, None), ({"response", "end"}, 0.0, None), ("full", 0.5, None),
     ("last_turn", 0.1, "sequence")],
)
def test_packed_dataset_trains_the_forced_tokens(flagged, strategy, prompt_loss_weight, normalize):
    """A role set chosen at load time gives the forced tokens labels; with ``prompt_loss_weight`` they weigh 1,
    as a response does, whatever ``w`` is (the other prompt tokens weigh ``w``)."""
    _, out = flagged
    ds = PackedDataset(out, strategy=strategy, shuffle=False, prompt_loss_weight=prompt_loss_weight,
                       normalize=normalize)
    rows = shard_rows(out)
    items = list(ds)
    assert len(items) == len(rows) > 0
    seen = 0
    for item, row in zip(items, rows, strict=True):
        forced = np.asarray(row["forced"], dtype=bool)
        starts = np.cumsum(row["seq_lens"]) - np.asarray(row["seq_lens"])
        forced[starts] = False  # a document's first token is never trained
        ids = np.asarray(row["input_ids"])
        assert (item["labels"].numpy()[forced] == ids[forced]).all()
        if prompt_loss_weight is not None:
            weights = item["loss_weights"].numpy()
            prompt = R.role_lut(R.PROMPT_ROLES)[np.asarray(row["roles"], dtype=np.uint8)]
            if normalize is None:
                assert (weights[forced] == 1).all()
                other = prompt & ~forced & np.asarray(row["trainable"], dtype=bool)
                other[starts] = False
                assert np.allclose(weights[other], prompt_loss_weight)
            else:
                assert (weights[forced] > 0).all()
        seen += int(forced.sum())
    assert seen > 0


def test_a_build_without_forced_messages_has_no_forced_column_and_the_same_bytes(tmp_path):
    """"training": true on an assistant message changes nothing (it is trained anyway): the output has no forced
    column (as format version 2 had none), byte for byte the build of the same records without the flags."""
    plain = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
             {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
    marked = [{"messages": [{"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello.", "training": True}]},
              {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "weight": 1}]}]
    outs = []
    for name, records in (("plain", plain), ("marked", marked)):
        (tmp_path / name).mkdir()
        path = write_jsonl(tmp_path / name / "d.jsonl", records)
        m = build([path], tmp_path / name / "o", tokenizer=DEMO_TOKENIZER, template="chatml", seq_len=128)
        assert m["format"]["version"] == 5 and "forced" not in m["tokens"]
        table = read_table(tmp_path / name / "o" / m["shards"][0]["file"])
        assert "forced" not in table.column_names
        # (documents.arrow names the input's path, which differs)
        outs.append({k: v for k, v in output_files(tmp_path / name / "o").items() if k.startswith("shard-")})
    assert outs[0] == outs[1]


def test_flag_makes_records_differ_for_dedupe(tmp_path):
    """Two records differing only in a user message's flag train on different tokens: not duplicates."""
    path = write_jsonl(tmp_path / "d.jsonl", [FLAGGED[0], FLAGGED[6]])
    m = build([path], tmp_path / "o", tokenizer=DEMO_TOKENIZER, template="chatml", seq_len=128, dedupe=True)
    assert m["counts"]["packed"] == 2 and m["counts"]["duplicates"] == 0


def test_verify_finds_a_forced_token_on_template_markup(flagged, tmp_path):
    """A forced token outside a message's content (here: the marker before it) is reported."""
    import shutil

    m, src = flagged
    out = tmp_path / "o"
    shutil.copytree(src, out)
    shard = out / m["shards"][0]["file"]
    table = read_table(shard)
    rows = table.column("forced").to_pylist()
    roles = table.column("roles").to_pylist()
    k = next(j for j, r in enumerate(rows) if any(r))
    first = rows[k].index(True)
    assert roles[k][first - 1] == R.MARKER
    rows[k] = [*rows[k][: first - 1], True, *rows[k][first:]]
    at = table.column_names.index("forced")
    table = table.set_column(at, table.schema.field(at), pa.array(rows, type=pa.list_(pa.bool_())))
    write_stream_shard(shard, table)  # the same sizes: the manifest's index holds
    problems = verify(out, hashes=False)
    assert any("forced tokens outside the content" in p for p in problems), problems


def test_a_control_token_that_absorbs_forced_content_is_not_forced():
    """A control token that swallows a character of a marked message's content (Phi-3's ``<|user|>`` eating a
    newline) is the template's: ``special``, and not forced, so no strategy trains it."""
    values = char_codes(np.array([R.SPECIAL, R.INSTRUCTION], np.uint8), np.array([False, False]),
                        forced=np.array([False, True]))
    chars = np.repeat(values, [3, 4])  # 3 characters of a control token, then 4 of the marked content
    codes, flags, absorbed = _token_roles(chars, np.array([0, 4]), np.array([4, 7]), np.array([True, False]))
    assert codes.tolist() == [R.SPECIAL, R.INSTRUCTION] and absorbed.tolist() == [1, 0]
    assert [(int(f) & R.FORCED_FLAG) != 0 for f in flags] == [False, True]


@pytest.mark.parametrize("name", ["phi-3-mini-instruct", "llama-3-8b-instruct", "qwen2.5-instruct"])
def test_real_templates_force_exactly_the_content(tmp_path, name):
    """With the models' own templates, the forced tokens are the marked user message's content (the straddle
    rule may give them a space or newline of the markup beside it), never a control token."""
    need_shared()
    tok_dir = SHARED_TOKENIZERS / name
    tok = real_tokenizer(name)
    path = write_jsonl(tmp_path / "f.jsonl", [FLAGGED[0], FLAGGED[1], FLAGGED[6]])
    m = build([path], tmp_path / "o", tokenizer=tok_dir, template="tokenizer", seq_len=512)
    assert m["format"]["version"] == 5 and m["counts"]["rejected"] == {}
    docs = read_documents(tmp_path / "o")
    special = {tok.tokenizer.token_to_id(t) for t in tok.special_tokens}
    for i in (0, 1):
        doc = docs[i]
        forced = doc["forced"].astype(bool)
        assert text_of(tok, doc["input_ids"][forced]).strip() == FORCED_TEXT[i], (name, i)
        assert not set(doc["input_ids"][forced].tolist()) & special
        assert set(doc["roles"][forced].tolist()) == {R.INSTRUCTION}
        assert doc["mask_instruction_tuning"].astype(bool)[forced].all()
    assert not docs[2]["forced"].any()
    assert verify(tmp_path / "o") == []



def _same_shards_in_parts(single: Path, tmp_path: Path, name: str, **kw: object) -> None:
    """The build of FLAGGED cut in parts (``kw``) writes the shards of ``single``, with the forced column."""
    path = write_jsonl(tmp_path / "f.jsonl", FLAGGED)
    m = build([path], tmp_path / name, tokenizer=DEMO_TOKENIZER, template="chatml", seq_len=512,
              strategy=[PROMPT_ONLY], **kw)  # type: ignore[arg-type]
    assert m["format"]["version"] == 5 and m["tokens"]["forced"] > 0
    # (documents.arrow and the manifest name the input's path, which differs)
    shards = {k: v for k, v in output_files(single).items() if k.startswith("shard-")}
    assert {k: v for k, v in output_files(tmp_path / name).items() if k.startswith("shard-")} == shards


def test_parts_give_the_same_forced_output(flagged, tmp_path):
    """The forced column is decided for the whole build (any part spilled a forced token), not per part."""
    _same_shards_in_parts(flagged[1], tmp_path, "parts", part_size=300 / 2**20)


@pytest.mark.slow
def test_worker_processes_write_the_forced_column(flagged, tmp_path):
    """Shards written by worker processes get the forced column too (the write tasks carry the flag)."""
    _same_shards_in_parts(flagged[1], tmp_path, "workers", workers=2, part_size=300 / 2**20)
