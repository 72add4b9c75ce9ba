"""Resuming a PackedDataset epoch on another number of ranks (issue 29): from one synchronous state or
every rank's, through DataLoader workers and torchdata's StatefulDataLoader, with drop_uneven; every
document of the epoch is read once."""

from __future__ import annotations

import json
import random
from collections import Counter
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from packer import build  # noqa: E402
from packer.train.dataset import PackedDataset  # noqa: E402
from packer.train.resume import rest_of_epoch, share_sizes  # noqa: E402

from .helpers import DEMO_INPUTS, DEMO_TOKENIZER  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
    pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning"),
]
BATCH = 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("elastic") / "shards"
    build(DEMO_INPUTS, out, tokenizer=DEMO_TOKENIZER, seq_len=256, shard_size=40_000 / 2**20)
    return out


@pytest.fixture(scope="module")
def every_doc(shards) -> Counter:
    """Each document of the split once (a row holds several)."""
    docs = Counter(d for row in read(make(shards, 0, 1), 0) for d in row)
    assert max(docs.values()) == 1 and len(docs) > 100
    return docs


def make(shards: Path, rank: int, world_size: int, **kw) -> PackedDataset:
    return PackedDataset(shards, seed=5, rank=rank, world_size=world_size, batch_size=BATCH, return_doc_ids=True,
                         **kw)


def read(ds: PackedDataset, num_workers: int, rows: int | None = None) -> list[tuple[int, ...]]:
    """The doc_ids of the rows a real DataLoader yields, the first ``rows`` of them (whole batches)."""
    got: list[tuple[int, ...]] = []
    if rows == 0:
        return got
    for batch in DataLoader(ds, batch_size=BATCH, num_workers=num_workers, collate_fn=list):
        got += [tuple(item["doc_ids"].tolist()) for item in batch]
        if rows is not None and len(got) >= rows:
            break
    return got


def run_ranks(shards, world_size: int, rows: list[int], num_workers: int, load=None, **kw):
    """Every rank reads ``rows[rank]`` rows (all with None) after loading ``load``; -> (rows read, states)."""
    read_rows, states = [], []
    for rank in range(world_size):
        ds = make(shards, rank, world_size, **kw)
        if load is not None:
            ds.load_state_dict(load)
        start = ds.state_dict()["rows_seen"] if load is not None else 0
        got = read(ds, num_workers, rows[rank])
        read_rows += got
        sync = len(set(rows)) == 1
        states.append(json.loads(json.dumps(ds.state_dict(rows_seen=start + len(got), synchronous=sync))))
    return read_rows, states


def docs_of(rows: list[tuple[int, ...]]) -> Counter:
    return Counter(d for row in rows for d in row)


def test_two_ranks_to_three_from_rank_0s_state(shards, every_doc):
    """2 ranks read 3 rows each and save; 3 ranks load rank 0's state and read on: the rest of the epoch
    order, dealt rest[rank::3], every document once; the next epoch is dealt as usual on 3 ranks."""
    consumed, states = run_ranks(shards, 2, [BATCH, BATCH], num_workers=2)
    assert len(consumed) == 2 * BATCH and states[0]["synchronous"]
    order = make(shards, 0, 1).rank_rows(0)
    rest = order[2 * BATCH :]
    by_row = dict(zip(order.tolist(), read(make(shards, 0, 1), 0), strict=True))  # row index -> doc_ids
    resumed = []
    for rank in range(3):
        ds = make(shards, rank, 3)
        ds.load_state_dict(states[0])
        assert ds.state_dict()["rows_seen"] == BATCH  # the loop counts on from the loaded rows_seen
        got = read(ds, 2)
        assert got == [by_row[g] for g in rest[rank::3].tolist()]
        resumed += got
        deals = ds.state_dict(rows_seen=BATCH + len(got))["earlier_deals"]
        assert deals == [{"world_size": 2, "rows_seen": [BATCH, BATCH]}]
        # the resume is used once: another pass over the epoch is the whole epoch dealt to 3 ranks
        assert read(ds, 2) == read(make(shards, rank, 3), 0)
        assert "earlier_deals" not in ds.state_dict(rows_seen=1)
        ds.set_epoch(1)
        normal = make(shards, rank, 3)
        normal.set_epoch(1)
        assert read(ds, 2) == read(normal, 0)
    assert docs_of(consumed) + docs_of(resumed) == every_doc


def test_three_ranks_to_two_with_workers(shards, every_doc):
    consumed, states = run_ranks(shards, 3, [2 * BATCH] * 3, num_workers=2)
    resumed, _ = run_ranks(shards, 2, [None, None], num_workers=2, load=states[1])  # any rank's state
    assert docs_of(consumed) + docs_of(resumed) == every_doc


