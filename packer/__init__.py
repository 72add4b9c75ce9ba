"""packer: instruction-tuning data to sequence-packed, role-labelled Arrow shards.

    from packer import build, PackedDataset, collate_4d
    build(["data.json"], "shards/", tokenizer="path/to/model", seq_len=4096)
    ds = PackedDataset("shards/", strategy="instruction_modelling")

Every public name is imported on first use: ``import packer`` costs nothing, so
``packer --help`` or ``packer verify`` never load numba or the tokenizer stack,
and building shards never loads torch. The training side (``PackedDataset``,
the collators) needs torch, an optional extra (``pip install packer[torch]``).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

#: name -> module that defines it, imported on first access
_LAZY = {
    "build": "pipeline.build",
    "BuildOptions": "options",
    "BuildError": "read.records",
    "load_tokenizer": "tokens.loader",
    "PackedDataset": "train.dataset",
    "ShardError": "output.layout",
    "MissingShardError": "output.layout",
    "collate_padded": "train.collate",
    "collate_flat": "train.collate",
    "collate_4d": "train.collate",
    "collate_docs": "train.collate",
    "collate_flex": "train.collate",
    "packed_attention_mask": "train.masks",
    "flex_block_mask": "train.masks",
    "build_attention_mask": "train.masks",
    "collator_for": "train.collate",
    "weighted_loss": "train.collate",
    "packer_collator": "train.hf",
    "as_hf_iterable": "train.hf",
    "PackerTrainer": "train.hf",
    "PackerSFTTrainer": "train.hf",
    "pair_collator": "train.pairs",
    "pair_logps": "train.pairs",
    "dpo_loss": "train.pairs",
    "reference_logps": "train.pairs",
    "PackerDPOTrainer": "train.dpo",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'packer' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    except ModuleNotFoundError as e:
        if e.name in ("torch", "transformers", "trl"):
            extra = {"torch": "torch", "transformers": "hf", "trl": "hf"}[e.name]
            raise ImportError(f"packer.{name} needs {e.name}: pip install 'packer[{extra}]'"
                              + (" trl" if e.name == "trl" else "")) from e
        raise
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
