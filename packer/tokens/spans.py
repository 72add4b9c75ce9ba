"""Character spans of the tokens of a SentencePiece-style BPE tokenizer, from the tokens' pieces alone.

Mistral, Llama 2 and Phi-3 (``tokenizer.json``: normalizer ``Prepend("▁")`` + ``Replace(" ", "▁")``, BPE with
byte fallback) and Gemma 2 (``Replace`` only) write a text's spaces as ``▁``; each piece of text between two
added tokens is normalized alone, so with ``Prepend`` it gets a ``▁`` of its own in front. A token's piece then
says how many bytes of that normalized text it covers (``▁`` is 3, ``<0xNN>`` is one byte), and walking the
tokens over the text gives the same character spans ``Encoding.offsets`` does, without the tokenizer tracking
them (``encode_batch_fast``), and without converting millions of offset tuples.

    text   : "<s>[INST] hi"                  ids   : <s>    ▁[     INST   ]      ▁hi
    pieces :  added  "▁" + "[INST]▁hi"       bytes :  -      4      4      1      5
    spans  :  (0, 3) (3, 4) (4, 8) (8, 9) (9, 12)      the prepended ▁ takes the span of the first
                                                        character after <s>; "▁hi" covers " hi"

Alignment rules the walk reproduces, as ``tokenizers`` gives them (``tests/test_spans.py`` holds each): the
prepended ``▁`` of a piece is aligned to that piece's first character (a lone ``"▁"`` token spans it, and so
does the token after it); every byte-fallback token of a character spans the whole character; an added token
with ``rstrip``/``lstrip`` spans the whitespace it swallows (Rust's ``char::is_whitespace``), and the next piece
starts after it. A walk that does not land exactly on the text's end, or an added token whose content is not
at the walk's place, gives up on the batch (:func:`token_spans` returns None): the caller labels it from
offsets. A build also checks the walk against ``Encoding.offsets`` on a sample of records
(:func:`packer.tokens.assembly.checked`), as it checks the tiktoken core.
"""

from __future__ import annotations

import json

import numpy as np
from tokenizers import Tokenizer

from ..jit import njit

__all__ = ["PieceSpans", "piece_spans", "token_spans"]

#: bytes of "▁" (U+2581) in UTF-8: what a space, and a prepended ▁, become
_SPACE_BYTES = 3
#: Rust's ``char::is_whitespace`` (the White_Space property): what ``rstrip``/``lstrip`` added tokens swallow
_WHITESPACE = np.array([*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                        0x202F, 0x205F, 0x3000], dtype=np.uint32)


@njit(nogil=True)
def _is_space(cp: int) -> bool:
    for w in _WHITESPACE:  # a global array: numba compiles it in as a constant
        if cp == w:
            return True
    return False


@njit(nogil=True)
def _nbytes(cp: int) -> int:
    # a character's bytes once normalized: a space is written as ▁
    if cp == 0x20:
        return _SPACE_BYTES
    if cp < 0x80:
        return 1
    if cp < 0x800:
        return 2
    return 3 if cp < 0x10000 else 4


@njit(nogil=True)
def _added_at(cps: np.ndarray, c: int, end: int, content: np.ndarray, strip: int) -> int:
    # where an added token found at character c ends (its stripped whitespace included); -1 if it is not there
    p = c
    if strip & 1:
        while p < end and _is_space(cps[p]):
            p += 1
    if p + content.shape[0] > end:
        return -1
    for j in range(content.shape[0]):
        if cps[p + j] != content[j]:
            return -1
    p += content.shape[0]
    if strip & 2:
        while p < end and _is_space(cps[p]):
            p += 1
    return p


@njit(nogil=True)
def _walk(
    cps: np.ndarray, text_starts: np.ndarray, ids: np.ndarray, offsets: np.ndarray, width: np.ndarray,
    added: np.ndarray, contents: np.ndarray, content_at: np.ndarray, strip: np.ndarray, prepend: int,
    out: np.ndarray,
) -> int:
    # the span of every token (out[t] = start, end); returns the first document whose tokens do not walk its
    # text exactly, or -1
    ndocs = offsets.shape[0] - 1
    for d in range(ndocs):
        c = text_starts[d]
        end = text_starts[d + 1]
        virt = prepend  # bytes of the prepended ▁ of the current piece not yet covered
        pend = 0  # bytes of character c not yet covered (byte-fallback tokens cover one each)
        for t in range(offsets[d], offsets[d + 1]):
            i = ids[t]
            k = added[i]
            if k >= 0 and pend == 0:
                p = _added_at(cps, c, end, contents[content_at[k] : content_at[k + 1]], strip[k])
                if p >= 0:
                    out[t, 0] = c
                    out[t, 1] = p
                    c = p
                    virt = prepend  # the next piece is normalized alone: a ▁ of its own
                    continue
            w = width[i]
            if w <= 0:
                return d
            s = -1
            if virt > 0:  # the prepended ▁ is aligned to the piece's first character
                if c >= end:
                    return d
                took = min(virt, w)
                virt -= took
                w -= took
                s = c
                out[t, 1] = c + 1
            while w > 0:
                if c >= end:
                    return d
                if pend == 0:
                    pend = _nbytes(cps[c])
                if s < 0:
                    s = c
                took = min(pend, w)
                pend -= took
                w -= took
                out[t, 1] = c + 1
                if pend == 0:
                    c += 1
            out[t, 0] = s
        if c != end or pend != 0 or (virt != 0 and virt != prepend):
            return d
    return -1


