"""NVIDIA NeMo's packed SFT file from a build output: ``packer export OUTPUT --to nemo -o packed.npy``.

NeMo (and NeMo-RL, Megatron-Bridge) fine-tune from ``np.save`` of a 1-D object array with one dict per packed
row, loaded with ``np.load(path, allow_pickle=True)`` by ``GPTSFTPackedDataset``
(``nemo/collections/llm/gpt/data/core.py``; ``nemo/utils/sequence_packing_utils.py``'s
``fill_packing_strategy`` writes it). Followed: NeMo 2.4.0 and main (2.6.0rc0, commit 8cfedd7)::

    input_ids     list[int]   the row's tokens, its documents one after another (packer's row, no padding)
    loss_mask     list[bool]  shifted (NeMo 2.2 and later): entry j is 1 where the prediction made at token j,
                              of token j + 1, has loss; 0 at each document's last token
    seq_start_id  list[int]   where each document starts

NeMo reads document ``[s, e)`` as inputs ``ids[s:e-1]``, labels ``ids[s+1:e]`` and loss ``loss_mask[s:e-1]``, so
the tokens trained are exactly those where packer's mask for the strategy is set, less each document's first token
(which ``PackedDataset``'s labels leave out too). NeMo 1.x up to 2.1 read ``loss_mask[s+1:e]`` instead: there the
mask is written unshifted (``loss_mask="unshifted"``). A row of two documents under ``instruction_tuning``::

    tokens       :  <s>  U:  hi  R:  yo </s> | <s>  U: 2+2?  R:   4 </s>
    packer mask  :    0   0   0   0   1    1 |   0   0    0   0   1    1
    shifted      :    0   0   0   1   1    0 |   0   0    0   1   1    0
    unshifted    :    0   0   0   0   1    1 |   0   0    0   0   1    1
    seq_start_id : [0, 6]

Beside it goes NeMo's pack metadata (``packed_metadata_path``; ``pad_cu_seqlens=True`` needs it): a JSON list with
one entry per split of the output (train, then eval, as NeMo's own file lists train then validation) of the keys
``create_packing_strategy`` writes, counted as NeMo counts them (a document of ``n`` tokens is ``n - 1`` inputs).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..options import ExportOptions
from ..output.layout import output_splits, read_manifest, split_shards, write_atomic
from ..output.shards import mask_column
from ..train.rows import ShardReader, check_shards, open_root
from . import ExportError

__all__ = ["nemo_row", "pack_metadata", "to_nemo"]

log = logging.getLogger("packer")


def nemo_row(ids: np.ndarray, mask: np.ndarray, seq_lens: np.ndarray, loss_mask: str = "shifted") -> dict:
    """One packed row (its ids, the strategy's mask, its documents' lengths) as NeMo's dict.

    >>> ids, mask = np.array([1, 17, 40, 18, 77, 2, 1, 31]), np.array([0, 0, 0, 0, 1, 1, 0, 1], bool)
    >>> row = nemo_row(ids, mask, np.array([6, 2]))
    >>> [int(x) for x in row["loss_mask"]], row["seq_start_id"]
    ([0, 0, 0, 1, 1, 0, 1, 0], [0, 6])
    >>> [int(x) for x in nemo_row(ids, mask, np.array([6, 2]), "unshifted")["loss_mask"]]
    [0, 0, 0, 0, 1, 1, 0, 1]
    """
    lens = np.asarray(seq_lens, dtype=np.int64)
    ends = np.cumsum(lens)
    starts = ends - lens
    if loss_mask == "shifted":
        out = np.zeros(len(mask), dtype=bool)
        out[:-1] = mask[1:]
        out[ends - 1] = False  # a document's last token predicts the next document's first: no loss
    else:
        out = np.array(mask, dtype=bool)
        out[starts] = False  # predicted from the previous document: no loss (NeMo <= 2.1 never reads it)
    # plain lists, as NeMo's own writer makes them: its reader does seq_start_id + [len(input_ids)]
    return {"input_ids": ids.tolist(), "loss_mask": out.tolist(), "seq_start_id": starts.tolist()}


def pack_metadata(row_lens: list[np.ndarray], pack_size: int) -> dict:
    """NeMo's pack metadata of one split whose rows have the documents of lengths ``row_lens``: the keys and the
    arithmetic of ``create_packing_strategy`` (``nemo/utils/sequence_packing_utils.py``), where a document of
    ``n`` tokens counts ``n - 1`` (its inputs; the labels are the same tokens moved by one).

    >>> pack_metadata([np.array([6, 2]), np.array([5])], pack_size=8)["max_samples_per_bin"]
    2
    """
    inputs = [np.asarray(lens, dtype=np.int64) - 1 for lens in row_lens]
    packed = [int(x.sum()) for x in inputs]
    docs = sum(len(x) for x in inputs)
    return {
        "dataset_max_seqlen": max(int(x.max()) for x in inputs),
        "max_samples_per_bin": max(len(x) for x in inputs),
        "packing_factor": round(docs / len(inputs), 2),
        "packing_efficiency": round(sum(packed) / len(packed) / pack_size * 100, 2),
        "pack_size": pack_size,
        "min_packed_seqlen": min(packed),
    }


class _ObjectRows:
    """Rows that pickle as ``numpy.array(rows, "O")``: the 1-D object array ``np.save`` would write, named by a
    global every NumPy has. An ndarray pickled by NumPy 2 names ``numpy._core.multiarray``, which NumPy 1.25 and
    older cannot import (numpy/numpy#28340; measured: 1.25.2 fails, 1.26.4 has a stub), and NeMo's containers may
    hold either."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __reduce__(self) -> tuple:
        return (np.array, (self.rows, "O"))


def _write_npy(path: Path, rows: list[dict]) -> None:
    """``np.save(path, rows)``'s bytes (format 1.0, dtype object), with the pickle of :class:`_ObjectRows`."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            header = {"descr": "|O", "fortran_order": False, "shape": (len(rows),)}
            np.lib.format.write_array_header_1_0(f, header)
            pickle.dump(_ObjectRows(rows), f, protocol=4)

    write_atomic(path, write, private=True)  # the user's folder: a temporary name that is none of theirs


def _is_object_npy(path: Path) -> bool:
    """Whether ``path`` is a .npy file of a 1-D object array (a packed file, NeMo's or packer's), from its header
    only (nothing unpickled)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        return dtype == np.dtype(object) and len(shape) == 1
    except (OSError, ValueError):
        return False


def _is_pack_metadata(path: Path) -> bool:
    """Whether ``path`` is a NeMo pack metadata file: a JSON list of objects with ``max_samples_per_bin``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, list) and all(isinstance(d, dict) and "max_samples_per_bin" in d for d in data)


def _check_target(path: Path, overwrite: bool | None, ours: Any, kind: str, flag: str) -> None:
    """Refuse to write ``path`` where its folder is missing, or a file is there that is not of the ``kind`` export
    writes (``ours(path)``: export never replaces a file of the user's), or is and ``overwrite`` is off (None: the
    caller decides later)."""
    if not path.parent.is_dir():
        raise ExportError(f"{flag} {path}: the folder {path.parent} does not exist")
    if not os.path.lexists(path):
        return
    if path.is_dir() or path.is_symlink() or not ours(path):
        raise ExportError(f"{flag} {path}: exists and is not {kind}; export replaces no other file: choose "
                          "another path, or remove it yourself")
    if overwrite is False:
        raise ExportError(f"{flag} {path}: exists; pass --overwrite (overwrite=True) to replace it")


def _targets(output: str | os.PathLike, path: str | os.PathLike, opts: ExportOptions) -> tuple[Path, Path]:
    """The .npy file and the metadata file to write, checked before anything is read (whether an existing metadata
    file may stay or be replaced is known once its new text is: :func:`to_nemo`)."""
    npy = Path(path)
    if npy.suffix != ".npy":
        raise ExportError(f"-o {npy}: name a .npy file (NeMo's PackedSequenceSpecs reads only .npy files)")
    meta = Path(opts.metadata) if opts.metadata is not None else npy.with_name(npy.stem + "_metadata.json")
    if meta.resolve() == npy.resolve():
        raise ExportError(f"--metadata {meta}: the same file as -o; give another name")
    if "://" not in os.fspath(output):
        root = os.path.realpath(output)
        for p, flag in ((npy, "-o"), (meta, "--metadata")):
            if os.path.realpath(p.parent) == root:
                raise ExportError(f"{flag} {p}: inside the build output {output}, which a rebuild replaces whole: "
                                  "write it elsewhere")
    _check_target(npy, opts.overwrite, _is_object_npy, "a .npy object array (a packed file)", "-o")
    _check_target(meta, None, _is_pack_metadata, "a NeMo pack metadata file", "--metadata")
    return npy, meta


def _source(output: str | os.PathLike, opts: ExportOptions) -> tuple[Any, str, dict]:
    """(filesystem, root, manifest) of a build output that can be exported as ``opts`` asks."""
    fs, root = open_root(output, None)
    manifest = read_manifest(root, fs)
    kind = manifest.get("kind", "sft")
    if kind != "sft":
        what = "preference pairs" if kind == "pairs" else "KTO labelled completions"
        raise ExportError(f"{output}: holds {what} (a {kind} build); NeMo's packed file is for supervised "
                          "fine-tuning only: export an SFT build")
    if opts.strategy not in manifest["strategies"]:
        raise ExportError(f"{output}: no strategy {opts.strategy!r}; this output has "
                          f"{', '.join(manifest['strategies'])}")
    split_shards(manifest, opts.split, os.fspath(output))  # a ShardError where there is no eval split
    return fs, root, manifest


def _read_split(fs: Any, root: str, shards: list[dict], mask: str | None, convention: str) -> tuple[list, list]:
    """(NeMo rows, or [] where ``mask`` is None; each row's document lengths) of one split."""
    check_shards(fs, root, shards, verify=False)
    reader = ShardReader(fs, root, shards, mask)
    rows, lens = [], []
    for g in range(sum(int(s["rows"]) for s in shards)):
        row = reader.row(g)
        lens.append(np.array(row.seq_lens, dtype=np.int64))
        if mask is not None:
            assert row.mask is not None
            rows.append(nemo_row(row.ids, row.mask, row.seq_lens, convention))
    return rows, lens


def to_nemo(output: str | os.PathLike, path: str | os.PathLike, options: ExportOptions | None = None,
            **overrides: Any) -> dict:
    """Write split ``split`` of the build output ``output`` (a folder or a URI) as NeMo's packed SFT file ``path``
    (a ``.npy``) with the loss of ``strategy``, and NeMo's pack metadata beside it; return what was written.

    ``to_nemo("shards/", "packed.npy", strategy="instruction_modelling")`` writes ``packed.npy`` and
    ``packed_metadata.json``. The settings are :class:`~packer.options.ExportOptions`' (``options``, or its fields as
    keywords). An existing file is replaced only with ``overwrite`` and only if it is of the kind export writes (a
    .npy object array; a NeMo pack metadata list); a metadata file that already holds exactly this output's metadata
    (written by the export of the other split) is left as it is. A preference output, an unknown strategy or a
    missing eval split is an :class:`~packer.export.ExportError` (or a ``ShardError``) and nothing is written. The
    rows are held in memory as NeMo's writer holds them (about 50 bytes per token) while the file is written.
    """
    opts = (options or ExportOptions()).with_overrides(overrides)
    npy, meta = _targets(output, path, opts)
    fs, root, manifest = _source(output, opts)
    pack_size = int(manifest["seq_len"])
    entries, rows = [], []
    for split in output_splits(manifest):
        chosen = split == opts.split
        split_rows, lens = _read_split(fs, root, split_shards(manifest, split, root),
                                       mask_column(opts.strategy) if chosen else None, opts.loss_mask)
        if not lens:
            raise ExportError(f"{output}: the {split} split has no rows; nothing to export")
        entries.append(pack_metadata(lens, pack_size))
        if chosen:
            rows, docs, tokens = split_rows, sum(len(x) for x in lens), sum(int(x.sum()) for x in lens)
    text = json.dumps(entries) + "\n"
    same = meta.is_file() and meta.read_text(encoding="utf-8") == text  # written by the other split's export
    if meta.exists() and not same and not opts.overwrite:
        raise ExportError(f"--metadata {meta}: exists with another output's metadata; pass --overwrite "
                          "(overwrite=True) to replace it")
    _write_npy(npy, rows)
    if not same:
        write_atomic(meta, lambda tmp: tmp.write_text(text, encoding="utf-8"), private=True)
    loss = sum(sum(r["loss_mask"]) for r in rows)
    log.info("wrote %s: %d rows, %d documents, %d tokens, %d with loss (%s)", npy, len(rows), docs, tokens, loss,
             opts.strategy)
    return {"file": str(npy), "metadata": str(meta), "split": opts.split, "strategy": opts.strategy,
            "loss_mask": opts.loss_mask, "rows": len(rows), "documents": docs, "tokens": tokens,
            "loss_tokens": loss, "pack_size": pack_size}
