"""The ``ray`` engine (packer.pipeline.ray_engine): results in the order of the calls, errors as the other engines
raise them, and a build on Ray byte-identical to the single-process build. One local Ray of 2 CPUs for
the module (starting Ray costs ~10 s, each stage's actor pool a few seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from packer import BuildError, build
from packer.pipeline.engine import make_engine

from .helpers import output_files
from .test_stages import mixed  # noqa: F401  (the fixture: duplicates in different parts, rejects)

# one Ray cluster at a time: under pytest-xdist (--dist loadgroup) the module runs on one worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]
ray = pytest.importorskip("ray", reason="ray[data] is not installed (pip install 'packer[ray]')")



@pytest.fixture(scope="module")
def cluster():
    """A local Ray started by the test, as a user would before a build: the engine must leave it running."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _fails_once(marker: str, x: int) -> int:
    """OSError the first time it is called with ``marker`` (the marker file says it was), then ``2 * x``."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise OSError("a passing failure")
    return 2 * x


def _fatal_at_one(log: str, x: int) -> int:
    """BuildError for ``x == 1`` (each such call noted in the file ``log``), else ``x``."""
    if x == 1:
        with open(log, "a") as f:
            f.write("run\n")
        raise BuildError("record 3: bad input")
    return x



def test_results_in_the_order_of_the_calls(cluster):
    from packer.pipeline.ray_engine import RayEngine

    engine = RayEngine(2)
    done: list[tuple[int, tuple[int, int]]] = []
    try:
        assert engine.map(divmod, [(7, 2), (9, 4), (5, 5)], lambda i, r: done.append((i, r))) == [(3, 1), (2, 1),
                                                                                                  (1, 0)]
        assert sorted(done) == [(0, (3, 1)), (1, (2, 1)), (2, (1, 0))]  # each once, in whatever order they came
        assert engine.map(divmod, []) == []
    finally:
        engine.close()
    assert ray.is_initialized(), "the engine shut down a Ray it did not start"
    assert RayEngine(64).workers == 2, "a pool larger than the cluster's CPUs"


def test_a_fatal_error_is_raised_not_retried(cluster, tmp_path):
    engine = make_engine("ray", 2)
    log = tmp_path / "runs"
    with pytest.raises(BuildError, match="record 3: bad input") as raised:
        engine.map(_fatal_at_one, [(str(log), 0), (str(log), 1), (str(log), 2)])
    assert log.read_text() == "run\n", "a BuildError was run again"
    assert "_fatal_at_one" in str(raised.value.__cause__), "the actor's traceback is the error's cause"


def test_a_passing_failure_is_run_again(cluster, tmp_path):
    engine = make_engine("ray", 2)
    marker = str(tmp_path / "failed")
    assert engine.map(_fails_once, [(str(tmp_path / "never"), 1), (marker, 2), (str(tmp_path / "never"), 3)]) == [
        2, 4, 6]
    assert Path(marker).exists()


def test_without_ray_the_engine_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(BuildError, match=r"--engine ray needs Ray: pip install 'packer\[ray\]'"):
        make_engine("ray", 2)


def test_a_build_on_ray_is_the_single_process_build(cluster, mixed, tmp_path, demo_tok):  # noqa: F811
    # one build (a Ray Data job per stage costs seconds): duplicates across parts, a truncation, bad records
    options = {"dedupe": True, "overlong": "truncate"}
    plain = build(mixed, tmp_path / "plain", tokenizer=demo_tok, seq_len=512, **options)
    on_ray = build(mixed, tmp_path / "ray", tokenizer=demo_tok, engine="ray", workers=2, part_size=20_000 / 2**20,
                   seq_len=512, **options)
    assert plain["counts"]["duplicates"] >= 3 and sum(plain["counts"]["rejected"].values()) >= 5
    assert plain["counts"]["truncated"] >= 1
    assert {k: v for k, v in on_ray.items() if k != "build_seconds"} == {
        k: v for k, v in plain.items() if k != "build_seconds"}
    assert output_files(tmp_path / "ray") == output_files(tmp_path / "plain")
    assert ray.is_initialized()
