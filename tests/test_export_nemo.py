"""``packer export OUTPUT --to nemo`` (issue 29 item 6): NeMo's packed SFT file, read back the way NeMo's
``GPTSFTPackedDataset`` reads it (reproduced below from NeMo's source: NeMo itself is too heavy to install), gives
the ids, the trained tokens and the document boundaries of the shards, for both splits, two strategies and both
loss-mask conventions; and the command refuses what it should, with the exit codes docs/export.md gives."""

from __future__ import annotations

import json
import pickletools
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from packer import PackedDataset, build
from packer.cli import main
from packer.export import ExportError, export, to_nemo
from packer.output.layout import ShardError

from .helpers import DEMO_INPUTS, EXAMPLES


@pytest.fixture(scope="module")
def out(tmp_path_factory, demo_tok) -> Path:
    """The demo data with an eval split, in several shards per split: read it only."""
    folder = tmp_path_factory.mktemp("nemo") / "shards"
    build(DEMO_INPUTS, folder, tokenizer=demo_tok, seq_len=512, shard_size=30_000 / 2**20, eval_fraction=0.25)
    return folder


# -- NeMo's reader, reproduced --------------------------------------------------------------------------------------


class NemoPackedDataset:
    """``GPTSFTPackedDataset`` of NVIDIA NeMo, as far as it turns the file into a batch: ``_load_dataset``,
    ``__getitem__``, ``_build_loss_mask`` (answer_only_loss=True, NeMo's default) and ``collate_fn``, reproduced from
    ``nemo/collections/llm/gpt/data/core.py`` at NeMo v2.4.0 (the same at main 8cfedd7, 2.6.0rc0), with numpy
    arrays for torch tensors. ``unshifted=True`` is the ``_build_loss_mask`` of NeMo 1.x up to v2.1.0
    (``nemo/collections/nlp/data/language_modeling/megatron/gpt_sft_dataset.py``: ``loss_mask[s + 1 : e]``).
    ``cu_seqlens_unpadded`` is left out: NeMo 2's ``get_packed_seq_params`` (``gpt/model/base.py``) does not read it.
    """

    def __init__(self, path: Path, max_seq_length: int, *, pad_id: int = 0, unshifted: bool = False,
                 pad_to_max_length: bool = False, pad_cu_seqlens: bool = False, metadata: Path | None = None) -> None:
        self.indexed_dataset = np.load(path, allow_pickle=True)  # _load_dataset
        self.max_seq_length, self.pad_id, self.unshifted = max_seq_length, pad_id, unshifted
        self.pad_to_max_length, self.pad_cu_seqlens = pad_to_max_length, pad_cu_seqlens
        self.pad_seq_length_to_mult = 16
        self.pack_metadata = json.loads(metadata.read_text()) if metadata is not None else None

    def __len__(self) -> int:
        return len(self.indexed_dataset)

    def __getitem__(self, idx: int) -> dict:
        input_ids = self.indexed_dataset[idx]["input_ids"]
        seq_boundaries = self.indexed_dataset[idx]["seq_start_id"] + [len(input_ids)]  # a list, or this breaks
        loss_mask = self.indexed_dataset[idx]["loss_mask"]
        return {"input_ids": input_ids, "seq_boundaries": seq_boundaries, "loss_mask": loss_mask}

    def _build_loss_mask(self, ex: dict) -> np.ndarray:
        b = ex["seq_boundaries"]
        if self.unshifted:  # NeMo <= 2.1
            return np.concatenate([ex["loss_mask"][b[i] + 1 : b[i + 1]] for i in range(len(b) - 1)])
        return np.concatenate([ex["loss_mask"][b[i] : b[i + 1] - 1] for i in range(len(b) - 1)])

    def _collate_item(self, item: list, max_length: int, pad_id: int) -> list:
        item = [x.tolist() if isinstance(x, np.ndarray) else x for x in item]
        return [x + [pad_id] * (max_length - len(x)) for x in item]

    def collate_fn(self, batch: list[dict]) -> dict:
        def cut(item: dict, lo: int, hi: int) -> np.ndarray:
            b = item["seq_boundaries"]
            return np.concatenate([item["input_ids"][b[i] + lo : b[i + 1] + hi] for i in range(len(b) - 1)])

        input_ids = [cut(item, 0, -1) for item in batch]
        labels = [cut(item, 1, 0) for item in batch]
        loss_mask = [self._build_loss_mask(item) for item in batch]
        token_count = [item.shape[0] for item in input_ids]
        if self.pad_to_max_length:
            max_length = self.max_seq_length
        else:
            m = self.pad_seq_length_to_mult
            max_length = min(self.max_seq_length, (max(len(x) for x in input_ids) + m - 1) // m * m)
        assert max_length <= self.max_seq_length
        position_ids, cu_seqlens = [], []
        for item in batch:
            position_ids.append([])
            cu_seqlens.append([0])
            seqlens = np.array(item["seq_boundaries"][1:]) - np.array(item["seq_boundaries"][:-1])
            for length in seqlens:
                position_ids[-1].extend(list(range(length - 1)))
                cu_seqlens[-1].append(cu_seqlens[-1][-1] + length - 1)
            assert cu_seqlens[-1][-1] <= max_length
            if cu_seqlens[-1][-1] != max_length:
                cu_seqlens[-1].append(max_length)
            if self.pad_cu_seqlens:
                max_samples_per_bin = max(p["max_samples_per_bin"] for p in self.pack_metadata)
                pad_num = max_samples_per_bin - len(cu_seqlens[-1]) + 2
                cu_seqlens[-1].extend([max_length] * pad_num)
        cu = np.array(self._collate_item(cu_seqlens, max(len(x) for x in cu_seqlens) + 1, -1), dtype=np.int32)
        if self.pad_cu_seqlens:
            dataset_max_seqlen = max(p["dataset_max_seqlen"] for p in self.pack_metadata)
            min_pack_seq_len = min(p["min_packed_seqlen"] for p in self.pack_metadata)
            max_seqlen = np.array([max(dataset_max_seqlen, max_length - min_pack_seq_len)] * len(cu))
        else:
            max_seqlen = (cu[:, 1:] - cu[:, :-1]).max(axis=1, keepdims=True)
        return {
            "tokens": np.array(self._collate_item(input_ids, max_length, self.pad_id)),
            "labels": np.array(self._collate_item(labels, max_length, self.pad_id)),
            "loss_mask": np.array(self._collate_item(loss_mask, max_length, 0), dtype=np.int64),
            "position_ids": np.array(self._collate_item(position_ids, max_length, 0)),
            "token_count": token_count,
            "cu_seqlens": cu,
            "cu_seqlens_argmin": np.argmin(cu, axis=1),
            "max_seqlen": max_seqlen,
        }


# -- the round trip -------------------------------------------------------------------------------------------------


def _trained_positions(batch: dict, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The row positions of the tokens NeMo puts loss on: collated entry k of a document starting at s is the
    prediction of token s + 1 + (k - its first entry)."""
    targets = np.concatenate([np.arange(s + 1, s + n) for s, n in zip(starts, lens, strict=True)])
    n = batch["token_count"][0]
    return targets[batch["loss_mask"][0, :n].astype(bool)]


@pytest.mark.parametrize("split", ["train", "eval"])
@pytest.mark.parametrize("strategy", ["instruction_tuning", "instruction_modelling", "full"])
@pytest.mark.parametrize("convention", ["shifted", "unshifted"])
def test_nemo_reads_the_shards_ids_loss_and_boundaries(out, tmp_path, split, strategy, convention):
    npy = tmp_path / "packed.npy"
    done = export(out, npy, strategy=strategy, split=split, loss_mask=convention)
    nemo = NemoPackedDataset(npy, max_seq_length=done["pack_size"], pad_id=-7, unshifted=convention == "unshifted")
    truth = list(PackedDataset(out, strategy=strategy, split=split, shuffle=False, return_doc_ids=True))
    assert len(nemo) == len(truth) == done["rows"] > 1
    trained = 0
    for i, item in enumerate(truth):
        ids, lens = item["input_ids"].numpy(), item["seq_lens"].numpy().astype(np.int64)
        starts = np.cumsum(lens) - lens
        ex = nemo[i]
        assert ex["input_ids"] == ids.tolist()
        # the file itself, as docs/export.md describes it (NeMo never reads a document's last entry, shifted, or
        # its first, unshifted: those are 0, whatever the next document's first token carries)
        has_label = item["labels"].numpy() != -100
        raw = has_label.copy()
        if convention == "shifted":
            raw[:-1], raw[np.cumsum(lens) - 1] = has_label[1:], False
        assert ex["loss_mask"] == raw.tolist()
        assert ex["seq_boundaries"] == [*starts.tolist(), len(ids)]  # the documents, as the shards hold them
        batch = nemo.collate_fn([ex])  # NeMo trains packed rows with micro batch 1
        n = batch["token_count"][0]
        last = np.cumsum(lens) - 1
        assert batch["tokens"][0, :n].tolist() == np.delete(ids, last).tolist()  # each document less its last
        assert batch["labels"][0, :n].tolist() == np.delete(ids, starts).tolist()  # each less its first
        assert (batch["tokens"][0, n:] == -7).all() and not batch["loss_mask"][0, n:].any()
        # the tokens trained: exactly those PackedDataset labels (the strategy's mask, no document's first token)
        want = np.flatnonzero(item["labels"].numpy() != -100)
        assert _trained_positions(batch, starts, lens).tolist() == want.tolist()
        trained += len(want)
        # boundaries: one attention segment per document (n - 1 inputs each), positions restarting in each
        cu = batch["cu_seqlens"][0, : batch["cu_seqlens_argmin"][0]]
        assert cu.tolist()[: len(lens) + 1] == [0, *np.cumsum(lens - 1).tolist()]
        assert batch["position_ids"][0, :n].tolist() == [p for k in lens for p in range(k - 1)]
    assert trained == done["loss_tokens"] > 0


def test_the_two_strategies_train_different_tokens(out, tmp_path):
    rows = {}
    for strategy in ("instruction_tuning", "instruction_modelling"):
        export(out, tmp_path / f"{strategy}.npy", strategy=strategy)
        rows[strategy] = np.load(tmp_path / f"{strategy}.npy", allow_pickle=True)
    a, b = (sum(sum(r["loss_mask"]) for r in rows[s]) for s in ("instruction_tuning", "instruction_modelling"))
    assert 0 < a < b  # instruction modelling adds the prompts' loss


def test_pad_cu_seqlens_with_the_pack_metadata(out, tmp_path):
    """NeMo's pad_cu_seqlens (cuda graphs) pads every batch's cu_seqlens to one shape from the metadata: it holds
    every split (one entry each, train first), and each batch comes out the same shape."""
    to_nemo(out, tmp_path / "train.npy")
    meta = tmp_path / "train_metadata.json"
    entries = json.loads(meta.read_text())
    assert [sorted(e) for e in entries] == [sorted(["dataset_max_seqlen", "max_samples_per_bin", "packing_factor",
                                                    "packing_efficiency", "pack_size", "min_packed_seqlen"])] * 2
    nemo = NemoPackedDataset(tmp_path / "train.npy", 512, pad_to_max_length=True, pad_cu_seqlens=True, metadata=meta)
    shapes, most = set(), 0
    for i in range(len(nemo)):
        batch = nemo.collate_fn([nemo[i]])
        shapes.add(batch["cu_seqlens"].shape)
        most = max(most, len(nemo[i]["seq_boundaries"]) - 1)
        lens = np.diff(nemo[i]["seq_boundaries"]) - 1
        assert (batch["max_seqlen"] >= lens.max()).all()
    assert len(shapes) == 1 and entries[0]["max_samples_per_bin"] == most
    assert max(int(np.diff(r["seq_start_id"] + [len(r["input_ids"])]).max()) - 1
               for r in nemo.indexed_dataset) == entries[0]["dataset_max_seqlen"]


def test_the_metadata_is_the_same_from_either_split(out, tmp_path):
    """Exporting train then eval with one --metadata file: the second finds the same text and leaves it."""
    meta = tmp_path / "pack_metadata.json"
    export(out, tmp_path / "training.npy", metadata=meta)
    first = meta.read_bytes()
    export(out, tmp_path / "validation.npy", split="eval", metadata=meta)
    assert meta.read_bytes() == first


def test_numpy_1_can_load_the_file(out, tmp_path):
    """np.save under NumPy 2 names numpy._core in the pickle, which NumPy 1.25 and older cannot import; the file
    names only numpy.array (measured: NumPy 1.25.2 and 1.26.4 load it)."""
    export(out, tmp_path / "p.npy")
    data = (tmp_path / "p.npy").read_bytes()
    header_end = data.index(b"\n") + 1
    names = [arg for op, arg, _ in pickletools.genops(data[header_end:]) if op.name == "SHORT_BINUNICODE"
             and isinstance(arg, str) and arg.startswith("numpy")]
    assert names == ["numpy", "array"] or names == ["numpy"], names
    assert b"_core" not in data[header_end:header_end + 200]
    rows = np.load(tmp_path / "p.npy", allow_pickle=True)
    assert rows.dtype == object and rows.ndim == 1 and isinstance(rows[0], dict)


# -- refusals and exit codes ----------------------------------------------------------------------------------------


def _run(*args: str):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_the_command_writes_and_says_what(out, tmp_path):
    res = _run(out, "-o", tmp_path / "p.npy", "--strategy", "full", "--split", "eval")
    assert res.exit_code == 0, res.output
    assert "eval split" in res.stdout and "packed_sequence_size=512" in res.stdout
    assert (tmp_path / "p.npy").is_file() and (tmp_path / "p_metadata.json").is_file()
    res = _run(out, "-o", tmp_path / "q.npy", "-q")
    assert res.exit_code == 0 and res.stdout == ""


@pytest.mark.parametrize(("args", "code", "message"), [
    (["{missing}", "-o", "{tmp}/p.npy"], 1, "not a packer output: no manifest.json"),
    (["{out}", "-o", "{tmp}/p.npy", "--strategy", "nope"], 1, "no strategy 'nope'; this output has full,"),
    (["{out}", "-o", "{tmp}/p.txt"], 1, "name a .npy file"),
    (["{out}", "-o", "{tmp}/no/p.npy"], 1, "does not exist"),
    (["{out}", "-o", "{out}/p.npy"], 1, "inside the build output"),
    (["{out}", "-o", "{tmp}/p.npy", "--metadata", "{tmp}/p.npy"], 1, "the same file as -o"),
    (["{out}"], 2, "Missing option '-o'"),
    (["{out}", "-o", "{tmp}/p.npy", "--split", "test"], 2, "'test' is not one of"),
    (["{out}", "-o", "{tmp}/p.npy", "--to", "megatron"], 2, "'megatron' is not"),
    (["{out}", "-o", "{tmp}/p.npy", "--loss-mask", "rolled"], 2, "'rolled' is not one of"),
])
def test_wrong_commands_fail_with_one_line(out, tmp_path, args, code, message):
    res = _run(*(a.format(out=out, tmp=tmp_path, missing=tmp_path / "missing") for a in args))
    assert res.exit_code == code, res.output
    assert message in res.output
    if code == 1:
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert not list(tmp_path.glob("*.npy")) and not list(out.glob("*.npy"))


def test_an_output_without_eval_split(demo_output, tmp_path):
    res = _run(demo_output, "-o", tmp_path / "p.npy", "--split", "eval")
    assert res.exit_code == 1 and "has no eval split" in res.stderr
    with pytest.raises(ShardError, match="no eval split"):
        to_nemo(demo_output, tmp_path / "p.npy", split="eval")
    assert not (tmp_path / "p.npy").exists()


def test_a_preference_output_is_refused(tmp_path, demo_tok):
    pairs = tmp_path / "pairs"
    build([EXAMPLES / "dpo_demo.jsonl"], pairs, tokenizer=demo_tok, seq_len=512)
    res = _run(pairs, "-o", tmp_path / "p.npy")
    assert res.exit_code == 1 and "preference pairs" in res.stderr and "supervised fine-tuning only" in res.stderr
    assert not (tmp_path / "p.npy").exists()


def test_an_existing_file_is_replaced_only_with_overwrite_and_only_if_a_packed_file(out, tmp_path):
    npy = tmp_path / "p.npy"
    export(out, npy)
    before = npy.read_bytes()
    res = _run(out, "-o", npy, "--strategy", "full")
    assert res.exit_code == 1 and "exists; pass --overwrite" in res.stderr and npy.read_bytes() == before
    res = _run(out, "-o", npy, "--strategy", "full", "--overwrite")
    assert res.exit_code == 0 and npy.read_bytes() != before
    # a file export did not write (not a .npy object array): never replaced
    mine = tmp_path / "mine.npy"
    np.save(mine, np.arange(3))
    for extra in ([], ["--overwrite"]):
        res = _run(out, "-o", mine, *extra)
        assert res.exit_code == 1 and "is not a .npy object array" in res.stderr
    assert np.load(mine).tolist() == [0, 1, 2]
    # nor a metadata file of the user's, nor one with other metadata unless --overwrite
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    with pytest.raises(ExportError, match="not a NeMo pack metadata file"):
        export(out, tmp_path / "x.npy", metadata=notes, overwrite=True)
    meta = tmp_path / "p_metadata.json"
    meta.write_text('[{"max_samples_per_bin": 1}]')
    with pytest.raises(ExportError, match="exists with another output's metadata"):
        export(out, tmp_path / "p2.npy", metadata=meta)
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "p2.npy").exists()
    export(out, tmp_path / "p2.npy", metadata=meta, overwrite=True)
    assert json.loads(meta.read_text())[0]["pack_size"] == 512


def test_a_copied_output_exports_the_same_bytes(out, tmp_path):
    """The file depends on the rows only: the same output in another folder gives the same bytes."""
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    export(out, tmp_path / "a.npy")
    export(copy, tmp_path / "b.npy")
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def test_the_export_flags_are_the_export_options():
    """One home per option, as for build: ``packer export``'s flags are ExportOptions' fields."""
    from packer.cli import export_cmd
    from packer.options import ExportOptions, export_options

    params = {p.name: p for p in export_cmd.params}
    assert set(params) - {"output", "path", "quiet", "debug"} == {o.name for o in export_options()}
    for o in export_options():
        assert params[o.name].opts == [o.flag] and params[o.name].help.startswith(o.help), o.name
        if o.kind != "bool":  # a flag's default is click's own
            assert params[o.name].default == o.default, o.name
        if o.choices:
            assert tuple(params[o.name].type.choices) == o.choices, o.name
    with pytest.raises(TypeError, match="did you mean 'strategy'"):
        ExportOptions().with_overrides({"strategies": "full"})
