"""Templates: render a conversation into text segments, each with a role.

Every template, built-in or the tokenizer's own, is a Jinja chat template
rendered the way HF transformers renders it. Which characters are message
content and which are template text is recovered without trusting the
template: it is first rendered with unique placeholder contents, which splits
its output into fixed pieces and content slots; the real render must then
match ``piece0 (slot) piece1 (slot) ...`` with the same fixed pieces. Templates
that trim content or drop ``<think>`` blocks still match (the slot holds what
the template emitted); one whose fixed text depends on the content does not,
and the record is rejected (``template_error``) rather than mislabelled. What a
placeholder render teaches and how a real render is read by it (slots, fixed
pieces, their labels) is :mod:`packer.tokens.slots`'; this module renders.

    chatml, user "Hi", assistant "Hello!":
    text : <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n
    segs : [special][marker][instruction][special][marker][special][marker][response][end][marker]

Records of a shape whose template only pastes (or trims) the contents are then
put together from the fixed pieces without running Jinja: :mod:`packer.tokens.assembly`
proves a shape can be, and says which records are rendered by Jinja as well to
check it. This module renders; that one only saves renders.

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
(``marker``); in a conversation with no user turn (system + assistant) the system
message is rendered as the user message, its characters keeping the ``system``
role. ``Rendered.system`` says what was done ("merged", "dropped", or
None). A template that takes system messages renders them as it does.

Plain-text documents (records of the ``text`` format, TRL's language-modelling
data) are not rendered by the template at all: the document is its text followed
by the tokenizer's EOS token (after BOS where the tokenizer adds one), the text
``response`` and the EOS ``end``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jinja2
import jinja2.ext
import numpy as np

from ..options import SYSTEM_POLICIES, TEMPLATES
from ..output import roles as R
from ..read.records import Conversation, Message, Rejection
from .assembly import Fill, Prober, TemplateDrift, _Assembly, checked, probe
from .loader import TokenizerInfo
from .sandbox import BoundedSandbox, TemplateFault
from .sandbox import render as bounded_render
from .slots import (
    _PLACEHOLDER,
    _PLACEHOLDER_RE,
    _call_start,
    _dropped,
    _field_role,
    _inner_piece,
    _json_field,
    _label_text,
    _message_shape,
    _placeholders,
    _prompt_dropped,
    _segments,
    _Slot,
    _slot_spans,
    _slot_texts,
    _slot_value,
    _split_think,
    _Structure,
    _Tagged,
    _tojson,
)

_ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
_ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)

_TOOLS_PREAMBLE = (
    "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>"
)
_TOOLS_POSTAMBLE = (
    "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\\n</tool_call>"
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
    # tools as Qwen2.5 and Hermes render them (a system block listing each tool's JSON; calls as
    # <tool_call> JSON); a tool result is a ``tool`` turn; reasoning a <think> block before the content
    "chatml": (
        "{% if tools %}{{ '<|im_start|>system\\n' }}"
        "{% if messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}{% endif %}"
        "{{ '" + _TOOLS_PREAMBLE + "' }}{% for tool in tools %}{{ '\\n' + tool | tojson }}{% endfor %}"
        "{{ '" + _TOOLS_POSTAMBLE + "<|im_end|>\\n' }}{% endif %}"
        "{% for m in messages %}{% if not (tools and loop.first and m.role == 'system') %}"
        "{% if m.tool_calls or m.reasoning_content %}{{ '<|im_start|>' + m.role + '\\n' }}"
        "{% if m.reasoning_content %}{{ '<think>\\n' + m.reasoning_content + '\\n</think>\\n\\n' }}{% endif %}"
        "{{ m.content }}{% for c in m.tool_calls %}{% if m.content or not loop.first %}{{ '\\n' }}{% endif %}"
        "{{ '<tool_call>\\n{\"name\": \"' + c.function.name + '\", \"arguments\": ' + c.function.arguments | tojson"
        " + '}\\n</tool_call>' }}{% endfor %}{{ '<|im_end|>\\n' }}"
        "{% else %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
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

#: the roles of what an assistant message writes (pieces of template text between two of its slots take one)
_ASSISTANT_SLOT_ROLES = frozenset({R.RESPONSE, R.REASONING, R.TOOL_CALL})
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


def _environment() -> BoundedSandbox:
    env = BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


# not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, 3-4x slower, and a build
# makes one per record; treat it as read-only all the same
@dataclass(slots=True)
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
    #: bool per segment, False in messages marked untrained (``"weight": 0``); None: all trained
    seg_train: np.ndarray | None = None
    #: bool per segment, True in the content of non-assistant messages marked ``"training": true``; None: none
    seg_forced: np.ndarray | None = None


class ChatTemplate:
    """A Jinja chat template that renders :class:`Conversation` records into
    role-labelled text.

    >>> from packer.tokens.loader import load_tokenizer
    >>> from packer.options import DEMO_TOKENIZER
    >>> from packer.read.records import Conversation, Message, Source
    >>> tpl = ChatTemplate.named("chatml", load_tokenizer(DEMO_TOKENIZER))
    >>> turns = (Message("user", "Hi"), Message("assistant", "Hello!"))
    >>> r = tpl.render(Conversation(Source(0, "data.json", 0), "messages", turns))
    >>> r.text
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n'
    >>> [R.ROLE_NAMES[c] for c in r.seg_roles]
    ['special', 'marker', 'instruction', 'special', 'marker', 'special', 'marker', 'response', 'end', 'marker']

    ``assemble`` (default True): records of shapes the template only pastes or
    trims into are put together without running Jinja (see :mod:`packer.tokens.assembly`);
    False runs Jinja for every record.

    An instance is what its arguments make it: ``ChatTemplate.named(name, tok,
    system=..., assemble=...)`` in another process renders every record the same.
    What an instance learns as it renders (its shapes, :attr:`refuses_system`)
    depends on the template alone; only :attr:`missing_end` depends on which
    shapes it has met, so a build in parts joins the parts' flags.
    """

    def __init__(
        self,
        name: str,
        source: str,
        tok: TokenizerInfo,
        *,
        input_field: bool,
        system: str = "merge",
        assemble: bool = True,
    ) -> None:
        self.name = name
        if system not in SYSTEM_POLICIES:
            raise ValueError(f"unknown system policy {system!r}; choose --system {'|'.join(SYSTEM_POLICIES)}")
        #: what a system message becomes when the template refuses one (see options.SYSTEM_POLICIES)
        self.system = system
        self.source = source
        self.sha256 = hashlib.sha256(source.encode("utf-8")).hexdigest()
        self._input_field = input_field
        #: where the template came from, named by its errors
        self.origin = (tok.chat_template_file or tok.source) if name == "tokenizer" else f"packer's template {name!r}"
        self._env = _environment()
        try:
            self._template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"template {name!r} ({self.origin}) does not compile: {e}") from None
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
        #: Jinja (the records :func:`packer.tokens.assembly.checked` picks are rendered by Jinja too, to check);
        #: False renders every record with Jinja
        self.assemble = assemble
        #: probe values for this compiled template (it traces the template's joins)
        self._prober = Prober(self._template)
        #: set once a learnt shape closes an assistant turn with no special token
        self.missing_end = False
        self._refuses_system: bool | None = None
        # a plain-text document (Conversation kind "text") is the text and the EOS token, after BOS where the
        # tokenizer adds one (what tokenizing it with the tokenizer's special tokens gives, as TRL does)
        self._text_bos = tok.bos_token if tok.add_bos and tok.bos_token else ""
        self._text_eos = tok.eos_token or ""
        self._check_fault()

    def _check_fault(self) -> None:
        """Fail now, naming the template, if it faults on a two-message conversation (it includes a file,
        recurses, runs too long ...: see :mod:`packer.tokens.sandbox`): it would fault so on every record."""
        try:
            self._render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
        except TemplateFault as e:
            raise ValueError(f"{e}. This is an error in the template, not in packer, and it fails every record: "
                             f"fix the template, or choose --template {'|'.join(BUILTIN_TEMPLATES)}") from None
        except jinja2.TemplateError:
            pass  # (raise_exception on this conversation: a record's matter)

    @classmethod
    def named(cls, name: str, tok: TokenizerInfo, *, system: str = "merge", assemble: bool = True) -> ChatTemplate:
        """A built-in template by name, or ``"tokenizer"`` for the tokenizer's own."""
        if name == "tokenizer":
            if tok.chat_template is None:
                raise ValueError(
                    f"{tok.source}: the tokenizer has no chat_template; choose --template {'|'.join(BUILTIN_TEMPLATES)}"
                )
            return cls("tokenizer", tok.chat_template, tok, input_field=False, system=system, assemble=assemble)
        if name not in BUILTIN_TEMPLATES:
            raise ValueError(f"unknown template {name!r}; known: {', '.join(TEMPLATE_NAMES)}")
        return cls(name, BUILTIN_TEMPLATES[name], tok, input_field=name == "alpaca", system=system, assemble=assemble)

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
        front of the first user message, or is the user message where there is none), ``"dropped"``, or None
        (rendered as it is: no leading system message, a template that takes one, or ``system="reject"``)."""
        if self.system == "reject" or not messages or messages[0].role != "system" or not self.refuses_system:
            return None
        if self.system == "drop":
            return "dropped"
        return "merged"

    # -- rendering ---------------------------------------------------------

    def _message_dicts(self, messages: Sequence[Message], fill: Fill) -> list[dict]:
        action = self.system_action(messages)
        out = self._plain_dicts(messages, fill, skip=1 if action == "dropped" else 0)
        if action == "merged":
            # the system message's slot goes in front of the first user message's content, so its
            # characters keep the system role and the separator is template text
            system = out.pop(0)["content"]
            k = next((j for j, d in enumerate(out) if d["role"] == "user"), None)
            if k is None:  # a conversation the system message prompts: no user turn to merge into, it is one
                out.insert(0, {"role": "user", "content": system})
            else:
                user = out[k]["content"]
                out[k] = {**out[k], "content": system + SYSTEM_SEPARATOR + user if user else system}
        return out

    def _plain_dicts(self, messages: Sequence[Message], fill: Fill, skip: int = 0) -> list[dict]:
        out = []
        for i, m in enumerate(messages):
            if i < skip:
                continue
            if not m.plain:
                out.append(self._tool_dict(i, m, fill))
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

    @staticmethod
    def _tool_dict(i: int, m: Message, fill: Fill) -> dict:
        """The dict of a message with reasoning, tool calls, or a tool result, as transformers' templates
        read them: ``reasoning_content``, OpenAI's ``tool_calls``, a tool message's ``tool_call_id``/``name``;
        each value a slot of its own."""
        d: dict = {"role": m.role, "content": fill(i, "content", m.content) if m.content else ""}
        if m.reasoning is not None:
            d["reasoning_content"] = fill(i, "reasoning", m.reasoning)
        if m.tool_calls:
            calls = []
            for k, c in enumerate(m.tool_calls):
                call: dict = {}
                if c.id is not None:
                    call["id"] = fill(i, f"call{k}.id", c.id)
                call["type"] = "function"
                call["function"] = {"name": fill(i, f"call{k}.name", c.name),
                                    "arguments": fill(i, f"call{k}.arguments", c.arguments)}  # type: ignore[arg-type]
                calls.append(call)
            d["tool_calls"] = calls
        if m.tool_call_id is not None:
            d["tool_call_id"] = fill(i, "tool_call_id", m.tool_call_id)
        if m.name is not None:
            d["name"] = fill(i, "name", m.name)
        return d

    @staticmethod
    def _tool_list(tools: Sequence[dict], fill: Fill) -> list | None:
        """The record's tool definitions as the template's ``tools`` (None: none, as transformers passes)."""
        return [fill(-1, f"tools.{k}", t) for k, t in enumerate(tools)] if tools else None  # type: ignore[arg-type]

    def _render(self, messages: list[dict], tools: list | None = None) -> str:
        # within the bounds of packer.tokens.sandbox: a fault of the template is a TemplateFault naming its file
        variables = {**self._vars, "tools": tools} if tools else self._vars
        return bounded_render(self._template, self.origin, {"messages": messages, **variables})

    def _structure(self, conv: Conversation) -> _Structure | str:
        key = (*(_message_shape(m) for m in conv.messages), len(conv.tools))
        hit = self._structures.get(key)
        if hit is None:
            hit = self._learn(conv.messages, conv.tools)
            self._structures[key] = hit
        return hit

    @functools.cached_property
    def generation_prompt(self) -> str | None:
        """What the template writes to open an assistant turn (``add_generation_prompt``), found once by
        rendering a user message with and without it; None where that tells nothing."""
        user = [{"role": "user", "content": "Hi"}]
        try:
            bare = self._render(user)
            opened = bounded_render(self._template, self.origin,
                                    {"messages": user, **self._vars, "add_generation_prompt": True})
        except jinja2.TemplateError:
            return None
        return opened[len(bare):] if opened.startswith(bare) and len(opened) > len(bare) else None

    def _learn(self, messages: Sequence[Message], tools: Sequence[dict] = ()) -> _Structure | str:
        names: list[tuple[int, str]] = []
        fill = _placeholders(names)
        try:
            text = self._render(self._message_dicts(messages, fill), self._tool_list(tools, fill))  # type: ignore[arg-type]
        except jinja2.TemplateError as e:
            return str(e)
        last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        fixed: list[str] = []
        slots: list[_Slot] = []
        pos = 0
        for m in _PLACEHOLDER_RE.finditer(text):
            fixed.append(text[pos : m.start()])
            i, field = names[int(m.group(1))]
            role = _field_role(field, messages[i].role if i >= 0 else "system")
            slots.append(_Slot(i, field, role, i == last_assistant, i < 0 or messages[i].trained,
                               i >= 0 and messages[i].forced))
            pos = m.end()
        fixed.append(text[pos:])
        dropped = _dropped(names, slots, messages)
        if dropped:
            return f"the template does not render {dropped}; {_TOOL_TEMPLATES}"
        if _prompt_dropped(names, slots, messages):
            return ("the template does not render the system message, the prompt of this conversation (it has no "
                    "user turn); --template chatml, llama3, tulu or alpaca render it")
        gp = self.generation_prompt
        pieces = []
        for k, piece in enumerate(fixed):
            after = slots[k - 1] if k > 0 else None
            before = slots[k] if k < len(slots) else None
            if (after is not None and before is not None and after.message == before.message >= 0
                    and after.role in _ASSISTANT_SLOT_ROLES and before.role in _ASSISTANT_SLOT_ROLES):
                pieces.append(_inner_piece(piece, after, before))
                continue
            end_of = after if after is not None and after.role in (R.RESPONSE, R.TOOL_CALL) else None
            tail: tuple[int, int, int, bool, bool] | None = None
            if before is not None and before.field == "reasoning" and "<think>" in piece:
                # the model writes its own opening <think>: it is part of its reasoning
                cut = piece.rindex("<think>")
                tail = (cut, len(piece) - cut, R.REASONING, before.last, before.train)
                piece = piece[:cut]
            elif before is not None and before.role == R.TOOL_CALL:
                # the opening of a call (``<tool_call>\n{"name": "``) is what the model writes after the
                # turn's header: what follows the generation prompt, else the last control token, and
                # never what the template writes before a content too (Qwen3's empty think block)
                cut = max(_call_start(piece, gp, self._special_re),
                          self._scaffold_end(piece, messages, tools, before.message))
                tail = (cut, len(piece) - cut, R.TOOL_CALL, before.last, before.train) if cut < len(piece) else None
                piece = piece[:cut]
            segs = self._label_fixed(piece, end_of)
            if tail is not None:
                segs.append(tail)
            if end_of is not None and not any(seg[2] == R.END for seg in segs):
                self.missing_end = True
            pieces.append(tuple(segs))
        pattern = re.compile("(.*?)".join(re.escape(p) for p in fixed), re.DOTALL)
        st = _Structure(pattern, tuple(fixed), tuple(slots), tuple(pieces))
        # (a JSON value filled but not shown was rejected above)
        if not st.has_json and not st.untrained and not st.forced:
            st.assembly = probe(lambda fill: self._render(self._message_dicts(messages, fill)), st, self._prober)
        return st

    def _scaffold_end(self, piece: str, messages: Sequence[Message], tools: Sequence[dict], i: int) -> int:
        """How much of ``piece``, the template text before the first tool call of message ``i`` (which has no
        content), the template writes as well before the content of that message given one: the turn's
        scaffolding (its header, Qwen3's empty ``<think>`` block where no reasoning was given), which is not
        in the message and is no part of the call whatever follows it. Found by rendering the shape again
        with a content in message ``i``; 0 where that tells nothing."""
        names: list[tuple[int, str]] = []
        probe = [*messages[:i], dataclasses.replace(messages[i], content="x"), *messages[i + 1:]]
        fill = _placeholders(names)
        try:
            text = self._render(self._message_dicts(probe, fill), self._tool_list(tools, fill))  # type: ignore[arg-type]
        except jinja2.TemplateError:
            return 0
        at = text.find(_PLACEHOLDER.format(names.index((i, "content")))) if (i, "content") in names else -1
        if at < 0:
            return 0
        start = max((m.end() for m in _PLACEHOLDER_RE.finditer(text, 0, at)), default=0)
        scaffold = text[start:at]
        return next((k for k, (a, b) in enumerate(zip(piece, scaffold, strict=False)) if a != b),
                    min(len(piece), len(scaffold)))

    def _label_fixed(self, piece: str, end_of: _Slot | None) -> list[tuple[int, int, int, bool, bool]]:
        """Segments of a fixed piece; ``end_of`` is the assistant slot it follows. After a tool call, the
        text before the first control token closes the call (``}\n</tool_call>``): the call's."""
        segs: list[tuple[int, int, int, bool, bool]] = []
        pos = 0
        matches = list(self._special_re.finditer(piece)) if self._special_re else []
        for j, m in enumerate(matches):
            head = piece[pos : m.start()]
            if j == 0 and end_of is not None and end_of.role == R.TOOL_CALL and head.strip():
                segs.append((pos, len(head), R.TOOL_CALL, end_of.last, end_of.train))
                head = ""
            segs.extend(_label_text(head, pos))
            is_end = end_of is not None and j == 0 and (not piece[: m.start()].strip() or end_of.role == R.TOOL_CALL)
            role = R.END if is_end else R.SPECIAL
            train = end_of.train if is_end and end_of is not None else True
            segs.append((m.start(), m.end() - m.start(), role, bool(is_end and end_of is not None and end_of.last),
                         train))
            pos = m.end()
        segs.extend(_label_text(piece[pos:], pos))
        return segs

    def assembly_of(self, conv: Conversation) -> tuple[tuple[str, ...], tuple[tuple[int, str], ...], _Assembly] | None:
        """The fixed pieces, the slots' (message, field) and the :class:`~packer.tokens.assembly._Assembly` of
        ``conv``'s shape, where records of that shape are assembled without Jinja (a batch of them at once:
        :mod:`packer.pipeline.flat`); None where they are rendered by Jinja (or the template refuses the shape)."""
        st = self._structure(conv) if self.assemble else None
        if st is None or isinstance(st, str) or st.assembly is None:
            return None
        return st.fixed, st.slot_keys, st.assembly

    def control_token_in(self, text: str) -> str | None:
        """The first of the tokenizer's control tokens in ``text`` (a record holding one is rejected), or None."""
        return self._special_in(text)

    def _special_in(self, text: str) -> str | None:
        if self._special_re is None or not any(c in text for c in self._special_first):
            return None
        m = self._special_re.search(text)
        return m.group(0) if m else None

    def render(self, conv: Conversation) -> Rendered | Rejection:
        """Render one conversation, or say why it cannot be.

        Raises :class:`TemplateDrift` if the record is one that :func:`packer.tokens.assembly.checked`
        picks and Jinja renders it otherwise than its shape's assembly: records assembled without
        a check may then be wrong too (set ``assemble = False`` and render them all again;
        :func:`packer.build` does so by itself). A checked record's result is Jinja's render.

        A template that refuses system messages gets the record's leading system message as
        :attr:`system` says (:meth:`system_action`); ``Rendered.system`` tells what was done."""
        action = self.system_action(conv.messages)
        refused = self._control_token(conv, action)
        if refused is not None:
            return refused
        if conv.kind == "text":
            return self._render_text(conv)
        st = self._structure(conv)
        if isinstance(st, str):
            return Rejection(conv.source, "template_error", f"template {self.name!r}: {st}")
        asm = st.assembly if self.assemble else None
        assembled: str | None = None  # the assembled text of a record checked against Jinja
        if asm is not None:
            slot_values = [_slot_value(conv.messages[s.message], s.field) for s in st.slots]
            if asm.fits(slot_values):
                assembled, lengths = asm.assemble(st.fixed, slot_values)
                if not checked(conv.source.doc_id):
                    asm.unchecked += 1
                    return Rendered(assembled, lengths, asm.seg_roles, asm.seg_last, system=action)
        return self._render_jinja(conv, st, action, assembled)

    def _control_token(self, conv: Conversation, action: str | None) -> Rejection | None:
        """The rejection of a record whose messages or tools hold one of the tokenizer's control tokens (it
        would be read as a control token, not text), or None. A system message the policy drops is not read."""
        read = conv.messages[1:] if action == "dropped" else conv.messages
        # one search of all the texts (the common case: none holds one), then the turn that does
        messages = conv.messages if self._special_in("\x00".join([v for m in read for v in m.texts()])) else ()
        for i, m in enumerate(messages):
            if action == "dropped" and i == 0:
                continue  # not rendered: a control token in it does no harm
            for value in m.texts():
                tok = self._special_in(value)
                if tok is not None:
                    return Rejection(
                        conv.source,
                        "special_token_in_content",
                        f"turn {i} ({m.role}) contains the control token {tok!r}; "
                        "it would be read as a control token, not text",
                    )
        if conv.tools:
            tok = self._special_in(json.dumps(conv.tools, ensure_ascii=False))
            if tok is not None:
                return Rejection(conv.source, "special_token_in_content",
                                 f"'tools' contains the control token {tok!r}; it would be read as a control token")
        return None

    def _render_jinja(
        self, conv: Conversation, st: _Structure, action: str | None, assembled: str | None
    ) -> Rendered | Rejection:
        """A conversation rendered by Jinja, its slots found between the fixed pieces of its shape ``st``.
        ``assembled``: the text the shape's assembly gave this record, which Jinja's must equal (else
        :class:`TemplateDrift`); None where it was not assembled."""
        values: dict[tuple[int, str], object] = {}

        def keep(i: int, field: str, value: object) -> object:
            if _json_field(field):
                value = _Tagged(value)  # type: ignore[arg-type]
            values[(i, field)] = value
            return value

        try:
            text = self._render(self._message_dicts(conv.messages, keep), self._tool_list(conv.tools, keep))  # type: ignore[arg-type]
        except jinja2.TemplateError as e:  # pragma: no cover - structure render would have raised
            return Rejection(conv.source, "template_error", f"template {self.name!r}: {e}")
        if assembled is not None and assembled != text:
            raise TemplateDrift(
                f"{conv.source.where()}: template {self.name!r} renders this record otherwise than the "
                "contents pasted into its fixed text, as records of the same shape are assembled"
            )
        slot_values = (_slot_texts(st.slots, values) if st.has_json
                       else [values[(slot.message, slot.field)] for slot in st.slots])
        if slot_values is None:
            return Rejection(conv.source, "template_error", f"template {self.name!r} writes a tool definition or "
                             "a call's arguments otherwise than with tojson; cannot tell them from template text")
        spans = _slot_spans(st, text, slot_values)
        if spans is None:
            return Rejection(
                conv.source,
                "template_error",
                f"template {self.name!r} renders fixed text that depends on this record's content; "
                "cannot tell content from template text",
            )
        lengths, roles, last, train, forced, _ = _segments(st, [b - a for a, b in spans])
        return Rendered(text=text, seg_lengths=lengths, seg_roles=roles, seg_last=last, system=action,  # type: ignore[arg-type]
                        seg_train=train if st.untrained else None, seg_forced=forced if st.forced else None)

    def _render_text(self, conv: Conversation) -> Rendered:
        """A plain-text document without a chat template: [BOS] text EOS, the text ``response`` and the EOS
        ``end`` (the final turn's), so every strategy with loss on the response trains on all of it. A
        tokenizer with no EOS token leaves the document without an end (:attr:`missing_end`)."""
        text = conv.messages[0].content
        segs = [(len(self._text_bos), R.SPECIAL, False), (len(text), R.RESPONSE, True),
                (len(self._text_eos), R.END, True)]
        segs = [seg for seg in segs if seg[0]]
        if not self._text_eos:
            self.missing_end = True
        return Rendered(
            text=self._text_bos + text + self._text_eos,
            seg_lengths=np.array([n for n, _, _ in segs], dtype=np.int64),
            seg_roles=np.array([r for _, r, _ in segs], dtype=np.uint8),
            seg_last=np.array([last for _, _, last in segs], dtype=bool),
        )


#: which templates render tools, named in the message of a record whose tools a template would drop
_TOOL_TEMPLATES = ("templates that render tools, tool calls and tool results: --template chatml, or --template "
                   "tokenizer with a model whose own template does (Qwen2.5, Qwen3, ...); reasoning: chatml, Qwen3")
