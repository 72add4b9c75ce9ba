"""Which files are the inputs: paths as given, HF ``datasets`` folders and URI patterns expanded, sizes checked.

A build names its inputs as paths, URIs (:mod:`packer.fsio`) or folders that
``Dataset.save_to_disk`` wrote; :func:`expand_inputs` turns them into the data
files a reader reads, in order, and :func:`file_size` checks each one before the
first is read (a missing file, a directory, a pipe is a BuildError at once).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "data.jsonl")
    >>> _ = open(path, "w").write("{}\\n")
    >>> expand_inputs([path]) == [path], file_size(path)
    (True, 3)
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence

from .. import fsio
from .records import BuildError

__all__ = ["expand_inputs", "file_size"]



def file_size(path: str) -> int:
    """The size of the file at ``path``; BuildError when it is missing, unreadable, a directory or not a regular
    file (the reader checks every path before it reads the first). ``path`` may be a URI (:mod:`packer.fsio`)."""
    if fsio.is_uri(path):
        return _uri_size(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BuildError(f"{path}: no such file") from None
    except OSError as e:  # e.g. a directory on the way that may not be searched
        raise BuildError(f"{path}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BuildError(f"{path}: is a directory; give the data files in it, or a folder written by HF datasets' "
                         "save_to_disk (with state.json)")
    if not stat.S_ISREG(st.st_mode):
        raise BuildError(f"{path}: not a regular file (a pipe, socket or device); give a data file")
    return st.st_size


def _uri_size(uri: str) -> int:
    """:func:`file_size` of a URI (one request to its filesystem)."""
    try:
        what, size = fsio.kind(uri)
    except OSError as e:  # no credentials, no such bucket, the server said no
        raise BuildError(f"{uri}: cannot read: {e}") from None
    if what == "missing":
        raise BuildError(f"{uri}: no such file")
    if what == "dir":
        raise BuildError(f"{uri}: is a directory; give the data files in it (a glob: {fsio.join(uri, '*.jsonl')}), "
                         "or a folder written by HF datasets' save_to_disk (with state.json)")
    if what != "file":
        raise BuildError(f"{uri}: not a regular file; give a data file")
    return size


def expand_inputs(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The input paths as strings, a folder written by HF ``datasets``' ``Dataset.save_to_disk`` replaced by
    its data files (``data-00000-of-0000N.arrow``, in the order its ``state.json`` lists them), so that
    every message names the file and the record. A ``DatasetDict``'s folder is a BuildError that names its
    splits; any other folder is left for :func:`file_size` to refuse. A URI (:mod:`packer.fsio`) with a
    ``*`` in its path stands for the files it matches, sorted (``s3://bucket/data/*.jsonl``).

    >>> expand_inputs(["data.json"])
    ['data.json']
    """
    out: list[str] = []
    for p in paths:
        path = os.fspath(p) if isinstance(p, os.PathLike) else str(p)
        if fsio.is_uri(path):
            out.extend(_expand_uri(path))
            continue
        if not os.path.isdir(path):
            out.append(path)
            continue
        state = os.path.join(path, "state.json")
        if os.path.isfile(state):
            try:
                with open(state, encoding="utf-8") as f:
                    files = [d["filename"] for d in json.load(f)["_data_files"]]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise BuildError(f"{state}: not a state.json HF datasets' save_to_disk writes ({e!r})") from None
            if not files:
                raise BuildError(f"{path}: the dataset folder lists no data files in state.json")
            out.extend(os.path.join(path, name) for name in files)
            continue
        splits_file = os.path.join(path, "dataset_dict.json")
        if os.path.isfile(splits_file):
            try:
                with open(splits_file, encoding="utf-8") as f:
                    splits = [str(s) for s in json.load(f)["splits"]]
            except (OSError, ValueError, KeyError, TypeError):
                splits = sorted(e.name for e in os.scandir(path) if e.is_dir())
            raise BuildError(f"{path}: holds a DatasetDict (splits: {', '.join(splits)}); give one split's folder, "
                             f"e.g. {os.path.join(path, splits[0] if splits else 'train')}")
        out.append(path)
    return out


def _expand_uri(uri: str) -> list[str]:
    """:func:`expand_inputs` of one URI: the files a ``*`` pattern matches, or a save_to_disk folder's data
    files (a DatasetDict's folder is left for :func:`file_size` to refuse as a directory)."""
    try:
        files = fsio.expand([uri])
    except FileNotFoundError:
        raise BuildError(f"{uri}: no file matches the pattern") from None
    except OSError as e:
        raise BuildError(f"{uri}: cannot list: {e}") from None
    if files != [uri]:
        return files
    state = fsio.join(uri, "state.json")
    try:
        if fsio.kind(uri)[0] != "dir" or fsio.kind(state)[0] != "file":
            return [uri]
        names = [d["filename"] for d in json.loads(fsio.read_bytes(state))["_data_files"]]
    except OSError:
        return [uri]  # file_size says why
    except (ValueError, KeyError, TypeError) as e:
        raise BuildError(f"{state}: not a state.json HF datasets' save_to_disk writes ({e!r})") from None
    if not names:
        raise BuildError(f"{uri}: the dataset folder lists no data files in state.json")
    return [fsio.join(uri, name) for name in names]
