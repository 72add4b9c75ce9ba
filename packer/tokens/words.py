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

from ..jit import njit, use_python


# python=False: on a numpy uint8 ``(c & 0x1F) << 6`` stays uint8 (numba widens it); ``str.split`` is this
# kernel's Python equal (count_words)
@njit(nogil=True, python=False)
def _count_words(b: np.ndarray) -> int:
    # a word starts at every non-space character after a space (or at the start); characters are decoded
    # from UTF-8 only far enough to tell the whitespace code points of str.isspace
    n = 0
    in_word = False
    i = 0
    size = b.shape[0]
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


#: below this many characters ``str.split`` is the faster (the kernel's call costs ~2 us; split ~1 us per 80)
_SPLIT_BELOW = 256
#: characters of ``str.split`` counted as one element of :mod:`packer.jit`'s Python budget, which it takes while
#: the kernel is not loaded (a small build need not load numba for it)
_SPLIT_CHARS_PER_UNIT = 64


def count_words(text: str) -> int:
    """``len(text.split())``: the whitespace-separated words of ``text``."""
    if len(text) < _SPLIT_BELOW or use_python(_count_words, len(text) // _SPLIT_CHARS_PER_UNIT):
        return len(text.split())
    return int(_count_words(np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8)))


#: the ASCII bytes ``str.split`` splits at: \t \n \v \f \r, the separators \x1c-\x1f, space
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[*range(9, 14), *range(0x1C, 0x21)]] = True


def count_words_each(texts: Sequence[str]) -> np.ndarray:
    """``[len(t.split()) for t in texts]`` as int64: the ASCII texts (most) counted at once with numpy, where a
    call per short text would cost more than its counting; the others by ``str.split``.

    >>> count_words_each(["two  words", "", "naïve\\u3000café 🤖", "a\\x1cb"]).tolist()
    [2, 0, 3, 2]
    """
    out = np.zeros(len(texts), dtype=np.int64)
    ascii_at = []
    for k, t in enumerate(texts):
        if t.isascii():
            ascii_at.append(k)
        else:
            out[k] = len(t.split())
    if not ascii_at:
        return out
    ascii_texts = [texts[k] for k in ascii_at]
    space = _ASCII_SPACE[np.frombuffer("".join(ascii_texts).encode("ascii"), np.uint8)]
    bounds = np.zeros(len(ascii_texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, ascii_texts), np.int64, len(ascii_texts)), out=bounds[1:])
    # a word starts at a non-space character after a space or at its text's start
    before = np.ones(len(space), dtype=bool)
    before[1:] = space[:-1]
    before[bounds[:-1][bounds[:-1] < len(space)]] = True
    starts = np.zeros(len(space) + 1, dtype=np.int64)
    np.cumsum(~space & before, out=starts[1:])
    out[ascii_at] = starts[bounds[1:]] - starts[bounds[:-1]]
    return out


__all__ = ["count_words", "count_words_each"]
