"""PackedDataset: items against the shards, sharding over ranks and workers, shuffling, resume, loss
weights, errors."""

from __future__ import annotations

import json
import pickle
import shutil
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from packer import build  # noqa: E402
from packer.output import roles as R  # noqa: E402
from packer.output.container import read_table  # noqa: E402
from packer.output.shards import mask_column  # noqa: E402
from packer.train.dataset import IGNORE_INDEX, MissingShardError, PackedDataset, ShardError  # noqa: E402

from .helpers import DEMO_TOKENIZER, EXAMPLES, write_stream_shard  # noqa: E402

pytestmark = [
    # three workers on a two-core machine are fine for a test; torchdata calls a deprecated torch API
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
    pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning"),
]
DEMO_INPUTS = [EXAMPLES / "alpaca_demo.json", EXAMPLES / "sharegpt_demo.json"]
#: rows per record batch when the fixture rewrites the shards, so rows straddle batches and shards
BATCH_ROWS = 7


def _rebatch(out: Path, rows_per_batch: int) -> None:
    """Rewrite every shard in record batches of ``rows_per_batch`` rows (the build writes 1024), and
    update the manifest's sizes and hashes, to exercise the row -> (shard, batch) lookup."""
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for shard in manifest["shards"]:
        path = out / shard["file"]
        write_stream_shard(path, read_table(path), shard, rows_per_batch)
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dataset") / "shards"
    build(
        DEMO_INPUTS, out, tokenizer=DEMO_TOKENIZER, seq_len=256, shard_size=40_000 / 2**20,
        strategy=["prompt=instruction,input"],
    )
    _rebatch(out, BATCH_ROWS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 2, "the fixture should span several shards"
    return out


@pytest.fixture(scope="module")
def rows(shards) -> list[dict]:
    """All rows of all shards in manifest order, as Python lists."""
    manifest = json.loads((shards / "manifest.json").read_text())
    out: list[dict] = []
    for shard in manifest["shards"]:
        out += read_table(shards / shard["file"]).to_pylist()
    return out


def key(item: dict) -> tuple[int, ...]:
    """A row's identity: its documents' record indices."""
    return tuple(item["doc_ids"].tolist())


def keys_of(batches: list[list[dict]]) -> list[tuple[int, ...]]:
    return [key(item) for batch in batches for item in batch]


def loader(ds: PackedDataset, num_workers: int, batch_size: int = 1, **kw) -> DataLoader:
    # collate_fn=list keeps items as they are: the tests look at rows, not at padded batches
    return DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=list, **kw)


# -- items ------------------------------------------------------------------------------------------


def check_item(item: dict, row: dict, loss: np.ndarray) -> None:
    ids = np.asarray(row["input_ids"])
    lens = np.asarray(row["seq_lens"])
    starts = np.cumsum(lens) - lens
    assert item["input_ids"].dtype == torch.int64 and item["labels"].dtype == torch.int64
    assert item["position_ids"].dtype == torch.int64 and item["seq_lens"].dtype == torch.int32
    assert item["input_ids"].tolist() == ids.tolist()
    assert item["seq_lens"].tolist() == lens.tolist() and int(lens.sum()) == len(ids)
    expected_pos = np.concatenate([np.arange(n) for n in lens])
    assert item["position_ids"].tolist() == expected_pos.tolist()
    has_label = loss.copy()
    has_label[starts] = False  # first token of each document: never a label
    assert item["labels"].tolist() == np.where(has_label, ids, IGNORE_INDEX).tolist()
    assert (item["labels"].numpy()[starts] == IGNORE_INDEX).all()


def test_items_match_shards_for_every_strategy(shards, rows):
    strategies = PackedDataset(shards).strategies
    assert set(strategies) == {*R.BUILTIN_STRATEGIES, "prompt"}
    multi_doc_rows = 0
    for strategy in strategies:
        items = list(PackedDataset(shards, strategy, shuffle=False))
        assert len(items) == len(rows)
        for item, row in zip(items, rows, strict=True):
            check_item(item, row, np.asarray(row[mask_column(strategy)], dtype=bool))
            multi_doc_rows += len(row["seq_lens"]) > 1
        assert set(items[0]) == {"input_ids", "labels", "position_ids", "seq_lens"}
    assert multi_doc_rows > 0


