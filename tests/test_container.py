"""Shards are Arrow IPC streams (format version 5, issue 29 item 1): ``datasets.Dataset.from_file`` maps one with
no copy and reads the rows packer reads; :func:`packer.train.hf.to_dataset` maps a split; a remote reader reads
one record batch with one ranged read at the offset the manifest's batch index gives; outputs of versions 1-4
(Arrow IPC files) read as before; ``packer verify`` checks the stream and its index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner

from packer import BuildError, build
from packer.cli import main
from packer.inspect.show import load_row
from packer.inspect.verify import verify
from packer.output.container import END_OF_STREAM, FILE_MAGIC, message_offsets, read_table
from packer.output.layout import FORMAT_VERSION, ShardError, read_manifest
from packer.train.dataset import PackedDataset
from packer.train.rows import ShardReader, open_root

from .helpers import DEMO_BUILD_OPTIONS, DEMO_INPUTS, as_ipc_files, write_stream_shard

datasets = pytest.importorskip("datasets", reason="datasets not installed (extra packer[hf])")


def _reader(out: Path, fs: pafs.FileSystem | None = None, split: str = "train") -> tuple[ShardReader, int]:
    fs_, root = open_root(out, None)
    m = read_manifest(root)
    shards = m["shards"] if split == "train" else m["eval"]["shards"]
    return ShardReader(fs or fs_, root, shards, None), sum(s["rows"] for s in shards)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_new_outputs_are_streams_with_a_batch_index(demo_output):
    m = read_manifest(demo_output)
    assert m["format"]["version"] == FORMAT_VERSION == 5
    for shard in m["shards"]:
        data = (demo_output / shard["file"]).read_bytes()
        assert not data.startswith(FILE_MAGIC) and data.endswith(END_OF_STREAM)
        with pa.memory_map(str(demo_output / shard["file"])) as source:
            offsets, rows, end = message_offsets(source)
        assert (shard["batch_offsets"], shard["batch_rows"], shard["bytes"]) == (offsets, rows, end)
        assert sum(rows) == shard["rows"]


def test_datasets_maps_a_shard_with_no_copy(demo_output, tmp_path, monkeypatch):
    """Dataset.from_file(shard): the ids packer reads, the table a memory map, nothing written to the cache."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    (cache / "marker").write_text("x")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    before = _folder_bytes(cache)
    reader, _ = _reader(demo_output)
    g = 0
    for shard in read_manifest(demo_output)["shards"]:
        allocated = pa.total_allocated_bytes()
        ds = datasets.Dataset.from_file(str(demo_output / shard["file"]))
        assert isinstance(ds.data, datasets.table.MemoryMappedTable)
        assert pa.total_allocated_bytes() - allocated < shard["bytes"] // 4  # the shard's bytes are not copied
        assert ds.num_rows == shard["rows"]
        for ids in ds["input_ids"]:
            assert np.array_equal(np.asarray(ids, dtype=np.int32), reader.row(g).ids)
            g += 1
    assert g == read_manifest(demo_output)["packing"]["rows"]
    assert _folder_bytes(cache) == before and sorted(p.name for p in cache.iterdir()) == ["marker"]


@pytest.fixture(scope="module")
def eval_output(tmp_path_factory, demo_tok) -> Path:
    out = tmp_path_factory.mktemp("container") / "o"
    build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=256, shard_size=20_000 / 2**20, eval_fraction=0.2)
    return out


@pytest.mark.parametrize("split", ["train", "eval"])
def test_to_dataset_is_the_split_as_packer_reads_it(eval_output, split):
    from packer.train.hf import to_dataset

    ds = to_dataset(eval_output, split=split)
    reader, rows = _reader(eval_output, split=split)
    assert ds.num_rows == rows > 0 and str(ds.split) == split
    assert isinstance(ds.data, datasets.table.ConcatenationTable | datasets.table.MemoryMappedTable)
    List, Value = datasets.List, datasets.Value
    assert ds.features["input_ids"] == List(Value("int32")) and ds.features["roles"] == List(Value("uint8"))
    assert ds.features["seq_lens"] == List(Value("int32")) and ds.features["doc_ids"] == List(Value("int64"))
    assert ds.features["mask_instruction_tuning"] == List(Value("bool"))
    for i, row in enumerate(ds):
        r = reader.row(i)
        assert row["input_ids"] == r.ids.tolist() and row["roles"] == r.roles.tolist()
        assert row["seq_lens"] == r.seq_lens.tolist() and row["doc_ids"] == r.doc_ids.tolist()


def test_ipc_file_outputs_read_as_before_and_to_dataset_says_rebuild(demo_output, tmp_path):
    """An output as packer wrote it before version 5 (IPC files, version 2): the same rows for the dataset and
    show, verify passes; to_dataset refuses it, naming the version and the ways out."""
    from packer.train.hf import to_dataset

    old = as_ipc_files(demo_output, tmp_path / "v2")
    m = read_manifest(old)
    assert m["format"]["version"] == 2 and (old / m["shards"][0]["file"]).read_bytes().startswith(FILE_MAGIC)
    assert verify(old) == []
    for kw in ({"strategy": "instruction_tuning"}, {"strategy": {"response", "end"}, "prompt_loss_weight": 0.5}):
        a, b = (list(PackedDataset(o, shuffle=False, **kw)) for o in (old, demo_output))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    assert np.array_equal(load_row(old, 5)["input_ids"], load_row(demo_output, 5)["input_ids"])
    with pytest.raises(ShardError, match=r"version 2: its shards are Arrow IPC files.*build command again.*"
                                         r"load_dataset"):
        to_dataset(old)


