"""Tests for packer.pipeline.pack: validity of every packing, agreement with plain-Python
references, packing quality against the lower bound, and input validation."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from packer.pipeline import pack as pack_module
from packer.pipeline.pack import ALGORITHMS, efficiency, lower_bound, pack, rows_from_bins

# --------------------------------------------------------------------------- helpers


def processing_order(lengths: np.ndarray, algorithm: str) -> np.ndarray:
    """The order in which the algorithm places documents (so opens rows)."""
    if algorithm == "nextfit":
        return np.arange(len(lengths))
    return np.argsort(-lengths, kind="stable")


def assert_valid_packing(lengths, seq_len: int, bins: np.ndarray, algorithm: str) -> None:
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    assert isinstance(bins, np.ndarray)
    assert bins.dtype == np.int64
    assert bins.shape == (n,)
    order, offsets = rows_from_bins(bins)
    # Every document exactly once.
    assert np.array_equal(np.sort(order), np.arange(n))
    if n == 0:
        assert offsets.tolist() == [0]
        return
    n_rows = int(bins.max()) + 1
    assert bins.min() == 0
    # Contiguous numbering: no empty row.
    sizes = np.bincount(bins, minlength=n_rows)
    assert (sizes > 0).all()
    assert np.array_equal(np.diff(offsets), sizes)
    # No row over seq_len.
    loads = np.zeros(n_rows, np.int64)
    np.add.at(loads, bins, lengths)
    assert loads.max() <= seq_len
    assert loads.sum() == lengths.sum()
    # Rows numbered in creation order: in placement order, row r first appears
    # before row r + 1.
    placed = bins[processing_order(lengths, algorithm)]
    first = np.full(n_rows, n)
    np.minimum.at(first, placed, np.arange(n))
    assert (np.diff(first) > 0).all()
    assert first[0] == 0


def ref_best_fit_decreasing(lengths: list[int], seq_len: int) -> list[int]:
    """Plain-Python BFD with the documented tie rule: among rows with the least
    sufficient room, the one that reached that room most recently."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    room: list[int] = []
    stamp: list[int] = []  # placement step at which the row got its current room
    bins = [0] * len(lengths)
    for step, doc in enumerate(order):
        size = lengths[doc]
        fitting = [b for b in range(len(room)) if room[b] >= size]
        if fitting:
            b = min(fitting, key=lambda b: (room[b], -stamp[b]))
        else:
            b = len(room)
            room.append(seq_len)
            stamp.append(step)
        room[b] -= size
        stamp[b] = step
        bins[doc] = b
    return bins


def ref_first_fit_decreasing(lengths: list[int], seq_len: int) -> list[int]:
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    room: list[int] = []
    bins = [0] * len(lengths)
    for doc in order:
        size = lengths[doc]
        b = next((b for b in range(len(room)) if room[b] >= size), len(room))
        if b == len(room):
            room.append(seq_len)
        room[b] -= size
        bins[doc] = b
    return bins


def ref_next_fit(lengths: list[int], seq_len: int) -> list[int]:
    bins, b, used = [], 0, 0
    for size in lengths:
        if used + size > seq_len:
            b, used = b + 1, 0
        used += size
        bins.append(b)
    return bins


REFERENCES = {
    "bfd": ref_best_fit_decreasing,
    "ffd": ref_first_fit_decreasing,
    "nextfit": ref_next_fit,
}


def long_tailed(rng: np.random.Generator, n: int, seq_len: int, sigma: float = 1.0) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(np.log(300), sigma, n)), 1, seq_len).astype(np.int64)


def _adversarial() -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(1234)
    return {
        "empty": (np.zeros(0, np.int64), 8),
        "single": (np.array([5]), 8),
        "all_equal": (np.full(1000, 3), 10),
        "all_seq_len": (np.full(500, 64), 64),
        "all_one": (np.ones(1000, np.int64), 64),
        "seq_len_1": (np.ones(300, np.int64), 1),
        "one_huge_many_small": (np.concatenate([[4096], rng.integers(1, 20, 2000)]), 4096),
        "huge_at_end": (np.concatenate([rng.integers(1, 20, 2000), [4095, 4096]]), 4096),
        "just_over_half": (np.full(200, 51), 100),
        "halves_and_more": (rng.choice([50, 51, 49], 999), 100),
        "random_uniform": (rng.integers(1, 101, 3000), 100),
        "random_small_seq": (rng.integers(1, 8, 3000), 7),
        "long_tailed": (long_tailed(rng, 5000, 4096, 1.5), 4096),
    }


