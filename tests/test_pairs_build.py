"""Preference builds (issue 27): every pair packed as one unit whose two sides are exactly the model's tokens.

The oracle reads the input JSON itself (never packer's reader) and asks transformers' ``apply_chat_template`` for
each side's ids; the shards must hold, per pair, a prefix and two suffixes whose concatenations are those ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest

from packer import build
from packer.output.container import read_table
from packer.read.records import BuildError

from .helpers import DEMO_TOKENIZER, SHARED_DATA, SHARED_TOKENIZERS, hf_tokenizer, need_shared, tokenizer_params

_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
         "tool": "tool", "observation": "tool", "function_call": "assistant"}


def _text(content: object) -> str:
    """A message's content as text: a string, or LLaMA-Factory v1's typed parts joined."""
    if isinstance(content, str):
        return content
    return "".join(p.get("value", p.get("text", "")) for p in content)  # type: ignore[union-attr]


def _msgs(turns: list[dict]) -> list[dict]:
    """Turns as transformers takes them; tool calls and reasoning passed on as the record gives them."""
    out = []
    for t in turns:
        m = {"role": _ROLE[t.get("role", t.get("from"))], "content": _text(t.get("content", t.get("value")))}
        m.update({k: t[k] for k in ("tool_calls", "reasoning_content", "tool_call_id") if k in t})
        out.append(m)
    return out


def oracle_sides(record: dict) -> tuple[list[dict], list[dict]]:
    """The two conversations of a preference record, as transformers takes them, read straight from the JSON."""
    if "chosen_messages" in record:
        return _msgs(record["chosen_messages"]), _msgs(record["rejected_messages"])
    if "conversations" in record:
        prompt = _msgs(record["conversations"])
        if record.get("system"):
            prompt = [{"role": "system", "content": record["system"]}, *prompt]
        return prompt + _msgs([record["chosen"]]), prompt + _msgs([record["rejected"]])
    prompt = record.get("prompt", [])
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _msgs(prompt)

    def side(v: object) -> list[dict]:
        return [{"role": "assistant", "content": v}] if isinstance(v, str) else _msgs(v)  # type: ignore[arg-type]

    return prompt + side(record["chosen"]), prompt + side(record["rejected"])


def load_records(path: Path) -> list[dict]:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line]


def units(out: Path) -> dict[int, dict[str, np.ndarray]]:
    """doc_id -> the pair's stored unit: every per-token column, sliced by seq_lens (pairs shared)."""
    manifest = json.loads((out / "manifest.json").read_text())
    got: dict[int, dict[str, np.ndarray]] = {}
    for split in ("shards", "eval"):
        shards = manifest["shards"] if split == "shards" else (manifest.get("eval") or {}).get("shards", [])
        for shard in shards:
            for row in read_table(out / shard["file"]).to_pylist():
                pos = 0
                for n, d in zip(row["seq_lens"], row["doc_ids"], strict=True):
                    assert d not in got, f"pair {d} stored twice"
                    got[d] = {c: np.asarray(row[c][pos : pos + n]) for c in row if c not in ("seq_lens", "doc_ids")}
                    pos += n
    return got


def documents(out: Path) -> list[dict]:
    return ipc.open_file(out / "documents.arrow").read_all().to_pylist()


def side_ids(unit: dict[str, np.ndarray]) -> tuple[list[int], list[int]]:
    b, ids = unit["branch"], unit["input_ids"]
    return ids[b != 2].tolist(), ids[b != 1].tolist()


def check_counts(m: dict) -> None:
    c = m["counts"]
    assert c["records"] == c["packed"] + sum(c["rejected"].values()), c  # packed counts the truncated


SHARED_FILES = ["llamafactory_dpo_en_demo.json", "llamafactory_v1_dpo_demo.jsonl"]


#: the inner loop checks every tokenizer on the small file and Qwen2.5 on the large one; CI all of them
SIDE_CASES = [pytest.param(name, data, marks=[pytest.mark.slow] if data == SHARED_FILES[0] and name[0] != "q" else [])
              for data in SHARED_FILES for name in ("qwen2.5-instruct", "llama-3-8b-instruct", "phi-3-mini-instruct")]


