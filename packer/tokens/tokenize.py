"""Whole-text tokenization and a role code per token.

The rendered text of a document is tokenized once, as a whole, exactly as
``apply_chat_template(tokenize=True)`` does (``add_special_tokens=False``: the
template writes BOS itself). Each token then takes a role from the characters
it covers; a token covering characters of several segments takes the first
of the contract's precedence list (response, end, input, instruction, ...).

    text   : "<|im_start|>user\\nHi<|im_end|>"
    chars  :  SSSSSSSSSSSSMMMMMIISSSSSSSSSS      (S special, M marker, I instruction)
    tokens : [<|im_start|>] [user] [\\n] [Hi] [<|im_end|>]
    roles  :  special       marker marker instruction special

With SentencePiece tokenizers a word token often swallows the space before it
(``"▁Hi"`` covers ``" Hi"``): the straddling rule gives it the content's role.

Which characters a token covers comes from ``Encoding.offsets``, or, for
byte-level BPE tokenizers, from the bytes each token stands for
(:class:`ByteLengths`), or, for SentencePiece-style ones (Mistral, Llama 2,
Phi-3, Gemma), from a walk of the tokens' pieces over the text
(:mod:`packer.tokens.spans`): both let the tokenizer skip tracking offsets.

Loading a tokenizer lives in :mod:`packer.tokens.loader` (no numba); its names are
re-exported here.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass
from itertools import chain

import numpy as np
from tokenizers import Tokenizer

from ..jit import njit
from ..output import roles as R
from ..read.records import BuildError
from .loader import TokenizerInfo, load_tokenizer
from .spans import PieceSpans, piece_spans, token_spans

__all__ = [
    "ByteLengths",
    "Labeller",
    "TokenizedBatch",
    "TokenizerInfo",
    "batch_chars",
    "byte_lengths",
    "byte_values",
    "char_codes",
    "choose_backend",
    "control_lut",
    "encode_texts",
    "encode_texts_fast",
    "label_by_bytes",
    "label_by_offsets",
    "label_by_spans",
    "load_tokenizer",
    "token_roles",
]

#: rank of each role in the straddling rule: higher wins (index = role code)
_RANK = np.zeros(R.N_ROLES, dtype=np.uint8)
for _rank, _code in enumerate(reversed(R.PRECEDENCE), start=1):
    _RANK[_code] = _rank
#: rank -> role code
_UNRANK = np.zeros(R.N_ROLES, dtype=np.uint8)
for _code in R.PRECEDENCE:
    _UNRANK[_RANK[_code]] = _code


#: bits of a character's value (:func:`char_codes`) below its role's rank: the per-token flags
_FLAG_BITS = 3
_FLAG_MASK = (1 << _FLAG_BITS) - 1


def char_codes(
    role_codes: np.ndarray, last: np.ndarray, train: np.ndarray | None = None, forced: np.ndarray | None = None
) -> np.ndarray:
    """Per-segment value for :func:`token_roles`: rank*8 + flags (:data:`packer.output.roles.LAST_FLAG`,
    :data:`packer.output.roles.UNTRAINED_FLAG` where ``train`` is False, :data:`packer.output.roles.FORCED_FLAG` where
    ``forced`` is True), so the highest value among a token's characters is its role's, and among those of
    one role, forced wins over untrained, untrained over trained."""
    codes = (_RANK[role_codes].astype(np.uint8) << _FLAG_BITS) | last.astype(np.uint8)
    if train is not None:
        codes |= (~train.astype(bool)).astype(np.uint8) << 1
    if forced is not None:
        codes |= forced.astype(np.uint8) << 2
    return codes


@njit(nogil=True)
def _token_values(chars: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    # max over each token's characters; a zero-width token takes the value of
    # the character before it (or after it at the very start)
    n = starts.shape[0]
    out = np.zeros(n, dtype=np.uint8)
    nchars = chars.shape[0]
    for t in range(n):
        a = starts[t]
        b = ends[t]
        best = np.uint8(0)
        if b <= a:
            j = a - 1 if a > 0 else 0
            if nchars > 0:
                best = chars[min(j, nchars - 1)]
        else:
            for j in range(a, b):
                v = chars[j]
                if v > best:
                    best = v
        out[t] = best
    return out


#: ranks of the roles whose characters are content (what a control token must not take the role of)
_CONTENT_RANKS = np.zeros(16, dtype=np.bool_)
_CONTENT_RANKS[_RANK[list(R.role_codes(R.CONTENT_ROLES))]] = True


@njit(nogil=True)
def _control_values(
    chars: np.ndarray, starts: np.ndarray, ends: np.ndarray, values: np.ndarray, tokens: np.ndarray,
    end_rank: int, special_rank: int, content: np.ndarray, absorbed: np.ndarray,
) -> None:
    # a control token is `end` if it covers an end-of-turn character, else `special`, whatever else it
    # absorbed; absorbed[k]: the content characters control token k absorbed (Phi-3's `<|assistant|>`
    # eating a leading newline)
    for k in range(tokens.shape[0]):
        t = tokens[k]
        rank = special_rank
        n = 0
        for j in range(starts[t], ends[t]):
            r = chars[j] >> 3
            if r == end_rank:
                rank = end_rank
            if content[r]:
                n += 1
        absorbed[k] = n
        # a control token is markup: it keeps the last-turn and untrained flags, never the forced one
        values[t] = (rank << 3) | (values[t] & 3)


def token_roles(
    chars: np.ndarray, starts: np.ndarray, ends: np.ndarray, control: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Role code and last-turn flag of each token from per-character values.

    ``chars`` holds :func:`char_codes` values per character of the text;
    ``starts``/``ends`` are token character offsets into it. A token takes the
    role of its characters by :data:`packer.output.roles.PRECEDENCE`, except a control
    token (``control``: True for each token that is one of the tokenizer's
    special added tokens), which is ``end`` or ``special`` whatever content it
    absorbed: no strategy may teach a model to emit a control token for content.
    Also returns the content characters control tokens absorbed.

    >>> v = char_codes(np.array([R.SPECIAL, R.RESPONSE], np.uint8), np.array([False, False]))
    >>> chars = np.repeat(v, [3, 2])                    # 3 special characters, then 2 of a response
    >>> token_roles(chars, np.array([0, 4]), np.array([4, 5]), np.array([True, False]))   # token 0 ate one
    (array([1, 7], dtype=uint8), array([False, False]), 1)
    """
    if starts.shape != ends.shape:
        raise ValueError("starts and ends differ in shape")
    if chars.dtype != np.uint8:
        raise ValueError("chars must be uint8")
    codes, flags, absorbed = _token_roles(chars, starts, ends, control)
    return codes, (flags & R.LAST_FLAG).astype(bool), int(absorbed.sum())


