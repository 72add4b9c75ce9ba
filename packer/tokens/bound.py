"""A cheap lower bound on the tokens of a text, so a record far longer than ``--seq-len`` is not tokenized whole.

A token covers at most ``max_bytes`` bytes of the text as the tokenizer's normalizer leaves it (its longest
vocabulary piece or added token), so a text whose normalized UTF-8 bytes pass ``seq_len * max_bytes`` holds
more than ``seq_len`` tokens for sure, and at least ``ceil(bytes / max_bytes)``::

    Qwen2.5: longest piece "ĠĠĠ…" = 128 bytes; seq_len 8192 -> any text of more than 1 MiB (after NFC) is
    overlong: a 40 MB record is rejected as "at least 312,500 tokens" without being tokenized (which takes
    ~150 bytes of memory a token, 1.7-4.7 GB for it).

The normalized length is measured without normalizing the whole text at once (:meth:`TokenBound.measure`):
a normalizer that only adds text (Llama 2's ``Prepend``/``Replace(" ", "▁")``, none at all) leaves at least the
raw bytes; one that can shrink text (NFC composes ``e`` + U+0301 into ``é``; lowercase turns the Kelvin sign's
3 bytes into ``k``) normalizes it in chunks cut where a normalization form cannot reach across (before a
character that is a starter and composes with nothing before it). Where no bound can be given (a model other
than BPE, a normalizer or pre-tokenizer that may drop text, unknown characters fused into one token),
:func:`token_bound` says why, and such records are tokenized whole as before.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field

from tokenizers import Tokenizer

__all__ = ["TokenBound", "token_bound"]

#: characters per chunk the measure normalizes at once (the normalizer's alignments take ~16 bytes a byte)
CHUNK = 1 << 16
#: normalizer components and what they do to a text's length: only add to it (the raw bytes are a lower
#: bound), or change it character by character (measured in chunks); any other: no bound
_GROWS = frozenset({"Prepend", "ByteLevel"})
_LOCAL = frozenset({"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Nmt", "BertNormalizer"})
#: of those, the ones that keep an ASCII text's length (so an ASCII chunk needs no normalizing)
_ASCII_SAME = frozenset({"NFC", "NFD", "NFKC", "NFKD", "Lowercase"})
#: pre-tokenizers that split a text without dropping any of it (ByteLevel/Metaspace rewrite bytes, which
#: only makes a token's piece longer than what it covers)
_KEEPS_TEXT = frozenset({"ByteLevel", "Metaspace", "Split", "Digits", "Punctuation", "UnicodeScripts"})
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass(frozen=True)
class TokenBound:
    """What bounds a tokenizer's token count from below (:func:`token_bound`)."""

    #: the most bytes of normalized text one token covers
    max_bytes: int
    #: the tokenizer's normalizer where it may shrink a text (then texts are measured normalized, in chunks)
    normalizer: object | None = None
    #: bytes the normalizer adds to every text it is given (``Prepend``): counted once, not per chunk
    prepend: int = 0
    #: the normalizer keeps an ASCII text's length (NFC, lowercase): ASCII chunks are not normalized
    ascii_same: bool = False
    #: bytes a whitespace character may count for, where added tokens swallow the whitespace beside them
    #: (``lstrip``/``rstrip``: Phi-3's ``<|end|>`` takes the newline after it): such whitespace is not counted
    whitespace: dict[str, int] = field(default_factory=dict)
    #: the whitespace runs those tokens swallow: before an ``lstrip`` one, after an ``rstrip`` one (group 1)
    swallowed: tuple[re.Pattern[str], ...] = ()
    #: the normalizer is this one Unicode normalization form alone (Qwen's NFC): a chunk already in it is
    #: left as it is (Python's quick check, ~50x faster than normalizing it)
    form: str | None = None

    def measure(self, text: str, stop: int | None = None) -> tuple[int, int]:
        """A lower bound on the UTF-8 bytes of ``text`` after normalization, and the characters measured: all
        of them, or the first chunks whose measure passed ``stop``."""
        # whitespace a token may swallow covers no token of its own; over the whole text, even for a prefix
        total = -sum(self.whitespace.get(c, 4) for p in self.swallowed for m in p.finditer(text) for c in m[1])
        pos, n = 0, len(text)
        while pos < n and (stop is None or total <= stop):
            end = self._cut(text, pos + CHUNK)
            chunk = text[pos:end]
            total += self._chunk_bytes(chunk, first=pos == 0, whole=end - pos <= 4 * CHUNK)
            pos = end
        return max(total, 0), pos

    def tokens_at_least(self, measured: int) -> int:
        """The fewest tokens a text of ``measured`` bytes (:meth:`measure`) can hold."""
        return math.ceil(measured / self.max_bytes)

    def _cut(self, text: str, at: int) -> int:
        if at >= len(text) or self.normalizer is None:
            return min(at, len(text))
        m = _safe_start().search(text, at)  # where no normalization form reaches across
        return m.start() if m else len(text)

    def _chunk_bytes(self, chunk: str, *, first: bool, whole: bool) -> int:
        ascii_ = chunk.isascii()
        if self.normalizer is None or (ascii_ and self.ascii_same) or (
                self.form is not None and unicodedata.is_normalized(self.form, chunk)):  # type: ignore[arg-type]
            n = len(chunk) if ascii_ else len(chunk.encode("utf-8", "surrogatepass"))
        elif not whole:  # a long run of characters nothing may be cut before (combining marks): not counted
            return 0
        else:
            try:
                n = len(self.normalizer.normalize_str(chunk).encode("utf-8", "surrogatepass"))  # type: ignore[attr-defined]
            except Exception:  # text the normalizer refuses (lone surrogates): the encoder will say so
                return 0
            if not first:
                n -= self.prepend
        return n


