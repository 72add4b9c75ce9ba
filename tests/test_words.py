"""Word counts (the IM paper's prompt/response words in ``packer inspect``) are ``len(text.split())`` exactly,
for any text: ASCII and Unicode whitespace, separators, lone surrogates (:mod:`packer.tokens.words`)."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from packer.tokens.words import _SPLIT_BELOW, count_words

SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]


@settings(deadline=None)  # the first example may compile the kernel
@given(st.lists(st.sampled_from([*SPACES, "a", "é", "你", "🤖", "\x00", "\u200b", "\ud800", "xyz"]), max_size=30))
def test_count_words_is_str_split(parts):
    text = "".join(parts) * 20  # mostly past _SPLIT_BELOW: the kernel
    assert count_words(text) == len(text.split())


@settings(deadline=None)
@given(st.text())
def test_count_words_is_str_split_on_any_text(text):
    assert count_words(text) == len(text.split())
    long = text * (_SPLIT_BELOW // max(1, len(text)) + 1)  # the kernel's side of the cut
    assert count_words(long) == len(long.split())