@pytest.mark.parametrize(("name", "data"), SIDE_CASES)
def test_each_side_equals_apply_chat_template(name, data, tmp_path):
    """Per pair, prefix + chosen suffix and prefix + rejected suffix are apply_chat_template of each side."""
    need_shared()
    path = SHARED_DATA / data
    loader = "transformers"  # the ids the training stack (TRL, transformers 5) makes
    m = build([path], tmp_path / "o", tokenizer=SHARED_TOKENIZERS / name, tokenizer_loader=loader, seq_len=8192,
              overlong="drop")
    check_counts(m)
    assert m["kind"] == "pairs" and m["pairs"] == "shared" and m["format"]["version"] == 5
    hf = hf_tokenizer(SHARED_TOKENIZERS / name)
    records = load_records(path)
    docs = documents(tmp_path / "o")
    got = units(tmp_path / "o")
    packed = [d for d in docs if d["status"] == "packed"]
    assert len(packed) >= 0.9 * len(records)
    for d in packed:
        chosen, rejected = oracle_sides(records[d["record"]])
        want_c = list(hf.apply_chat_template(chosen, tokenize=True, return_dict=False))
        want_r = list(hf.apply_chat_template(rejected, tokenize=True, return_dict=False))
        c, r = side_ids(got[d["doc_id"]])
        assert c == want_c, f"{data} record {d['record']}: chosen side differs"
        assert r == want_r, f"{data} record {d['record']}: rejected side differs"
        # the prefix is the longest common prefix, capped so each side keeps a token of its own
        n = min(len(want_c), len(want_r))
        common = next((i for i in range(n) if want_c[i] != want_r[i]), n)
        assert d["shared_tokens"] == min(common, len(want_c) - 1, len(want_r) - 1)
        assert d["chosen_tokens"] == len(want_c) - d["shared_tokens"]
        assert d["rejected_tokens"] == len(want_r) - d["shared_tokens"]


def test_dpo_demo_tokens_stored_once(tmp_path):
    """llamafactory_dpo_en_demo.json with Qwen2.5: the two sides hold 443,729 tokens, 315,410 with the prefix once."""
    need_shared()
    m = build([SHARED_DATA / "llamafactory_dpo_en_demo.json"], tmp_path / "o",
              tokenizer=SHARED_TOKENIZERS / "qwen2.5-instruct", seq_len=16384)
    assert m["counts"]["packed"] == 300
    stored = sum(s["tokens"] for s in m["shards"])
    assert abs(stored - 315_410) <= 0.01 * 315_410, stored
    docs = documents(tmp_path / "o")
    assert sum(d["shared_tokens"] + d["chosen_tokens"] + d["rejected_tokens"] for d in docs) == stored
    assert sum(2 * d["shared_tokens"] + d["chosen_tokens"] + d["rejected_tokens"] for d in docs) == 443_729


def _pairs_file(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


PAIRS = [
    {"prompt": "What is 2+2?", "chosen": "The answer is 4.", "rejected": "The answer is 5."},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
     "chosen": [{"role": "assistant", "content": "Blue."}], "rejected": [{"role": "assistant", "content": "Dog."}]},
    {"prompt": "Say yes.", "chosen": "Yes", "rejected": "Yes, certainly, yes indeed."},
    {"prompt": "Same?", "chosen": "Same.", "rejected": "Same."},
]


def test_pair_rows_layout_and_separate(tmp_path):
    """Shared: one seq_lens entry per pair, branch 0* 1+ 2+; separate: the two whole sides, two entries per pair,
    the same sides' ids; identical sides rejected with a reason."""
    path = _pairs_file(tmp_path, PAIRS)
    shared = build([path], tmp_path / "s", tokenizer=DEMO_TOKENIZER, seq_len=256, template="chatml")
    sep = build([path], tmp_path / "p", tokenizer=DEMO_TOKENIZER, seq_len=256, template="chatml", pairs="separate")
    for m in (shared, sep):
        check_counts(m)
        assert m["counts"]["packed"] == 3 and m["counts"]["rejected"] == {"identical_sides": 1}
    rej = [json.loads(line) for line in (tmp_path / "s" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["record"], r["reason"]) for r in rej] == [(3, "identical_sides")]
    got = units(tmp_path / "s")
    for u in got.values():
        b = u["branch"].tolist()
        assert b == sorted(b) and b.count(1) >= 1 and b.count(2) >= 1
    rows = read_table(tmp_path / "p" / sep["shards"][0]["file"]).to_pylist()
    sides: dict[int, list[list[int]]] = {}
    for row in rows:
        assert len(row["seq_lens"]) % 2 == 0
        pos = 0
        for n, d in zip(row["seq_lens"], row["doc_ids"], strict=True):
            branch = set(row["branch"][pos : pos + n])
            assert len(branch) == 1 and branch <= {1, 2}
            sides.setdefault(d, []).append(row["input_ids"][pos : pos + n])
            pos += n
    assert {d: tuple(map(list, side_ids(u))) for d, u in got.items()} == {d: tuple(s) for d, s in sides.items()}
    # "The answer is" is in both sides' completions: shared, with the response role
    first = documents(tmp_path / "s")[0]
    u = got[0]
    assert (u["roles"][: first["shared_tokens"]] == 7).any()  # role 'response' in the prefix