class PieceSpans:
    """What the walk needs of one tokenizer: per token id its normalized bytes (looked up as ids occur) and,
    for added tokens, their content and strip flags. Made by :func:`piece_spans`."""

    def __init__(self, tok: Tokenizer, *, prepend: bool, byte_fallback: bool, unk: int | None) -> None:
        self._tok = tok
        self.prepend = _SPACE_BYTES if prepend else 0
        self._fallback = byte_fallback
        self._unk = unk
        decoder = tok.get_added_tokens_decoder()
        top = max(decoder, default=0) + 1
        self._added = np.full(top, -1, dtype=np.int32)
        contents, at, strip = [], [0], []
        for k, (i, a) in enumerate(sorted(decoder.items())):
            self._added[i] = k
            cps = np.frombuffer(a.content.encode("utf-32-le"), dtype=np.uint32)
            contents.append(cps)
            at.append(at[-1] + len(cps))
            strip.append(int(a.lstrip) | 2 * int(a.rstrip))
        self._contents = np.concatenate(contents) if contents else np.zeros(0, np.uint32)
        self._content_at = np.array(at, dtype=np.int64)
        self._strip = np.array(strip, dtype=np.uint8)
        #: per id: normalized bytes; 0 unknown (the walk gives up); -2 not looked up yet
        self._width = np.full(0, -2, dtype=np.int64)

    def _widths_for(self, ids: np.ndarray) -> np.ndarray:
        top = int(ids.max()) + 1 if ids.size else 0
        if top > len(self._width):
            self._width = np.concatenate([self._width, np.full(top - len(self._width), -2, np.int64)])
        new = np.unique(ids[self._width[ids] == -2]) if ids.size else ids
        for i in new.tolist():
            self._width[i] = self._piece_bytes(i)
        return self._width

    def _piece_bytes(self, i: int) -> int:
        piece = self._tok.id_to_token(i)
        if piece is None or i == self._unk:
            return 0
        if self._fallback and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return 1
        return len(piece.encode("utf-8"))

    def added_lut(self, n: int) -> np.ndarray:
        """Per id below ``n``: the index of its added token, or -1."""
        if n <= len(self._added):
            return self._added
        return np.concatenate([self._added, np.full(n - len(self._added), -1, np.int32)])

    def walk(self, texts: list[str], ids: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(starts, ends) of every token in characters of the texts joined; None where a document's walk
        fails."""
        joined = "".join(texts)
        cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        text_starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), out=text_starts[1:])
        width = self._widths_for(ids)
        added = self.added_lut(len(width))
        out = np.empty((len(ids), 2), dtype=np.int64)
        bad = _walk(cps, text_starts, ids, offsets, width, added, self._contents, self._content_at, self._strip,
                    self.prepend, out)
        return None if bad >= 0 else (out[:, 0], out[:, 1])


def _state(component: object) -> dict | None:
    return None if component is None else json.loads(component.__getstate__())  # type: ignore[attr-defined]


def _is_space_to_metaspace(n: dict) -> bool:
    return n.get("type") == "Replace" and n.get("pattern") == {"String": " "} and n.get("content") == "\u2581"


def piece_spans(tok: Tokenizer) -> PieceSpans | None:
    """:class:`PieceSpans` for a BPE tokenizer whose normalizer is ``Replace(" ", "▁")``, alone or after
    ``Prepend("▁")``, with no pre-tokenizer or one that only cuts at a fixed string; None for any other (they
    are labelled from offsets, or from byte lengths: :func:`packer.tokens.tokenize.byte_lengths`)."""
    model = tok.model  # its attributes, not its state: that is the whole vocabulary (~1 s for Gemma's)
    if type(model).__name__ != "BPE" or model.dropout:
        return None
    norm = _state(tok.normalizer)
    steps = (norm.get("normalizers") if norm.get("type") == "Sequence" else [norm]) if norm else []
    prepend = len(steps) == 2 and steps[0] == {"type": "Prepend", "prepend": "\u2581"}
    if not steps or not _is_space_to_metaspace(steps[-1]) or len(steps) > 1 + prepend:
        return None
    pre = _state(tok.pre_tokenizer)
    if pre is not None and not (pre.get("type") == "Split" and "String" in pre.get("pattern", {})
                                and pre.get("behavior") != "Removed"):
        return None
    post = _state(tok.post_processor)
    if post is not None and post.get("type") != "TemplateProcessing":  # nothing added without special tokens
        return None
    # an added token matched in the normalized text could sit across the walk's pieces
    if any(a.normalized for a in tok.get_added_tokens_decoder().values()):
        return None
    unk = tok.token_to_id(model.unk_token) if model.unk_token else None
    return PieceSpans(tok, prepend=prepend, byte_fallback=bool(model.byte_fallback), unk=unk)


def token_spans(
    table: PieceSpans, texts: list[str], ids: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Character spans (starts, ends; into the texts joined) of the tokens ``ids`` of the ``texts``
    (document ``k`` owns ``ids[offsets[k]:offsets[k+1]]``), or None where the walk of some text fails.

    >>> tok = Tokenizer.from_file("tokenizer.json")  # doctest: +SKIP
    >>> ids = [1, 733, 16289, 28793, 12014]          # doctest: +SKIP
    >>> token_spans(piece_spans(tok), ["<s>[INST] hi"], np.array(ids), np.array([0, 5]))  # doctest: +SKIP
    (array([0, 3, 4, 8, 9]), array([ 3,  4,  8,  9, 12]))
    """
    if len(offsets) != len(texts) + 1 or int(offsets[-1]) != len(ids):
        raise ValueError("offsets do not cut ids into one run per text")
    return table.walk(texts, np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64))
