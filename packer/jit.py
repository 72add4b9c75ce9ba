"""packer's numba kernels: compiled (or loaded from numba's cache) only once they pay for it.

A process's first numba kernel costs ~0.6 s before it runs: importing numba (~0.2 s), then, on the first call,
numba's typing and lowering registries (~0.25 s) and the kernel itself from the cache (~10-50 ms each). A small
input does not repay that: a one-record build called seven kernels with a few thousand elements in all. So
:func:`njit` returns a :class:`Kernel`, which runs a call as the plain Python function while the kernel has not
been loaded and the call is small, out of a work budget per process (:data:`PYTHON_BUDGET` elements: tens of
milliseconds of Python at most), and hands every other call to numba. The two give the same results: a kernel
is only written with what both do alike (the tests run each both ways), and one that is not (integer
arithmetic on small numpy ints, which numba widens and numpy does not) says ``python=False``.

``PACKER_JIT=numba`` sends every call to numba, ``PACKER_JIT=python`` every call of a ``python=True`` kernel to
Python (both for tests and timing); the default, ``auto``, does what is said above.

numba keeps compiled kernels beside the module (``__pycache__``) or, where site-packages is read-only (a wheel
install), in the user's cache folder (``~/.cache/numba``). Where neither can be written (a read-only container,
no home folder), ``cache=True`` raises and the kernels are compiled in each process instead (a few seconds more
a build). ``NUMBA_CACHE_DIR`` names another cache folder.

    >>> @njit()
    ... def total(a):
    ...     s = 0
    ...     for x in a:
    ...         s += x
    ...     return s
    >>> int(total(np.arange(4)))     # a small call: Python, numba not even imported for it
    6
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

#: elements (:func:`_work`) a process may run as Python before every call goes to numba: at ~0.4-0.6 us an
#: element, ~50-80 ms at most, against numba's ~0.6 s start-up; a one-record build takes ~10,000 (seq_len 4096)
PYTHON_BUDGET = 1 << 17

_lock = threading.RLock()
_left = [PYTHON_BUDGET]
#: set on a thread while a kernel runs as Python: the kernels it calls run as Python too, uncounted
_inside = threading.local()


def _mode() -> str:
    mode = os.environ.get("PACKER_JIT", "auto")
    if mode not in ("auto", "numba", "python"):
        raise ValueError(f"PACKER_JIT={mode!r}: expected auto, numba or python")
    return mode


def _work(*args: Any, **kwargs: Any) -> int:
    """A call's size, where the kernel does not say (``njit(work=...)``): its arrays' elements and its positive
    integers (lengths, key counts), each about one trip through the kernel's loop."""
    n = 0
    for a in (*args, *kwargs.values()):
        if isinstance(a, np.ndarray):
            n += a.size
        elif isinstance(a, int | np.integer) and not isinstance(a, bool) and a > 0:
            n += int(a)
    return n


def spend(units: int) -> bool:
    """Take ``units`` from the process's Python budget: True where they were left."""
    with _lock:
        if units > _left[0]:
            return False
        _left[0] -= units
        return True


def use_python(kernel: Kernel, units: int) -> bool:
    """Whether a call of ``units`` elements (:func:`_work`) is done in Python rather than by ``kernel`` (numba),
    taking them from the budget: while the kernel is not loaded and the budget has them (``PACKER_JIT`` aside).
    A kernel's own calls ask this; so does a caller with a Python equal of its own (``str.split``)."""
    mode = _mode()
    if mode != "auto":
        return mode == "python"
    return not kernel.ready and spend(units)


class Kernel:
    """A function numba compiles on demand (:func:`njit`); calls it as Python while that is cheaper."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any], python: bool,
                 work: Callable[..., int] | None = None) -> None:
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self.options = options
        #: whether the Python function gives what the compiled one gives (False: every call to numba)
        self.python = python
        #: a call's size in elements (trips through a loop), from its arguments
        self.work = work or _work
        self._dispatcher: Any = None

    @property
    def dispatcher(self) -> Any:
        """numba's dispatcher of the function (imports numba the first time)."""
        if self._dispatcher is None:
            with _lock:
                if self._dispatcher is None:
                    self._dispatcher = _dispatcher(self.py_func, self.options)
        return self._dispatcher

    @property
    def ready(self) -> bool:
        """Whether numba has this kernel loaded (compiled or read from its cache) for some argument types."""
        return self._dispatcher is not None and bool(self._dispatcher.overloads)

    @property
    def _numba_type_(self) -> Any:
        # how numba types this object where another kernel calls it: as its dispatcher
        return self.dispatcher._numba_type_

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.python and getattr(_inside, "active", False):
            return self.py_func(*args, **kwargs)
        if not (self.python and use_python(self, self.work(*args, **kwargs))):
            return self.dispatcher(*args, **kwargs)
        _inside.active = True
        try:
            return self.py_func(*args, **kwargs)
        finally:
            _inside.active = False

    def __repr__(self) -> str:
        return f"<packer kernel {self.__module__}.{self.__qualname__}>"


def _dispatcher(fn: Callable[..., Any], options: dict[str, Any]) -> Any:
    import numba

    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        return numba.njit(**options)(fn)


def njit(*, python: bool = True, work: Callable[..., int] | None = None,
         **options: Any) -> Callable[[Callable[..., Any]], Kernel]:
    """A :class:`Kernel` of the decorated function: ``numba.njit(cache=True, **options)`` when it is worth it.
    ``python=False``: the Python function is not the compiled one's equal, so every call goes to numba.
    ``work``: a call's size from its arguments, where array sizes (:func:`_work`) would say too little (a loop
    that does much per element) or too much (arguments it only looks into)."""

    def decorate(fn: Callable[..., Any]) -> Kernel:
        return Kernel(fn, options, python, work)

    return decorate


__all__ = ["PYTHON_BUDGET", "Kernel", "njit", "spend", "use_python"]
