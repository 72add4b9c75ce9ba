"""Word counts (the IM paper's prompt/response words in ``packer inspect``) are ``len(text.split())`` exactly,
for any text: ASCII and Unicode whitespace, separators, lone surrogates (:mod:`packer.words`)."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from packer.words import count_words

SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]


@settings(deadline=None)  # the first example may compile the kernel
@given(st.lists(st.sampled_from([*SPACES, "a", "é", "你", "🤖", "\x00", "\u200b", "\ud800", "xyz"]), max_size=30))
def test_count_words_is_str_split(parts):
    text = "".join(parts)
    assert count_words(text) == len(text.split())


@settings(deadline=None)
@given(st.text())
def test_count_words_is_str_split_on_any_text(text):
    assert count_words(text) == len(text.split())
