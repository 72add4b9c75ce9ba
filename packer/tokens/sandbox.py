"""The Jinja sandbox chat templates run in: bounded in time and size, and their faults said as theirs.

A chat template is code that came with a model; packer runs it once per record. Jinja's sandbox keeps it
from touching anything, but not from running for ever or filling the memory, and a template that
includes another file, recurses without end or raises a Python error used to surface as "a bug in
packer". Here every such fault is a :class:`TemplateFault` (a ``jinja2.TemplateError``), which
:func:`render` prefixes with the file the template came from::

    .../tokenizer_config.json: the chat template includes, imports or extends 'x.jinja' ...

Bounds, checked at the sandbox's hooks, since Jinja cannot be interrupted from outside:

- time: a render stops after ``PACKER_TEMPLATE_TIMEOUT`` seconds (default 10; a chat template takes
  well under a millisecond per record), checked at every call (``range`` included), filter,
  ``* % **`` and every 1,024 chunks of output; a loop whose body does none of these (attribute looks
  are not hooked: the most frequent) is checked at the next one;
- size: no value the template builds may hold more than ``PACKER_TEMPLATE_MAX_CHARS`` characters (or
  items; default 2**24) plus 4 times the characters of the record's messages (so a long record never
  trips it), checked before ``*``, ``%``, ``**`` and filters that widen (``center(10**9)``, ``join``)
  allocate, and on what calls and filters return, what a ``namespace`` is given (where a template keeps
  what it builds across loop turns) and the output. ``+`` and ``~`` are not hooked (they are the most
  frequent operators, and at most double a value that is checked where it is kept or written);
- no loader: ``{% include %}``, ``{% import %}``, ``{% extends %}`` name what they wanted.

Who decides what a fault means: :class:`packer.tokens.templates.ChatTemplate` renders a two-message
conversation when it is made; a fault there fails the build (the template is broken for every record),
one on a record's own content rejects that record (``template_error``).
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
import time
from collections.abc import Iterable
from itertools import islice
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

TIMEOUT_ENV = "PACKER_TEMPLATE_TIMEOUT"
MAX_CHARS_ENV = "PACKER_TEMPLATE_MAX_CHARS"
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_CHARS = 2**24
#: output chunks between two checks of the clock and the output's size
_CHUNK_CHECK = 1024


class TemplateFault(jinja2.TemplateError):
    """A chat template's own fault: it includes another file, recurses without end, runs past the time
    bound, builds a string past the size cap, or raises a Python error. Never a bug in packer."""


class _Budget(threading.local):
    """The bounds of the render under way in this thread (none: no deadline, the default cap)."""

    deadline = math.inf
    timeout = DEFAULT_TIMEOUT
    #: the size cap without the record's share, which is counted only when a value passes this
    cap = DEFAULT_MAX_CHARS
    messages: list[dict] = []  # noqa: RUF012
    extra: int | None = 0


_budget = _Budget()


def _setting(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise ValueError(f"{name}={text!r}: give a number greater than 0")
    return value


def limits() -> tuple[float, int]:
    """(seconds a render may run, characters a string it builds may hold beyond its record's) from
    the environment; a wrong value is a ValueError naming the setting."""
    return _setting(TIMEOUT_ENV, DEFAULT_TIMEOUT), int(_setting(MAX_CHARS_ENV, DEFAULT_MAX_CHARS))


def _tick() -> None:
    if time.monotonic() > _budget.deadline:
        raise TemplateFault(f"the chat template ran for more than {_budget.timeout:g} s on one record "
                            f"(the bound is {TIMEOUT_ENV}, in seconds; a chat template takes milliseconds)")


def _over(n: float) -> bool:
    """Whether ``n`` characters pass the cap: ``PACKER_TEMPLATE_MAX_CHARS`` plus 4 times the record's."""
    b = _budget
    if n <= b.cap:
        return False
    if b.extra is None:  # counted once, and only here: most renders never come near the cap
        b.extra = 4 * sum(str.__len__(v) for m in b.messages for v in m.values() if isinstance(v, str))
    return n > b.cap + b.extra


def _too_big(what: str, n: float) -> TemplateFault:
    return TemplateFault(f"the chat template builds {what} of {n:,.0f} characters or items, more than "
                         f"{_budget.cap + (_budget.extra or 0):,} (the bound is {MAX_CHARS_ENV}, plus 4 times the "
                         "record's characters)")


def _size(value: object) -> int:
    # str.__len__, not len(): a probe value (packer.tokens.assembly) logs every method called on it
    if isinstance(value, str):
        return str.__len__(value)
    if type(value) in (list, tuple):
        return len(value)  # type: ignore[arg-type]
    return 0


def _check(value: object) -> object:
    n = _size(value)
    if _over(n):
        raise _too_big("a value", n)
    return value


_DIGITS = re.compile(r"\d+")


def _check_format(fmt: object) -> None:
    """A format string (``%``, ``format``) whose width alone passes the cap."""
    if isinstance(fmt, str) and any(_over(int(d)) for d in _DIGITS.findall(str.__str__(fmt))):
        raise _too_big("a formatted string", max(int(d) for d in _DIGITS.findall(str.__str__(fmt))))


def _check_ints(args: Iterable[object]) -> None:
    """An int argument past the cap: only a width or a count of repeats is that large."""
    for a in args:
        if type(a) is int and _over(a):
            raise _too_big("a value", a)


def _bounded_filter(name: str, f: Any) -> Any:
    @functools.wraps(f)  # keeps jinja's pass_context/pass_environment marks
    def run(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_ints(args)
        _check_ints(kwargs.values())
        if name == "format":
            _check_format(next((a for a in args if isinstance(a, str)), None))
        elif name == "join":
            for a in args:
                if type(a) in (list, tuple):
                    n = sum(_size(x) for x in a)
                    if _over(n):
                        raise _too_big("a joined string", n)
        return _check(f(*args, **kwargs))

    return run


class _NoLoader(jinja2.BaseLoader):
    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        raise TemplateFault(f"the chat template includes, imports or extends {template!r}; a chat template must be "
                            "self-contained (transformers renders it with no files beside it either): put that "
                            "template's text into it")


def _concat(chunks: Iterable[str]) -> str:
    """The render's output (``"".join``), its size and the clock checked every 1,024 chunks."""
    it = iter(chunks)
    out = list(islice(it, _CHUNK_CHECK))
    n = 0
    while len(out) % _CHUNK_CHECK == 0 and out:  # (most renders are one short batch)
        _tick()
        n += sum(map(str.__len__, out[-_CHUNK_CHECK:]))
        if _over(n):
            raise _too_big("an output", n)
        more = list(islice(it, _CHUNK_CHECK))
        if not more:
            break
        out += more
    return "".join(out)


class _Namespace(Namespace):
    """``namespace()``: where a template keeps what it builds across loop turns (``ns.s = ns.s ~ ns.s``),
    so what it is given is checked (the sandbox's attribute looks are left unhooked: the most frequent)."""

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, _check(value))


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the bounds of this module and no loader."""

    # not ``+`` (nor ``~``), the most frequent: they at most double a value, and what a template keeps
    # across loop turns (a namespace), passes on (calls, filters) or writes out is checked there
    intercepted_binops = frozenset({"*", "%", "**"})
    concat = staticmethod(_concat)  # type: ignore[assignment]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(loader=_NoLoader(), **kwargs)
        #: (seconds, characters): the bounds of its renders, read from the environment once
        self.limits = limits()
        for name, f in list(self.filters.items()):
            self.filters[name] = _bounded_filter(name, f)
        self.globals["namespace"] = _Namespace

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        _tick()
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                if type(times) is int and _over(_size(seq) * times):
                    raise _too_big("a repeated value", _size(seq) * times)
            if type(left) is int and type(right) is int and _over((left.bit_length() + right.bit_length()) / 8):
                raise _too_big("a number", (left.bit_length() + right.bit_length()) / 8)
        elif op == "%":
            _check_format(left)
        elif op == "**" and type(left) is int and type(right) is int and abs(left) > 1:
            if _over(right * left.bit_length() / 8):
                raise _too_big("a number", right * left.bit_length() / 8)
        return _check(super().call_binop(context, op, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        method = getattr(__obj, "__wrapped__", None)  # the sandbox's wrapper of a str.format method
        if method is not None and getattr(method, "__name__", None) in ("format", "format_map"):
            _check_format(getattr(method, "__self__", None))
        if args:
            _check_ints(args)
        if kwargs:
            _check_ints(kwargs.values())
        return _check(super().call(__context, __obj, *args, **kwargs))


def render(template: jinja2.Template, origin: str, variables: dict[str, Any]) -> str:
    """``template.render(**variables)`` within the bounds of its environment (a :class:`BoundedSandbox`;
    the record's ``messages`` raise the size cap); every fault of the template a :class:`TemplateFault`
    that names ``origin``."""
    b = _budget
    outer = b.deadline != math.inf
    if not outer:
        b.timeout, b.cap = getattr(template.environment, "limits", (DEFAULT_TIMEOUT, DEFAULT_MAX_CHARS))
        b.messages, b.extra = variables.get("messages") or [], None
        b.deadline = time.monotonic() + b.timeout
    try:
        return template.render(**variables)
    except TemplateFault as e:
        raise TemplateFault(f"{origin}: {e}") from None
    except jinja2.TemplateError:
        raise
    except RecursionError:
        raise TemplateFault(f"{origin}: the chat template calls itself without end (past Python's recursion "
                            "limit)") from None
    except MemoryError:
        raise TemplateFault(f"{origin}: the chat template ran out of memory") from None
    except Exception as e:  # what the template's own code raised (a TypeError on its values, say)
        raise TemplateFault(f"{origin}: the chat template fails: {type(e).__name__}: {e}") from None
    finally:
        if not outer:
            b.deadline, b.cap, b.messages, b.extra = math.inf, DEFAULT_MAX_CHARS, [], 0


__all__ = ["MAX_CHARS_ENV", "TIMEOUT_ENV", "BoundedSandbox", "TemplateFault", "limits", "render"]
