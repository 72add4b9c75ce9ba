"""Shared fixtures: the bundled demo tokenizer, and the demo build made once per test run.
Plain helpers and paths are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from packer.tokenize import TokenizerInfo, load_tokenizer

from .helpers import DEMO_BUILD_OPTIONS, DEMO_INPUTS, DEMO_TOKENIZER


@pytest.fixture(scope="session")
def demo_tok() -> TokenizerInfo:
    return load_tokenizer(DEMO_TOKENIZER)


@pytest.fixture(scope="session")
def demo_output(tmp_path_factory, demo_tok) -> Path:
    """The bundled demo data (Alpaca and ShareGPT) built once per test run with the demo tokenizer,
    ``DEMO_BUILD_OPTIONS``: read it only. A test that changes an output copies it (shutil.copytree)."""
    from packer import build
    from packer.verify import verify

    out = tmp_path_factory.mktemp("demo_output") / "shards"
    build(DEMO_INPUTS, out, tokenizer=demo_tok, **DEMO_BUILD_OPTIONS)
    assert verify(out) == []
    return out
