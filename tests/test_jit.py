"""packer's numba kernels run as Python on small calls (:mod:`packer.jit`): the Python side gives what numba gives,
kernel by kernel through the functions that call them, and a whole build is the same bytes either way."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import numpy as np
import pytest

import packer.pipeline.build  # noqa: F401  (imports every module with a kernel)
from packer import jit
from packer.output.doctable import SeenTable
from packer.output.gather import gather_index
from packer.pipeline.pack import ALGORITHMS, pack, rows_from_bins
from packer.tokens.tokenize import byte_values, char_codes, token_roles

from .helpers import DEMO_INPUTS, DEMO_TOKENIZER
from .test_spans import make_spm

#: the kernels the tests below run both ways, by qualified name: a new kernel that may run as Python goes here
COVERED = {
    "packer.pipeline.pack._counting_order", "packer.pipeline.pack._first_marked_at_or_after",
    "packer.pipeline.pack._mark", "packer.pipeline.pack._bfd_kernel", "packer.pipeline.pack._ffd_kernel",
    "packer.pipeline.pack._unsort_by_length", "packer.pipeline.pack._nextfit_kernel",
    "packer.output.doctable._find_or_insert", "packer.output.doctable._rehash",
    "packer.output.gather._gather_ranges", "packer.tokens.tokenize._token_values",
    "packer.tokens.tokenize._control_values", "packer.tokens.tokenize._spread_to_bytes",
    "packer.tokens.spans._is_space", "packer.tokens.spans._nbytes", "packer.tokens.spans._added_at",
    "packer.tokens.spans._walk",
}


def kernels() -> dict[str, jit.Kernel]:
    return {f"{k.__module__}.{k.__qualname__}": k for name, m in list(sys.modules.items())
            if name.startswith("packer.") for k in vars(m).values() if isinstance(k, jit.Kernel)}


def both(monkeypatch: pytest.MonkeyPatch, f: Callable[..., object], *args: object) -> list[object]:
    """``f(*args)`` with every kernel as Python, then compiled."""
    out = []
    for mode in ("python", "numba"):
        monkeypatch.setenv("PACKER_JIT", mode)
        out.append(f(*args))
    return out


def same(a: object, b: object) -> None:
    if isinstance(a, tuple | list):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b and type(a) is type(b), (a, b)


def test_every_kernel_that_may_run_as_python_is_covered():
    found = {name for name, k in kernels().items() if k.python}
    assert found == COVERED, f"not run both ways here: {sorted(found - COVERED)}; gone: {sorted(COVERED - found)}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("n,seq_len", [(1, 16), (50, 64), (700, 300), (3, 1 << 17)])  # the last: argsort
def test_packing(monkeypatch, algorithm, n, seq_len):
    lengths = np.random.default_rng(n).integers(1, seq_len + 1, n)
    a, b = both(monkeypatch, lambda: (pack(lengths, seq_len, algorithm), rows_from_bins(pack(lengths, seq_len,
                                                                                             algorithm))))
    same(a, b)


def test_gather_index(monkeypatch):
    rng = np.random.default_rng(0)
    starts, lengths = rng.integers(0, 1000, 200), rng.integers(0, 20, 200)
    same(*both(monkeypatch, gather_index, starts, lengths))


def test_walk_of_pieces(monkeypatch, tmp_path):
    """The walk of a SentencePiece-style tokenizer's pieces (packer.tokens.spans): prepended ▁, byte fallback,
    rstrip/lstrip added tokens; and a walk that gives up (a piece of unknown length)."""
    from packer.tokens.spans import piece_spans, token_spans

    tok = make_spm(tmp_path)
    texts = [" lead", "<s>[INST] hi 😀 é", "<|user|>\n  Can you<|end|>\n<|assistant|>\n\n ok", "a \t<|sep|>b", ""]
    encs = tok.encode_batch(texts, add_special_tokens=False)
    ids = np.array([i for e in encs for i in e.ids], dtype=np.int64)
    offsets = np.cumsum([0, *(len(e.ids) for e in encs)])
    table = piece_spans(tok)
    a, b = both(monkeypatch, token_spans, table, texts, ids, offsets)
    assert a is not None
    same(a, b)
    table._width[ids[1]] = 0  # "▁lead" (or a piece of it) of unknown length: both give up
    assert both(monkeypatch, token_spans, table, texts, ids, offsets) == [None, None]


@pytest.mark.parametrize("seed", range(5))
def test_token_roles(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    segs = rng.integers(1, 6, 40)
    roles = rng.integers(1, 8, 40).astype(np.uint8)
    values = char_codes(roles, rng.random(40) < 0.3, rng.random(40) < 0.8, rng.random(40) < 0.1)
    chars = np.repeat(values, segs)
    cuts = np.unique(np.concatenate([[0], rng.integers(0, len(chars), 30), [len(chars)]]))
    starts, ends = cuts[:-1], cuts[1:]
    ends = np.where(rng.random(len(ends)) < 0.1, starts, ends)  # zero-width tokens
    control = rng.random(len(starts)) < 0.3
    same(*both(monkeypatch, token_roles, chars, starts, ends, control))


def test_byte_values(monkeypatch):
    texts = ["hé", "x", "", "naïve 你好 🤖", "\u3000end"]
    lengths = np.array([len(t) for t in texts])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    chars = np.arange(sum(lengths), dtype=np.uint8) * 3
    same(*both(monkeypatch, byte_values, chars, starts, texts))


def test_seen_table(monkeypatch):
    rng = np.random.default_rng(1)
    digests = [rng.bytes(16) for _ in range(300)]
    digests += digests[:50]  # seen again

    def run() -> list[int]:
        table = SeenTable(capacity=16)  # grows (rehashes) on the way
        return [table.first(d, i) for i, d in enumerate(digests)]

    same(*both(monkeypatch, run))


def test_a_build_is_the_same_bytes_as_python_and_compiled(monkeypatch, tmp_path):
    from packer import build

    outs = []
    for mode in ("python", "numba"):
        monkeypatch.setenv("PACKER_JIT", mode)
        out = tmp_path / mode
        build(DEMO_INPUTS, out, tokenizer=DEMO_TOKENIZER, seq_len=256, dedupe=True)
        outs.append(out)
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir())
    for name in names:
        a, b = ((o / name).read_bytes() for o in outs)
        if name == "manifest.json":
            a, b = ({k: v for k, v in json.loads(x).items() if k != "build_seconds"} for x in (a, b))
        assert a == b, name


def test_small_calls_run_as_python_out_of_the_budget(monkeypatch):
    monkeypatch.setenv("PACKER_JIT", "auto")
    monkeypatch.setattr(jit, "_left", [100])
    calls = []
    kernel = jit.njit()(lambda a: calls.append(len(a)) or len(a))  # as Python, the lambda runs and appends
    assert kernel(np.zeros(60)) == 60 and calls == [60]
    assert jit._left == [40] and kernel._dispatcher is None  # numba not even asked for a dispatcher
    assert jit.use_python(kernel, 40) and not jit.use_python(kernel, 1)  # the budget is spent


def test_packer_jit_must_be_known(monkeypatch):
    monkeypatch.setenv("PACKER_JIT", "fast")
    with pytest.raises(ValueError, match="PACKER_JIT"):
        gather_index(np.zeros(1), np.ones(1))
