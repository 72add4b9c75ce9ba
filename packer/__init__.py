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
import sys
import types
from typing import Any

from ._version import __version__

#: name -> module that defines it, imported on first access
_LAZY = {
    "build": "build",
    "BuildError": "records",
    "load_tokenizer": "loader",
    "PackedDataset": "dataset",
    "ShardError": "layout",
    "MissingShardError": "layout",
    "collate_padded": "collate",
    "collate_flat": "collate",
    "collate_4d": "collate",
    "collator_for": "collate",
}

__all__ = ["__version__", *_LAZY]


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


class _Package(types.ModuleType):
    """The package module, keeping ``packer.build`` the function.

    The import system binds a submodule, once loaded, as an attribute of its package; a
    ``from .build import ...`` anywhere (the command line does one) would then hide the function
    ``build`` behind the module ``packer.build``. ``sys.modules["packer.build"]`` stays the module.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "build" and isinstance(value, types.ModuleType):
            value = value.build
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