@functools.cache
def _safe_start() -> re.Pattern[str]:
    """A character before which a text can be cut without changing any Unicode normalization form of it:
    a starter (canonical combining class 0) that never composes with a character before it (not the
    second of a canonical pair, nor a Hangul vowel or trailing consonant), and whose decompositions start
    with such a starter. NF*(a + b) = NF*(a) + NF*(b) when b starts with one (UAX #15: composition stops
    at a starter that cannot combine backwards; reordering never crosses a starter)."""
    unsafe: set[str] = set(map(chr, [*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)]))
    decomposed = []
    for cp in range(0x110000):
        c = chr(cp)
        if unicodedata.combining(c):
            unsafe.add(c)
        d = unicodedata.decomposition(c)
        if d:
            decomposed.append(c)
            if not d.startswith("<") and len(d.split()) == 2:
                unsafe.add(chr(int(d.split()[1], 16)))
    for c in decomposed:
        if any(unicodedata.normalize(form, c)[:1] in unsafe for form in ("NFD", "NFKD")):
            unsafe.add(c)
    ranges = "".join(re.escape(c) for c in sorted(unsafe) if not 0xD800 <= ord(c) <= 0xDFFF)
    return re.compile(f"[^{ranges}\ud800-\udfff]")


def _state(component: object) -> dict | None:
    return None if component is None else json.loads(component.__getstate__())  # type: ignore[attr-defined]


def _parts(state: dict | None, key: str) -> list[dict]:
    if not state:
        return []
    if state.get("type") == "Sequence":
        return [p for s in state[key] for p in _parts(s, key)]
    return [state]


def _normalizer_plan(state: dict) -> tuple[bool, int, bool] | str:
    """(measure normalized, prepend bytes, ascii keeps length), or why the normalizer allows no bound."""
    parts = _parts(state.get("normalizer"), "normalizers")
    shrinks, prepend = False, 0
    for p in parts:
        kind = p.get("type")
        if kind == "Prepend":
            prepend += len(p.get("prepend", "").encode())
        elif kind == "Replace":
            pattern, content = p.get("pattern", {}), p.get("content", "")
            literal = pattern.get("String")
            if literal is None:
                return "its normalizer replaces a regular expression"
            if len(content.encode()) < len(literal.encode()):
                if len(literal) != 1:  # a match cut by a chunk's edge would be missed: an overcount
                    return "its normalizer shortens text matching a pattern of several characters"
                shrinks = True
        elif kind in _LOCAL:
            shrinks = True
        elif kind not in _GROWS:
            return f"its normalizer {kind} is not one the bound knows (it may drop text)"
    return shrinks, prepend, all(p.get("type") in _ASCII_SAME for p in parts)


