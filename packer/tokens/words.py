"""Word counts the way ``len(text.split())`` gives them, without making the words.

The IM paper's statistics count whitespace-separated words of every message (:func:`packer.pipeline.part.words`).
``str.split`` makes a string object per word: on ShareGPT (17 M characters, 41,000 messages) that is
0.2 s of a build's main thread, a tenth of a 2 s build once the tokenizer is fast (issue 17). The kernel
walks the UTF-8 bytes once instead, with Python's own whitespace (``str.isspace``, ASCII and Unicode)::

    >>> count_words("two  words\\n")
    2
    >>> count_words("naïve\\u3000café 🤖")      # U+3000 IDEOGRAPHIC SPACE is whitespace too
    3
    >>> count_words("") == len("".split()) == 0
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..jit import njit


@njit(nogil=True)
def _count_span(b: np.ndarray, i: int, size: int) -> int:
    # the words of b[i:size]: a word starts at every non-space character after a space (or at the start);
    # characters are decoded from UTF-8 only far enough to tell the whitespace code points of str.isspace
    n = 0
    in_word = False
    while i < size:
        c = b[i]
        if c < 0x80:  # \t \n \v \f \r, \x1c-\x1f (separators), space
            space = (9 <= c <= 13) or (0x1C <= c <= 0x20)
            i += 1
        elif c < 0xE0:  # U+0085 NEXT LINE, U+00A0 NO-BREAK SPACE
            cp = ((c & 0x1F) << 6) | (b[i + 1] & 0x3F) if i + 1 < size else 0
            space = cp == 0x85 or cp == 0xA0
            i += 2
        elif c < 0xF0:  # U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000
            cp = ((c & 0x0F) << 12) | ((b[i + 1] & 0x3F) << 6) | (b[i + 2] & 0x3F) if i + 2 < size else 0
            space = (cp == 0x1680 or 0x2000 <= cp <= 0x200A or cp == 0x2028 or cp == 0x2029 or cp == 0x202F
                     or cp == 0x205F or cp == 0x3000)
            i += 3
        else:  # no whitespace beyond the BMP
            space = False
            i += 4
        if not space and not in_word:
            n += 1
        in_word = not space
    return n


@njit(nogil=True)
def _count_words(b: np.ndarray) -> int:
    return _count_span(b, 0, b.shape[0])


@njit(nogil=True)
def _count_spans(b: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    # the words of each b[bounds[k]:bounds[k + 1]]
    out = np.zeros(bounds.shape[0] - 1, dtype=np.int64)
    for k in range(out.shape[0]):
        out[k] = _count_span(b, bounds[k], bounds[k + 1])
    return out


#: below this many characters ``str.split`` is the faster (the kernel's call costs ~2 us; split ~1 us per 80)
_SPLIT_BELOW = 256


def count_words(text: str) -> int:
    """``len(text.split())``: the whitespace-separated words of ``text``."""
    if len(text) < _SPLIT_BELOW:
        return len(text.split())
    return int(_count_words(np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8)))


def count_words_each(texts: Sequence[str]) -> np.ndarray:
    """``[len(t.split()) for t in texts]`` as int64, in one pass of the kernel over all of them (a batch of
    short texts, where a call per text would cost more than the counting).

    >>> count_words_each(["two  words", "", "naïve\\u3000café 🤖"]).tolist()
    [2, 0, 3]
    """
    bounds = np.zeros(len(texts) + 1, dtype=np.int64)
    joined = "".join(texts)
    if joined.isascii():  # a byte a character: the bounds are the texts' lengths
        np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)), out=bounds[1:])
        data = joined.encode("ascii")
    else:
        encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(texts)), out=bounds[1:])
        data = b"".join(encoded)
    return _count_spans(np.frombuffer(data, np.uint8), bounds)


__all__ = ["count_words", "count_words_each"]
