"""numba's ``njit``, cached on disk where a cache can be written, compiled in each process elsewhere.

numba keeps compiled kernels beside the module (``__pycache__``) or, where
site-packages is read-only (a wheel install), in the user's cache folder
(``~/.cache/numba``). Where neither can be written (a read-only container, no
home folder), ``cache=True`` raises at import and every build would fail; the
kernels are then compiled in each process instead (a few seconds more a build).
``NUMBA_CACHE_DIR`` names another cache folder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba


def njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(cache=True, **options)``, or without the cache where numba has nowhere to keep one."""

    def decorate(fn: Callable[..., Any]) -> Any:
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
            return numba.njit(**options)(fn)

    return decorate