def _token_roles(
    chars: np.ndarray, starts: np.ndarray, ends: np.ndarray, control: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`token_roles` with the flags (uint8: :data:`packer.output.roles.LAST_FLAG` |
    :data:`packer.output.roles.UNTRAINED_FLAG` | :data:`packer.output.roles.FORCED_FLAG`) of each token, and the content
    characters absorbed per token (int64, 0 but at control tokens)."""
    starts, ends = starts.astype(np.int64), ends.astype(np.int64)
    v = _token_values(chars, starts, ends)
    absorbed = np.zeros(starts.shape[0], dtype=np.int64)
    if control is not None:
        if control.shape != starts.shape:
            raise ValueError("control and starts differ in shape")
        tokens = np.flatnonzero(control)
        if tokens.size:
            at = np.zeros(tokens.shape[0], dtype=np.int64)
            _control_values(chars, starts, ends, v, tokens, int(_RANK[R.END]), int(_RANK[R.SPECIAL]),
                            _CONTENT_RANKS, at)
            absorbed[tokens] = at
    codes = _UNRANK[v >> _FLAG_BITS]
    if v.size and (codes == 0).any():
        raise ValueError("a token covers no character of any segment")
    return codes, v & _FLAG_MASK, absorbed


@dataclass
class TokenizedBatch:
    """Documents of one batch, flat: document ``k`` owns tokens
    ``offsets[k]:offsets[k+1]`` of ``ids``, ``roles`` and ``flags``."""

    ids: np.ndarray  # int32
    roles: np.ndarray  # uint8
    #: uint8: LAST_FLAG where the token belongs to the final assistant turn, UNTRAINED_FLAG where to a
    #: message marked untrained, FORCED_FLAG where to the content of a non-assistant message marked
    #: trained (packer.output.roles)
    flags: np.ndarray
    offsets: np.ndarray  # int64, len = documents + 1
    #: per document, the characters of content that control tokens absorbed (see :func:`token_roles`);
    #: None where none were
    doc_absorbed: np.ndarray | None = None
    #: (starts, ends) of every token in characters of the batch's texts joined, where they came from the walk
    #: of :mod:`packer.tokens.spans` (a build checks them against offsets on a sample); else None
    spans: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def last(self) -> np.ndarray:
        """bool: the token belongs to the final assistant turn."""
        return (self.flags & R.LAST_FLAG).astype(bool)

    @property
    def absorbed(self) -> int:
        return 0 if self.doc_absorbed is None else int(self.doc_absorbed.sum())


def encode_texts(tok: Tokenizer, texts: list[str]) -> list:
    """Tokenize whole texts, no special tokens added (the template wrote them).

    The library releases the GIL and spreads the texts over its threads, so a
    build runs this in a worker thread while it reads the next batch.
    """
    return tok.encode_batch(texts, add_special_tokens=False)


def _byte_alphabet() -> frozenset[str]:
    # GPT-2's bytes_to_unicode: byte-level BPE writes every byte as one of these 256 characters
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [256 + n for n in range(256 - len(printable))]
    return frozenset(map(chr, printable + others))


def _state(component: object) -> dict | None:
    return None if component is None else json.loads(component.__getstate__())  # type: ignore[attr-defined]


def _parts(state: dict | None, key: str) -> list[dict]:
    if state is None:
        return []
    return list(state[key]) if state.get("type") == "Sequence" else [state]


class ByteLengths:
    """Bytes of UTF-8 text behind every token id of a byte-level BPE tokenizer.

    For such a tokenizer (GPT-2, Llama 3, Qwen) the tokens of a text tile its
    UTF-8 bytes, so token spans are a cumulative sum of these lengths: no
    ``Encoding.offsets`` needed, and ``encode_batch_fast`` (which does not track
    them) gives the same ids. ``"héllo"``: tokens ``h|él|lo`` → 1, 3, 2 bytes →
    byte spans (0,1) (1,4) (4,6). With an NFC normalizer this holds only for
    texts already in NFC (:meth:`fits`).
    """

    def __init__(self, tok: Tokenizer, added: dict, *, nfc: bool) -> None:
        self._tok = tok
        self._added = {i: len(a.content.encode("utf-8")) for i, a in added.items()}
        self._alphabet = _byte_alphabet()
        #: per token id: its bytes; -1 unknown; -2 not looked up yet (ids are looked up as they
        #: occur: a whole vocabulary would take ~0.1 s a build)
        self._table = np.full(0, -2, dtype=np.int64)
        #: the tokenizer NFC-normalizes: texts must already be NFC
        self.nfc = nfc

    def prefill(self, widths: np.ndarray) -> None:
        """Take every token's bytes at once (the tiktoken core knows them all: no lookups as ids occur)."""
        self._table = np.where(widths >= 0, widths, -2).astype(np.int64)

    def widths(self, ids: np.ndarray) -> np.ndarray:
        """Bytes of each token of ``ids`` (int64); -1 where unknown (the caller then uses offsets)."""
        if ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        top = int(ids.max())
        if top >= len(self._table):
            self._table = np.concatenate([self._table, np.full(top + 1 - len(self._table), -2, np.int64)])
        width = self._table[ids]
        new = np.unique(ids[width == -2])
        if new.size:
            for i in new.tolist():
                self._table[i] = self._width(i)
            width = self._table[ids]
        return width

    def _width(self, i: int) -> int:
        if i in self._added:
            return self._added[i]
        piece = self._tok.id_to_token(i)
        # a byte-level piece writes each byte as one character of the alphabet
        return len(piece) if piece is not None and self._alphabet.issuperset(piece) else -1

    def fits(self, texts: list[str]) -> bool:
        """Whether the tokenizer sees these texts unchanged (no normalization to undo)."""
        return not self.nfc or all(t.isascii() or unicodedata.is_normalized("NFC", t) for t in texts)

    def runs(self, texts: list[str]) -> list[tuple[int, int, bool]]:
        """``texts`` cut where :meth:`fits` changes, in order: ``(start, end, fits)`` of each run. A text that is
        not NFC then sends its own run to the offsets path, not its whole batch: 6 of ShareGPT 17k's 17,320 texts
        sent 4 of its 34 batches of 512 there (12% of the build's tokens on the slow path)."""
        if not self.nfc:
            return [(0, len(texts), True)]
        fit = [t.isascii() or unicodedata.is_normalized("NFC", t) for t in texts]
        cuts = [k for k in range(1, len(fit)) if fit[k] != fit[k - 1]]
        return [(a, b, fit[a]) for a, b in zip([0, *cuts], [*cuts, len(texts)], strict=True)]


def byte_lengths(tok: Tokenizer) -> ByteLengths | None:
    """:class:`ByteLengths` for a byte-level BPE tokenizer that keeps every byte
    of the text in place; ``None`` for any other (SentencePiece-style ones
    rewrite spaces as ``▁``): those are labelled from ``Encoding.offsets``."""
    if type(tok.model).__name__ != "BPE":
        return None
    norm = _parts(_state(tok.normalizer), "normalizers")
    if any(n.get("type") != "NFC" for n in norm):
        return None
    pre = _parts(_state(tok.pre_tokenizer), "pretokenizers")
    level = [p for p in pre if p.get("type") == "ByteLevel"]
    if len(level) != 1 or level[0].get("add_prefix_space"):
        return None
    # these split the text without dropping or changing any of it
    if any(p.get("type") not in ("ByteLevel", "Split", "Digits", "Punctuation") or p.get("behavior") == "Removed"
           for p in pre):
        return None
    post = _parts(_state(tok.post_processor), "processors")
    # trimmed offsets would label whitespace differently; without special tokens a template adds nothing
    if any(p.get("type") not in ("ByteLevel", "TemplateProcessing") or p.get("trim_offsets") for p in post):
        return None
    added = tok.get_added_tokens_decoder()
    if any(a.lstrip or a.rstrip for a in added.values()):  # they swallow whitespace around them
        return None
    return ByteLengths(tok, added, nfc=bool(norm))


def encode_texts_fast(tok: Tokenizer, texts: list[str]) -> list:
    """:func:`encode_texts` without offsets (they are taken from :class:`ByteLengths`)."""
    fast = getattr(tok, "encode_batch_fast", None)  # tokenizers >= 0.21
    if fast is None:
        return tok.encode_batch(texts, add_special_tokens=False)
    return fast(texts, add_special_tokens=False)


def _flat_ids(encs: list | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(encs, tuple):  # the tiktoken core's batch, flat already (ids, offsets)
        return encs
    counts = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
    offsets = np.zeros(len(encs) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # one iterator over the batch, its length known: ~40 ns a token, where a list for np.array took ~100
    # tokenizers' Encoding objects, or lists of ids (the tiktoken core)
    ids = np.fromiter(chain.from_iterable(e if isinstance(e, list) else e.ids for e in encs), dtype=np.int32,
                      count=int(offsets[-1]))
    return ids, offsets


@njit(nogil=True)
def _spread_to_bytes(utf8: np.ndarray, chars: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    # each byte takes its character's value; a character starts at every byte that is not a
    # continuation byte (10xxxxxx); also where each text starts in bytes, and the characters seen
    n = utf8.shape[0]
    out = np.empty(n, dtype=np.uint8)
    byte_starts = np.empty(starts.shape[0], dtype=np.int64)
    c = -1
    k = 0
    for i in range(n):
        if (utf8[i] & 0xC0) != 0x80:
            c += 1
            if c >= chars.shape[0]:
                return out, byte_starts, -1
            while k < starts.shape[0] and starts[k] == c:
                byte_starts[k] = i
                k += 1
        if c < 0:
            return out, byte_starts, -1
        out[i] = chars[c]
    while k < starts.shape[0]:  # empty texts at the very end
        byte_starts[k] = n
        k += 1
    return out, byte_starts, c + 1


def byte_values(chars: np.ndarray, text_starts: np.ndarray, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`char_codes` values per UTF-8 byte of the batch's texts, and where
    each text starts in bytes (``chars``/``text_starts`` are per character).

        texts  : "hé", "x"        chars: [1 2] [3]       (values per character)
        bytes  : 68 C3 A9 | 78    values: 1 2 2 | 3       byte starts: 0, 3
    """
    joined = "".join(texts)
    starts = np.asarray(text_starts, dtype=np.int64)
    if joined.isascii():
        return chars, starts
    utf8 = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    values, byte_starts, n_chars = _spread_to_bytes(utf8, chars, starts)
    if n_chars != chars.shape[0]:
        raise ValueError(f"{chars.shape[0]} character values for a text of {len(joined)} characters")
    return values, byte_starts


def control_lut(tok: TokenizerInfo) -> np.ndarray:
    """True at the id of every control token (an added token flagged special) of ``tok``."""
    lut = np.zeros(tok.vocab_size + 1, dtype=np.bool_)  # (get_vocab_size again would take 0.1 s)
    ids = [tok.tokenizer.token_to_id(t) for t in tok.special_tokens]
    lut[[i for i in ids if i is not None and i < len(lut)]] = True
    return lut


def _control(ids: np.ndarray, lut: np.ndarray | None) -> np.ndarray | None:
    if lut is None:
        return None
    return lut[np.minimum(ids, len(lut) - 1)]


def label_by_bytes(
    encs: list, values: np.ndarray, byte_starts: np.ndarray, table: ByteLengths, control: np.ndarray | None = None
) -> TokenizedBatch | None:
    """:func:`label_by_offsets` from token byte lengths instead of offsets.

    ``values``/``byte_starts`` come from :func:`byte_values`. ``None`` when a
    document's tokens do not add up to its bytes (a token of unknown length),
    or when a control token absorbed content (counted in characters, not
    bytes; it cannot happen here, as this path needs added tokens without
    strip flags, but the count must not depend on the path): the caller
    labels that batch from offsets instead.
    """
    ids, offsets = _flat_ids(encs)
    width = table.widths(ids)
    cum = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(width, out=cum[1:])
    # each document's tokens must cover exactly its bytes: then the running sum stays on the texts
    text_bytes = np.diff(np.append(byte_starts, values.shape[0]))
    if (width <= 0).any() or not np.array_equal(cum[offsets[1:]] - cum[offsets[:-1]], text_bytes):
        return None
    starts, ends = cum[:-1], cum[1:]
    roles, flags, absorbed = _token_roles(values, starts.astype(np.int64), ends.astype(np.int64),
                                          _control(ids, control))
    if absorbed.any():
        return None
    return TokenizedBatch(ids=ids, roles=roles, flags=flags, offsets=offsets)


def label_by_offsets(
    encs: list, chars: np.ndarray, text_starts: np.ndarray, control: np.ndarray | None = None
) -> TokenizedBatch:
    """Flatten encodings and give every token its role.

    ``chars`` holds the :func:`char_codes` value of every character of the
    batch's texts, one after the other; text ``k`` starts at ``text_starts[k]``.
    ``control`` (:func:`control_lut`) marks the ids of control tokens, which
    never take a content role.
    """
    ids, offsets = _flat_ids(encs)
    counts = np.diff(offsets)
    total = int(offsets[-1])
    # offsets per document: e.offsets is a list of tuples, which numpy converts slowly unless
    # flattened by an iterator (and a batch-wide list of tuples is big)
    if total:
        spans = np.concatenate([np.fromiter(chain.from_iterable(e.offsets), np.int64, 2 * len(e)) for e in encs])
        spans = spans.reshape(total, 2)
    else:
        spans = np.zeros((0, 2), np.int64)
    spans += np.repeat(np.asarray(text_starts, dtype=np.int64), counts)[:, None]
    return _label_spans(ids, offsets, chars, spans[:, 0], spans[:, 1], control)


def _label_spans(
    ids: np.ndarray, offsets: np.ndarray, chars: np.ndarray, starts: np.ndarray, ends: np.ndarray,
    control: np.ndarray | None,
) -> TokenizedBatch:
    roles, flags, absorbed = _token_roles(chars, starts, ends, _control(ids, control))
    doc_absorbed = None
    if absorbed.any():
        counts = np.diff(offsets)
        doc_absorbed = np.bincount(np.repeat(np.arange(len(counts)), counts), weights=absorbed,
                                   minlength=len(counts)).astype(np.int64)
    return TokenizedBatch(ids=ids, roles=roles, flags=flags, offsets=offsets, doc_absorbed=doc_absorbed)


def label_by_spans(
    encs: list, texts: list[str], chars: np.ndarray, table: PieceSpans, control: np.ndarray | None = None
) -> TokenizedBatch | None:
    """:func:`label_by_offsets` from the walk of :func:`packer.tokens.spans.token_spans` instead of offsets
    (``encs`` from ``encode_batch_fast``): the same roles wherever the walk gives the offsets' spans. ``None``
    where some text's walk fails: the caller labels that batch from offsets."""
    ids, offsets = _flat_ids(encs)
    got = token_spans(table, texts, ids, offsets)
    if got is None:
        return None
    tb = _label_spans(ids, offsets, chars, got[0], got[1], control)
    tb.spans = got
    return tb


def batch_chars(seg_lengths: list[np.ndarray], seg_values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-character values of a batch of texts, and where each text starts.

    ``seg_lengths[k]``/``seg_values[k]`` tile text ``k`` with segments whose
    values come from :func:`char_codes`.
    """
    if not seg_lengths:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    lengths = np.concatenate(seg_lengths)
    values = np.concatenate(seg_values)
    text_len = np.fromiter((int(s.sum()) for s in seg_lengths), dtype=np.int64, count=len(seg_lengths))
    starts = np.zeros(len(seg_lengths), dtype=np.int64)
    np.cumsum(text_len[:-1], out=starts[1:])
    return np.repeat(values, lengths), starts


@dataclass
class TextBatch:
    """Rendered texts ready for the tokenizer: ``chars`` holds the :func:`char_codes`
    value of every character, text ``k`` starting at ``text_starts[k]``; ``by_bytes``
    the same per UTF-8 byte where the batch is labelled by token byte lengths."""

    texts: list[str]
    chars: np.ndarray
    text_starts: np.ndarray
    by_bytes: tuple[np.ndarray, np.ndarray] | None


def choose_backend(tok: TokenizerInfo, backend: str) -> str:
    """Who encodes a build (:data:`packer.options.BACKENDS`): ``"tiktoken"`` where asked for or, with ``"auto"``,
    where the tokenizer qualifies (:func:`packer.tokens.tiktoken_core.qualify`) and is labelled from byte lengths (the
    path the core feeds); else ``"tokenizers"``. Forcing ``"tiktoken"`` on one that does not qualify is a
    BuildError that says why; ``"offsets"`` is kept (:class:`Labeller`)."""
    if backend in ("tokenizers", "offsets"):
        return backend
    from .tiktoken_core import core_of

    core = core_of(tok)
    why = core if isinstance(core, str) else None if byte_lengths(tok.tokenizer) else "not labelled from byte lengths"
    if why is None:
        return "tiktoken"
    if backend == "tiktoken":
        raise BuildError(f"--tokenizer-backend tiktoken: {tok.source} does not qualify: {why}; "
                         "use --tokenizer-backend tokenizers (or auto)")
    return "tokenizers"


class Labeller:
    """Tokenize rendered documents and give every token its role: the one path
    a build and the tests take.

        >>> lab = Labeller(load_tokenizer("packer/demo_tokenizer"))   # doctest: +SKIP
        >>> tb = lab([rendered])                                       # doctest: +SKIP
        >>> tb.ids, tb.roles, tb.flags, tb.offsets                     # doctest: +SKIP

    :meth:`prepare` and :meth:`label` run on the caller's thread, :meth:`encode`
    may run on another (the tokenizer releases the GIL). A byte-level BPE
    tokenizer is labelled from token byte lengths (:class:`ByteLengths`, no
    offsets tracked), a SentencePiece-style one from the walk of its pieces
    (:mod:`packer.tokens.spans`, no offsets tracked either); any other, a batch
    either path gives up on (then encoded again), or every batch with
    ``backend="offsets"``, from ``Encoding.offsets``.

    ``backend``: ``"tokenizers"``, ``"tiktoken"`` (:func:`choose_backend`), or ``"offsets"``: tokenizers,
    every batch from offsets (asked for, or where a build found the walk to disagree with offsets on a
    checked record).
    """

    def __init__(self, tok: TokenizerInfo, backend: str = "tokenizers") -> None:
        self.tokenizer = tok.tokenizer
        self.byte_lengths = byte_lengths(tok.tokenizer) if backend != "offsets" else None
        #: the walk of pieces giving token spans, for a SentencePiece-style tokenizer (None: any other)
        self.spans = piece_spans(tok.tokenizer) if self.byte_lengths is None and backend != "offsets" else None
        #: backend "tiktoken": the tiktoken core (packer.tokens.tiktoken_core) encodes what is labelled from byte
        #: lengths
        self.core = None
        if backend == "tiktoken":
            from .tiktoken_core import core_of

            core = core_of(tok)
            if isinstance(core, str) or self.byte_lengths is None:
                raise BuildError(f"--tokenizer-backend tiktoken: {tok.source} does not qualify: "
                                 f"{core if isinstance(core, str) else 'not labelled from byte lengths'}; "
                                 "use --tokenizer-backend tokenizers")
            self.core = core
            self.byte_lengths.prefill(core.widths)
            # the threads tokenizers would use: RAYON_NUM_THREADS where set (a build's workers share the cores)
            self._threads = int(os.environ.get("RAYON_NUM_THREADS") or 0) or (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        # control tokens never take a content role; the content characters they absorbed are counted
        self.control = control_lut(tok)

    def runs(self, texts: list[str]) -> list[tuple[int, int, bool]]:
        """Where to cut a batch so that one text needing offsets does not take the others along
        (:meth:`ByteLengths.runs`): ``(start, end, fits)``, ``fits`` to hand to :meth:`prepare`; one run where
        every batch takes one path."""
        if self.byte_lengths is None or not texts:
            return [(0, len(texts), self.byte_lengths is not None)]
        return self.byte_lengths.runs(texts)

    def prepare(
        self, seg_lengths: list[np.ndarray], seg_values: list[np.ndarray], texts: list[str], fits: bool | None = None,
    ) -> TextBatch:
        """``seg_lengths[k]``/``seg_values[k]`` (:func:`char_codes`) tile text ``k``; ``fits``: what :meth:`runs`
        found of these texts (None: look)."""
        chars, starts = batch_chars(seg_lengths, seg_values)
        if chars.shape[0] != sum(len(t) for t in texts):
            raise ValueError("segments do not tile the rendered texts")
        by_bytes = None
        if self.byte_lengths is not None and (self.byte_lengths.fits(texts) if fits is None else fits):
            by_bytes = byte_values(chars, starts, texts)
        return TextBatch(texts, chars, starts, by_bytes)

    @property
    def checks(self) -> bool:
        """Whether a build checks this labeller's tokens against ``tokenizers`` with offsets on a sample of
        records (:meth:`reference`, :meth:`disagrees`): the tiktoken core's ids, the walk's spans."""
        return self.core is not None or self.spans is not None

    def reference(self, texts: list[str]) -> list:
        """``tokenizers``' encodings of ``texts`` to check a batch against (thread-safe): ids only for the
        tiktoken core, with offsets for the walk."""
        if self.core is not None:
            return encode_texts_fast(self.tokenizer, texts)
        return encode_texts(self.tokenizer, texts)

    def disagrees(self, batch: TextBatch, tb: TokenizedBatch, k: int, ref: object) -> str | None:
        """What in text ``k`` of ``tb`` (labelled from ``batch``) differs from its :meth:`reference`
        encoding ``ref``, or None."""
        a, b = int(tb.offsets[k]), int(tb.offsets[k + 1])
        if tb.ids[a:b].tolist() != ref.ids:  # type: ignore[attr-defined]
            return "the tiktoken core gives other ids than tokenizers" if self.core is not None else \
                "tokenizers gives other ids with offsets than without"
        if tb.spans is None or self.core is not None:
            return None
        at = int(batch.text_starts[k])
        want = np.array(ref.offsets, dtype=np.int64).reshape(-1, 2)  # type: ignore[attr-defined]
        got = np.stack([tb.spans[0][a:b], tb.spans[1][a:b]], axis=1) - at
        if not np.array_equal(got, want):
            return "the walk of token pieces gives other character spans than tokenizers' offsets"
        return None

    def encode(self, batch: TextBatch) -> list | tuple[np.ndarray, np.ndarray]:
        """The tokenizer's encodings of the batch (thread-safe); the tiktoken core's as (ids, offsets)."""
        if batch.by_bytes is None:
            if self.spans is not None:
                return encode_texts_fast(self.tokenizer, batch.texts)
            return encode_texts(self.tokenizer, batch.texts)
        if self.core is not None:  # texts the byte-length path takes are NFC already
            return self.core.encode_flat(batch.texts, self._threads)
        return encode_texts_fast(self.tokenizer, batch.texts)

    def label(self, batch: TextBatch, encodings: list) -> TokenizedBatch:
        """Role and last-turn flag of every token of ``encodings`` (from :meth:`encode`)."""
        if batch.by_bytes is not None:
            assert self.byte_lengths is not None
            tb = label_by_bytes(encodings, *batch.by_bytes, self.byte_lengths, self.control)
            if tb is not None:
                return tb
            encodings = encode_texts(self.tokenizer, batch.texts)  # a token of unknown length: with offsets
        elif self.spans is not None:
            tb = label_by_spans(encodings, batch.texts, batch.chars, self.spans, self.control)
            if tb is not None:
                return tb
            encodings = encode_texts(self.tokenizer, batch.texts)  # a walk gave up: with offsets
        return label_by_offsets(encodings, batch.chars, batch.text_starts, self.control)

    def __call__(self, rendered: list) -> TokenizedBatch:
        """Encode and label rendered documents (:class:`packer.tokens.templates.Rendered`) in this thread."""
        values = [char_codes(r.seg_roles, r.seg_last, r.seg_train, r.seg_forced) for r in rendered]
        batch = self.prepare([r.seg_lengths for r in rendered], values, [r.text for r in rendered])
        return self.label(batch, self.encode(batch))
