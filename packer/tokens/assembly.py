"""Assembly: records put together from a template's fixed text without running Jinja.

:mod:`packer.tokens.templates` learns each conversation shape from a placeholder render:
the template's fixed pieces and the content slots between them. When the
template only pastes a shape's contents, or trims them (``| trim``,
``.strip()``), a record of that shape is ``fixed[0] + t0(v0) + fixed[1] + ...``
and needs no Jinja render (:class:`_Assembly`):

    fixed  : "<|im_start|>user\\n", "<|im_end|>\\n<|im_start|>assistant\\n", "<|im_end|>\\n"
    values : "Hi", "Hello!"      transforms: paste, paste
    text   : <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n

A probe render proves that a shape may be assembled (:func:`probe`): its slots
get values of a str subclass that logs every look inside it (``in``, ``==``,
``len``, ``split``, ...) and whose edges tell the trims apart; a shape whose
template looked, or emitted a value otherwise than pasted or trimmed, is left
to Jinja. A look the probe cannot see (a filter that reads the text through a
regex) is what the checks are for: the records :func:`checked` picks by their
``doc_id`` are rendered by Jinja as well, and any difference from the assembly
raises :class:`TemplateDrift` (the build then starts over with assembly off).
The pick depends on the record alone, never on the order records reach a
process, so the same records are checked however the input is split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import jinja2
import numpy as np

#: what a template may do to a value and still be assembled without Jinja: paste it, or trim it (as
#: ``| trim`` and ``.strip()`` do); also what reading a Jinja render tries (``templates._candidates``)
_TRANSFORMS: tuple[Callable[[str], str], ...] = (
    lambda v: v,
    str.strip,
    lambda v: v.strip("\n"),
    str.lstrip,
    str.rstrip,
    lambda v: v.lstrip("\n"),
    lambda v: v.rstrip("\n"),
)
#: a probe value's edges tell the transforms apart (each gives a different text)
_PROBE = "\n \tPKRPROBE{}Z <b>\"'&amp;\\{{{{x}}}} é ab cd http://a.example/ %s\t \n"

#: records with a doc_id below this are all checked against Jinja
CHECK_FIRST = 16
#: of the others, about one in this many is
CHECK_ONE_IN = 32
_U64 = (1 << 64) - 1


def checked(doc_id: int) -> bool:
    """Whether the record ``doc_id`` is rendered by Jinja as well as assembled, to check the assembly.

    A function of the doc_id alone: never of how many records this process (or this part of the
    input) has rendered before, so every split of the input checks the same records. The first
    :data:`CHECK_FIRST` are checked; of the others, those whose hash (splitmix64's multiply-xorshift
    mix) is divisible by :data:`CHECK_ONE_IN`: about one in 32, in no pattern that records of a shape
    recurring with a period (every other record, every 64th) could fall between."""
    if doc_id < CHECK_FIRST:
        return True
    x = (doc_id * 0x9E3779B97F4A7C15) & _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return (x ^ (x >> 31)) % CHECK_ONE_IN == 0


def checked_many(doc_ids: np.ndarray) -> np.ndarray:
    """:func:`checked` of each of ``doc_ids`` (int64), as a bool array: the same mix, in numpy's wrapping uint64.

    >>> ids = np.arange(5000)
    >>> checked_many(ids).tolist() == [checked(d) for d in range(5000)]
    True
    """
    x = np.asarray(doc_ids).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (np.asarray(doc_ids) < CHECK_FIRST) | ((x ^ (x >> np.uint64(31))) % np.uint64(CHECK_ONE_IN) == 0)


class TemplateDrift(Exception):
    """A record checked against Jinja (:func:`checked`) rendered otherwise than
    the assembly its shape was proven to allow: the template reads contents in
    a way the probe could not see, so records assembled unchecked may be wrong.
    Render them all again with assembly off (:func:`packer.build` does so)."""


@dataclass
class _Assembly:
    """A shape whose template only pastes or trims the contents, proven on
    probe values (:func:`probe`): its records are put together as
    ``fixed[0] + t0(v0) + fixed[1] + ...`` without running Jinja. The records
    :func:`checked` picks are rendered by Jinja as well, and must come out the same.

        fixed  : "<|im_start|>user\\n", "<|im_end|>\\n<|im_start|>assistant\\n", "<|im_end|>\\n"
        values : "Hi", "Hello!"      transforms: paste, paste
        text   : <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n
    """

    transforms: tuple[int, ...]  # per slot, an index into _TRANSFORMS
    seg_lengths: np.ndarray  # int64, the slots' entries 0
    slot_segs: np.ndarray  # int64: index of each slot's segment
    seg_roles: np.ndarray  # uint8, shared by every record of the shape
    seg_last: np.ndarray  # bool, idem
    #: records of the shape assembled without a Jinja render (a count for tests; rendering never reads it)
    unchecked: int = 0

    def fits(self, values: Sequence[str]) -> bool:
        """False where a trimmed value is all whitespace: a trim of text glued around it would
        reach past it into the fixed text (``("  " + "\\n\\n" + input) | trim``), which the probe
        (never blank) cannot show; such records are rendered by Jinja."""
        return all(t == 0 or not v.isspace() for t, v in zip(self.transforms, values, strict=True))

    def assemble(self, fixed: Sequence[str], values: Sequence[str]) -> tuple[str, np.ndarray]:
        """The text of a record of the shape and its segments' lengths (roles: :attr:`seg_roles`)."""
        emitted = [_TRANSFORMS[t](v) for t, v in zip(self.transforms, values, strict=True)]
        parts: list[str] = [""] * (2 * len(emitted) + 1)
        parts[0::2] = fixed
        parts[1::2] = emitted
        lengths = self.seg_lengths.copy()
        lengths[self.slot_segs] = [len(e) for e in emitted]
        return "".join(parts), lengths

    def assemble_all(self, fixed: Sequence[str], columns: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
        """:meth:`assemble` of many records at once (each of which :meth:`fits`): ``columns[j]`` holds slot
        ``j``'s value of every record. Their texts, and their segments' lengths, a row per record.

        >>> asm = _Assembly((0, 1), np.array([0, 1, 0]), np.array([0, 2]), np.zeros(3, np.uint8),
        ...                 np.zeros(3, bool))
        >>> texts, lengths = asm.assemble_all(["", "|", ""], [["a", "b"], [" x ", "y"]])
        >>> texts, lengths.tolist()
        (['a|x', 'b|y'], [[1, 1, 1], [1, 1, 1]])
        """
        emitted = [col if t == 0 else list(map(_TRANSFORMS[t], col))
                   for t, col in zip(self.transforms, columns, strict=True)]
        n = len(emitted[0])
        form = "%s".join(f.replace("%", "%%") for f in fixed)  # one C-level format a record
        texts = [form % values for values in zip(*emitted, strict=True)]
        lengths = np.tile(self.seg_lengths, (n, 1))
        for seg, col in zip(self.slot_segs.tolist(), emitted, strict=True):
            lengths[:, seg] = np.fromiter(map(len, col), np.int64, n)
        return texts, lengths


class Shape(Protocol):
    """What :func:`probe` needs of a learnt shape (``templates._Structure``)."""

    @property
    def fixed(self) -> tuple[str, ...]: ...

    @property
    def slot_keys(self) -> tuple[tuple[int, str], ...]:
        """(message index, field) each slot is filled from, in text order."""
        ...

    def spans(self, text: str, values: Sequence[str]) -> list[tuple[int, int]] | None:
        """The slots' spans in a render of the shape whose slots held ``values`` (pasted or trimmed)."""
        ...

    def segments(self, slot_lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Lengths, roles, last-turn flags of the shape's segments, and the index of each slot's segment."""
        ...


#: fills a slot: (message index, field, value) -> what the template is given instead
Fill = Callable[[int, str, str], str]


class Prober:
    """The probe values of one compiled Jinja template: their str subclasses
    (:func:`_probe_types`), the log of looks inside them, and the template's
    ``~`` joins traced so that a join holding a probe is a probe too."""

    def __init__(self, template: jinja2.Template) -> None:
        #: the str methods a probe render saw the template call beyond pasting and trimming
        self.looked: list[str] = []
        self.probe_type, self.joined_type = _probe_types(self.looked)
        names = template.root_render_func.__globals__  # the compiled template's own module
        for name in ("str_join", "markup_join"):
            if name in names:
                names[name] = _traced_join(self.probe_type, self.joined_type, names[name])

    def value(self, n: int) -> str:
        """The ``n``-th probe value of a render."""
        return self.probe_type(_PROBE.format(n))


def probe(render: Callable[[Fill], str], shape: Shape, prober: Prober) -> _Assembly | None:
    """Render the shape once more (``render`` fills its slots with what it is
    given) with probe values that log every look inside them and whose edges
    tell trims apart; if the template only pasted or trimmed them, the shape can
    be assembled without Jinja."""
    probes: dict[tuple[int, str], str] = {}

    def fill(i: int, field: str, _value: str) -> str:
        probes[(i, field)] = prober.value(len(probes))
        return probes[(i, field)]

    prober.looked.clear()
    try:
        text = str.__str__(render(fill))
    except Exception:  # whatever the template does with odd text, it is then no paste
        return None
    if prober.looked or any(key not in probes for key in shape.slot_keys):
        return None
    plain = [str.__str__(probes[key]) for key in shape.slot_keys]
    spans = shape.spans(text, plain)
    if spans is None:
        return None
    transforms = []
    for (a, b), value in zip(spans, plain, strict=True):
        found = [j for j, t in enumerate(_TRANSFORMS) if t(value) == text[a:b]]
        if len(found) != 1:
            return None
        transforms.append(found[0])
    lengths, roles, last, slot_segs = shape.segments([0] * len(plain))
    roles.flags.writeable = last.flags.writeable = False  # shared by the shape's records
    return _Assembly(tuple(transforms), lengths, slot_segs, roles, last)


#: str methods a template may call on a probe without making the shape content-dependent:
#: trimming (the result is a probe again); everything else str offers is recorded as a look
_TRIMS = frozenset({"strip", "lstrip", "rstrip"})
_NOT_LOOKS = frozenset(
    "__new__ __init__ __init_subclass__ __subclasshook__ __getattribute__ __setattr__ __delattr__ __dir__ "
    "__class__ __reduce__ __reduce_ex__ __getnewargs__ __getstate__ __sizeof__ __str__ __add__ __doc__".split()
)


def _probe_types(looked: list[str]) -> tuple[type[str], type[str]]:
    """(Probe, Joined): str subclasses standing in for content values in a
    probe render. Any look inside them (``in``, ``==``, ``len``, ``split``,
    ...) is logged in ``looked``; trimming gives a Probe (a Joined); gluing one to other
    text gives a Joined, which may be pasted or trimmed but not looked into."""

    def look(name: str) -> Callable:
        method = getattr(str, name)

        def logged(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            looked.append(name)
            return method(self, *args, **kwargs)

        return logged

    def joined(a: object, b: object) -> object:
        if not isinstance(a, str) or not isinstance(b, str):
            return NotImplemented
        return Joined(str.__add__(a, b))  # type: ignore[misc]

    def trim(name: str) -> Callable:
        method = getattr(str, name)

        def trimmed(self, chars=None):  # type: ignore[no-untyped-def]
            if chars is not None and chars != "\n":
                looked.append(name)
            return type(self)(method(self, chars))

        return trimmed

    body: dict[str, object] = {
        name: look(name) for name in dir(str) if callable(getattr(str, name)) and name not in _NOT_LOOKS
    }
    body.update(
        __slots__=(),
        # Jinja writes a value out with str(): keep the probe itself, so the output can be traced
        __str__=lambda self: self,
        # a slot exists only for a non-empty value, so its truth is part of the shape
        __bool__=lambda self: True,
        __add__=lambda self, other: joined(self, other),
        __radd__=lambda self, other: joined(other, self),
    )
    Probe = type("Probe", (str,), {**body, **{name: trim(name) for name in _TRIMS}})
    # trimming a Joined trims the values at its ends (``(content + "\n\n" + input) | trim``); that holds
    # unless a value is all whitespace, which _Assembly.fits leaves to Jinja
    Joined = type("Joined", (Probe,), {})
    return Probe, Joined


def _traced_join(probe: type[str], joined: type[str], join: Callable) -> Callable:
    """Jinja's ``~`` (its runtime's ``str_join``/``markup_join``) with the trace kept:
    the join of anything holding a probe is a Joined. Other joins are unchanged."""

    def traced(seq):  # type: ignore[no-untyped-def]
        items = list(seq)
        out = join(items)
        return joined(out) if type(out) is str and any(isinstance(x, probe) for x in items) else out

    return traced
