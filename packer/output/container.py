"""The bytes of a shard: an Arrow IPC stream (format version 5) or an Arrow IPC file (versions 1-4).

A stream shard is what ``datasets.Dataset.from_file`` memory-maps (it reads IPC streams only), so a
Hugging Face dataset over the shards costs no copy (:func:`packer.train.hf.to_dataset`). A stream has no
footer indexing its record batches, so the manifest's entry of each shard carries one: ``batch_offsets``,
the byte offset of each record batch's message and, last, of the end-of-stream marker, and ``batch_rows``,
each batch's rows. A reader on a remote filesystem reads one batch with one ranged read, never the
whole shard (:class:`StreamShard`)::

    shard-00000.arrow   schema | batch 0 (1024 rows) | batch 1 (1024 rows) | batch 2 (17 rows) | end
                        0       312                  5,403,120            10,806,048          10,985,600
    manifest entry      "batch_offsets": [312, 5403120, 10806048, 10985600], "batch_rows": [1024, 1024, 17]

documents.arrow stays an IPC file (only packer reads it, through a footer it already has).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.ipc as ipc

from .layout import STREAM_VERSION

__all__ = ["END_OF_STREAM", "StreamShard", "is_stream", "message_offsets", "open_local", "read_table"]

#: the end-of-stream marker that closes an IPC stream: continuation 0xFFFFFFFF, metadata length 0
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
#: the first bytes of an Arrow IPC file (a stream starts with the continuation marker 0xFFFFFFFF)
FILE_MAGIC = b"ARROW1"


def is_stream(version: int) -> bool:
    """Whether the shards of an output of format ``version`` are IPC streams (else IPC files).

    >>> is_stream(5), is_stream(4)
    (True, False)
    """
    return int(version) >= STREAM_VERSION


def container(version: int) -> str:
    """The container's name, for messages: ``"Arrow IPC stream"`` or ``"Arrow IPC file"``."""
    return "Arrow IPC stream" if is_stream(version) else "Arrow IPC file"


def open_local(source: pa.NativeFile, stream: bool | None = None) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The schema and every record batch of a shard opened as ``source`` (a memory map: the batches are views
    of it, no copy), an IPC stream or (``stream`` False) an IPC file; ``stream`` None: told by the first bytes
    (an IPC file starts with ``ARROW1``).

    Reading all batches of a stream costs one message header each (O(batches)), not their bodies."""
    if stream is None:
        stream = _sniff(source)
    if stream:
        reader = ipc.open_stream(source)
        return reader.schema, list(reader)
    file = ipc.open_file(source)
    return file.schema, [file.get_batch(b) for b in range(file.num_record_batches)]


def _sniff(source: pa.NativeFile) -> bool:
    at = source.tell()
    head = source.read(len(FILE_MAGIC))
    source.seek(at)
    return head != FILE_MAGIC


def read_table(path: str | os.PathLike, version: int | None = None) -> pa.Table:
    """The whole shard at the local ``path`` as a table, memory-mapped, of either container (``version`` None:
    told by its first bytes).

    >>> read_table("shards/shard-00000.arrow").column("input_ids")    # doctest: +SKIP
    """
    schema, batches = open_local(pa.memory_map(os.fspath(path)), None if version is None else is_stream(version))
    return pa.Table.from_batches(batches, schema)


def message_offsets(source: pa.NativeFile) -> tuple[list[int], list[int], int]:
    """``(batch_offsets, batch_rows, end)`` of the IPC stream ``source`` read from its start: where each record
    batch's message starts and, last, where the end-of-stream marker starts (the manifest's fields); each
    batch's rows; and the position after the last message read (past the end marker, where the stream has one).

    Raises ``pa.ArrowInvalid`` where the stream is not one (a message is damaged, or the first is no schema)."""
    reader = ipc.MessageReader.open_stream(source)
    schema_message = reader.read_next_message()
    if schema_message.type != "schema":
        raise pa.ArrowInvalid(f"the stream starts with a {schema_message.type} message, not its schema")
    schema = ipc.read_schema(schema_message)
    offsets: list[int] = []
    rows: list[int] = []
    while True:
        at = source.tell()
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        if message.type != "record batch":
            raise pa.ArrowInvalid(f"a {message.type} message at byte {at}: a shard has record batches only")
        offsets.append(at)
        rows.append(ipc.read_record_batch(message, schema).num_rows)
    offsets.append(at)
    return offsets, rows, source.tell()


class StreamShard:
    """A stream shard on a filesystem that is not local: its schema read once (the bytes before the first
    batch), then each record batch by one ranged read of ``batch_offsets[b]:batch_offsets[b + 1]``.

    ``source`` is a random access file (``fs.open_input_file``); ``where`` names it in errors."""

    def __init__(self, source: pa.NativeFile, batch_offsets: Sequence[int], where: str) -> None:
        self.source = source
        self.offsets = [int(v) for v in batch_offsets]
        self.where = where
        self.schema = ipc.read_schema(self._read(0, self.offsets[0]))

    def batch(self, b: int) -> pa.RecordBatch:
        """Record batch ``b``, decoded from the bytes the manifest's index gives it."""
        a, z = self.offsets[b], self.offsets[b + 1]
        try:
            return ipc.read_record_batch(ipc.read_message(self._read(a, z)), self.schema)
        except (pa.ArrowInvalid, OSError) as e:
            raise pa.ArrowInvalid(f"{self.where}: record batch {b} (bytes {a}..{z}) does not read: {e}") from e

    def _read(self, a: int, z: int) -> pa.Buffer:
        # an Arrow buffer (aligned, as the decoder wants), not the bytes read_at returns
        self.source.seek(a)
        return self.source.read_buffer(z - a)
