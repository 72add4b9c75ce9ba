"""A recipe file: the inputs and options of a build in one TOML file (``packer build --recipe recipe.toml``).

:func:`load_recipe` reads it into the keyword arguments of :func:`packer.pipeline.build.build`. The keys are the
``packer build`` options, each named as its field of :class:`~packer.options.BuildOptions` (the flag with ``_``
for ``-``: ``seq_len``, ``eval_fraction``, ``format``, ``shard_size`` in MiB, ``strategy`` a list of
``"name=role,role"``, ``mix`` one weight per input), plus ``output`` and ``[[inputs]]`` tables, each a ``path``
with optional ``columns``. Relative paths (inputs, ``output``, ``tokenizer``, ``scratch``) are read from the
recipe file's folder; a ``tokenizer`` with no path of that name there that is a Hub id (``ORG/NAME[@REVISION]``)
is kept as it is (:mod:`packer.tokens.hub`). For example, ``data/recipe.toml``::

    tokenizer = "models/llama"
    output = "shards/"
    seq_len = 4096
    seed = 1
    mix = [1.0, 0.3]
    [[inputs]]
    path = "alpaca.json"
    [[inputs]]
    path = "qa.jsonl"

gives ``{"tokenizer": "data/models/llama", "output": "data/shards", "seq_len": 4096, "seed": 1,
"mix": (1.0, 0.3), "inputs": ["data/alpaca.json", "data/qa.jsonl"]}``, so ``build(**load_recipe(path))``
builds it. The older names (``strategies``, a ``weight`` on each input) are still read, with a
DeprecationWarning. A build reads every input through one column map: ``columns`` (top level, or on an
input) must be the same for all inputs that are given one, and then applies to all; differing maps are
refused. Any mistake is a :class:`RecipeError` naming the file and the key.
"""

from __future__ import annotations

import math
import os
import tomllib
import warnings
from pathlib import Path
from typing import Any

from .options import ALIASES, OptionError, option, options, resolve_names

INPUT_KEYS = ("path", "weight", "columns")


class RecipeError(ValueError):
    """A recipe file that cannot be read or is wrong, with a one-line message naming the file and the key."""


def recipe_keys() -> list[str]:
    """The top-level keys a recipe may have: every ``packer build`` flag's field, ``output`` and ``inputs``."""
    return [o.name for o in options() if "recipe" in o.where] + ["output", "inputs"]


def _suggest(key: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(known)}"


def _path(base: Path, value: str) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else base / p)


def _hub_id(field: str, base: Path, value: str) -> bool:
    """Whether ``tokenizer = value`` is a Hugging Face Hub id (ORG/NAME[@REVISION]), kept as it is: no path of
    that name beside the recipe (a local path wins, as on the command line)."""
    from .tokens.hub import parse_hub_id

    return field == "tokenizer" and parse_hub_id(value) is not None and not os.path.lexists(_path(base, value))


def _read(path: str | os.PathLike) -> dict[str, Any]:
    name = str(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise RecipeError(f"{name}: no such recipe file") from None
    except OSError as e:
        raise RecipeError(f"{name}: cannot read it: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{name}: not valid TOML: {e}") from None


def _settings(name: str, base: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys as build keywords, each checked as its option checks it."""
    known = sorted(recipe_keys())
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "inputs":
            continue
        if key == "output":
            if not isinstance(value, str):
                raise RecipeError(f"{name}: output must be a string, not {value!r}")
            kwargs["output"] = _path(base, value)
            continue
        if key not in known and key not in ALIASES:
            raise RecipeError(f"{name}: unknown key {key!r}{_suggest(key, known)}")
        try:
            ((field, value),) = resolve_names({key: value}, name).items()  # an older name warns
            o = option(field)
            value = _columns(name, key, value) if o.kind == "columns" else o.check(value, label=key)
        except OptionError as e:
            raise RecipeError(f"{name}: {e}") from None
        if o.kind == "path" and value is not None and not _hub_id(field, base, value):
            value = _path(base, value)
        kwargs[field] = value
    if "tokenizer" not in kwargs:
        raise RecipeError(f"{name}: missing key 'tokenizer' (a model folder with tokenizer.json, or the file)")
    return kwargs


def _columns(where: str, key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: {key} must be a table, not {value!r}")
    for field, column in value.items():
        if not isinstance(column, str):
            raise RecipeError(f"{where}: {key}.{field} must be a string (your column name), not {column!r}")
    return dict(value)


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """The :func:`packer.pipeline.build.build` keyword arguments of the recipe file ``path`` (see the module
    docstring)."""
    name = str(path)
    data = _read(path)
    base = Path(path).parent
    kwargs = _settings(name, base, data)
    inputs = data.get("inputs")
    if inputs is None:
        raise RecipeError(f"{name}: missing key 'inputs' (one [[inputs]] table per input, each with a path)")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
        raise RecipeError(f"{name}: inputs must be one or more [[inputs]] tables, each with a path")
    paths, weights, maps = _inputs(name, base, inputs)
    if weights:
        if "mix" in kwargs:
            raise RecipeError(f"{name}: give the weights once: as mix = [...], or (older) a weight on each input")
        warnings.warn(f"{name}: a weight on each input is deprecated; give mix = [{', '.join(map(str, weights))}] "
                      "(one weight per input, in order)", DeprecationWarning, stacklevel=2)
        kwargs["mix"] = tuple(weights)
    if "mix" in kwargs and len(kwargs["mix"]) != len(paths):
        raise RecipeError(f"{name}: mix gives {len(kwargs['mix'])} weights for {len(paths)} inputs: give one weight "
                          "per input, in order")
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


def _inputs(name: str, base: Path, inputs: list[dict]) -> tuple[list[str], list[float], list[tuple[int, dict]]]:
    """The ``[[inputs]]`` tables: their paths, their (older, per-input) weights, their column maps."""
    paths, weights, maps = [], [], []
    for n, item in enumerate(inputs, 1):
        where = f"{name}: inputs #{n}"
        for key in item:
            if key not in INPUT_KEYS:
                raise RecipeError(f"{where}: unknown key {key!r}{_suggest(key, ['path', 'columns'])}")
        if "path" not in item:
            raise RecipeError(f"{where}: missing key 'path'")
        if not isinstance(item["path"], str):
            raise RecipeError(f"{where}: path must be a string, not {item['path']!r}")
        paths.append(_path(base, item["path"]))
        if "weight" in item:
            w = item["weight"]
            if isinstance(w, bool) or not isinstance(w, int | float) or not (w >= 0 and math.isfinite(w)):
                raise RecipeError(f"{where}: weight must be a number >= 0 (1.0 = every record once), not {w!r}")
            weights.append(float(w))
        if "columns" in item:
            maps.append((n, _columns(where, "columns", item["columns"])))
    if weights and len(weights) != len(paths):
        unweighted = [str(n) for n, item in enumerate(inputs, 1) if "weight" not in item]
        raise RecipeError(f"{name}: inputs #{', #'.join(unweighted)} have no weight; give every input a weight "
                          "(a mixture) or none")
    return paths, weights, maps