ADVERSARIAL = _adversarial()


# --------------------------------------------------------------------------- validity


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_valid_and_deterministic(algorithm: str, case: str) -> None:
    lengths, seq_len = ADVERSARIAL[case]
    bins = pack(lengths, seq_len, algorithm)
    assert_valid_packing(lengths, seq_len, bins, algorithm)
    assert np.array_equal(bins, pack(lengths.copy(), seq_len, algorithm))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_random_valid(algorithm: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        seq_len = int(rng.integers(1, 300))
        lengths = rng.integers(1, seq_len + 1, int(rng.integers(0, 400)))
        assert_valid_packing(lengths, seq_len, pack(lengths, seq_len, algorithm), algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_known_row_counts(algorithm: str) -> None:
    # Inputs whose optimum is obvious and that every algorithm must reach.
    assert pack(np.full(1000, 3), 10, algorithm).max() + 1 == 334  # 3 per row
    assert pack(np.full(500, 64), 64, algorithm).max() + 1 == 500
    assert pack(np.ones(1000, np.int64), 64, algorithm).max() + 1 == 16
    assert pack(np.ones(300, np.int64), 1, algorithm).max() + 1 == 300
    assert pack(np.full(200, 51), 100, algorithm).max() + 1 == 200


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.uint64])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_integer_dtypes_and_lists(algorithm: str, dtype: type) -> None:
    lengths = np.random.default_rng(3).integers(1, 101, 500)
    expected = pack(lengths, 100, algorithm)
    assert np.array_equal(pack(lengths.astype(dtype), 100, algorithm), expected)
    assert np.array_equal(pack(lengths.tolist(), np.int32(100), algorithm), expected)
    # Strided views must not confuse the kernels.
    doubled = np.repeat(lengths, 2)[::2]
    assert np.array_equal(pack(doubled, 100, algorithm), expected)
    # Zero-copy Arrow columns arrive read-only.
    frozen = lengths.copy()
    frozen.flags.writeable = False
    assert np.array_equal(pack(frozen, 100, algorithm), expected)


def test_empty() -> None:
    for algorithm in ALGORITHMS:
        for empty in ([], np.zeros(0, np.int32), np.zeros(0)):
            bins = pack(empty, 8, algorithm)
            assert bins.dtype == np.int64 and bins.shape == (0,)
    order, offsets = rows_from_bins(np.zeros(0, np.int64))
    assert order.shape == (0,) and offsets.tolist() == [0]
    assert lower_bound([], 8) == 0
    assert efficiency([], 0, 8) == 1.0


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_matches_python_reference(algorithm: str) -> None:
    ref = REFERENCES[algorithm]
    rng = np.random.default_rng(11)
    for _ in range(300):
        seq_len = int(rng.integers(1, 40))
        n = int(rng.integers(0, 60))
        # Few distinct lengths make ties between equal-room rows common.
        lengths = rng.integers(1, min(seq_len, int(rng.integers(1, 12))) + 1, n)
        assert pack(lengths, seq_len, algorithm).tolist() == ref(lengths.tolist(), seq_len)


def test_bfd_tie_rule_example() -> None:
    # After the two 8s (seq_len 10) rows 0 and 1 both have 2 tokens of room. The
    # first 1 goes to row 1, the latest to reach room 2 (LIFO); the second 1 then
    # best-fits row 1 (room 1), and the last two fill row 0.
    bins = pack([8, 8, 1, 1, 1, 1], 10)
    assert bins.tolist() == [0, 1, 1, 1, 0, 0]
    assert bins.tolist() == ref_best_fit_decreasing([8, 8, 1, 1, 1, 1], 10)


