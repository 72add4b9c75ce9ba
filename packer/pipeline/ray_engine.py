"""The ``ray`` engine: a build's tasks as a Ray Data job, on one machine or a Ray cluster.

:class:`RayEngine` runs the same picklable tasks as :class:`~packer.pipeline.engine.ProcessEngine` (scanning the
inputs, mapping parts, writing shards), the way Ray's own LLM batch stages and NeMo Curator run theirs:
the calls become a ``ray.data`` dataset of rows ``{"i": index, "call": pickled (fn, args)}``, one block
a row, mapped with ``map_batches`` over a pool of actors (``concurrency=workers``, ``batch_size=1``).
Each actor unpickles a call, runs it and hands back the pickled result, or the pickled exception; the
driver puts the results back in the order of the calls by ``i``, never by arrival, so the output is
byte for byte the output of a single-process build.

Why actors and not plain tasks: an actor is a process that lives for the whole stage, so the tokenizer
and template a part needs are loaded once per actor (:func:`packer.pipeline.part._loaded` keeps them per process),
not once per part, and numba's kernels are loaded once per actor too.

Errors are handled as :mod:`packer.pipeline.engine` says: a call that raised for a passing reason (an I/O error),
or whose actor died, is run again, up to :data:`~packer.pipeline.engine.RETRIES` times; a
:class:`~packer.read.records.BuildError` or :class:`~packer.tokens.templates.TemplateDrift` is the input's and is
raised as it is, the first in the order of the calls.

Ray is started here only where none is running: ``ray.init(address=$RAY_ADDRESS)`` where that is set
(a cluster started with ``ray start``), else a local Ray of this machine's cores, shut down again by
:meth:`RayEngine.close`; a Ray the caller started (``ray.init()`` before the build) is used and left
running. The pool is never larger than the cluster's CPUs.

With several machines, every node must see the same files: the inputs, the tokenizer, and the work
directory the tasks write their spills and shards into (the staging folder beside the output, or
``--scratch``), so put them on a filesystem every node mounts (NFS, a shared volume).

A worked example (the driver waits; the results come back in the order of the calls)::

    >>> import ray                                                                 # doctest: +SKIP
    >>> ray.init(num_cpus=2, include_dashboard=False)                              # doctest: +SKIP
    >>> engine = RayEngine(2)                                                      # doctest: +SKIP
    >>> engine.map(divmod, [(7, 2), (9, 4), (5, 5)])                               # doctest: +SKIP
    [(3, 1), (2, 1), (1, 0)]
    >>> engine.close()  # leaves the Ray started above running                    # doctest: +SKIP

or, for a whole build: ``packer build data.jsonl --engine ray --workers 8`` (``pip install 'packer[ray]'``).
"""

from __future__ import annotations

import os
import pickle
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any

from ..read.records import BuildError
from .engine import RETRIES, OnDone, _fatal

if TYPE_CHECKING:
    import pyarrow as pa

#: what a build without Ray says to ``--engine ray``
NEEDS_RAY = "--engine ray needs Ray: pip install 'packer[ray]'"


def _ray() -> Any:
    """The ``ray`` module, imported here only: packer runs without Ray for every other engine."""
    try:
        import ray
        import ray.data  # ray[data]: a bare `pip install ray` lacks what Ray Data imports
    except ImportError:
        raise BuildError(NEEDS_RAY) from None
    return ray


