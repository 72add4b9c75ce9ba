"""Templates: render a conversation into text segments, each with a role.

Every template, built-in or the tokenizer's own, is a Jinja chat template
rendered the way HF transformers renders it. Which characters are message
content and which are template text is recovered without trusting the
template: it is first rendered with unique placeholder contents, which splits
its output into fixed pieces and content slots; the real render must then
match ``piece0 (slot) piece1 (slot) ...`` with the same fixed pieces. Templates
that trim content or drop ``<think>`` blocks still match (the slot holds what
the template emitted); one whose fixed text depends on the content does not,
and the record is rejected (``template_error``) rather than mislabelled.

    chatml, user "Hi", assistant "Hello!":
    text : <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n
    segs : [special][marker][instruction][special][marker][special][marker][response][end][marker]

Records of a shape whose template only pastes (or trims) the contents are then
assembled from the fixed pieces without running Jinja (:class:`_Assembly`); a
probe render proves the shape can be, and a sample of records is rendered by
Jinja as well to check it.

Fixed text is labelled by what it is: the tokenizer's special tokens are
``special``, except the first one after an assistant turn's content, which is
``end``; other fixed text is ``marker`` (role names, ``### Response:``,
separators), unless a line of it has 4 or more words, which makes it
``boilerplate`` (Alpaca's "Below is an instruction...", a default system
prompt the template injects).

System messages under a template that refuses them (Mistral v0.1's and Gemma's
own raise on one; found once per template by rendering a tiny conversation with
and without a system message, :attr:`ChatTemplate.refuses_system`): a record's
leading system message is merged into the first user message (``system="merge"``,
the default), dropped (``"drop"``), or left to the template, which rejects the
record (``"reject"``). Merging renders the user message ``system + "\\n\\n" +
user``, what ``apply_chat_template`` renders for that merged conversation; the
system characters keep the ``system`` role and the separator is template text
(``marker``). ``Rendered.system`` says what was done ("merged", "dropped", or
None). A template that takes system messages renders them as it does.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import jinja2
import jinja2.ext
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import roles as R
from .loader import TokenizerInfo
from .options import SYSTEM_POLICIES, TEMPLATES
from .records import Conversation, Message, Rejection

#: words in a line of fixed template text from which on it is prose (boilerplate)
BOILERPLATE_MIN_WORDS = 4

_ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
_ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)

#: Built-in templates (Jinja, HF chat-template conventions). ``add_bos_token``
#: is true where the tokenizer expects a BOS. Only ``alpaca`` renders Alpaca's
#: ``input`` field itself; the others see it appended to the instruction.
BUILTIN_TEMPLATES: dict[str, str] = {
    "alpaca": (
        "{{ bos_token if add_bos_token }}"
        "{% if messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}"
        "{% elif messages[0].input %}{{ '" + _ALPACA_PREAMBLE_INPUT + "\\n\\n' }}"
        "{% else %}{{ '" + _ALPACA_PREAMBLE + "\\n\\n' }}{% endif %}"
        "{% for m in messages %}"
        "{% if m.role == 'user' %}{{ '### Instruction:\\n' + m.content }}"
        "{% if m.input %}{{ '\\n\\n### Input:\\n' + m.input }}{% endif %}{{ '\\n\\n' }}"
        "{% elif m.role == 'assistant' %}{{ '### Response:\\n' + m.content + eos_token }}"
        "{% if not loop.last %}{{ '\\n\\n' }}{% endif %}"
        "{% elif not loop.first %}{{ m.content + '\\n\\n' }}{% endif %}"
        "{% endfor %}"
    ),
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}"
        "{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + m.content | trim + '<|eot_id|>' }}"
        "{% endfor %}"
    ),
    # the IM paper's format (open-instruct's tulu template)
    "tulu": (
        "{{ bos_token if add_bos_token }}{% for m in messages %}"
        "{% if m.role == 'system' %}{{ '<|system|>\\n' + m.content + '\\n' }}"
        "{% elif m.role == 'user' %}{{ '<|user|>\\n' + m.content + '\\n' }}"
        "{% else %}{{ '<|assistant|>\\n' + m.content + eos_token }}{% if not loop.last %}{{ '\\n' }}{% endif %}"
        "{% endif %}{% endfor %}"
    ),
    # Mistral-7B-Instruct v0.1; a system message is put before the first instruction
    "mistral": (
        "{{ bos_token }}{% set ns = namespace(sys='') %}"
        "{% for m in messages %}"
        "{% if m.role == 'system' %}{% if not loop.first %}"
        "{{ raise_exception('a system message is only allowed first') }}{% endif %}"
        "{% set ns.sys = m.content + '\\n\\n' %}"
        "{% elif m.role == 'user' %}{{ '[INST] ' + ns.sys + m.content + ' [/INST]' }}{% set ns.sys = '' %}"
        "{% else %}{{ m.content + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
}
# the names the command line offers are listed in options.py, which imports nothing; keep the two one list
assert tuple(BUILTIN_TEMPLATES) == TEMPLATES, "options.TEMPLATES and BUILTIN_TEMPLATES differ"
TEMPLATE_NAMES: tuple[str, ...] = (*BUILTIN_TEMPLATES, "tokenizer")

_SLOT_ROLE = {"system": R.SYSTEM, "user": R.INSTRUCTION, "assistant": R.RESPONSE}
_PLACEHOLDER = "PKRSLOT{}Z"
_PLACEHOLDER_RE = re.compile(r"PKRSLOT(\d+)Z")
_INPUT_SEPARATOR = "\n\n"  # between instruction and input when a template has no input field
#: between a merged system message and the first user message (``--system merge``), as Gemma 3's and
#: Mistral's own templates (and mistral-common) join them; template text, labelled ``marker``
SYSTEM_SEPARATOR = "\n\n"


class _GenerationTag(jinja2.ext.Extension):
    # HF's {% generation %} marks assistant text for its own masks; render it plainly
    tags = {"generation"}  # noqa: RUF012

    def parse(self, parser):  # type: ignore[no-untyped-def]
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(x: object, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False):  # type: ignore[no-untyped-def]
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


@dataclass(frozen=True)
class Rendered:
    """A rendered document: ``text`` tiled by segments of ``seg_lengths``
    characters with role codes ``seg_roles``; ``seg_last`` marks the final
    assistant turn (its content and end token)."""

    text: str
    seg_lengths: np.ndarray  # int64
    seg_roles: np.ndarray  # uint8
    seg_last: np.ndarray  # bool
    #: what the system policy did to this record's system message: "merged", "dropped", or None (nothing)
    system: str | None = None


@dataclass(frozen=True)
class _Slot:
    message: int
    field: str  # "content" | "input" | "reasoning"
    role: int
    last: bool


@dataclass
class _Structure:
    """What the placeholder render of one conversation shape taught us."""

    pattern: re.Pattern[str]
    fixed: tuple[str, ...]
    slots: tuple[_Slot, ...]
    #: per fixed piece: (relative start, length, role, last) segments
    pieces: tuple[tuple[tuple[int, int, int, bool], ...], ...]
    #: set when the template only pastes (or trims) the contents of this shape: see :class:`_Assembly`
    assembly: _Assembly | None = None


#: what a template may do to a value and still be assembled without Jinja: paste it, or trim it (as
#: ``| trim`` and ``.strip()`` do); also what the matching of a Jinja render tries (:func:`_candidates`)
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
#: records of a shape rendered by Jinja as well, to check the assembly: the first few, then one in this many
_CHECK_FIRST = 2
_CHECK_EVERY = 64


class TemplateDrift(Exception):
    """A template rendered a record differently from the assembly its shape
    was proven to allow, after records of that shape were assembled unchecked
    (a template reading content in a way the probe could not see)."""


@dataclass
class _Assembly:
    """A shape whose template only pastes or trims the contents, proven on
    probe values (:meth:`ChatTemplate._probe`): its records are put together as
    ``fixed[0] + t0(v0) + fixed[1] + ...`` without running Jinja. Some are
    rendered by Jinja as well, and must come out the same.

        fixed  : "<|im_start|>user\\n", "<|im_end|>\\n<|im_start|>assistant\\n", "<|im_end|>\\n"
        values : "Hi", "Hello!"      transforms: paste, paste
        text   : <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n
    """

    transforms: tuple[int, ...]  # per slot, an index into _TRANSFORMS
    seg_lengths: np.ndarray  # int64, the slots' entries 0
    slot_segs: np.ndarray  # int64: index of each slot's segment
    seg_roles: np.ndarray  # uint8, shared by every record of the shape
    seg_last: np.ndarray  # bool, idem
    rendered: int = 0  # records of the shape so far
    unchecked: int = 0  # of which assembled without a Jinja render to compare with

    def fits(self, values: list[str]) -> bool:
        """False where a trimmed value is all whitespace: a trim of text glued around it would
        reach past it into the fixed text (``("  " + "\\n\\n" + input) | trim``), which the probe
        (never blank) cannot show; such records are rendered by Jinja."""
        return all(t == 0 or not v.isspace() for t, v in zip(self.transforms, values, strict=True))


class ChatTemplate:
    """A Jinja chat template that renders :class:`Conversation` records into
    role-labelled text.

    >>> from packer.tokenize import load_tokenizer
    >>> tpl = ChatTemplate.named("chatml", load_tokenizer("packer/demo_tokenizer"))
    >>> r = tpl.render(conversation)             # doctest: +SKIP
    >>> r.text
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n'

    ``assemble`` (default True): records of shapes the template only pastes or
    trims into are put together without running Jinja (see :class:`_Assembly`);
    False runs Jinja for every record.
    """

    def __init__(self, name: str, source: str, tok: TokenizerInfo, *, input_field: bool, system: str = "merge") -> None:
        self.name = name
        if system not in SYSTEM_POLICIES:
            raise ValueError(f"unknown system policy {system!r}; choose --system {'|'.join(SYSTEM_POLICIES)}")
        #: what a system message becomes when the template refuses one (see options.SYSTEM_POLICIES)
        self.system = system
        self.source = source
        self.sha256 = hashlib.sha256(source.encode("utf-8")).hexdigest()
        self._input_field = input_field
        self._env = _environment()
        try:
            self._template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"template {name!r} does not compile: {e}") from None
        self._vars = {
            **tok.special_map(),
            "add_bos_token": tok.add_bos,
            "add_generation_prompt": False,
            "tools": None,
            "documents": None,
        }
        specials = set(tok.special_tokens)
        specials.update(t for t in (tok.bos_token, tok.eos_token) if t)
        ordered = sorted(specials, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._special_first = frozenset(t[0] for t in ordered)
        self._structures: dict[tuple, _Structure | str] = {}
        #: assemble the records of shapes proven to only paste or trim their contents without running
        #: Jinja (checked on a sample); False renders every record with Jinja
        self.assemble = True
        #: the str methods a probe render saw the template call beyond pasting and trimming
        self._looked: list[str] = []
        self._probe_type, self._joined_type = _probe_types(self._looked)
        names = self._template.root_render_func.__globals__  # the compiled template's own module
        for name in ("str_join", "markup_join"):
            if name in names:
                names[name] = _traced_join(self._probe_type, self._joined_type, names[name])
        #: set once a learnt shape closes an assistant turn with no special token
        self.missing_end = False
        self._refuses_system: bool | None = None

    @classmethod
    def named(cls, name: str, tok: TokenizerInfo, *, system: str = "merge") -> ChatTemplate:
        """A built-in template by name, or ``"tokenizer"`` for the tokenizer's own."""
        if name == "tokenizer":
            if tok.chat_template is None:
                raise ValueError(
                    f"{tok.source}: the tokenizer has no chat_template; choose --template {'|'.join(BUILTIN_TEMPLATES)}"
                )
            return cls("tokenizer", tok.chat_template, tok, input_field=False, system=system)
        if name not in BUILTIN_TEMPLATES:
            raise ValueError(f"unknown template {name!r}; known: {', '.join(TEMPLATE_NAMES)}")
        return cls(name, BUILTIN_TEMPLATES[name], tok, input_field=name == "alpaca", system=system)

    # -- the system policy ---------------------------------------------------

    @property
    def refuses_system(self) -> bool:
        """Whether the template raises on a system message: it renders a tiny conversation, but not the
        same one after a system message (found once, by rendering both; never guessed from a name)."""
        if self._refuses_system is None:
            user, assistant = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}
            self._refuses_system = self._renders([user, assistant]) and not self._renders(
                [{"role": "system", "content": "Be brief."}, user, assistant]
            )
        return self._refuses_system

    def _renders(self, messages: list[dict]) -> bool:
        try:
            self._render(messages)
        except jinja2.TemplateError:
            return False
        return True

    def system_action(self, messages: Sequence[Message]) -> str | None:
        """What the system policy does to a conversation: ``"merged"`` (its leading system message goes in
        front of the first user message), ``"dropped"``, or None (rendered as it is: no leading system
        message, a template that takes one, or ``system="reject"``)."""
        if self.system == "reject" or not messages or messages[0].role != "system" or not self.refuses_system:
            return None
        if self.system == "drop":
            return "dropped"
        return "merged" if any(m.role == "user" for m in messages) else None

    # -- rendering ---------------------------------------------------------

    def _message_dicts(self, messages: Sequence[Message], fill) -> list[dict]:  # type: ignore[no-untyped-def]
        action = self.system_action(messages)
        out = self._plain_dicts(messages, fill, skip=1 if action == "dropped" else 0)
        if action == "merged":
            # the system message's slot goes in front of the first user message's content, so its
            # characters keep the system role and the separator is template text
            system = out.pop(0)["content"]
            k = next(j for j, d in enumerate(out) if d["role"] == "user")
            user = out[k]["content"]
            out[k] = {**out[k], "content": system + SYSTEM_SEPARATOR + user if user else system}
        return out

    def _plain_dicts(self, messages: Sequence[Message], fill, skip: int = 0) -> list[dict]:  # type: ignore[no-untyped-def]
        out = []
        for i, m in enumerate(messages):
            if i < skip:
                continue
            think = _split_think(m) if m.role == "assistant" else None
            if think is not None:
                # reasoning templates (Qwen3) move or drop the <think> block: give
                # it a slot of its own so the template can do so with placeholders too
                reasoning, rest = think
                content = "<think>" + (fill(i, "reasoning", reasoning) if reasoning else "") + "</think>"
                content += fill(i, "content", rest) if rest else ""
            else:
                content = fill(i, "content", m.content) if m.content else ""
            d = {"role": m.role, "content": content}
            if m.input:
                inp = fill(i, "input", m.input)
                if self._input_field:
                    d["input"] = inp
                else:
                    d["content"] = content + _INPUT_SEPARATOR + inp if content else inp
            out.append(d)
        return out

    def _render(self, messages: list[dict]) -> str:
        return self._template.render(messages=messages, **self._vars)

    def _structure(self, conv: Conversation) -> _Structure | str:
        key = tuple(
            (m.role, bool(m.content), bool(m.input), _think_shape(m) if m.role == "assistant" else None)
            for m in conv.messages
        )
        hit = self._structures.get(key)
        if hit is None:
            hit = self._learn(conv.messages)
            self._structures[key] = hit
        return hit

    def _learn(self, messages: Sequence[Message]) -> _Structure | str:
        names: list[tuple[int, str]] = []

        def fill(i: int, field: str, _value: str) -> str:
            names.append((i, field))
            return _PLACEHOLDER.format(len(names) - 1)

        try:
            text = self._render(self._message_dicts(messages, fill))
        except jinja2.TemplateError as e:
            return str(e)
        last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        fixed: list[str] = []
        slots: list[_Slot] = []
        pos = 0
        for m in _PLACEHOLDER_RE.finditer(text):
            fixed.append(text[pos : m.start()])
            i, field = names[int(m.group(1))]
            role = R.INPUT if field == "input" else _SLOT_ROLE[messages[i].role]
            slots.append(_Slot(i, field, role, i == last_assistant))
            pos = m.end()
        fixed.append(text[pos:])
        pieces = []
        for k, piece in enumerate(fixed):
            after = slots[k - 1] if k > 0 else None
            before = slots[k] if k < len(slots) else None
            if after is not None and before is not None and after.role == before.role == R.RESPONSE:
                if after.message == before.message:
                    # text the template keeps inside one assistant turn (<think> tags) is the response
                    pieces.append(((0, len(piece), R.RESPONSE, after.last),) if piece else ())
                    continue
            end_of = after if after is not None and after.role == R.RESPONSE else None
            tail: tuple[int, int, int, bool] | None = None
            if before is not None and before.field == "reasoning" and "<think>" in piece:
                # the model writes its own opening <think>: it is part of the response
                cut = piece.rindex("<think>")
                tail = (cut, len(piece) - cut, R.RESPONSE, before.last)
                piece = piece[:cut]
            segs = self._label_fixed(piece, end_of)
            if tail is not None:
                segs.append(tail)
            if end_of is not None and not any(seg[2] == R.END for seg in segs):
                self.missing_end = True
            pieces.append(tuple(segs))
        pattern = re.compile("(.*?)".join(re.escape(p) for p in fixed), re.DOTALL)
        st = _Structure(pattern, tuple(fixed), tuple(slots), tuple(pieces))
        st.assembly = self._probe(messages, st)
        return st

    def _probe(self, messages: Sequence[Message], st: _Structure) -> _Assembly | None:
        """Render the shape once more with probe values that log every look
        inside them and whose edges tell trims apart; if the template only
        pasted or trimmed them, the shape can be assembled without Jinja."""
        probes: dict[tuple[int, str], str] = {}

        def fill(i: int, field: str, _value: str) -> str:
            probes[(i, field)] = self._probe_type(_PROBE.format(len(probes)))
            return probes[(i, field)]

        self._looked.clear()
        try:
            text = str.__str__(self._render(self._message_dicts(messages, fill)))
        except Exception:  # whatever the template does with odd text, it is then no paste
            return None
        if self._looked or any((s.message, s.field) not in probes for s in st.slots):
            return None
        plain = [str.__str__(probes[(s.message, s.field)]) for s in st.slots]
        spans = _directed_match(text, st.fixed, plain)
        if spans is None:
            return None
        transforms = []
        for (a, b), value in zip(spans, plain, strict=True):
            found = [j for j, t in enumerate(_TRANSFORMS) if t(value) == text[a:b]]
            if len(found) != 1:
                return None
            transforms.append(found[0])
        lengths, roles, last, slot_segs = _segments(st, [0] * len(st.slots))
        roles.flags.writeable = last.flags.writeable = False  # shared by the shape's records
        return _Assembly(tuple(transforms), lengths, slot_segs, roles, last)

    @staticmethod
    def _assembled(st: _Structure, asm: _Assembly, values: list[str], system: str | None = None) -> Rendered:
        emitted = [_TRANSFORMS[t](v) for t, v in zip(asm.transforms, values, strict=True)]
        parts: list[str] = [""] * (2 * len(emitted) + 1)
        parts[0::2] = st.fixed
        parts[1::2] = emitted
        lengths = asm.seg_lengths.copy()
        lengths[asm.slot_segs] = [len(e) for e in emitted]
        return Rendered(text="".join(parts), seg_lengths=lengths, seg_roles=asm.seg_roles, seg_last=asm.seg_last,
                        system=system)  # fmt: skip

    def _label_fixed(self, piece: str, end_of: _Slot | None) -> list[tuple[int, int, int, bool]]:
        """Segments of a fixed piece; ``end_of`` is the assistant slot it follows."""
        segs: list[tuple[int, int, int, bool]] = []
        pos = 0
        matches = list(self._special_re.finditer(piece)) if self._special_re else []
        for j, m in enumerate(matches):
            segs.extend(_label_text(piece[pos : m.start()], pos))
            is_end = end_of is not None and j == 0 and not piece[: m.start()].strip()
            role = R.END if is_end else R.SPECIAL
            segs.append((m.start(), m.end() - m.start(), role, bool(is_end and end_of.last)))
            pos = m.end()
        segs.extend(_label_text(piece[pos:], pos))
        return segs

    def _special_in(self, text: str) -> str | None:
        if self._special_re is None or not any(c in text for c in self._special_first):
            return None
        m = self._special_re.search(text)
        return m.group(0) if m else None

    def render(self, conv: Conversation) -> Rendered | Rejection:
        """Render one conversation, or say why it cannot be.

        Raises :class:`TemplateDrift` if a record checked against Jinja shows that
        earlier records of its shape were assembled wrongly (set ``assemble = False``
        and render them again; :func:`packer.build` does so by itself).

        A template that refuses system messages gets the record's leading system message as
        :attr:`system` says (:meth:`system_action`); ``Rendered.system`` tells what was done."""
        action = self.system_action(conv.messages)
        for i, m in enumerate(conv.messages):
            if action == "dropped" and i == 0:
                continue  # not rendered: a control token in it does no harm
            for value in (m.content, m.input):
                tok = self._special_in(value)
                if tok is not None:
                    return Rejection(
                        conv.source,
                        "special_token_in_content",
                        f"turn {i} ({m.role}) contains the control token {tok!r}; "
                        "it would be read as a control token, not text",
                    )
        st = self._structure(conv)
        if isinstance(st, str):
            return Rejection(conv.source, "template_error", f"template {self.name!r}: {st}")
        asm = st.assembly if self.assemble else None
        assembled = None
        if asm is not None:
            slot_values = [_slot_value(conv.messages[s.message], s.field) for s in st.slots]
            asm = asm if asm.fits(slot_values) else None
        if asm is not None:
            assembled = self._assembled(st, asm, slot_values, action)
            asm.rendered += 1
            if asm.rendered > _CHECK_FIRST and asm.rendered % _CHECK_EVERY:
                asm.unchecked += 1
                return assembled
        values: dict[tuple[int, str], str] = {}

        def keep(i: int, field: str, value: str) -> str:
            values[(i, field)] = value
            return value

        try:
            text = self._render(self._message_dicts(conv.messages, keep))
        except jinja2.TemplateError as e:  # pragma: no cover - structure render would have raised
            return Rejection(conv.source, "template_error", f"template {self.name!r}: {e}")
        if assembled is not None and assembled.text != text:
            if asm is not None and asm.unchecked:
                raise TemplateDrift(
                    f"{conv.source.where()}: template {self.name!r} renders this record otherwise than the "
                    "contents pasted into its fixed text, as it did for earlier records of the same shape"
                )
            st.assembly = None  # no record of the shape was assembled unchecked: render them all
        slot_values = [values[(slot.message, slot.field)] for slot in st.slots]
        spans = _directed_match(text, st.fixed, slot_values)
        if spans is None:
            # the template changed a value beyond trimming: find the slots by the
            # fixed text around them; a slot may still only hold text from its value
            # (else template text depending on the content would pass as content)
            match = st.pattern.fullmatch(text)
            if match is not None and all(match.group(k + 1) in v for k, v in enumerate(slot_values)):
                spans = [match.span(k + 1) for k in range(len(slot_values))]
        if spans is None:
            return Rejection(
                conv.source,
                "template_error",
                f"template {self.name!r} renders fixed text that depends on this record's content; "
                "cannot tell content from template text",
            )
        lengths, roles, last, _ = _segments(st, [b - a for a, b in spans])
        return Rendered(text=text, seg_lengths=lengths, seg_roles=roles, seg_last=last, system=action)


