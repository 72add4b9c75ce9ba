"""tiktoken as a second BPE core, for the byte-level BPE tokenizers it provably reproduces (issue 17, first part).

tiktoken encodes byte-level BPE 2-6x faster than ``tokenizers`` (issue 17's figures). A ``tokenizer.json``
qualifies when the two are the same function of the text (:func:`qualify`; otherwise it says why not):

    model         BPE; no dropout, byte fallback, subword prefix or word suffix
    normalizer    none, or NFC (applied to the text before tiktoken sees it)
    pre-tokenizer one ``Split`` regex (Isolated, not inverted) then ``ByteLevel`` without prefix space and
                  without its own regex; or ``ByteLevel`` alone with the GPT-2 regex (``use_regex``)
    vocabulary    every token spelled in the GPT-2 byte-to-unicode alphabet; its id is tiktoken's rank
    merges        each merge's result in the vocabulary, their ids never decreasing along the merges list
                  (tiktoken merges the pair of lowest rank, ``tokenizers`` the earliest merge: the same order;
                  two merges making one token tie, and mark the tokenizer for verification)
    added tokens  no strip or normalization flags (special or not, tiktoken matches them as they are)

``ignore_merges: true`` (Llama 3) is what tiktoken does: a piece that is a whole token is taken as it is.
With ``false`` (GPT-2, Qwen) a whole-token piece is merged from its bytes; where the merges reach every
token the two agree, which :attr:`Core.verify` marks. Every build with the core checks records against
``tokenizers`` as it runs: the records :func:`packer.assembly.checked` picks by doc_id (the first 16, then
about one in 32) are encoded by both, and any difference (:class:`TokenizerDrift`) sends the build back to
``tokenizers`` for every record (``build(tokenizer_backend="tiktoken")``, opt-in for now: issue 17).

    >>> core = qualify(json.load(open("qwen2.5-instruct/tokenizer.json")))   # doctest: +SKIP
    >>> core.encode_batch(["<|im_start|>user\\nHi<|im_end|>"])                 # doctest: +SKIP
    [[151644, 872, 198, 13048, 151645]]
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import Any

#: the pre-tokenizer regex ``ByteLevel(use_regex=True)`` applies (GPT-2's; tiktoken's r50k_base)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, reversed: the character byte-level BPE spells each byte with."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class TokenizerDrift(Exception):
    """A record checked against ``tokenizers`` (:func:`packer.assembly.checked` picks them by doc_id) got other
    ids from the tiktoken core: the build maps every part again with ``tokenizers`` (:func:`packer.build`)."""


@dataclass
class Core:
    """A qualified tokenizer as tiktoken: ``encode_batch`` gives the ids ``tokenizers`` gives (with
    ``add_special_tokens=False``); ``verify``: the equality rests on the merges reaching every token
    (``ignore_merges`` false), so a build checks a sample of records against ``tokenizers``."""

    encoding: Any
    nfc: bool
    verify: bool

    def encode_batch(self, texts: list[str], threads: int = 2) -> list[list[int]]:
        if self.nfc:
            texts = [unicodedata.normalize("NFC", t) for t in texts]
        return self.encoding.encode_batch(texts, num_threads=threads, allowed_special="all")


def _pattern(pre: dict | None) -> str:
    """The one regex of a qualifying pre-tokenizer; ValueError (the reason) otherwise."""
    if pre is None:
        raise ValueError("no pre-tokenizer")
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    if [s.get("type") for s in steps] == ["ByteLevel"]:
        s = steps[0]
        if s.get("add_prefix_space") or not s.get("use_regex", True):
            raise ValueError("ByteLevel with a prefix space, or without its regex")
        return GPT2_PATTERN
    if [s.get("type") for s in steps] != ["Split", "ByteLevel"]:
        raise ValueError(f"pre-tokenizer {[s.get('type') for s in steps]}, not Split + ByteLevel")
    split, level = steps
    if split.get("behavior") != "Isolated" or split.get("invert") or "Regex" not in split.get("pattern", {}):
        raise ValueError("the Split is not one isolated, non-inverted regex")
    if level.get("add_prefix_space") or level.get("use_regex", True):
        raise ValueError("ByteLevel adds a prefix space or a regex of its own after the Split")
    return split["pattern"]["Regex"]


def _merges(model: dict) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]  # type: ignore[misc]


def qualify(spec: dict) -> Core | str:
    """The tiktoken core of a ``tokenizer.json`` (parsed), or why it does not qualify (one line)."""
    try:
        import tiktoken
    except ImportError:
        return "tiktoken is not installed"
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"model {model.get('type')!r} is not BPE"
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback"):
        if model.get(key):
            return f"BPE with {key}"
    norm = spec.get("normalizer")
    if norm is not None and norm.get("type") != "NFC" and not (
            norm.get("type") == "Sequence" and [n.get("type") for n in norm.get("normalizers", [])] in ([], ["NFC"])):
        return f"normalizer {norm.get('type')!r} (only NFC is applied before tiktoken)"
    nfc = norm is not None and "NFC" in json.dumps(norm)
    try:
        pattern = _pattern(spec.get("pre_tokenizer"))
    except ValueError as e:
        return str(e)
    table = byte_decoder()
    vocab: dict[str, int] = model.get("vocab") or {}
    try:
        ranks = {bytes(table[c] for c in token): i for token, i in vocab.items()}
    except KeyError as e:
        return f"a vocabulary token holds {e.args[0]!r}, outside the byte-level alphabet"
    if len(ranks) != len(vocab) or len(set(ranks.values())) != len(ranks):
        return "two vocabulary tokens share bytes or an id"
    if any(bytes([b]) not in ranks for b in range(256)):
        return "a single byte has no token"
    last, tied = -1, False
    for k, (a, b) in enumerate(_merges(model)):
        i = vocab.get(a + b)
        if i is None or a not in vocab or b not in vocab:
            return f"merge {k} ({a!r} {b!r}) leaves the vocabulary"
        if i < last:
            return (f"merge {k} ({a!r} {b!r}) makes id {i}, below the previous merge's {last}: merge order is not "
                    "id order")
        # two merges that make the same token (Llama 3's runs of spaces) share tiktoken's rank: equal unless they
        # overlap in one piece, so such a tokenizer is verified on the records
        tied |= i == last
        last = i
    special = {}
    for t in spec.get("added_tokens", []):
        if t.get("lstrip") or t.get("rstrip") or (t.get("normalized") and not t.get("special")) or t.get(
                "single_word"):
            return f"added token {t['content']!r} strips, matches single words or is normalized"
        special[t["content"]] = t["id"]
    ranks = {k: v for k, v in ranks.items() if v not in set(special.values())}
    try:
        encoding = tiktoken.Encoding("packer", pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)
    except Exception as e:  # a regex its engine does not compile
        return f"tiktoken refuses the tokenizer: {e}"
    return Core(encoding, nfc, verify=tied or not model.get("ignore_merges", False))


__all__ = ["GPT2_PATTERN", "Core", "TokenizerDrift", "byte_decoder", "qualify"]