def test_the_same_build_command_rebuilds_an_older_output_as_streams(demo_output, demo_tok, tmp_path):
    """An output of the same inputs and options in an older format is no "nothing to do": the command rebuilds
    it in format version 5 (no --overwrite needed), which datasets then maps; other options still need it."""
    from packer.train.hf import to_dataset

    old = as_ipc_files(demo_output, tmp_path / "o")
    m = build(DEMO_INPUTS, old, tokenizer=demo_tok, **DEMO_BUILD_OPTIONS)
    assert m["format"]["version"] == FORMAT_VERSION and m["build_key"] == read_manifest(demo_output)["build_key"]
    assert {p.name: p.read_bytes() for p in old.glob("*shard-*")} == \
        {p.name: p.read_bytes() for p in demo_output.glob("*shard-*")}
    assert to_dataset(old).num_rows == m["packing"]["rows"]
    as_ipc_files(demo_output, tmp_path / "o2")
    with pytest.raises(BuildError, match="other inputs or options"):
        build(DEMO_INPUTS, tmp_path / "o2", tokenizer=demo_tok, **{**DEMO_BUILD_OPTIONS, "seq_len": 256})


class _Counting(pafs.FSSpecHandler):
    """A local folder seen as a filesystem that is not local, counting the bytes read through it."""

    read = 0

    def open_input_file(self, path):  # type: ignore[no-untyped-def]
        handler = self

        class File:
            def __init__(self, f):  # type: ignore[no-untyped-def]
                self.f, self.closed, self.mode = f, False, "rb"

            def read(self, n=-1):  # type: ignore[no-untyped-def]
                data = self.f.read(n)
                handler.read += len(data)
                return data

            def __getattr__(self, name):  # type: ignore[no-untyped-def]
                return getattr(self.f, name)

        return pa.PythonFile(File(open(path, "rb")), mode="r")


def test_a_remote_reader_reads_one_batch_not_the_shard(demo_output, tmp_path):
    """Rows read through a filesystem that is not local are packer's rows, each read costing one record batch
    (found by the manifest's batch index), for stream shards; IPC file shards still read the same rows."""
    fsspec = pytest.importorskip("fsspec")
    out = shutil.copytree(demo_output, tmp_path / "o")
    manifest = json.loads((out / "manifest.json").read_text())
    shard = manifest["shards"][0]
    write_stream_shard(out / shard["file"], read_table(out / shard["file"]), shard, max_chunksize=2)
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert len(shard["batch_rows"]) >= 4 and verify(out) == []
    local, rows = _reader(out)
    for folder in (out, as_ipc_files(out, tmp_path / "v2")):
        handler = _Counting(fsspec.filesystem("file"))
        remote, _ = _reader(folder, pafs.PyFileSystem(handler))
        last = shard["rows"] - 1
        assert np.array_equal(remote.row(last).ids, local.row(last).ids)
        if folder == out:  # the schema and one batch of the shard's batches
            assert handler.read < shard["bytes"] // 2, (handler.read, shard["bytes"])
        for g in range(rows):
            r, s = remote.row(g), local.row(g)
            assert np.array_equal(r.ids, s.ids) and np.array_equal(r.doc_ids, s.doc_ids)


def test_a_remote_reader_refuses_a_broken_batch_index(demo_output, tmp_path):
    fsspec = pytest.importorskip("fsspec")
    out = shutil.copytree(demo_output, tmp_path / "o")
    fs = pafs.PyFileSystem(_Counting(fsspec.filesystem("file")))
    shards = read_manifest(out)["shards"]
    for broken in ({**shards[0], "batch_rows": [shards[0]["rows"] + 1]},
                   {**shards[0], "batch_offsets": shards[0]["batch_offsets"][:1]}):
        with pytest.raises(ShardError, match="no valid batch index"):
            ShardReader(fs, str(out), [broken], None).row(0)
    moved = {**shards[0], "batch_offsets": [o + 8 for o in shards[0]["batch_offsets"]]}
    with pytest.raises(ShardError, match=r"record batch 0 \(bytes"):
        ShardReader(fs, str(out), [moved], None).row(0)


def test_verify_passes_a_new_output_and_catches_a_corrupt_stream(demo_output, tmp_path):
    result = CliRunner().invoke(main, ["verify", str(demo_output)])
    assert result.exit_code == 0, result.output
    out = shutil.copytree(demo_output, tmp_path / "o")
    shard = read_manifest(out)["shards"][1]
    path = out / shard["file"]
    data = bytearray(path.read_bytes())
    at = shard["batch_offsets"][0]
    data[at : at + 8] = b"\x01\x02\x03\x04\x05\x06\x07\x08"  # the batch's message header, same size
    path.write_bytes(bytes(data))
    assert any(p.startswith(f"{shard['file']}: sha256 differs") for p in verify(out)), verify(out)
    problems = verify(out, hashes=False)
    assert any(p.startswith(f"{shard['file']}: ") and "Arrow IPC stream" in p for p in problems), problems
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code != 0 and shard["file"] in result.output
    # a stream cut short of its end marker, the manifest's size made to match
    path.write_bytes((demo_output / shard["file"]).read_bytes()[: shard["batch_offsets"][-1]])
    m = json.loads((out / "manifest.json").read_text())
    m["shards"][1]["bytes"] = shard["batch_offsets"][-1]
    (out / "manifest.json").write_text(json.dumps(m))
    problems = verify(out, hashes=False)
    assert any(p.startswith(f"{shard['file']}: the stream ends") for p in problems), problems