@pytest.mark.parametrize("workers_after", [0, 2])
def test_unequal_counts_need_every_ranks_state(shards, every_doc, workers_after):
    consumed, states = run_ranks(shards, 2, [BATCH, 3 * BATCH], num_workers=2)
    assert not states[0]["synchronous"]
    with pytest.raises(ValueError, match=r"needs every rank's position\. Pass the list of all 2 ranks' states"):
        make(shards, 0, 3).load_state_dict(states[0])
    random.Random(0).shuffle(states)  # any order
    resumed, _ = run_ranks(shards, 3, [None] * 3, num_workers=workers_after, load=states)
    assert docs_of(consumed) + docs_of(resumed) == every_doc


def test_resume_twice_and_on_the_same_ranks(shards, every_doc):
    """2 -> 3 ranks, which read unequal counts and save; 3 -> 3 from each rank's own state (the deal
    goes on exactly), then every rank's states -> 2 ranks: still every document once."""
    first, states = run_ranks(shards, 2, [BATCH, BATCH], num_workers=0)
    took = [BATCH, 2 * BATCH, 0]
    second, states3 = run_ranks(shards, 3, took, num_workers=2, load=states[0])
    for rank in range(3):  # a plain resume of the resumed deal: exactly what the deal had left
        uninterrupted = make(shards, rank, 3)
        uninterrupted.load_state_dict(states[0])
        own = make(shards, rank, 3)
        own.load_state_dict(states3[rank])
        assert "earlier_deals" in states3[rank] and read(own, 2) == read(uninterrupted, 0)[took[rank] :]
    third, _ = run_ranks(shards, 2, [None, None], num_workers=2, load=states3)
    assert docs_of(first) + docs_of(second) + docs_of(third) == every_doc