def _cpu_count() -> int:
    """The cores this process may run on (a container's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _free_cpus(ray: Any, wanted: int, patience: float = 3.0) -> int:
    """The cluster's free CPUs, waiting up to ``patience`` seconds for ``wanted`` of them (at most all it
    has): Ray frees the CPUs of the actors of a job that just ended (the stage before, the build before)
    a moment after the job ends, and a pool sized on that moment would be smaller than it need be."""
    wanted = min(wanted, int(ray.cluster_resources().get("CPU", 0)))
    deadline = time.monotonic() + patience
    while True:
        free = int(ray.available_resources().get("CPU", 0))
        if free >= wanted or time.monotonic() > deadline:
            return free
        time.sleep(0.1)


class RemoteTraceback(Exception):
    """The traceback of an error raised in an actor: the ``__cause__`` of the error the driver re-raises,
    as :mod:`concurrent.futures` does for a worker process's."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _outcome(call: bytes) -> tuple[bool, bytes, str]:
    """Run one pickled call: (ok, the pickled result or exception, the exception's traceback)."""
    try:
        fn, args = pickle.loads(call)
        return True, pickle.dumps(fn(*args), protocol=pickle.HIGHEST_PROTOCOL), ""
    except BaseException as e:  # every error goes back to the driver, which decides (fatal or retry)
        tb = "".join(traceback.format_exception(e))
        try:
            data = pickle.dumps(e, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(data)  # an exception whose __init__ wants other arguments pickles but does not load
        except Exception:
            # keep what matters to the driver: fatal or not, and the message
            stand_in = (BuildError if _fatal(e) else RuntimeError)(f"{type(e).__name__}: {e}")
            data = pickle.dumps(stand_in, protocol=pickle.HIGHEST_PROTOCOL)
        return False, data, tb


class _Worker:
    """One actor of the pool (``map_batches`` makes ``concurrency`` of them): runs the calls of its batch
    (one, ``batch_size=1``) and never raises, so that one failed call does not fail the whole dataset."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        done = [_outcome(call) for call in batch.column("call").to_pylist()]
        return pa.table({
            "i": batch.column("i"),
            "ok": pa.array([ok for ok, _, _ in done], pa.bool_()),
            # large_binary: a shard's rows and offsets may pass 2 GiB in a long build
            "out": pa.array([data for _, data, _ in done], pa.large_binary()),
            "tb": pa.array([tb for _, _, tb in done], pa.large_string()),
        })


def _no_restarts() -> dict[str, Any]:
    """``max_restarts=0`` for the actors, where this Ray's ``map_batches`` still takes it. Ray Data's default
    restarts a dead actor and retries its call forever: a call that kills its worker every time (out of
    memory, a crash in native code) would hang the build. Without restarts the round fails, and
    :meth:`RayEngine.map` runs the unfinished calls again, :data:`~packer.pipeline.engine.RETRIES` times at most, as
    ProcessEngine does. (Ray 2.5x and later warn that such keyword arguments are to go, and name no
    replacement for this one; where they are gone, Ray's own fault tolerance applies.)"""
    import inspect

    from ray.data import Dataset

    params = inspect.signature(Dataset.map_batches).parameters.values()
    return {"max_restarts": 0} if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params) else {}


class _PoolLost(Exception):
    """The dataset failed as a whole (an actor died, a node was lost): its unfinished calls are run again."""


class RayEngine:
    """Tasks as a Ray Data ``map_batches`` over a pool of ``workers`` actors (at most the cluster's CPUs)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise BuildError(f"--workers must be at least 1, not {workers}")
        ray = _ray()
        self._started = False
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            if address:  # a cluster started with `ray start`: close() ends this connection, not the cluster
                ray.init(address=address)
            else:  # a Ray of this machine alone: "local" so that a stray `ray start` elsewhere is not joined
                ray.init(address="local", num_cpus=_cpu_count(), include_dashboard=False)
            self._started = True
        self.workers = max(1, min(workers, _free_cpus(ray, workers)))
        # the tokenizer's threads: the CPUs each actor can have, as ProcessEngine gives each process
        # (on a cluster, the cluster's CPUs shared by the pool; at least one)
        threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // self.workers)
        self._env = {"RAYON_NUM_THREADS": str(threads), "RAYON_RS_NUM_CPUS": str(threads),
                     "TOKENIZERS_PARALLELISM": "true" if threads > 1 else "false"}
        #: times the dataset failed as a whole (an actor died) and its unfinished calls were run again
        self.restarts = 0

    # -- one round: the given calls as one dataset ---------------------------------------------------------

    def _round(self, blobs: dict[int, bytes]) -> Iterator[tuple[int, bool, bytes, str]]:
        """Run the pickled calls ``blobs`` (index -> call) as one Ray Data job: (index, ok, data, traceback)
        as each finishes. Raises :class:`_PoolLost` where the job itself failed."""
        ray = _ray()
        from ray.data import ActorPoolStrategy

        ds = ray.data.from_items([{"i": i, "call": b} for i, b in sorted(blobs.items())],
                                 override_num_blocks=len(blobs))  # a block per call: any actor can take any call
        with warnings.catch_warnings():  # Ray 2.5x deprecates max_restarts=... (see _no_restarts); known
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ds = ds.map_batches(
                _Worker, batch_size=1, batch_format="pyarrow",
                # concurrency=pool as a strategy, to also say: one call queued per actor at a time, so a free
                # actor takes the next call rather than it waiting behind a long one in another actor's queue
                compute=ActorPoolStrategy(size=min(self.workers, len(blobs)), max_tasks_in_flight_per_actor=1),
                num_cpus=1, runtime_env={"env_vars": self._env}, **_no_restarts(),
            )
        ds.context.enable_progress_bars = False  # packer draws its own progress (on_done)
        ds.context.print_on_execution_start = False
        rows = iter(ds.iter_rows())
        try:
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    return
                except ray.exceptions.RayError as e:  # the job's (an actor died), not a bug of the driver's
                    raise _PoolLost(f"{type(e).__name__}: {e}") from e
                yield int(row["i"]), bool(row["ok"]), row["out"], row["tb"]
        finally:
            close = getattr(rows, "close", None)
            if close is not None:  # stops the job where map() is done with it early (a fatal error)
                close()

    # -- the protocol --------------------------------------------------------------------------------------

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], on_done: OnDone | None = None) -> list[Any]:
        """``[fn(*args) for args in calls]``, in the order of ``calls``. ``on_done(i, result)`` is called as
        each result reaches the driver (streamed from the dataset, in the order they finish)."""
        n = len(calls)
        if n == 0:
            return []
        blobs = {i: pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL) for i, args in enumerate(calls)}
        results: dict[int, Any] = {}
        errors: dict[int, BaseException] = {}  # final: fatal, or out of retries
        attempts = [0] * n
        todo = list(range(n))
        while todo:
            retry: set[int] = set()
            try:
                # closing(): a break (all before the first error are in) stops the job now, not when collected
                with closing(self._round({i: blobs[i] for i in todo})) as outcomes:
                    for i, ok, data, tb in outcomes:
                        if ok:
                            results[i] = pickle.loads(data)
                            if on_done is not None:
                                on_done(i, results[i])
                        else:
                            e = pickle.loads(data)
                            e.__cause__ = RemoteTraceback(tb)
                            if _fatal(e) or attempts[i] >= RETRIES:
                                errors[i] = e
                            else:
                                attempts[i] += 1
                                retry.add(i)
                        if errors:  # what comes after the first error is moot, once all before it are in
                            first = min(errors)
                            if all(j in results or j in errors or j in retry for j in todo if j < first):
                                break
            except _PoolLost as e:
                self.restarts += 1
                if self.restarts > RETRIES:
                    raise BuildError(f"the Ray job of a build stage failed {self.restarts} times (an actor "
                                     f"killed, or out of memory?): {e}") from e.__cause__
            # again: what failed for a passing reason, or was lost with the job, before the first error
            first = min(errors, default=n)
            todo = [j for j in todo if j < first and j not in results and j not in errors]
        if errors:
            raise errors[min(errors)]
        return [results[i] for i in range(n)]

    def close(self) -> None:
        """Shut Ray down where this engine started it (a Ray the caller started keeps running)."""
        if self._started:
            _ray().shutdown()
            self._started = False


__all__ = ["NEEDS_RAY", "RayEngine"]