def test_role_set_strategy_uses_the_roles_column(shards, rows):
    roles = {"instruction", "response"}
    codes = list(R.role_codes(roles))
    items = list(PackedDataset(shards, roles, shuffle=False))
    for item, row in zip(items, rows, strict=True):
        check_item(item, row, np.isin(row["roles"], codes))
    # a role set equal to a built-in strategy gives the same labels as its mask column
    by_name = list(PackedDataset(shards, "instruction_tuning", shuffle=False))
    by_roles = list(PackedDataset(shards, ["response", "end"], shuffle=False))
    for a, b in zip(by_name, by_roles, strict=True):
        assert torch.equal(a["labels"], b["labels"])


# -- ranks and workers ---------------------------------------------------------------------------------


def test_every_row_once_across_ranks_and_workers(shards, rows):
    all_keys = Counter(tuple(r["doc_ids"]) for r in rows)
    got: Counter = Counter()
    per_rank = []
    for rank in range(2):
        ds = PackedDataset(shards, rank=rank, world_size=2, batch_size=2, return_doc_ids=True)
        batches = list(loader(ds, num_workers=3, batch_size=2))
        keys = keys_of(batches)
        per_rank.append(len(keys))
        assert len(keys) == len(ds)
        got.update(keys)
        # whole batches are dealt to the workers in turn, so the DataLoader yields the rank's order
        expected = [tuple(rows[g]["doc_ids"]) for g in ds.rank_rows()]
        assert keys == expected
    assert got == all_keys
    assert sorted(per_rank) == [len(rows) // 2, (len(rows) + 1) // 2]


def _ddp_rank(rank: int, world: int, init_file: str, shards: str, out: str) -> None:
    """One DDP rank: the dataset takes rank and world size from torch.distributed, reads through 2 workers."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = PackedDataset(shards, batch_size=2, drop_uneven=True, return_doc_ids=True)
        assert (ds.rank, ds.world_size) == (rank, world)
        keys = keys_of(list(loader(ds, num_workers=2, batch_size=2)))
        gathered: list = [None] * world
        dist.all_gather_object(gathered, keys)
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_from_torch_distributed(shards, rows, tmp_path):
    """Two real DDP processes (gloo), two DataLoader workers each: every row once, equal counts."""
    import torch.multiprocessing as mp

    out = tmp_path / "keys.json"
    mp.spawn(_ddp_rank, args=(2, str(tmp_path / "init"), str(shards), str(out)), nprocs=2, join=True)
    per_rank = [[tuple(k) for k in keys] for keys in json.loads(out.read_text())]
    assert [len(k) for k in per_rank] == [len(rows) // 2] * 2
    got = Counter(k for keys in per_rank for k in keys)
    assert max(got.values()) == 1
    assert set(got) <= {tuple(r["doc_ids"]) for r in rows} and len(got) == len(rows) - len(rows) % 2


def test_drop_uneven_gives_every_rank_the_same_count(shards, rows):
    n = len(rows)
    world = 3 if n % 3 else 4  # a world size that does not divide the rows
    assert n % world
    got: Counter = Counter()
    counts = []
    for rank in range(world):
        ds = PackedDataset(shards, rank=rank, world_size=world, drop_uneven=True, return_doc_ids=True)
        keys = keys_of(list(loader(ds, num_workers=2, batch_size=3)))
        counts.append(len(keys))
        assert len(ds) == len(keys)
        got.update(keys)
    assert counts == [n // world] * world
    assert max(got.values()) == 1 and sum(got.values()) == n - n % world


def test_rank_from_explicit_arguments_is_checked(shards):
    with pytest.raises(ValueError, match="rank 2 is not in"):
        PackedDataset(shards, rank=2, world_size=2)
    with pytest.raises(ValueError, match="both rank and world_size"):
        PackedDataset(shards, rank=0)


# -- shuffling --------------------------------------------------------------------------------------


def order(ds: PackedDataset) -> list[tuple[int, ...]]:
    return [key(item) for item in ds]


def test_shuffle_is_seeded_and_changes_per_epoch(shards, rows):
    in_shard_order = [tuple(r["doc_ids"]) for r in rows]
    assert order(PackedDataset(shards, shuffle=False, return_doc_ids=True)) == in_shard_order
    a = order(PackedDataset(shards, seed=1, return_doc_ids=True))
    assert a == order(PackedDataset(shards, seed=1, return_doc_ids=True))
    assert a != in_shard_order
    b = order(PackedDataset(shards, seed=2, return_doc_ids=True))
    ds = PackedDataset(shards, seed=1, return_doc_ids=True)
    ds.set_epoch(1)
    c = order(ds)
    assert b != a and c != a
    assert Counter(a) == Counter(b) == Counter(c) == Counter(in_shard_order)


def test_set_epoch_reaches_persistent_workers(shards):
    ds = PackedDataset(shards, seed=3, batch_size=4, return_doc_ids=True)
    dl = loader(ds, num_workers=2, batch_size=4, persistent_workers=True)
    first = keys_of(list(dl))
    ds.set_epoch(1)
    second = keys_of(list(dl))
    assert second != first and Counter(second) == Counter(first)
    reference = PackedDataset(shards, seed=3, return_doc_ids=True)
    reference.set_epoch(1)
    assert second == order(reference)


# -- resume -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers_before,workers_after", [(0, 0), (2, 2), (2, 0)])
def test_resume_mid_epoch_yields_the_rest_exactly(shards, workers_before, workers_after):
    batch_size, stop = 4, 5
    make = partial(PackedDataset, shards, "instruction_modelling", seed=7, batch_size=batch_size, return_doc_ids=True)
    ds = make()
    ds.set_epoch(2)
    full = list(loader(ds, workers_before, batch_size))
    assert len(full) > stop + 2

    ds = make()
    ds.set_epoch(2)
    seen, state = 0, None
    for step, batch in enumerate(loader(ds, workers_before, batch_size)):
        seen += len(batch)
        if step + 1 == stop:
            state = json.loads(json.dumps(ds.state_dict(rows_seen=seen)))  # survives JSON
            break
    assert state == {**state, "epoch": 2, "rows_seen": stop * batch_size}

    resumed = make()
    resumed.load_state_dict(state)
    rest = list(loader(resumed, workers_after, batch_size))
    assert keys_of(rest) == keys_of(full[stop:])
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(rest[0], full[stop], strict=True))
    # the resume is used once: the next pass over the same epoch is whole again
    assert keys_of(list(loader(resumed, workers_after, batch_size))) == keys_of(full)


def test_state_dict_counts_items_in_process(shards):
    ds = PackedDataset(shards, seed=5, return_doc_ids=True)
    it = iter(ds)
    head = [key(next(it)) for _ in range(9)]
    state = ds.state_dict()
    assert state["rows_seen"] == 9 and state["epoch"] == 0
    again = PackedDataset(shards, seed=5, return_doc_ids=True)
    again.load_state_dict(state)
    assert head + order(again) == order(PackedDataset(shards, seed=5, return_doc_ids=True))
    # resume from a resumed pass: the count includes the rows skipped
    again = PackedDataset(shards, seed=5, return_doc_ids=True)
    again.load_state_dict(state)
    it = iter(again)
    next(it)
    assert again.state_dict()["rows_seen"] == 10


def test_load_state_dict_refuses_another_setup(shards):
    state = PackedDataset(shards, seed=1).state_dict(rows_seen=3)
    with pytest.raises(ValueError, match="seed=1"):
        PackedDataset(shards, seed=2).load_state_dict(state)
    # another world size needs every rank's position (tests/test_elastic_resume.py resumes with them)
    of_two = PackedDataset(shards, seed=1, rank=0, world_size=2).state_dict(rows_seen=3)
    with pytest.raises(ValueError, match=r"rank 0 of world_size=2.*Pass the list of all 2 ranks. states"):
        PackedDataset(shards, seed=1, rank=0, world_size=3).load_state_dict(of_two)
    with pytest.raises(ValueError, match="rows_seen"):
        PackedDataset(shards, seed=1).load_state_dict({**state, "rows_seen": 10**6})


def test_stateful_dataloader_resume(shards):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    make = partial(PackedDataset, shards, seed=11, batch_size=3, return_doc_ids=True)

    def dl(ds: PackedDataset):
        return stateful.StatefulDataLoader(ds, batch_size=3, num_workers=2, collate_fn=list)

    full = keys_of(list(dl(make())))
    first = dl(make())
    it = iter(first)
    head = [next(it) for _ in range(5)]
    state = first.state_dict()
    second = dl(make())
    second.load_state_dict(state)
    assert keys_of(head) + keys_of(list(second)) == full


# -- loss weights ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["instruction_tuning", "instruction_modelling"])
def test_prompt_loss_weight_per_role(shards, rows, strategy):
    w = 0.25
    items = list(PackedDataset(shards, strategy, shuffle=False, prompt_loss_weight=w))
    prompt = list(R.role_codes(R.PROMPT_ROLES))
    for item, row in zip(items, rows, strict=True):
        roles = np.asarray(row["roles"])
        lens = np.asarray(row["seq_lens"])
        first = np.cumsum(lens) - lens
        weights = item["loss_weights"].numpy()
        assert item["loss_weights"].dtype == torch.float32
        expected = np.where(np.isin(roles, prompt), w, np.asarray(row[mask_column(strategy)], dtype=np.float32))
        expected[first] = 0
        np.testing.assert_allclose(weights, expected)
        labels = item["labels"].numpy()
        assert ((labels != IGNORE_INDEX) == (weights > 0)).all()


def test_sequence_normalisation_sums_to_one_per_document(shards):
    items = list(PackedDataset(shards, shuffle=False, prompt_loss_weight=0.5, normalize="sequence"))
    for item in items:
        sums = [doc.sum().item() for doc in torch.split(item["loss_weights"], item["seq_lens"].tolist())]
        assert all(x == pytest.approx(1.0, abs=1e-5) or x == 0 for x in sums)
    # without a prompt weight: the strategy's labels, each over its document's count
    plain = list(PackedDataset(shards, shuffle=False))
    normed = list(PackedDataset(shards, shuffle=False, normalize="sequence"))
    for a, b in zip(plain, normed, strict=True):
        assert torch.equal(a["labels"], b["labels"])
        lens = a["seq_lens"].tolist()
        for labels, weights in zip(torch.split(a["labels"], lens), torch.split(b["loss_weights"], lens), strict=True):
            has = (labels != IGNORE_INDEX).float()
            assert torch.allclose(weights, has / max(has.sum().item(), 1))


def test_training_step_formula_is_the_mean_of_document_means(shards, rows):
    w_prompt, vocab = 0.3, 50
    picked = [i for i, r in enumerate(rows) if len(r["seq_lens"]) > 1][:4]
    assert len(picked) == 4
    items = list(PackedDataset(shards, shuffle=False, prompt_loss_weight=w_prompt, normalize="sequence"))
    items = [items[i] for i in picked]
    # pad into a batch as a collator would (labels -100, weights 0); ids mod a toy vocabulary
    length = max(len(i["input_ids"]) for i in items)
    labels = torch.full((len(items), length), IGNORE_INDEX)
    weights = torch.zeros((len(items), length))
    for b, item in enumerate(items):
        has = item["labels"] != IGNORE_INDEX
        labels[b, : len(has)] = torch.where(has, item["labels"] % vocab, IGNORE_INDEX)
        weights[b, : len(has)] = item["loss_weights"]
    logits = torch.randn(len(items), length, vocab, generator=torch.Generator().manual_seed(0))

    # the docstring's training step
    per_token = F.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="none", ignore_index=IGNORE_INDEX
    )
    w = weights[:, 1:].flatten()
    loss = (per_token * w).sum() / w.sum()

    # reference from the shard rows alone, one document at a time: the logits at its tokens 0..n-2
    # predict its tokens 1..n-1; prompt tokens weigh w_prompt, response and end 1 (instruction_tuning)
    prompt = list(R.role_codes(R.PROMPT_ROLES))
    doc_means = []
    for b, i in enumerate(picked):
        ids, roles = np.asarray(rows[i]["input_ids"]), np.asarray(rows[i]["roles"])
        mask = np.asarray(rows[i][mask_column("instruction_tuning")], dtype=np.float64)
        raw = np.where(np.isin(roles, prompt), w_prompt, mask)
        start = 0
        for n in rows[i]["seq_lens"]:
            target = torch.from_numpy(ids[start + 1 : start + n] % vocab).long()
            wt = torch.from_numpy(raw[start + 1 : start + n]).float()
            ce = F.cross_entropy(logits[b, start : start + n - 1], target, reduction="none")
            start += n
            if wt.sum() > 0:
                doc_means.append((ce * wt).sum() / wt.sum())
    assert w.sum().item() == pytest.approx(len(doc_means), abs=1e-4)
    assert loss.item() == pytest.approx(torch.stack(doc_means).mean().item(), rel=1e-5)


def test_loss_weight_arguments_are_checked(shards):
    with pytest.raises(ValueError, match="prompt_loss_weight"):
        PackedDataset(shards, prompt_loss_weight=1.5)
    with pytest.raises(ValueError, match="normalize"):
        PackedDataset(shards, normalize="token")


# -- errors and sources --------------------------------------------------------------------------------


@pytest.fixture
def copy(shards, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    return out


def first_shard(out: Path) -> Path:
    return out / json.loads((out / "manifest.json").read_text())["shards"][0]["file"]


def test_unknown_strategy_lists_the_known_ones(shards):
    with pytest.raises(ValueError, match=r"unknown strategy 'nope'.*instruction_tuning.*prompt"):
        PackedDataset(shards, "nope")
    with pytest.raises(ValueError, match="unknown role 'last_turn'"):
        PackedDataset(shards, {"last_turn"})


def test_missing_shard(copy):
    shard = first_shard(copy)
    shard.unlink()
    with pytest.raises(MissingShardError, match=f"{shard.name}.*missing"):
        PackedDataset(copy)
    assert issubclass(MissingShardError, FileNotFoundError) and issubclass(MissingShardError, ShardError)


def test_truncated_shard(copy):
    shard = first_shard(copy)
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 100)
    with pytest.raises(ShardError, match=f"{shard.name}: .* bytes, manifest.json records"):
        PackedDataset(copy)


def test_verify_detects_a_flipped_byte(copy):
    shard = first_shard(copy)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    PackedDataset(copy)  # same size: only the hash can tell
    with pytest.raises(ShardError, match=f"{shard.name}: sha256 differs"):
        PackedDataset(copy, verify=True)


@pytest.mark.parametrize(
    "fmt,message",
    [({"name": "packer-shards", "version": 99}, "packer-shards version 99; this packer reads version 1"),
     ({"name": "other", "version": 1}, "not a packer output: format 'other' is not 'packer-shards'")],
)
def test_wrong_format(copy, fmt, message):
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format": fmt}))
    with pytest.raises(ShardError, match=f"manifest.json: {message}"):
        PackedDataset(copy)


def test_missing_manifest(tmp_path):
    with pytest.raises(MissingShardError, match=r"no manifest\.json"):
        PackedDataset(tmp_path)


def test_file_uri_and_pickling(shards):
    by_path = order(PackedDataset(shards, seed=4, return_doc_ids=True))
    ds = PackedDataset(shards.as_uri(), seed=4, return_doc_ids=True)
    assert order(ds) == by_path
    clone = pickle.loads(pickle.dumps(ds))  # after reading: no open file travels with it
    assert clone._reader is None and order(clone) == by_path


def test_remote_filesystem(shards, monkeypatch):
    """A non-local pyarrow filesystem (fsspec's in-memory one, as an object store would be): the rows are read
    through ``open_input_file`` with a small record-batch cache, and give the same items as local files."""
    fsspec = pytest.importorskip("fsspec")
    import pyarrow.fs as pafs

    import packer.train.rows as rows

    mem = fsspec.filesystem("memory")
    for p in shards.iterdir():
        mem.pipe(f"/bucket/shards/{p.name}", p.read_bytes())
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(mem))
    monkeypatch.setattr(rows, "REMOTE_BATCH_CACHE", 2)  # rows straddle many batches: evictions happen
    local = list(PackedDataset(shards, "instruction_modelling", seed=9, return_doc_ids=True))
    remote = PackedDataset("/bucket/shards", "instruction_modelling", seed=9, return_doc_ids=True, filesystem=fs)
    got = list(remote)
    assert len(got) == len(local)
    for a, b in zip(got, local, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert len(remote._get_reader()._batches) <= 2
    mem.rm(f"/bucket/shards/{json.loads((shards / 'manifest.json').read_text())['shards'][0]['file']}")
    with pytest.raises(MissingShardError, match="is missing"):
        PackedDataset("/bucket/shards", filesystem=fs)
    mem.rm("/bucket", recursive=True)