def test_drop_uneven_deals_the_rest_evenly(shards, every_doc):
    consumed, states = run_ranks(shards, 2, [BATCH, BATCH], num_workers=0, drop_uneven=True)
    counts = []
    resumed = []
    for rank in range(3):
        ds = make(shards, rank, 3, drop_uneven=True)
        ds.load_state_dict(states[0])
        got = read(ds, 2)
        counts.append(len(got))
        resumed += got
    left = len(make(shards, 0, 1)) - 2 * BATCH
    assert counts == [left // 3] * 3
    docs = docs_of(consumed) + docs_of(resumed)
    assert max(docs.values()) == 1 and set(docs) <= set(every_doc)


@pytest.mark.parametrize("snapshot_every", [1, 2])
def test_stateful_dataloader_states_resume_on_other_ranks(shards, every_doc, snapshot_every):
    """Every rank's StatefulDataLoader state (the workers' positions, and the batches taken since the last
    snapshot) -> a dataset on 3 ranks, read by a fresh StatefulDataLoader, whose own state resumes again."""
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    loader = partial(stateful.StatefulDataLoader, batch_size=BATCH, num_workers=2, collate_fn=list,
                     snapshot_every_n_steps=snapshot_every)

    def take(dl, batches: int) -> list:
        it, got = iter(dl), []
        for _ in range(batches):
            got += [tuple(item["doc_ids"].tolist()) for item in next(it)]
        return got

    consumed, loader_states = [], []
    for rank, batches in enumerate([2, 3]):  # unequal: the list of every rank's loader state
        dl = loader(make(shards, rank, 2))
        consumed += take(dl, batches)
        loader_states.append(dl.state_dict())
    resumed = []
    for rank in range(3):
        ds = make(shards, rank, 3)
        ds.load_state_dict(loader_states)
        dl = loader(ds)  # a fresh loader on the loaded dataset
        head = take(dl, 1)
        saved = dl.state_dict()
        again = loader(make(shards, rank, 3))
        again.load_state_dict(saved)  # the resumed deal resumes again on the same ranks
        resumed += head + [tuple(item["doc_ids"].tolist()) for batch in again for item in batch]
    assert docs_of(consumed) + docs_of(resumed) == every_doc
    one = make(shards, 0, 3)
    with pytest.raises(ValueError, match="Pass the list"):
        one.load_state_dict(loader_states[0])
    one.load_state_dict(loader_states[0], synchronous=True)  # the loop says every rank took as many
    assert one.state_dict()["rows_seen"] == 2 * BATCH


def test_a_state_of_one_rank_of_one_is_every_ranks(shards, every_doc):
    old = make(shards, 0, 1).state_dict(rows_seen=4)
    old.pop("synchronous")  # as saved before elastic resume existed
    consumed = read(make(shards, 0, 1), 0, 4)[:4]
    resumed, _ = run_ranks(shards, 2, [None, None], num_workers=0, load=old)
    assert docs_of(consumed) + docs_of(resumed) == every_doc


def test_refusals_name_what_is_wrong(shards):
    _, states = run_ranks(shards, 2, [BATCH, 2 * BATCH], num_workers=0)
    here = make(shards, 0, 3)
    with pytest.raises(ValueError, match=r"rank 0 of world_size=2, and this dataset is rank 0 of world_size=3"):
        here.load_state_dict([states[0]])
    of_three = [make(shards, rank, 3).state_dict(rows_seen=1) for rank in (0, 2)]
    with pytest.raises(ValueError, match=r"every rank's of world_size=3, once each: missing ranks \[1\]"):
        make(shards, 0, 2).load_state_dict(of_three)
    with pytest.raises(ValueError, match="missing ranks \\[1\\]; rank 0 given 2 times"):
        here.load_state_dict([states[0], states[0]])
    with pytest.raises(ValueError, match="seed=5, this dataset has seed=6"):
        PackedDataset(shards, seed=6, rank=0, world_size=3).load_state_dict(states)
    with pytest.raises(ValueError, match="not of one checkpoint: they differ in epoch"):
        here.load_state_dict([states[0], {**states[1], "epoch": 1}])
    with pytest.raises(ValueError, match="differ in world_size"):
        here.load_state_dict([states[0], {**states[1], "world_size": 3}])
    with pytest.raises(ValueError, match="one DataLoader worker's"):
        here.load_state_dict([states[0], {**states[1], "worker": {"id": 0, "num_workers": 2, "rows": 3}}])
    # a synchronous count the last rank cannot have: it has a row less than rank 0
    world = 3 if here.num_rows % 3 else 4
    sizes = share_sizes(here.num_rows, world, False)
    assert sizes[0] > sizes[-1]
    full = make(shards, 0, world).state_dict(rows_seen=sizes[0], synchronous=True)
    message = rf"synchronous rows_seen {sizes[0]} is not in \[0, {sizes[-1]}\], the rows rank \d of world_size={world}"
    with pytest.raises(ValueError, match=message):
        make(shards, 0, 2).load_state_dict(full)
    with pytest.raises(ValueError, match=r"rows_seen 9999 of rank 1 of world_size=2 is not in \[0, \d+\]"):
        here.load_state_dict([states[0], {**states[1], "rows_seen": 9999}])


def test_rest_of_epoch_and_share_sizes():
    import numpy as np

    order = np.array([7, 2, 9, 0, 4, 1, 8, 3, 6, 5])
    assert rest_of_epoch(order, [{"world_size": 2, "rows_seen": [2, 2]}]).tolist() == [4, 1, 8, 3, 6, 5]
    assert rest_of_epoch(order, [{"world_size": 2, "rows_seen": [2, 1]}]).tolist() == [0, 4, 1, 8, 3, 6, 5]
    two = [{"world_size": 2, "rows_seen": [1, 1]}, {"world_size": 3, "rows_seen": [1, 0, 1]}]
    assert rest_of_epoch(order, two).tolist() == [0, 1, 8, 3, 6, 5]  # 9 0 4 left 9 (r0), 4 (r2)
    assert share_sizes(7, 3, False) == [3, 2, 2] and share_sizes(7, 3, True) == [2, 2, 2]


def _take(ds: PackedDataset, n: int | None) -> list[tuple[int, ...]]:
    """The doc_ids of the first ``n`` rows this rank yields (all with None), read in this process."""
    got = []
    for item in ds:
        if n is not None and len(got) == n:
            break
        got.append(tuple(item["doc_ids"].tolist()))
    return got


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_chain_of_resumes_reads_every_document_once(shards, every_doc, data):
    """An oracle over random chains: W ranks each read any number of rows of their share and save, the next
    W' ranks load every state (or one, when the counts were equal and saved synchronous) and read on, up to
    three times, then the last ranks read to the end. The rows read, counted by the documents in them (not by
    packer's own bookkeeping), are every document of the epoch exactly once."""
    shuffle = data.draw(st.booleans(), label="shuffle")
    world, load, seen = data.draw(st.integers(1, 4), label="first world_size"), None, Counter()
    for _ in range(data.draw(st.integers(1, 3), label="resumes")):
        states = []
        for rank in range(world):
            ds = make(shards, rank, world, shuffle=shuffle)
            if load is not None:
                ds.load_state_dict(load)
            start, share = ds.state_dict()["rows_seen"], len(_take(ds, None))
            if rank == 0:  # equal counts: the usual synchronous step (one state is enough), or any counts
                equal = data.draw(st.booleans(), label="equal counts")
                counts = [data.draw(st.integers(0, share), label="rows")] * world if equal else None
            n = counts[rank] if equal else data.draw(st.integers(0, share), label="rows")
            n = min(n, share)  # an equal count can exceed a later rank's (one row shorter) share
            equal = equal and n == counts[rank]
            ds = make(shards, rank, world, shuffle=shuffle)
            if load is not None:
                ds.load_state_dict(load)
            rows = _take(ds, n)
            seen += docs_of(rows)
            states.append(ds.state_dict(rows_seen=start + len(rows)))
        load = states[0] if equal and all(s["rows_seen"] == states[0]["rows_seen"] for s in states) else states
        if isinstance(load, dict):
            load = {**load, "synchronous": True}
        world = data.draw(st.integers(1, 4), label="next world_size")
    for rank in range(world):
        ds = make(shards, rank, world, shuffle=shuffle)
        ds.load_state_dict(load)
        seen += docs_of(_take(ds, None))
    assert seen == every_doc
