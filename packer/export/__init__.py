"""A build output written in another trainer's own format: ``packer export OUTPUT --to FORMAT -o FILE``.

One format today, ``nemo`` (:mod:`packer.export.nemo`): NVIDIA NeMo's packed SFT file, which NeMo, NeMo-RL and
Megatron-Bridge fine-tune from, and its pack metadata JSON::

    from packer.export import export
    export("shards/", "packed.npy", to="nemo", strategy="instruction_modelling")
    # {'file': 'packed.npy', 'metadata': 'packed_metadata.json', 'rows': 12, 'documents': 57, ...}

The settings are :class:`packer.options.ExportOptions` (the ``packer export`` flags are made from it). The rows
are read through :mod:`packer.train.rows`, as training reads them, so whatever container the shards use, the
export reads the same rows.
"""

from __future__ import annotations

import os
from typing import Any

from ..options import ExportOptions
from ..read.records import BuildError

__all__ = ["ExportError", "export", "to_nemo"]


class ExportError(BuildError):
    """An export that cannot be done as asked (the message names the file and what to do); nothing was written."""


def export(output: str | os.PathLike, path: str | os.PathLike, options: ExportOptions | None = None,
           **overrides: Any) -> dict:
    """Write the build output ``output`` to the file ``path`` in the format ``to`` (a field of
    :class:`~packer.options.ExportOptions`, given in ``options`` or as a keyword); return what was written.

    ``export("shards/", "packed.npy", to="nemo", split="eval")`` is :func:`to_nemo` with the same arguments.
    """
    opts = (options or ExportOptions()).with_overrides(overrides)
    if opts.to == "nemo":
        return to_nemo(output, path, opts)
    raise ExportError(f"--to {opts.to}: no such export format")  # (ExportOptions checks the choice first)


def to_nemo(output: str | os.PathLike, path: str | os.PathLike, options: ExportOptions | None = None,
            **overrides: Any) -> dict:
    """NeMo's packed SFT file from ``output``: see :func:`packer.export.nemo.to_nemo`."""
    from .nemo import to_nemo as write

    return write(output, path, options, **overrides)