def test_overlong_pairs(tmp_path):
    """drop: a pair over seq_len is rejected; truncate: both completions cut to the same length; a prompt that
    leaves fewer than 2 tokens a side is rejected; split is refused."""
    long = "word " * 60
    path = _pairs_file(tmp_path, [{"prompt": "Hi", "chosen": long, "rejected": "Short answer here."},
                                  {"prompt": long * 2, "chosen": "a b", "rejected": "c d"}, PAIRS[0]])
    m = build([path], tmp_path / "d", tokenizer=DEMO_TOKENIZER, seq_len=64, template="chatml")
    check_counts(m)
    assert m["counts"]["rejected"] == {"overlong": 2}
    with pytest.raises(BuildError, match=r"longest has 138 tokens.*--overlong truncate cuts both completions"):
        build([path], tmp_path / "d2", tokenizer=DEMO_TOKENIZER, seq_len=64, template="chatml", max_rejected=0.5)
    m = build([path], tmp_path / "t", tokenizer=DEMO_TOKENIZER, seq_len=64, template="chatml", overlong="truncate")
    check_counts(m)
    assert m["counts"]["truncated"] == 1 and m["counts"]["rejected"] == {"overlong": 1}
    d = documents(tmp_path / "t")[0]
    assert d["status"] == "truncated" and d["tokens"] <= 64
    assert d["shared_tokens"] + d["chosen_tokens"] + d["rejected_tokens"] == d["tokens"]
    with pytest.raises(BuildError, match=r"split.*preference pairs"):
        build([path], tmp_path / "x", tokenizer=DEMO_TOKENIZER, seq_len=64, overlong="split")


def test_sft_and_pairs_refused_together(tmp_path):
    path = _pairs_file(tmp_path, PAIRS[:1])
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    with pytest.raises(BuildError, match="cannot go into one output"):
        build([sft, path], tmp_path / "o", tokenizer=DEMO_TOKENIZER)