@pytest.mark.parametrize("algorithm", ["bfd", "ffd"])
def test_argsort_path_matches_counting_sort_path(algorithm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    lengths = long_tailed(rng, 3000, 4096, 1.5)
    counting = pack(lengths, 4096, algorithm)
    monkeypatch.setattr(pack_module, "_uses_counting_sort", lambda n, seq_len: False)
    assert np.array_equal(pack(lengths, 4096, algorithm), counting)
    # seq_len far above n takes the argsort path for real.
    big = rng.integers(1, 10**7, 200)
    monkeypatch.undo()
    assert pack(big, 10**7, "ffd").tolist() == ref_first_fit_decreasing(big.tolist(), 10**7)


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize("algorithm", ["bfd", "ffd"])
def test_close_to_lower_bound(algorithm: str) -> None:
    # Observed on 20 seeds (sigma 1.0 and 1.5): rows == lower_bound or
    # lower_bound + 1. The brief's lower_bound * 1.01 + 1 (~25 rows of slack) is
    # far looser than needed; assert 2 rows of slack instead.
    for seed, sigma in [(0, 1.0), (1, 1.5), (2, 1.2)]:
        lengths = long_tailed(np.random.default_rng(seed), 20_000, 4096, sigma)
        n_rows = int(pack(lengths, 4096, algorithm).max()) + 1
        lb = lower_bound(lengths, 4096)
        assert lb <= n_rows <= lb + 2
        assert efficiency(lengths, n_rows, 4096) > 0.999


def test_nextfit_keeps_order() -> None:
    lengths = long_tailed(np.random.default_rng(9), 20_000, 4096)
    bins = pack(lengths, 4096, "nextfit")
    assert set(np.diff(bins).tolist()) <= {0, 1}
    # Each row break happens only because the next document did not fit.
    order, offsets = rows_from_bins(bins)
    assert np.array_equal(order, np.arange(len(lengths)))
    loads = np.add.reduceat(lengths, offsets[:-1])
    assert (loads[:-1] + lengths[offsets[1:-1]] > 4096).all()


# --------------------------------------------------------------------------- helpers API


def test_rows_from_bins() -> None:
    order, offsets = rows_from_bins(np.array([1, 1, 2, 0, 0, 2, 1]))
    assert order.dtype == np.int64 and offsets.dtype == np.int64
    assert order.tolist() == [3, 4, 0, 1, 6, 2, 5]
    assert offsets.tolist() == [0, 2, 5, 7]
    with pytest.raises(ValueError, match="bins must be >= 0"):
        rows_from_bins(np.array([0, -1]))
    with pytest.raises(ValueError, match="integer array"):
        rows_from_bins(np.array([0.0, 1.0]))


def test_lower_bound_and_efficiency() -> None:
    assert lower_bound([5, 3, 4, 2, 6], 8) == 3
    assert lower_bound([8, 8], 8) == 2
    assert lower_bound([8, 8, 1], 8) == 3
    assert efficiency([5, 3, 4, 2, 6], 3, 8) == pytest.approx(20 / 24)
    assert efficiency([8, 8], 2, 8) == 1.0


def test_module_docstring_example() -> None:
    result = doctest.testmod(pack_module)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("lengths", "seq_len", "message"),
    [
        ([3, 0, 2], 8, r"lengths must be >= 1: document 1 has length 0"),
        ([3, -2, 2], 8, r"lengths must be >= 1: document 1 has length -2"),
        ([3, 9, 2], 8, r"lengths must be <= seq_len \(8\): document 1 has length 9"),
        (np.array([3.0, 2.0]), 8, r"lengths must be an integer array, got dtype float64"),
        (np.array([True, False]), 8, r"lengths must be an integer array, got dtype bool"),
        (np.ones((2, 3), np.int64), 8, r"lengths must be a 1-D array, got shape \(2, 3\)"),
        (np.int64(3), 8, r"lengths must be a 1-D array, got shape \(\)"),
        ([1, 2], 0, r"seq_len must be an integer >= 1, got 0"),
        ([1, 2], -4, r"seq_len must be an integer >= 1, got -4"),
        ([1, 2], 8.0, r"seq_len must be an integer >= 1, got 8.0"),
        ([1, 2], True, r"seq_len must be an integer >= 1, got True"),
    ],
)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_validation(lengths, seq_len, message: str, algorithm: str) -> None:
    with pytest.raises(ValueError, match=message):
        pack(lengths, seq_len, algorithm)


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match=r"unknown packing algorithm 'best'; expected one of bfd, ffd, nextfit"):
        pack([1, 2], 8, "best")