def _segments(st: _Structure, slot_lengths: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lengths (int64), roles (uint8) and last-turn flags (bool) of a shape's segments in text order,
    the slots given their lengths; and the index of each slot's segment."""
    lengths: list[int] = []
    codes: list[int] = []
    last: list[bool] = []
    slot_segs: list[int] = []
    for k, piece in enumerate(st.pieces):
        for _rel, n, role, is_last in piece:
            lengths.append(n)
            codes.append(role)
            last.append(is_last)
        if k < len(st.slots):
            slot_segs.append(len(lengths))
            lengths.append(slot_lengths[k])
            codes.append(st.slots[k].role)
            last.append(st.slots[k].last)
    return (np.asarray(lengths, dtype=np.int64), np.asarray(codes, dtype=np.uint8), np.asarray(last, dtype=bool),
            np.asarray(slot_segs, dtype=np.int64))  # fmt: skip


def _candidates(value: str) -> list[str]:
    # what a template may emit for a value: as is, or trimmed (Jinja's trim, strip('\n'), ...)
    out: list[str] = []
    for t in _TRANSFORMS:
        c = t(value)
        if c not in out:
            out.append(c)
    return out


def _directed_match(text: str, fixed: Sequence[str], values: Sequence[str]) -> list[tuple[int, int]] | None:
    """Spans of the slots when ``text`` is fixed[0] v0 fixed[1] v1 ... with each
    value as given or trimmed; unlike a regex, content that contains the
    template's own text ("### Response:") cannot be cut in the wrong place."""
    spans: list[tuple[int, int]] = []
    # explicit stack of (slot, position, next candidate) instead of recursion: long chats
    stack: list[tuple[int, int, int]] = []
    if not text.startswith(fixed[0]):
        return None
    k, pos, choice = 0, len(fixed[0]), 0
    while True:
        if k == len(values) and pos == len(text):
            return spans
        found = False
        if k < len(values):
            cands = _candidates(values[k])
            for j in range(choice, len(cands)):
                end = pos + len(cands[j])
                if text.startswith(cands[j], pos) and text.startswith(fixed[k + 1], end):
                    stack.append((k, pos, j + 1))
                    spans.append((pos, end))
                    k, pos, choice = k + 1, end + len(fixed[k + 1]), 0
                    found = True
                    break
        if found:
            continue
        if not stack:  # no way to read the text as template + values
            return None
        k, pos, choice = stack.pop()
        spans.pop()


#: str methods a template may call on a probe without making the shape content-dependent:
#: trimming (the result is a probe again); everything else str offers is recorded as a look
_TRIMS = frozenset({"strip", "lstrip", "rstrip"})
_NOT_LOOKS = frozenset({
    "__new__", "__init__", "__init_subclass__", "__subclasshook__", "__getattribute__", "__setattr__",
    "__delattr__", "__dir__", "__class__", "__reduce__", "__reduce_ex__", "__getnewargs__", "__getstate__",
    "__sizeof__", "__str__", "__add__", "__doc__",
})  # fmt: skip


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


def _slot_value(m: Message, field: str) -> str:
    # the value _message_dicts fills a slot with
    if field == "input":
        return m.input
    think = _split_think(m) if m.role == "assistant" else None
    if think is not None:
        return think[0] if field == "reasoning" else think[1]
    return m.content


_THINK_RE = re.compile(r"<think>(.*?)</think>(.*)", re.DOTALL)


def _split_think(m: Message) -> tuple[str, str] | None:
    """(reasoning, answer) of an assistant content that opens with a <think> block."""
    if not m.content.startswith("<think>"):
        return None
    match = _THINK_RE.fullmatch(m.content)
    return (match.group(1), match.group(2)) if match else None


def _think_shape(m: Message) -> tuple[bool, bool] | None:
    think = _split_think(m)
    return None if think is None else (bool(think[0]), bool(think[1]))


_LINE_RE = re.compile(r"[^\n]*\n*")


def _label_text(text: str, base: int) -> list[tuple[int, int, int, bool]]:
    # template text between special tokens: prose lines are boilerplate,
    # everything else (role names, headers, separators, newlines) is marker
    segs: list[tuple[int, int, int, bool]] = []
    for m in _LINE_RE.finditer(text):
        line = m.group(0)
        if not line:
            continue
        body = line.rstrip("\n")
        role = R.BOILERPLATE if len(body.split()) >= BOILERPLATE_MIN_WORDS else R.MARKER
        if role == R.BOILERPLATE and len(body) < len(line):
            segs.append((base + m.start(), len(body), role, False))
            segs.append((base + m.start() + len(body), len(line) - len(body), R.MARKER, False))
        else:
            segs.append((base + m.start(), len(line), role, False))
    return segs
