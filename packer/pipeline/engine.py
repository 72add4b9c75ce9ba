"""Engines: who runs a build's tasks (scanning inputs, mapping parts, writing shards).

A task is a picklable top-level function and its arguments (:func:`packer.pipeline.part.map_part`,
:func:`packer.read.plan.scan_file`, :func:`packer.pipeline.write.write_shards`); an engine runs a list of them
and returns their results in the order of the list, never in the order they finish, so the
output cannot depend on which worker was quicker. The tasks themselves are the same whatever runs
them, and so are the bytes they write.

=============  ===================  ====================================================
engine         ``build(...)``       runs the tasks
=============  ===================  ====================================================
``process``    ``workers=1``        in this process, one after the other (the default: on a few cores
                                    the tokenizer's threads keep them busy)
``process``    ``workers=N``        in N worker processes: every core of one machine
``ray``        ``engine="ray"``     as Ray Data tasks on a Ray cluster (``pip install packer[ray]``;
                                    :mod:`packer.pipeline.ray_engine`)
=============  ===================  ====================================================

A task that fails for a reason that may pass (its worker was killed, an I/O error) is run again,
up to :data:`RETRIES` times; it rewrites its own files (named by its part's tag) from the start.
A :class:`~packer.read.records.BuildError` (bad input, ``--strict``) or a
:class:`~packer.tokens.templates.TemplateDrift` is the input's, so it is not retried: the engine waits for
the tasks before it in the list and raises the first such error in list order, the one a
single-process build would have met first.

    >>> LocalEngine().map(divmod, [(7, 2), (9, 4)])
    [(3, 1), (2, 1)]
"""

from __future__ import annotations

import errno
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from ..options import ENGINES
from ..read.records import BuildError

#: times a task that failed for a passing reason is run again
RETRIES = 2

OnDone = Callable[[int, Any], None]


class Engine(Protocol):
    #: how many tasks run at once
    workers: int

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], on_done: OnDone | None = None) -> list[Any]:
        """``[fn(*args) for args in calls]``; ``on_done(i, result)`` as each finishes (any order)."""
        ...

    def close(self) -> None: ...


def _fatal(e: BaseException) -> bool:
    """An error of the input or of the user's, which running the task again cannot mend."""
    from ..tokens.templates import TemplateDrift
    from ..tokens.tiktoken_core import TokenizerDrift

    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)  # a full disk stays full
    return full or isinstance(e, (BuildError, TemplateDrift, TokenizerDrift, KeyboardInterrupt, SystemExit,
                                  MemoryError))


class LocalEngine:
    """Tasks one after the other, in this process."""

    workers = 1

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], on_done: OnDone | None = None) -> list[Any]:
        out = []
        for i, args in enumerate(calls):
            r = fn(*args)
            if on_done is not None:
                on_done(i, r)
            out.append(r)
        return out

    def close(self) -> None:
        pass


#: prctl(2) option: the signal this process gets when its parent dies (Linux)
_PR_SET_PDEATHSIG = 1
#: seconds between a worker's checks that the build that started it is still alive
PARENT_POLL_S = 1.0


def _init_worker(env: dict[str, str], parent: int) -> None:
    os.environ.update(env)
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """End this worker when ``parent`` (the build) dies, even by SIGKILL, which lets it clean up nothing: a worker
    blocked on the pool's pipes would otherwise wait for ever, holding its memory (and the resource tracker, which
    exits when its last writer has gone). On Linux the kernel sends SIGKILL at once (``PR_SET_PDEATHSIG``); a
    thread that sees this process's parent change covers the other systems (and a parent that died before the
    prctl)."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (AttributeError, OSError):
            pass

    def watch() -> None:
        import time

        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)  # reparented: the build is gone, and nobody will read what this worker makes

    threading.Thread(target=watch, name="packer-parent-watch", daemon=True).start()


class ProcessEngine:
    """Tasks in ``workers`` spawned processes (no fork: the driver holds the tokenizer's threads). Each
    worker's tokenizer (tokenizers' Rust threads, or the tiktoken core's) gets ``cores // workers`` threads (at
    least one), so that the pool does not ask for more threads than the machine has; the workers share numba's
    on-disk cache, so only the first compiles a kernel. A worker ends when the build's process dies, even by
    SIGKILL (:func:`_die_with_parent`); on Linux that signal comes when the thread that started the worker ends,
    so a pool is used from the thread that made it, which outlives it (``build`` closes its pool before it
    returns)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise BuildError(f"--workers must be at least 1, not {workers}")
        self.workers = workers
        threads = max(1, (os.cpu_count() or 1) // workers)
        self._env = {"RAYON_NUM_THREADS": str(threads), "RAYON_RS_NUM_CPUS": str(threads),
                     "TOKENIZERS_PARALLELISM": "true" if threads > 1 else "false"}
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self._env, os.getpid()))
        return self._pool

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], on_done: OnDone | None = None) -> list[Any]:
        n = len(calls)
        results: list[Any] = [None] * n
        attempts = [0] * n
        errors: dict[int, BaseException] = {}
        pending: dict[Future, int] = {}

        def submit(i: int) -> None:
            pending[self._executor().submit(fn, *calls[i])] = i

        for i in range(n):
            submit(i)
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    if fut not in pending:  # resubmitted with the rest after a broken pool
                        continue
                    i = pending.pop(fut)
                    try:
                        results[i] = fut.result()
                    except BrokenProcessPool as e:  # a worker died: every task still in the pool is lost
                        self.restarts += 1
                        if self.restarts > RETRIES:
                            raise BuildError(
                                f"a build worker died {self.restarts} times (killed, or out of memory?), or could not "
                                "start: a Python script that builds with workers must call build() under "
                                f"`if __name__ == \"__main__\":` (workers are spawned and import the script): {e}"
                            ) from None
                        lost = [i, *pending.values()]
                        pending.clear()
                        self._shutdown(cancel=True)
                        for j in sorted(lost):
                            if not errors or j < min(errors):
                                submit(j)
                        break
                    except BaseException as e:
                        if _fatal(e) or attempts[i] >= RETRIES:
                            errors[i] = e
                            first = min(errors)
                            for f, j in list(pending.items()):  # what comes after the first error is moot
                                if j > first and f.cancel():
                                    del pending[f]
                        else:
                            attempts[i] += 1
                            submit(i)
                    else:
                        if on_done is not None:
                            on_done(i, results[i])
                if errors and not any(j < min(errors) for j in pending.values()):
                    break
        except BaseException:
            self._shutdown(cancel=True)
            raise
        if errors:
            self._shutdown(cancel=True)
            raise errors[min(errors)]
        return results

    def _shutdown(self, cancel: bool = False) -> None:
        if self._pool is not None:
            # on an error or Ctrl-C the tasks under way are moot: stop their workers rather than let them run on
            procs = list((getattr(self._pool, "_processes", None) or {}).values()) if cancel else []
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.join(5)
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self._shutdown()


def make_engine(name: str, workers: int) -> Engine:
    """The engine ``name`` (:data:`ENGINES`) with ``workers`` tasks at once."""
    if name not in ENGINES:
        raise BuildError(f"unknown engine {name!r}; choose {'|'.join(ENGINES)}")
    if workers < 1:
        raise BuildError(f"--workers must be at least 1, not {workers}")
    if name == "ray":
        from .ray_engine import RayEngine

        return RayEngine(workers)
    return ProcessEngine(workers) if workers > 1 else LocalEngine()


__all__ = ["ENGINES", "RETRIES", "Engine", "LocalEngine", "ProcessEngine", "make_engine"]
