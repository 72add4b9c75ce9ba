"""A recipe file: the inputs and options of a build in one TOML file (``packer build --recipe recipe.toml``).

:func:`load_recipe` reads it into the keyword arguments of :func:`packer.build.build`. The keys are the
``packer build`` options with ``_`` for ``-`` (``seq_len``, ``eval_fraction``, ``format``, ``shard_size`` in MiB,
``strategies`` a list of ``"name=role,role"``), plus ``[[inputs]]`` tables, each a ``path`` with an optional
``weight`` (all inputs weighted, a mixture, or none) and ``columns``. Relative paths (inputs, ``output``,
``tokenizer``) are read from the recipe file's folder. For example, ``data/recipe.toml``::

    tokenizer = "models/llama"
    output = "shards/"
    seq_len = 4096
    seed = 1
    [[inputs]]
    path = "alpaca.json"
    weight = 1.0
    [[inputs]]
    path = "qa.jsonl"
    weight = 0.3

gives ``{"tokenizer": "data/models/llama", "output": "data/shards", "seq_len": 4096, "seed": 1,
"inputs": ["data/alpaca.json", "data/qa.jsonl"], "mix": [1.0, 0.3]}``, so ``build(**load_recipe(path))``
builds it. A build reads every input through one column map: ``columns`` (top level, or on an input) must be
the same for all inputs that are given one, and then applies to all; differing maps are refused.
Any mistake is a :class:`RecipeError` naming the file and the key.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from pathlib import Path
from typing import Any

from .options import (
    ALGORITHMS,
    BLANK_TURN_POLICIES,
    FORMATS,
    LEADING_ASSISTANT_POLICIES,
    LOADERS,
    OVERLONG_POLICIES,
    SYSTEM_POLICIES,
    TEMPLATE_CHOICES,
)

#: recipe key -> (build keyword, expected type(s), allowed values or None)
OPTIONS: dict[str, tuple[str, tuple[type, ...], tuple[str, ...] | None]] = {
    "tokenizer": ("tokenizer", (str,), None),
    "output": ("output", (str,), None),
    "tokenizer_loader": ("tokenizer_loader", (str,), LOADERS),
    "template": ("template", (str,), TEMPLATE_CHOICES),
    "system": ("system", (str,), SYSTEM_POLICIES),
    "blank_turns": ("blank_turns", (str,), BLANK_TURN_POLICIES),
    "leading_assistant": ("leading_assistant", (str,), LEADING_ASSISTANT_POLICIES),
    "format": ("fmt", (str,), FORMATS),
    "columns": ("columns", (dict,), None),
    "seq_len": ("seq_len", (int,), None),
    "strategies": ("strategies", (list,), None),
    "packing": ("packing", (str,), ALGORITHMS),
    "overlong": ("overlong", (str,), OVERLONG_POLICIES),
    "max_rejected": ("max_rejected", (int, float), None),
    "shard_size": ("shard_bytes", (int,), None),
    "overwrite": ("overwrite", (bool,), None),
    "wait": ("wait", (bool,), None),
    "strict": ("strict", (bool,), None),
    "dedupe": ("dedupe", (bool,), None),
    "eval_fraction": ("eval_fraction", (int, float), None),
    "eval_records": ("eval_records", (int,), None),
    "seed": ("seed", (int,), None),
}
INPUT_KEYS = ("path", "weight", "columns")
PATH_KEYS = ("tokenizer", "output")


class RecipeError(ValueError):
    """A recipe file that cannot be read or is wrong, with a one-line message naming the file and the key."""


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(known)}"


def _type_name(types: tuple[type, ...]) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
            dict: "a table"}[types[-1]]


def _check_type(where: str, key: str, value: Any, types: tuple[type, ...]) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise RecipeError(f"{where}: {key} must be {_type_name(types)}, not {value!r}")


def _columns(where: str, key: str, value: Any) -> dict[str, str]:
    _check_type(where, key, value, (dict,))
    for field, column in value.items():
        if not isinstance(column, str):
            raise RecipeError(f"{where}: {key}.{field} must be a string (your column name), not {column!r}")
    return dict(value)


def _path(base: Path, value: str) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else base / p)


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """The :func:`packer.build.build` keyword arguments of the recipe file ``path`` (see the module docstring)."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise RecipeError(f"{name}: no such recipe file") from None
    except OSError as e:
        raise RecipeError(f"{name}: cannot read it: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{name}: not valid TOML: {e}") from None
    base = Path(path).parent
    known = sorted([*OPTIONS, "inputs"])
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "inputs":
            continue
        if key not in OPTIONS:
            raise RecipeError(f"{name}: unknown key {key!r}{_suggest(key, known)}")
        target, types, choices = OPTIONS[key]
        if key == "columns":
            value = _columns(name, key, value)
        _check_type(name, key, value, types)
        if choices is not None and value not in choices:
            raise RecipeError(f"{name}: {key} = {value!r} is not one of {', '.join(choices)}")
        if key == "strategies" and not all(isinstance(s, str) for s in value):
            raise RecipeError(f"{name}: strategies must be a list of strings \"name=role,role\", not {value!r}")
        if key in ("seq_len", "shard_size") and value < (2 if key == "seq_len" else 1):
            raise RecipeError(f"{name}: {key} must be at least {2 if key == 'seq_len' else 1}, not {value}")
        if key in PATH_KEYS:
            value = _path(base, value)
        if key == "shard_size":
            value = value * 2**20
        kwargs[target] = value
    if "tokenizer" not in kwargs:
        raise RecipeError(f"{name}: missing key 'tokenizer' (a model folder with tokenizer.json, or the file)")
    inputs = data.get("inputs")
    if inputs is None:
        raise RecipeError(f"{name}: missing key 'inputs' (one [[inputs]] table per input, each with a path)")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
        raise RecipeError(f"{name}: inputs must be one or more [[inputs]] tables, each with a path")
    paths, weights, maps = [], [], []
    for n, item in enumerate(inputs, 1):
        where = f"{name}: inputs #{n}"
        for key in item:
            if key not in INPUT_KEYS:
                raise RecipeError(f"{where}: unknown key {key!r}{_suggest(key, list(INPUT_KEYS))}")
        if "path" not in item:
            raise RecipeError(f"{where}: missing key 'path'")
        _check_type(where, "path", item["path"], (str,))
        paths.append(_path(base, item["path"]))
        if "weight" in item:
            w = item["weight"]
            _check_type(where, "weight", w, (int, float))
            if not (w >= 0 and math.isfinite(w)):
                raise RecipeError(f"{where}: weight must be a number >= 0 (1.0 = every record once), not {w!r}")
            weights.append(float(w))
        if "columns" in item:
            maps.append((n, _columns(where, "columns", item["columns"])))
    if weights and len(weights) != len(paths):
        unweighted = [str(n) for n, item in enumerate(inputs, 1) if "weight" not in item]
        raise RecipeError(f"{name}: inputs #{', #'.join(unweighted)} have no weight; give every input a weight "
                          "(a mixture) or none")
    if weights:
        kwargs["mix"] = weights
    if "columns" in kwargs:
        maps.insert(0, (0, kwargs["columns"]))
    for n, m in maps[1:]:
        if m != maps[0][1]:
            first = "the top-level columns" if maps[0][0] == 0 else f"inputs #{maps[0][0]}"
            raise RecipeError(f"{name}: inputs #{n}: columns differ from {first}'s; a build reads every input "
                              "through one column map (build the inputs separately, or rename the columns)")
    if maps:
        kwargs["columns"] = maps[0][1]
    kwargs["inputs"] = paths
    return kwargs
