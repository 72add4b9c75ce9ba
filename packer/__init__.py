"""packer: instruction-tuning data to sequence-packed, role-labelled Arrow shards.

    from packer import build, PackedDataset, collate_4d
    build(["data.json"], "shards/", tokenizer="path/to/model", seq_len=4096)
    ds = PackedDataset("shards/", strategy="instruction_modelling")

The training side (``PackedDataset``, the collators) needs torch, an optional extra
(``pip install packer[torch]``); it is imported on first use, so building shards never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .build import build
from .records import BuildError
from .tokenize import load_tokenizer

#: name -> module of the torch-side API, imported on first access
_LAZY = {
    "PackedDataset": "dataset",
    "ShardError": "dataset",
    "MissingShardError": "dataset",
    "collate_padded": "collate",
    "collate_flat": "collate",
    "collate_4d": "collate",
    "collator_for": "collate",
}

__all__ = ["BuildError", "__version__", "build", "load_tokenizer", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'packer' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    except ModuleNotFoundError as e:
        if e.name == "torch":
            raise ImportError(f"packer.{name} needs torch: pip install 'packer[torch]'") from e
        raise
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