def test_kto_labels(tmp_path):
    """KTO records are documents with their label: documents.arrow's label, the shards' labels per document."""
    path = tmp_path / "kto.jsonl"
    recs = [{"prompt": f"Question {i}?", "completion": f"Answer {i}.", "label": i % 3 != 0} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    m = build([path], tmp_path / "o", tokenizer=DEMO_TOKENIZER, seq_len=64, template="chatml")
    check_counts(m)
    assert m["kind"] == "kto" and m["format"]["version"] == 5
    docs = documents(tmp_path / "o")
    assert [d["label"] for d in docs] == [r["label"] for r in recs]
    seen = {}
    for shard in m["shards"]:
        for row in read_table(tmp_path / "o" / shard["file"]).to_pylist():
            assert len(row["labels"]) == len(row["doc_ids"])
            seen.update(zip(row["doc_ids"], row["labels"], strict=True))
    assert seen == {i: r["label"] for i, r in enumerate(recs)}


def test_pairs_with_eval_split_and_dedupe(tmp_path):
    path = _pairs_file(tmp_path, [*PAIRS[:3] * 2, *[{"prompt": f"Q{i}", "chosen": f"A{i}", "rejected": f"B{i} no"}
                                                    for i in range(20)]])
    m = build([path], tmp_path / "o", tokenizer=DEMO_TOKENIZER, seq_len=128, template="chatml", dedupe=True,
              eval_records=4)
    check_counts(m)
    assert m["counts"]["rejected"] == {"duplicate": 3}
    got = units(tmp_path / "o")
    assert len(got) == 23 and all(set(u["branch"].tolist()) >= {1, 2} for u in got.values())


@pytest.mark.parametrize("name", ["qwen2.5-instruct", *[pytest.param(n, marks=pytest.mark.slow)
                                                        for n in ("llama-3-8b-instruct", "phi-3-mini-instruct")]])
def test_kto_shared_file(name, tmp_path):
    """llamafactory_kto_en_demo.json: every record counted, each packed document's label and ids the file's."""
    need_shared()
    path = SHARED_DATA / "llamafactory_kto_en_demo.json"
    m = build([path], tmp_path / "o", tokenizer=SHARED_TOKENIZERS / name, tokenizer_loader="transformers",
              seq_len=8192)
    check_counts(m)
    assert m["kind"] == "kto"
    records = load_records(path)
    hf = hf_tokenizer(SHARED_TOKENIZERS / name)
    docs = {d["doc_id"]: d for d in documents(tmp_path / "o")}
    packed = 0
    for shard in m["shards"]:
        for row in read_table(tmp_path / "o" / shard["file"]).to_pylist():
            pos = 0
            for n, d, label in zip(row["seq_lens"], row["doc_ids"], row["labels"], strict=True):
                rec = records[docs[d]["record"]]
                assert label is rec["label"] is docs[d]["label"]
                assert row["input_ids"][pos : pos + n] == list(
                    hf.apply_chat_template(_msgs(rec["messages"]), tokenize=True, return_dict=False))
                pos += n
                packed += 1
    assert packed == m["counts"]["packed"] >= 0.9 * len(records)


_TOOL_TURNS = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
    {"role": "tool", "content": "{\"temp\": 3}"},
]
#: one record of each pair shape, with a system prompt, a multi-turn prompt and tool calls inside
SHAPES = {
    "preference": {"prompt": [{"role": "system", "content": "Be brief."}, *_TOOL_TURNS],
                   "chosen": [{"role": "assistant", "content": "It is 3 degrees in Oslo."}],
                   "rejected": [{"role": "assistant", "content": "It is sunny and 30 degrees."}]},
    "preference_strings": {"prompt": "Name a prime.", "chosen": "7 is prime.", "rejected": "9 is prime."},
    "preference_implicit": {"chosen": [*_TOOL_TURNS, {"role": "assistant", "content": "3 degrees."}],
                            "rejected": [*_TOOL_TURNS, {"role": "assistant", "content": "No idea."}]},
    "ranking": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                                  {"from": "human", "value": "2+2?"}],
                "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}},
    "ranking_messages": {"chosen_messages": [{"role": "user", "content": [{"type": "text", "value": "2+3?"}]},
                                             {"role": "assistant", "content": [{"type": "text", "value": "5"}]}],
                         "rejected_messages": [{"role": "user", "content": [{"type": "text", "value": "2+3?"}]},
                                               {"role": "assistant", "content": [{"type": "text", "value": "6"}]}]},
}


@pytest.mark.parametrize("name", tokenizer_params(["qwen2.5-instruct", "llama-3-8b-instruct"]))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_pair_shape_equals_apply_chat_template(name, shape, tmp_path):
    """Each shape (system prompt, multi-turn prompt, tool calls and results inside): both sides' ids are
    apply_chat_template of the record's conversations (Llama 3's template renders no tool calls: those pairs are
    rejected, naming the side, as in SFT)."""
    need_shared()
    if name.startswith("llama") and "tool_calls" in json.dumps(SHAPES[shape]):
        with pytest.raises(BuildError, match="chosen: template 'tokenizer': the template does not render the tool"):
            build([_pairs_file(tmp_path, [SHAPES[shape]])], tmp_path / "o", tokenizer=SHARED_TOKENIZERS / name)
        return
    record = SHAPES[shape]
    path = _pairs_file(tmp_path, [record])
    m = build([path], tmp_path / "o", tokenizer=SHARED_TOKENIZERS / name, tokenizer_loader="transformers",
              seq_len=4096)
    assert m["counts"]["packed"] == 1, m["counts"]
    hf = hf_tokenizer(SHARED_TOKENIZERS / name)
    chosen, rejected = oracle_sides(record)
    want = tuple(list(hf.apply_chat_template(s, tokenize=True, return_dict=False)) for s in (chosen, rejected))
    assert side_ids(units(tmp_path / "o")[0]) == want


@pytest.mark.slow
def test_pairs_same_bytes_for_any_workers(tmp_path):
    """Pairs map in worker processes like conversations: 1 worker or 2 (parts of 16 KiB), the same files."""
    from .helpers import output_files

    data = Path(__file__).resolve().parents[1] / "examples" / "dpo_demo.jsonl"
    one = build([data], tmp_path / "one", tokenizer=DEMO_TOKENIZER, seq_len=256)
    two = build([data], tmp_path / "two", tokenizer=DEMO_TOKENIZER, seq_len=256, workers=2, part_size=1 / 64)
    assert one["counts"] == two["counts"]
    assert output_files(tmp_path / "one") == output_files(tmp_path / "two")
