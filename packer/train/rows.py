"""Reading the rows of a build output, on any pyarrow filesystem, without torch.

Open the output folder (a local path, a ``file://`` or ``s3://`` URI, or a path within a
``pyarrow.fs.FileSystem``), check that every shard the manifest lists is there whole, then read
rows by their global index::

    fs, root = open_root("shards/", None)
    manifest = read_manifest(root, fs)                       # packer.output.layout
    check_shards(fs, root, manifest["shards"], verify=False)
    reader = ShardReader(fs, root, manifest["shards"], mask_column("instruction_tuning"))
    reader.row(2100)     # shards of 1000, 1000, 400 rows: shard 2, row 100 -> a Row of numpy views

A local shard is memory-mapped and a row's arrays are views into it (no copy); only the mask's
bits of that one row are unpacked. A shard on a remote filesystem is read through
``open_input_file``, keeping the last :data:`REMOTE_BATCH_CACHE` record batches decoded.

Shards of format version 5 are Arrow IPC streams (:mod:`packer.output.container`): a local one is read
whole at open (every batch a view of the map: one message header per batch), a remote one a batch at a
time with one ranged read at the byte offset its manifest entry records (``batch_offsets``). Shards of
versions 1-4 are Arrow IPC files, read through their footer as before.
Turning a :class:`Row` into training tensors is :mod:`packer.train.items`' job.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from ..output.container import StreamShard, open_local
from ..output.layout import (
    MANIFEST_FILE,
    MissingShardError,
    ShardError,
    check_batch_index,
    file_sha256,
    locate_row,
    output_file,
    row_starts,
)
from ..output.shards import ADDED_IN, SHARD_COLUMNS

__all__ = ["REMOTE_BATCH_CACHE", "Row", "ShardReader", "check_shards", "open_root"]

#: record batches kept decoded per process when the shards are not local files (a local shard is
#: memory-mapped, so keeping every batch's views costs nothing but address space)
REMOTE_BATCH_CACHE = 8


# -- opening and checking the output directory ------------------------------------------------------


def open_root(output: str | os.PathLike, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, directory path within it) for a local path, a ``file://`` or any pyarrow URI."""
    text = os.fspath(output)
    if filesystem is not None:
        return filesystem, text.rstrip("/") or "/"
    if "://" in text:
        fs, inner = pafs.FileSystem.from_uri(text)
        return fs, inner.rstrip("/") or "/"
    return pafs.LocalFileSystem(), os.path.abspath(text)


def check_shards(fs: pafs.FileSystem, root: str, shards: list[dict], verify: bool) -> None:
    """Every listed shard exists with its recorded size (and sha256 when ``verify``)."""
    paths = [output_file(root, s["file"], fs) for s in shards]  # a name leaving the folder is refused
    for info, shard in zip(fs.get_file_info(paths), shards, strict=True):
        if info.type == pafs.FileType.NotFound:
            raise MissingShardError(f"{info.path}: shard listed in {MANIFEST_FILE} is missing")
        if info.size != shard["bytes"]:
            raise ShardError(
                f"{info.path}: {info.size} bytes, {MANIFEST_FILE} records {shard['bytes']} (truncated or replaced?)"
            )
    if verify:
        for path, shard in zip(paths, shards, strict=True):
            if file_sha256(path, fs) != shard["sha256"]:
                raise ShardError(f"{path}: sha256 differs from {MANIFEST_FILE} (the shard is corrupt)")


# -- reading rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    """Numpy views over one record batch's list columns (zero copy on a memory map)."""

    ids: np.ndarray
    ids_off: np.ndarray
    roles: np.ndarray
    roles_off: np.ndarray
    seq_lens: np.ndarray
    seq_off: np.ndarray
    doc_ids: np.ndarray
    doc_off: np.ndarray
    mask: _Bits | None  # the strategy's mask column
    trainable: _Bits | None  # the trainable column, where wanted and the shard has one
    forced: _Bits | None = None  # the forced column, where wanted and the shard has one (format version 3)
    branch: tuple[np.ndarray, np.ndarray] | None = None  # pair rows: the branch column's values and offsets
    labels: _Bits | None = None  # KTO rows: the per-document labels column


def _list_views(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray]:
    # ListArray.offsets index into ListArray.values (the unsliced child), so no copy is needed
    arr = batch.column(name)
    return arr.values.to_numpy(zero_copy_only=True), arr.offsets.to_numpy(zero_copy_only=True)


