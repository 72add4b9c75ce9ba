"""Shared fixtures: the bundled demo tokenizer, and the demo build made once per test run.
Plain helpers and paths are in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist each worker is one of several processes sharing the cores: torch's own thread pool would
# oversubscribe them (a training example ran 21 s against 13 s with one thread, beside one busy core). Only
# torch's: OMP_NUM_THREADS=1 for the whole worker slowed the rest of the suite (pyarrow sizes its pool by it too).
# The training subprocesses get the same from helpers.training_env().
if os.environ.get("PYTEST_XDIST_WORKER"):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

# The kernels' own tests are on small inputs, which a process runs as Python while numba is not loaded
# (packer.jit): the suite runs every kernel compiled, as it did before that; tests/test_jit.py checks the
# Python side against it, and a small build's process without numba.
os.environ.setdefault("PACKER_JIT", "numba")

from packer.tokens.tokenize import TokenizerInfo, load_tokenizer

from .helpers import DEMO_BUILD_OPTIONS, DEMO_INPUTS, DEMO_TOKENIZER


@pytest.fixture(scope="session", autouse=True)
def _packer_cache(tmp_path_factory) -> None:
    """packer's cache of qualified tiktoken cores (:func:`packer.tokens.tiktoken_core.cache_dir`) in the run's own
    folder, for the tests' subprocesses too: the tests neither read nor fill the user's ~/.cache."""
    os.environ["PACKER_CACHE_DIR"] = str(tmp_path_factory.mktemp("packer_cache"))


@pytest.fixture(scope="session")
def demo_tok() -> TokenizerInfo:
    return load_tokenizer(DEMO_TOKENIZER)


@pytest.fixture(scope="session")
def demo_output(tmp_path_factory, demo_tok) -> Path:
    """The bundled demo data (Alpaca and ShareGPT) built once per test run with the demo tokenizer,
    ``DEMO_BUILD_OPTIONS``: read it only. A test that changes an output copies it (shutil.copytree)."""
    from packer import build
    from packer.inspect.verify import verify

    out = tmp_path_factory.mktemp("demo_output") / "shards"
    build(DEMO_INPUTS, out, tokenizer=demo_tok, **DEMO_BUILD_OPTIONS)
    assert verify(out) == []
    return out
