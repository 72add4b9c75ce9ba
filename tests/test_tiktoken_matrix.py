"""The tiktoken core gives the tokenizers build on every real data file, for every qualifying real tokenizer
(issue 17's "must show").

``build(tokenizer_backend="tiktoken")`` must write the very bytes ``build(tokenizer_backend="tokenizers")``
writes (only the manifest's ``tokenizer.backend`` says which core made the ids). test_tiktoken_core.py shows
it for two tokenizers on three files; here it is the whole matrix: Qwen2.5, Qwen3, Llama 3 (both revisions of
its files: their templates and BOS handling differ) and GPT-2, each on a slice of EVERY ``*.json`` /
``*.jsonl`` file of ``../shared/data`` (Chinese Alpaca, code, math, ShareGPT with its odd roles and literal
``<|endoftext|>`` text, tool calls, LIMA's long answers, pre-rendered prompts, ...): a new data file is
covered without a change here.

Each slice is the file's first :data:`RECORDS` records (a file with fewer is whole) plus the odd records of
:data:`EXTRA`, written in the file's own format. To stay within about a minute on two cores, one build per
tokenizer and backend takes every slice (a build takes a list of inputs); a failure names the (file, record)
pairs whose ids differ. The builds truncate at 2,048 tokens (so long ShareGPT and LIMA records are cut) and
drop blank turns instead of rejecting their record (so the empty-turn fixtures are built, not only
rejected). Records a template refuses (Llama 3's templates render no tool calls) are rejected by both builds
alike: the rejected list is one of the compared files. GPT-2 has no chat template and gets ``chatml``, whose
markers it encodes as plain text.

The tiktoken build also checks a sample of records against tokenizers as it runs and falls back to
tokenizers on a difference; a fallback would give identical bytes too, so the test asserts the manifest says
``backend: tiktoken`` (no fallback happened). ``benchmarks/tiktoken_matrix.py`` runs the same comparison on
the whole files, with timings.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.ipc as ipc
import pytest

from .helpers import SHARED, need_shared, outputs_less_backend, read_documents, tokenizer_params

pytest.importorskip("tiktoken")

#: tokenizer directory in ../shared/tokenizers -> the template its builds use
TOKENIZERS = {
    "qwen2.5-instruct": "tokenizer",
    "qwen3": "tokenizer",
    "llama-3-8b-instruct": "tokenizer",
    "llama-3-8b-instruct-initial": "tokenizer",
    "gpt2": "chatml",  # no chat template of its own
}
#: the first records of each data file that go into its slice
RECORDS = 40
#: records beyond the first RECORDS that are worth their time, by file: in ShareGPT V3, a lone system turn
#: (141), a system turn first (1160), the literal text "<|endoftext|>" (1835, 1836), a "bing" role (2260)
EXTRA = {"sharegpt_v3_unfiltered_cleaned_split_first3000.json": (141, 1160, 1835, 1836, 2260)}
BUILD = {"seq_len": 2048, "overlong": "truncate", "blank_turns": "drop"}
#: keys of preference records (DPO pairs, KTO labels): packer does not read those files yet (issue 27), so they
#: are no part of the SFT matrix
PREFERENCE_KEYS = {"chosen", "rejected", "chosen_messages", "rejected_messages", "label"}


def _first_record(path: Path) -> dict:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            return json.loads(f.readline())
    data = json.loads(path.read_text(encoding="utf-8"))
    return data[0] if isinstance(data, list) else data


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> list[str]:
    """A slice of every data file, in its format: JSON Lines as the file's own lines, a JSON array re-dumped,
    a file holding one JSON object copied whole."""
    need_shared()
    out = tmp_path_factory.mktemp("matrix")
    files = sorted(p for p in (SHARED / "data").iterdir() if p.suffix in (".json", ".jsonl")
                   and not PREFERENCE_KEYS & set(_first_record(p)))
    assert len(files) >= 14, [p.name for p in files]
    paths = []
    for src in files:
        dst = out / src.name
        extra = EXTRA.get(src.name, ())
        if src.suffix == ".jsonl":
            lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
            dst.write_text("".join(lines[:RECORDS] + [lines[i] for i in extra]), encoding="utf-8")
        else:
            data = json.loads(src.read_text(encoding="utf-8"))
            if isinstance(data, list):
                data = data[:RECORDS] + [data[i] for i in extra]
            dst.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        paths.append(str(dst))
    return paths


def _differences(hf: Path, tk: Path, limit: int = 5) -> list[str]:
    """(input, record, first differing token) of documents whose columns differ between two outputs."""
    names = {}
    for row in ipc.open_file(hf / "documents.arrow").read_all().select(["doc_id", "input", "record"]).to_pylist():
        names[row["doc_id"]] = f"{Path(row['input']).name} record {row['record']}"
    a, b = read_documents(hf), read_documents(tk)
    out = [f"documents only in one output: {sorted(set(a) ^ set(b))[:limit]}"] if set(a) != set(b) else []
    for doc_id in sorted(set(a) & set(b)):
        for col, x in a[doc_id].items():
            y = b[doc_id][col]
            if len(x) != len(y) or (x != y).any():
                at = next((i for i in range(min(len(x), len(y))) if x[i] != y[i]), min(len(x), len(y)))
                out.append(f"{names.get(doc_id, doc_id)}: {col} from token {at}: tokenizers {x[at:at + 8].tolist()}"
                           f" tiktoken {y[at:at + 8].tolist()}")
                break
        if len(out) >= limit:
            break
    return out


@pytest.mark.parametrize("name", tokenizer_params(list(TOKENIZERS)))
def test_every_data_file_builds_the_same_with_tiktoken(slices, tmp_path, name):
    from packer import build
    from packer.pipeline.build import BuildEvents

    kw = {"tokenizer": SHARED / "tokenizers" / name, "template": TOKENIZERS[name], **BUILD}
    build(slices, tmp_path / "hf", tokenizer_backend="tokenizers", **kw)
    notices: list[str] = []
    m = build(slices, tmp_path / "tk", tokenizer_backend="tiktoken", events=BuildEvents(on_notice=notices.append),
              **kw)
    assert m["tokenizer"].get("backend") == "tiktoken", notices  # the core made the ids: no fallback
    hf, tk = outputs_less_backend(tmp_path / "hf"), outputs_less_backend(tmp_path / "tk")
    assert (hf.pop("backend"), tk.pop("backend")) == ("tokenizers", "tiktoken")
    assert set(hf) >= {"manifest.json", "documents.arrow", "rejected.jsonl", "shard-00000.arrow"}
    assert tk == hf, _differences(tmp_path / "hf", tmp_path / "tk")
    # every file has documents in the shards, not only rejected records
    docs = ipc.open_file(tmp_path / "tk" / "documents.arrow").read_all()
    packed = Counter(Path(d["input"]).name for d in docs.select(["input", "status"]).to_pylist()
                     if d["status"] in ("packed", "truncated"))
    assert sorted(packed) == sorted(Path(p).name for p in slices), packed