def _vocab_bytes(tok: Tokenizer, pre: list[dict]) -> int | str:
    """The most bytes of normalized text one vocabulary token covers, or why there is no such bound."""
    model = tok.model  # its attributes: serializing a model (merges and all) takes seconds
    if type(model).__name__ != "BPE":
        return f"its model is {type(model).__name__}, not BPE"
    from .tokenize import _byte_alphabet

    alphabet = _byte_alphabet()
    byte_level = any(p.get("type") == "ByteLevel" for p in pre)
    vocab = tok.get_vocab(with_added_tokens=False)
    widest = 0
    for piece in vocab:
        if byte_level and alphabet.issuperset(piece):
            w = len(piece)  # one character per byte
        elif model.byte_fallback and _BYTE_PIECE.fullmatch(piece):
            w = 1
        else:  # "▁the" covers " the" (Metaspace) or "▁the" (a Replace normalizer): its own bytes at most
            w = len(piece.encode("utf-8", "surrogatepass"))
        widest = max(widest, w)
    if model.unk_token is not None and not byte_level:
        # with byte fallback, a character is unknown only where one of its bytes has no piece (an ASCII
        # character that is a piece itself, Gemma's tab, is never unknown)
        fallback = model.byte_fallback and all(f"<0x{b:02X}>" in vocab or (b < 0x80 and chr(b) in vocab)
                                               for b in range(256))
        if not fallback:
            if model.fuse_unk:
                return "unknown characters are fused into one token of any length"
            widest = max(widest, 4)  # one unknown character
    return widest


def token_bound(tok: Tokenizer) -> TokenBound | str:
    """How to bound ``tok``'s token count of a text from below, or why it cannot be done cheaply."""
    state = {name: _state(getattr(tok, name)) for name in ("normalizer", "pre_tokenizer")}
    pre = _parts(state["pre_tokenizer"], "pretokenizers")
    for p in pre:
        if p.get("type") not in _KEEPS_TEXT or p.get("behavior") == "Removed":
            return f"its pre-tokenizer {p.get('type')} may drop text"
    plan = _normalizer_plan(state)
    if isinstance(plan, str):
        return plan
    shrinks, prepend, ascii_same = plan
    widest = _vocab_bytes(tok, pre)
    if isinstance(widest, str):
        return widest
    norm = tok.normalizer

    def normalized_bytes(s: str) -> int:
        return len((norm.normalize_str(s) if norm is not None else s).encode("utf-8", "surrogatepass"))

    added = list(tok.get_added_tokens_decoder().values())
    for a in added:
        widest = max(widest, len(a.content.encode()), normalized_bytes(a.content) if a.normalized else 0)
    swallowed = []
    for side, pattern in (("lstrip", r"(\s+)(?:{})"), ("rstrip", r"(?:{})(\s+)")):
        contents = sorted((a.content for a in added if getattr(a, side) and a.content), key=len, reverse=True)
        if contents:
            swallowed.append(re.compile(pattern.format("|".join(map(re.escape, contents)))))
    # what a whitespace character counts for in the measure: its bytes, or its normalized bytes (not counting
    # what Prepend adds to every text normalized)
    whitespace = {c: max(len(c.encode()), normalized_bytes(c) - prepend) for c in _whitespace()} if swallowed else {}
    parts = _parts(state["normalizer"], "normalizers")
    form = parts[0]["type"] if len(parts) == 1 and parts[0]["type"] in ("NFC", "NFD", "NFKC", "NFKD") else None
    return TokenBound(max(widest, 1), norm if shrinks else None, prepend, ascii_same, whitespace, tuple(swallowed),
                      form)


@functools.cache
def _whitespace() -> tuple[str, ...]:
    """Every character Python calls whitespace (a superset of Rust's ``char::is_whitespace``, which
    ``lstrip``/``rstrip`` added tokens swallow)."""
    return tuple(c for c in map(chr, range(0x3001)) if c.isspace())
