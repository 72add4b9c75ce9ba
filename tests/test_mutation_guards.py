"""Rules no test guarded: each test here fails under one deliberate change to the code (issue 25, "Where the
suite cannot see"). The change each one catches is in its docstring; the habit is to make it once by hand, see
the test fail, and revert.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from packer import BuildError, build
from packer.output import roles as R
from packer.pipeline.build import BuildEvents
from packer.tokens.assembly import checked
from packer.train.collate import collate_4d, collate_docs, collate_flat, collate_padded
from packer.train.items import ItemSpec, make_item
from packer.train.rows import Row

from .helpers import DEMO_TOKENIZER


def _write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# -- items.py: a document's first token has no weight ------------------------------------------------------


def _two_documents() -> Row:
    """Two documents of 4 and 3 tokens, each opening with a special token (role 1)."""
    roles = np.array([R.SPECIAL, R.INSTRUCTION, R.RESPONSE, R.END, R.SPECIAL, R.INSTRUCTION, R.RESPONSE], np.uint8)
    return Row(ids=np.arange(10, 17, dtype=np.int32), roles=roles, mask=None,
               seq_lens=np.array([4, 3], np.int32), doc_ids=np.array([0, 1], np.int64))


@pytest.mark.parametrize("roles", [tuple(R.ROLES), ("special", "response", "end")])
@pytest.mark.parametrize("normalize", [None, "sequence"])
def test_first_token_of_each_document_has_no_weight_under_a_strategy_that_includes_it(roles, normalize):
    """Catches dropping ``weights[starts] = 0.0`` in :func:`packer.train.items.make_item`: under ``full`` (or a role set
    with ``special``) and ``prompt_loss_weight``, the first token of every document would train, predicted
    from the document before it."""
    spec = ItemSpec(role_lut=R.role_lut(roles), prompt_lut=R.role_lut(R.PROMPT_ROLES), prompt_loss_weight=0.5,
                    normalize=normalize, return_doc_ids=False)
    item = make_item(_two_documents(), spec)
    weights, labels = item["loss_weights"].numpy(), item["labels"].as_subclass(torch.Tensor).numpy()
    assert weights[[0, 4]].tolist() == [0.0, 0.0]
    assert labels[[0, 4]].tolist() == [-100, -100]
    assert (weights[[1, 2, 3, 5, 6]] > 0).all()  # the rest of each document still trains
    if normalize is None:
        assert weights.tolist() == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0]


def test_first_token_of_each_document_has_no_weight_in_packed_rows(demo_output):
    """The same through :class:`PackedDataset` on the demo build, ``full`` with ``prompt_loss_weight``."""
    from packer.train.dataset import PackedDataset

    ds = PackedDataset(demo_output, strategy="full", shuffle=False, prompt_loss_weight=0.1)
    for n, item in enumerate(ds):
        lens = item["seq_lens"].numpy().astype(np.int64)
        starts = np.cumsum(lens) - lens
        assert (item["loss_weights"].numpy()[starts] == 0).all()
        assert (item["labels"].as_subclass(torch.Tensor).numpy()[starts] == -100).all()
        assert (item["loss_weights"].numpy()[starts[1:] - 1] > 0).all()  # a document's last token does train
        if n == 20:
            break


# -- collate.py: positions restart per document when an item has none ---------------------------------------


@pytest.mark.parametrize("collate", [collate_flat, collate_4d, collate_docs, collate_padded])
def test_positions_from_seq_lens_restart_per_document(collate):
    """Catches ``position_ids`` made from ``seq_lens`` as a plain ``arange`` (no restart per document) for an
    item that brings no ``position_ids``."""
    items = [{"input_ids": torch.arange(5), "labels": torch.arange(5), "seq_lens": torch.tensor([3, 2])},
             {"input_ids": torch.arange(4), "labels": torch.arange(4), "seq_lens": torch.tensor([1, 1, 2])}]
    batch = collate(items)
    pos = batch["position_ids"]
    if collate is collate_flat:
        assert pos.tolist() == [[0, 1, 2, 0, 1, 0, 0, 0, 1]]
    else:
        assert pos[0].tolist() == [0, 1, 2, 0, 1]
        assert pos[1, :4].tolist() == [0, 0, 0, 1]


# -- combine.py / part.py: the per-reason counts behind the lost-records messages -----------------------------


def test_every_rejection_is_counted_once_by_reason_when_nothing_packs(tmp_path):
    """Catches rejections of the read stage left out of the per-reason counts that a build packing nothing
    names, and a duplicate the combine stage re-marks counted under its part's reason too (or twice): two empty
    answers (read stage), an overlong record (token stage) and its copy in another part (a duplicate)."""
    long = {"instruction": "word " * 400, "output": "ok"}
    records = [{"instruction": "Hi", "output": ""}, {"instruction": "Hi again", "output": "   "}, long, long]
    path = _write_jsonl(tmp_path / "r.jsonl", records)
    with pytest.raises(BuildError) as e:
        build([path], tmp_path / "o", tokenizer=DEMO_TOKENIZER, seq_len=64, dedupe=True, part_size=1 / 2**20)
    message = str(e.value)
    assert re.search(r"\bempty_output: 2\b", message), message
    assert re.search(r"\boverlong: 1\b", message) and re.search(r"\bduplicate: 1\b", message), message


#: a record whose first 64 tokens are all prompt: truncating it leaves nothing to learn (overlong_no_loss)
_NO_LOSS = {"instruction": "word " * 400, "output": "ok"}


def _no_loss_build(tmp_path: Path, **kw: object) -> dict:
    """Two copies of a no-loss record, in different parts (one record a part), among 18 good records; with
    ``--dedupe`` the second copy, rejected by its own part, is re-marked a duplicate by the combine stage."""
    records = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(18)]
    records[3:3] = [_NO_LOSS]
    records[12:12] = [_NO_LOSS]
    path = _write_jsonl(tmp_path / "r.jsonl", records)
    return build([path], tmp_path / "o", tokenizer=DEMO_TOKENIZER, seq_len=64, overlong="truncate", dedupe=True,
                 part_size=1 / 2**20, **kw)  # type: ignore[arg-type]


def test_a_re_marked_duplicate_is_counted_once_in_the_warning(tmp_path):
    """Catches the combine stage counting a duplicate it re-marks under its part's reason too (the hint of the
    lost-records warning would say 2 records have no response where 1 has: the other is a duplicate)."""
    notices: list[str] = []
    m = _no_loss_build(tmp_path, events=BuildEvents(on_notice=notices.append))
    assert m["counts"]["rejected"] == {"duplicate": 1, "overlong_no_loss": 1}
    hints = [n for n in notices if "have no response in their first 64 tokens" in n]
    assert len(hints) == 1 and re.match(r"1 records have no response", hints[0]), notices


def test_a_re_marked_duplicate_is_counted_once_in_the_max_rejected_message(tmp_path):
    """The same count in the message of a build that ``--max-rejected`` fails."""
    with pytest.raises(BuildError, match=r"more than --max-rejected 0.01; nothing was written; 1 records have no "
                                         r"response in their first 64 tokens"):
        _no_loss_build(tmp_path, max_rejected=0.01)


# -- part.py: the tiktoken core's run-time check compares the records checked(doc_id) picks ------------------


def test_the_tiktoken_check_compares_the_records_checked_picks(tmp_path, monkeypatch):
    """Catches the run-time check picking records by their place in a batch (``checked(k)``) instead of by doc_id
    (``checked(doc_id)``): the records encoded by ``tokenizers`` as well must be exactly those
    :func:`packer.tokens.assembly.checked` names, in every batch and part."""
    from packer.tokens.tokenize import Labeller

    compared: list[str] = []
    real = Labeller.reference

    def spy(self, texts):  # type: ignore[no-untyped-def]
        compared.extend(texts)
        return real(self, texts)

    monkeypatch.setattr(Labeller, "reference", spy)
    n = 300
    records = [{"instruction": f"Record {i} asks.", "output": "Fine."} for i in range(n)]
    path = _write_jsonl(tmp_path / "r.jsonl", records)
    m = build([path], tmp_path / "o", tokenizer=DEMO_TOKENIZER, tokenizer_backend="tiktoken", batch_size=40,
              part_size=4000 / 2**20)
    assert m["tokenizer"]["backend"] == "tiktoken" and m["counts"]["packed"] == n
    got = sorted(int(re.search(r"Record (\d+) asks", t).group(1)) for t in compared)  # type: ignore[union-attr]
    want = [i for i in range(n) if checked(i)]
    assert got == want
    assert len(want) > 16  # beyond the first 16: the hashed one in 32 is compared too