@dataclass(frozen=True)
class _Bits:
    """A list<bool> column of a record batch, bit-packed as Arrow keeps it: unpacked one row at a time,
    instead of expanding a whole batch (to_numpy copies) for every randomly accessed row."""

    bits: np.ndarray  # the bool child's data buffer
    bit0: int  # bit offset of the child's first value
    off: np.ndarray  # the list offsets

    @classmethod
    def of(cls, batch: pa.RecordBatch, name: str) -> _Bits:
        arr = batch.column(name)
        child = arr.values
        data = child.buffers()[1]
        bits = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        return cls(bits, child.offset, arr.offsets.to_numpy(zero_copy_only=True))

    def row(self, i: int, n: int) -> np.ndarray:
        a = self.bit0 + int(self.off[i])
        return _unpack_bits(self.bits, a, a + n)


def _batch_views(batch: pa.RecordBatch, mask_name: str | None, trainable: bool, forced: bool = False) -> _Batch:
    ids, ids_off = _list_views(batch, "input_ids")
    roles, roles_off = _list_views(batch, "roles")
    seq_lens, seq_off = _list_views(batch, "seq_lens")
    doc_ids, doc_off = _list_views(batch, "doc_ids")
    mask = _Bits.of(batch, mask_name) if mask_name is not None else None
    train = _Bits.of(batch, "trainable") if trainable and "trainable" in batch.schema.names else None
    force = _Bits.of(batch, "forced") if forced and "forced" in batch.schema.names else None
    # preference builds: read wherever a shard has them (an SFT shard has neither)
    branch = _list_views(batch, "branch") if "branch" in batch.schema.names else None
    labels = _Bits.of(batch, "labels") if "labels" in batch.schema.names else None
    return _Batch(ids, ids_off, roles, roles_off, seq_lens, seq_off, doc_ids, doc_off, mask, train, force, branch,
                  labels)


@dataclass(frozen=True)
class Row:
    ids: np.ndarray  # int32 [T]
    roles: np.ndarray  # uint8 [T]
    mask: np.ndarray | None  # bool [T], the strategy's mask column when the strategy is a name
    seq_lens: np.ndarray  # int32 [D]
    doc_ids: np.ndarray  # int64 [D]
    #: bool [T]: False in messages marked untrained; None where not read, or the shard (format version 1)
    #: has no such column (every token trainable)
    trainable: np.ndarray | None = None
    #: bool [T]: True in the content of messages other than the assistant's marked ``"training": true``
    #: (loss under every strategy); None where not read, or the shard (format version 1, 2) has no such column
    forced: np.ndarray | None = None
    #: uint8 [T], pair rows only: 0 the pair's shared prefix, 1 its chosen suffix, 2 its rejected suffix
    branch: np.ndarray | None = None
    #: bool [D], KTO rows only: each document's label (True: desirable)
    labels: np.ndarray | None = None


def _unpack_bits(bits: np.ndarray, start: int, stop: int) -> np.ndarray:
    lo, hi = start // 8, (stop + 7) // 8
    return np.unpackbits(bits[lo:hi], bitorder="little")[start - 8 * lo : stop - 8 * lo].astype(bool)


@dataclass(frozen=True)
class _Opened:
    """An open shard: its record batches (all of them, or a way to read one) and their first rows."""

    schema: pa.Schema
    starts: np.ndarray  # row_starts of its batches
    batches: list[pa.RecordBatch] | None  # every batch (a local shard: views of the map)
    read: StreamShard | ipc.RecordBatchFileReader | None  # reads batch b of a remote shard

    def batch(self, b: int) -> pa.RecordBatch:
        if self.batches is not None:
            return self.batches[b]
        if isinstance(self.read, StreamShard):
            return self.read.batch(b)
        return self.read.get_batch(b)  # type: ignore[union-attr]


