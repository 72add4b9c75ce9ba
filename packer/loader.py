"""Tokenizer loading: a ``tokenizer.json`` and what its ``tokenizer_config.json`` says.

Kept apart from :mod:`packer.tokenize` (the role-labelling kernels, which need
numba): ``packer show`` and ``packer inspect --html`` load a tokenizer only to
decode, and should not pay for compiling or loading those kernels.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from .records import BuildError


@dataclass(frozen=True)
class TokenizerInfo:
    """A loaded tokenizer with what its ``tokenizer_config.json`` says.

    ``special_tokens`` are the added tokens flagged special (control tokens);
    message content must never produce one of them.
    """

    source: str
    tokenizer: Tokenizer
    sha256: str
    vocab_size: int
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    unk_token: str | None
    chat_template: str | None
    special_tokens: tuple[str, ...]
    #: whether the model expects a BOS at the start of a sequence
    add_bos: bool
    #: which behaviour the ids follow (see :data:`packer.options.LOADERS`)
    loader: str = "file"
    #: the transformers version that made the tokenizer (loader ``transformers``), else None
    transformers_version: str | None = None

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.tokenizer.token_to_id(token)

    def special_map(self) -> dict[str, str]:
        """The special-token variables a chat template sees (as HF passes them)."""
        out = {}
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = getattr(self, name)
            out[name] = value if value is not None else ""
        return out


def _token_text(value: object) -> str | None:
    # tokenizer_config.json holds either a string or an AddedToken dict
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _chat_template(cfg: dict, directory: Path | None) -> str | None:
    tpl = cfg.get("chat_template")
    if isinstance(tpl, list):  # named templates: HF uses "default"
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default") or next(iter(named.values()), None)
    if isinstance(tpl, str) and tpl.strip():
        return tpl
    if directory is not None and (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    return None


def load_tokenizer(path: str | os.PathLike, *, loader: str = "file") -> TokenizerInfo:
    """Load a tokenizer from a directory (``tokenizer.json`` plus optional
    ``tokenizer_config.json`` / ``chat_template.jinja``) or a ``tokenizer.json``
    file. Nothing is fetched from the network.
    """
    if loader != "file":
        raise BuildError(f"unknown tokenizer loader {loader!r}")
    p = Path(path)
    if p.is_dir():
        directory, tj = p, p / "tokenizer.json"
    else:
        directory, tj = p.parent, p
    if not tj.is_file():
        raise BuildError(f"{path}: no tokenizer.json found (give a model directory or a tokenizer.json file)")
    raw = tj.read_bytes()
    try:
        tok = Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as e:  # the library raises a bare Exception
        raise BuildError(f"{tj}: cannot load tokenizer: {e}") from None
    cfg_path = directory / "tokenizer_config.json"
    cfg: dict = {}
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise BuildError(f"{cfg_path}: not valid JSON: {e}") from None
    # from the loaded tokenizer, in id order: parsing the JSON again costs ~0.1 s for a large vocabulary
    added = sorted(tok.get_added_tokens_decoder().items())
    special = tuple(t.content for _, t in added if t.special)
    bos = _token_text(cfg.get("bos_token"))
    eos = _token_text(cfg.get("eos_token"))
    if "add_bos_token" in cfg and cfg["add_bos_token"] is not None:
        add_bos = bool(cfg["add_bos_token"]) and bos is not None
    else:
        # no explicit setting: the model expects BOS if its post-processor adds one
        with_sp = tok.encode("a", add_special_tokens=True).ids
        add_bos = bos is not None and len(with_sp) > 1 and with_sp[0] == tok.token_to_id(bos)
    return TokenizerInfo(
        source=str(path),
        tokenizer=tok,
        sha256=hashlib.sha256(raw).hexdigest(),
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        bos_token=bos,
        eos_token=eos,
        pad_token=_token_text(cfg.get("pad_token")),
        unk_token=_token_text(cfg.get("unk_token")),
        chat_template=_chat_template(cfg, directory if p.is_dir() else None),
        special_tokens=special,
        add_bos=add_bos,
    )