class ShardReader:
    """Random access to the rows of all shards, opened lazily in the process that reads.

    Row ``g`` (counted across shards in manifest order) is found with :func:`packer.output.layout.locate_row`
    over the shards' row counts, then over that shard's record batches' row counts. A local shard is read as the
    container its first bytes say; a remote one as an IPC stream where its manifest entry has a batch index
    (``batch_offsets``, ``batch_rows``: format version 5), else as an IPC file.
    """

    def __init__(
        self, fs: pafs.FileSystem, root: str, shards: list[dict], mask_name: str | None, trainable: bool = False,
        forced: bool = False,
    ) -> None:
        self._fs = fs
        self._root = root
        self._shards = shards
        self._mask_name = mask_name
        #: read the ``trainable`` column (where a shard has one) into ``Row.trainable``
        self._trainable = trainable
        #: read the ``forced`` column (where a shard has one) into ``Row.forced``
        self._forced = forced
        self._local = isinstance(fs, pafs.LocalFileSystem)
        self._shard_starts = row_starts([int(s["rows"]) for s in shards])
        self._files: list[_Opened | None] = [None] * len(shards)
        self._batches: OrderedDict[tuple[int, int], _Batch] = OrderedDict()

    def _open(self, k: int) -> _Opened:
        opened = self._files[k]
        if opened is not None:
            return opened
        shard = self._shards[k]
        path = output_file(self._root, shard["file"], self._fs)
        stream = "batch_offsets" in shard or "batch_rows" in shard
        try:
            source = pa.memory_map(path, "r") if self._local else self._fs.open_input_file(path)
        except FileNotFoundError as e:
            raise MissingShardError(f"{path}: shard listed in {MANIFEST_FILE} is missing") from e
        try:
            opened = self._opened(source, shard, stream, path)
        except (pa.ArrowInvalid, OSError) as e:
            raise ShardError(f"{path}: not a readable Arrow IPC {'stream' if stream else 'file'}: {e}") from e
        # columns a newer format added are read where a shard has them (an older one is all trainable)
        needed = [*(c for c in SHARD_COLUMNS if c not in ADDED_IN), *([self._mask_name] if self._mask_name else [])]
        absent = [c for c in needed if c not in opened.schema.names]
        if absent:
            raise ShardError(f"{path}: no column {', '.join(absent)} (columns: {', '.join(opened.schema.names)})")
        if int(opened.starts[-1]) != shard["rows"]:
            raise ShardError(f"{path}: {int(opened.starts[-1])} rows, {MANIFEST_FILE} records {shard['rows']}")
        self._files[k] = opened
        return opened

    def _opened(self, source: pa.NativeFile, shard: dict, stream: bool, path: str) -> _Opened:
        if self._local:  # every batch now: views of the map, one message header each
            schema, batches = open_local(source)
            counts = [b.num_rows for b in batches]
            if stream and counts != shard["batch_rows"]:
                raise ShardError(f"{path}: record batches of {counts} rows, {MANIFEST_FILE} records "
                                 f"{shard['batch_rows']}")
            return _Opened(schema, row_starts(counts), batches, None)
        if stream:  # a batch at a time, where the manifest's index says it is
            check_batch_index(shard, path)
            remote = StreamShard(source, shard["batch_offsets"], path)
            return _Opened(remote.schema, row_starts(shard["batch_rows"]), None, remote)
        reader = ipc.open_file(source)
        counts = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        return _Opened(reader.schema, row_starts(counts), None, reader)

    def _batch(self, k: int, b: int) -> _Batch:
        key = (k, b)
        views = self._batches.get(key)
        if views is None:
            opened = self._open(k)
            try:
                batch = opened.batch(b)
            except (pa.ArrowInvalid, OSError) as e:
                raise ShardError(str(e)) from e
            if batch.num_rows != int(opened.starts[b + 1] - opened.starts[b]):
                raise ShardError(f"{self._shards[k]['file']}: record batch {b} has {batch.num_rows} rows, "
                                 f"{MANIFEST_FILE} records {int(opened.starts[b + 1] - opened.starts[b])}")
            views = _batch_views(batch, self._mask_name, self._trainable, self._forced)
            self._batches[key] = views
            if not self._local and len(self._batches) > REMOTE_BATCH_CACHE:
                self._batches.popitem(last=False)
        elif not self._local:
            self._batches.move_to_end(key)
        return views

    def row(self, g: int) -> Row:
        """Row ``g``, counted across the shards in manifest order."""
        k, local = locate_row(self._shard_starts, g)
        b, i = locate_row(self._open(k).starts, local, self._shards[k]["file"])
        v = self._batch(k, b)
        a, z = int(v.ids_off[i]), int(v.ids_off[i + 1])
        ra = int(v.roles_off[i])
        mask = v.mask.row(i, z - a) if v.mask is not None else None
        trainable = v.trainable.row(i, z - a) if v.trainable is not None else None
        forced = v.forced.row(i, z - a) if v.forced is not None else None
        sa, sz = int(v.seq_off[i]), int(v.seq_off[i + 1])
        da, dz = int(v.doc_off[i]), int(v.doc_off[i + 1])
        branch = None
        if v.branch is not None:
            values, offsets = v.branch
            branch = values[int(offsets[i]) : int(offsets[i]) + (z - a)]
        labels = v.labels.row(i, dz - da) if v.labels is not None else None
        return Row(v.ids[a:z], v.roles[ra : ra + (z - a)], mask, v.seq_lens[sa:sz], v.doc_ids[da:dz], trainable,
                   forced, branch, labels)
