"""The mask oracle (issue 25): packer's loss masks against spans derived from the messages alone.

For every chat template in ../shared/tokenizers and slices of every conversation-shaped file in ../shared/data
(plus the tool, reasoning and weight fixtures of tests/test_tools.py and the records of ``ORACLE_EXTRA``), the
loss of each token is derived here without packer's labeller (``packer/tokens/templates.py``,
``packer/tokens/assembly.py``, the role rules of ``packer/tokens/tokenize.py``): the conversation as packer's reader
makes it (``packer.read.formats``) is
rendered with jinja2 the way transformers renders chat templates, each thing an assistant message writes is
located in the FULL render by rendering it again with that thing replaced by a sentinel and seeing which
characters change (prefix renders slip: Qwen3 writes a think block for a message that ends a prefix and drops it
in the whole conversation), and the characters are mapped to tokens by the tokenizer's offsets. Each packed
document's ``mask_instruction_tuning``, ``mask_answer_only``, ``mask_last_turn``, ``trainable`` and ``forced``
(none where the shards have no such column) must then equal the oracle's, token by token; any difference fails
with the record, the tokens around it and both sides' roles and columns. The rules, as the README documents them:

1. **What an assistant message writes has loss.** Its content as the template renders it (trimmed or not); its
   reasoning (``reasoning_content``, or a ``<think>`` block opening the content) where the template keeps it,
   with the ``<think>`` / ``</think>`` tags around it; its tool calls as the template renders them: the text the
   template writes with the message's calls and does not write without them (the call syntax,
   ``<tool_call>\\n{"name": ...}\\n</tool_call>``, the separator before and between calls). Whitespace between
   two of these in one message (the blank line after ``</think>``) goes with the later one: the model writes it.
2. **Its end token has loss:** the first control token after what it writes, with only whitespace between
   (``<|im_end|>``, ``<|eot_id|>``, ``</s>``, ``<|end|>``, ``<end_of_turn>``); not the text after it (the newline
   after ``<|im_end|>``: generation stops at the end token).
3. **Nothing else has loss:** template text that is not in the message (headers, the generation prompt, a system
   prompt the template injects, Qwen3's empty ``<think>\\n\\n</think>\\n\\n`` where no reasoning was given,
   whatever follows it) is scaffolding.
4. **Tokens.** A token takes the first of response, tool_call, reasoning, end, (prompt), (template text) among
   the characters it covers (the straddling rule); a control token (an added token the tokenizer flags special)
   is end if it covers a character of an end token, else template text, whatever content it absorbed. Among the
   characters of that role, a prompt message's marked trained win, then an untrained message's, then the final
   assistant message's.
5. **Strategies.** ``instruction_tuning``: response, tool_call, reasoning, end; ``answer_only``: the same less
   reasoning; ``last_turn``: instruction_tuning's tokens of the final assistant message. All three leave out
   the tokens of messages marked untrained (``weight: 0`` / ``training: false``); those tokens (a prompt
   message's content too) are not ``trainable``.
6. **A prompt message marked trained** (``"training": true`` on a user, system or tool message, where packer
   reads the flag: ``Message.forced``) has loss on its content under every strategy and in every turn; the
   template text around it and a control token that absorbed some of it have none (the ``forced`` column).
7. **What packer does to a record before any template sees it** (its documented rewrites, mirrored here): a
   system message a template refuses is merged into the first user message after a blank line (``--system
   merge``), or is the user turn where there is none; Alpaca's ``input`` follows the instruction after a blank
   line.

A record packer rejects is not compared; the test checks that each ``template_error`` is one the oracle's own
render confirms (it raises, or leaves out a tool call, a tool result or all the reasoning).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Encoding, Tokenizer

from packer import build
from packer.read.formats import RecordReader
from packer.read.records import Conversation, Pair

from .helpers import SHARED_DATA, SHARED_TOKENIZERS, need_shared, read_documents, real_tokenizer, tokenizer_params
from .test_tools import EXTRA, WEIGHTED, call, write_jsonl

# ----------------------------------------------------------------------------------------------- the records

#: per file: how many leading records to take, and the indices of the odd ones the data README names
#: (besides those :func:`_odd` finds)
HEAD = 24
NAMED = {
    "sharegpt_v3_unfiltered_cleaned_split_first3000.json": [28, 71, 141, 260, 1160, 1413, 1835, 2176, 2260],
    "messages_alpagasus_claude_t45_alpaca.jsonl": [2590],
    "alpaca_code_alpaca_2k.json": [237],
    "messages_lima.jsonl": [1000, 1012, 1029],
    "alpaca_llamafactory_en_demo.json": [92, 610],
}
#: preference pairs and KTO records: not SFT records, so built apart (test_pair_sides_and_kto_masks_equal_the_oracle)
PAIR_FILES = ("llamafactory_dpo_en_demo.json", "llamafactory_v1_dpo_demo.jsonl")
KTO_FILES = ("llamafactory_kto_en_demo.json",)
NOT_SFT = (*PAIR_FILES, *KTO_FILES)
#: odd records taken per file besides the leading ones, found among its first SCAN
ODD, SCAN = 8, 1000

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
#: the shapes of issue 25's item 1: a final assistant turn that is only a tool call, with content "", null or
#: reasoning; the same call before a tool result; an answer after a reasoning-only turn
ORACLE_EXTRA = [
    {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                  {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Oslo"})]}],
     "tools": [WEATHER]},
    {"messages": [{"role": "system", "content": "Use the tools."}, {"role": "user", "content": "Oslo and Rome?"},
                  {"role": "assistant", "content": None,
                   "tool_calls": [call("get_weather", {"city": "Oslo"}), call("get_weather", {"city": "Rome"})]}],
     "tools": [WEATHER]},
    {"messages": [{"role": "user", "content": "Weather in Lima?"},
                  {"role": "assistant", "content": "", "reasoning_content": "Ask the tool.",
                   "tool_calls": [call("get_weather", {"city": "Lima"})]}],
     "tools": [WEATHER]},
    {"messages": [{"role": "user", "content": "Weather in Cairo?"},
                  {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Cairo"})]},
                  {"role": "tool", "content": "hot"}, {"role": "assistant", "content": "It is hot."},
                  {"role": "user", "content": "And Oslo?"},
                  {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Oslo"})]}],
     "tools": [WEATHER]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nAdd.\n</think>\n\n4"},
                  {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "<think>Add again.</think>6"}]},
    # a final turn with an answer and a call, reasoning before them; arguments a JSON string, not ASCII
    {"messages": [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "北京天气？"},
                  {"role": "assistant", "content": "我查一下。", "reasoning_content": "用工具。",
                   "tool_calls": [call("get_weather", "{\"city\": \"北京\"}")]}],
     "tools": [WEATHER]},
    # an untrained bare call last; an answer opening with a newline; a tool result with its call's name
    {"messages": [{"role": "user", "content": "Weather in Rome?"},
                  {"role": "assistant", "content": "\nLet me see.",
                   "tool_calls": [call("get_weather", {"city": "Rome"}, "r")]},
                  {"role": "tool", "tool_call_id": "r", "name": "get_weather", "content": "mild"},
                  {"role": "assistant", "content": "Mild. Anything else?"}, {"role": "user", "content": "Paris?"},
                  {"role": "assistant", "content": None, "weight": 0,
                   "tool_calls": [call("get_weather", {"city": "Paris"})]}],
     "tools": [WEATHER]},
    # OpenAI's shapes packer reads since issue 25's items 2 and 3 (rejected before): a system message and an
    # answer; a call without a content key
    {"messages": [{"role": "system", "content": "Greet the user."}, {"role": "assistant", "content": "Hello!"}]},
    {"messages": [{"role": "user", "content": "Weather in Bern?"},
                  {"role": "assistant", "tool_calls": [call("get_weather", {"city": "Bern"})]}], "tools": [WEATHER]},
]


def _odd(record: object) -> bool:
    """A record worth checking whatever its place: texts with whitespace at an edge or empty, markup in text,
    roles other than a plain user/assistant alternation, long conversations."""
    texts: list[str] = []
    roles: list[str] = []

    def walk(x: object, key: str = "") -> None:
        if isinstance(x, str):
            (roles if key in ("from", "role") else texts).append(x)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, k)
        elif isinstance(x, list):
            for v in x:
                walk(v, key)

    walk(record)
    if any(t != t.strip() or not t or "<" in t for t in texts):
        return True
    plain = [r for r in roles if r in ("user", "human", "assistant", "gpt")]
    alternating = all((a in ("user", "human")) != (b in ("user", "human")) for a, b in itertools.pairwise(plain))
    return len(plain) != len(roles) or not alternating or (roles[:1] not in (["user"], ["human"])) or len(roles) > 6


def _records(path: Path) -> list:
    """The records of a file: parsed, or for JSON Lines each line's text (parsed when taken)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [line for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    return data if isinstance(data, list) else [data]


def _slice(records: list, named: list[int]) -> list:
    """The first HEAD records, the ``named`` ones, and the first ODD of the odd ones among the first SCAN."""
    def get(i: int) -> object:
        return json.loads(records[i]) if isinstance(records[i], str) else records[i]

    take = list(range(min(HEAD, len(records))))
    take += [i for i in named if i < len(records) and i not in take]
    take += list(itertools.islice((i for i in range(HEAD, min(len(records), SCAN)) if i not in take
                                   and _odd(get(i))), ODD))
    return [get(i) for i in sorted(take)]


def oracle_inputs(folder: Path) -> list[Path]:
    """Slices of every conversation-shaped file of ../shared/data as JSON Lines (a file holding one object, a
    list of one), then the fixtures: the paths to build, in order (documents' ids follow it)."""
    paths = []
    for f in sorted(SHARED_DATA.iterdir()):
        if f.suffix not in (".json", ".jsonl") or f.name in NOT_SFT:
            continue
        paths.append(write_jsonl(folder / f"{f.stem}.jsonl", _slice(_records(f), NAMED.get(f.name, []))))
    paths.append(write_jsonl(folder / "fixtures.jsonl", [*EXTRA, *ORACLE_EXTRA]))
    paths.append(write_jsonl(folder / "weighted.jsonl", WEIGHTED))
    return paths


# ------------------------------------------------------------------------------------ the templates, rendered


class _Generation(jinja2.ext.Extension):
    # transformers' {% generation %} marks assistant text for its own masks; it renders its body as it is
    tags = {"generation"}  # noqa: RUF012

    def parse(self, parser):  # type: ignore[no-untyped-def]
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(x: object, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False):  # type: ignore[no-untyped-def]
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _token_text(value: object) -> str | None:
    return value.get("content") if isinstance(value, dict) else value  # type: ignore[return-value]


#: ranks of the straddling rule (higher wins): the oracle's own names, README's order
TEXT, PROMPT, END, REASONING, TOOL_CALL, RESPONSE = range(6)
#: the ranks each strategy trains
TRAINED = {"instruction_tuning": (RESPONSE, TOOL_CALL, REASONING, END), "answer_only": (RESPONSE, TOOL_CALL, END),
           "last_turn": (RESPONSE, TOOL_CALL, REASONING, END)}
RANK_NAMES = ("template", "prompt", "end", "reasoning", "tool_call", "response")
_THINK = re.compile(r"<think>(.*?)</think>(.*)", re.DOTALL)


class Unlocated(Exception):
    """The oracle cannot locate a message's text in the render."""


@dataclass
class Model:
    """One shared tokenizer and its chat template, rendered as transformers renders it."""

    name: str
    template: jinja2.Template
    variables: dict
    tok: Tokenizer
    control: frozenset[int]  # ids of the added tokens flagged special
    control_texts: tuple[str, ...]  # their texts, longest first

    @classmethod
    def load(cls, folder: Path, tok: Tokenizer) -> Model | None:
        """The model in ``folder``, its ``tokenizer.json`` loaded as ``tok``; None where it has no template."""
        config = json.loads((folder / "tokenizer_config.json").read_text())
        jinja_file = folder / "chat_template.jinja"
        source = jinja_file.read_text() if jinja_file.exists() else config.get("chat_template")
        if isinstance(source, list):
            source = next(t["template"] for t in source if t["name"] == "default")
        if not source:
            return None
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[_Generation, jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        names = ("bos_token", "eos_token", "unk_token", "pad_token")
        variables = {k: _token_text(config.get(k)) for k in names}
        special = {i: t.content for i, t in tok.get_added_tokens_decoder().items() if t.special}
        texts = tuple(sorted(set(special.values()), key=len, reverse=True))
        return cls(folder.name, env.from_string(source), variables, tok, frozenset(special), texts)

    def render(self, messages: list[dict], tools: list | None) -> str:
        return self.template.render(messages=messages, tools=tools, documents=None, add_generation_prompt=False,
                                    **self.variables)

    @property
    def refuses_system(self) -> bool:
        """Renders a user and an assistant message, but not after a system message."""
        if "_refuses" not in self.__dict__:
            pair = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
            self.__dict__["_refuses"] = _renders(self, pair) and not _renders(
                self, [{"role": "system", "content": "Be brief."}, *pair])
        return self.__dict__["_refuses"]


def _renders(model: Model, messages: list[dict]) -> bool:
    try:
        model.render(messages, None)
    except jinja2.TemplateError:
        return False
    return True


def as_dicts(conv: Conversation, model: Model) -> tuple[list[dict], list[list[tuple[int, int, int]]]]:
    """The messages as transformers' templates take them (packer's documented rewrites applied: a refused
    system message merged, Alpaca's input after the instruction), and for each the record's messages its
    content holds: (message index, start, end) in the content."""
    out, owners = [], []
    for i, m in enumerate(conv.messages):
        content = m.content + "\n\n" + m.input if m.content and m.input else m.content or m.input
        d: dict = {"role": m.role, "content": content}
        if m.reasoning is not None:
            d["reasoning_content"] = m.reasoning
        if m.tool_calls:
            d["tool_calls"] = [c.as_dict() for c in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            d["name"] = m.name
        out.append(d)
        owners.append([(i, 0, len(content))])
    if out and out[0]["role"] == "system" and model.refuses_system and any(d["role"] == "user" for d in out):
        system = out.pop(0)["content"]
        owners.pop(0)
        k = next(j for j, d in enumerate(out) if d["role"] == "user")
        user, (i, _, _) = out[k]["content"], owners[k][0]
        out[k] = {**out[k], "content": system + "\n\n" + user if user else system}
        owners[k] = [(0, 0, len(system))] + ([(i, len(system) + 2, len(system) + 2 + len(user))] if user else [])
    elif out and out[0]["role"] == "system" and model.refuses_system:
        out[0] = {**out[0], "role": "user"}  # no user turn to merge into: the system text is the user turn
    return out, owners


# ------------------------------------------------------------------------------------- locating by sentinels


def _prefix(a: str, b: str) -> int:
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # bisection on C-speed slice comparisons: long conversations
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _suffix(a: str, b: str, limit: int) -> int:
    lo, hi = 0, min(len(a), len(b), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _sentinel(value: str, k: int) -> str:
    """A text unlike ``value`` at both ends (trimmed or not), so the characters that change are exactly
    the value's."""
    ends = {value[:1], value[-1:], value.strip()[:1], value.strip()[-1:]}
    edge = next(c for c in "QJKV" if c not in ends)
    return f"{edge}xSentinel{k}x{edge}"


def _locate(model: Model, real: str, messages: list[dict], tools: list | None, j: int, field: str,
            part: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """Where message j's ``field`` (``content``, or characters ``part`` of it; ``reasoning_content``; or
    ``think``/``answer``: the parts of a content opening with a <think> block) is in the real render; None
    where the template leaves it out."""
    d = dict(messages[j])
    if field in ("think", "answer"):
        think, answer = _THINK.fullmatch(d["content"]).groups()  # type: ignore[union-attr]
        sentinel = _sentinel(think if field == "think" else answer, j)
        d["content"] = f"<think>{sentinel if field == 'think' else think}</think>"
        d["content"] += sentinel if field == "answer" else answer
    elif part is not None:
        a, b = part
        sentinel = _sentinel(d[field][a:b], j)
        d[field] = d[field][:a] + sentinel + d[field][b:]
    else:
        sentinel = _sentinel(d[field], j)
        d[field] = sentinel
    variant = model.render([*messages[:j], d, *messages[j + 1:]], tools)
    if variant == real:
        return None
    p = _prefix(real, variant)
    s = _suffix(real, variant, min(len(real), len(variant)) - p)
    if variant[p:len(variant) - s] != sentinel:
        raise Unlocated(f"message {j}'s {field} is not rendered once as it is (or trimmed)")
    return p, len(real) - s


def _locate_calls(model: Model, real: str, messages: list[dict], tools: list | None, j: int,
                  bounds: set[int]) -> tuple[int, int] | None:
    """Where message j's tool calls are: the text the real render has and the render without them lacks (an
    insertion; where the place is ambiguous, the first that starts and ends on token boundaries)."""
    d = {k: v for k, v in messages[j].items() if k != "tool_calls"}
    try:
        without = model.render([*messages[:j], d, *messages[j + 1:]], tools)
    except jinja2.TemplateError:
        raise Unlocated(f"message {j} does not render without its tool calls") from None
    n = len(real) - len(without)
    if n == 0 and real == without:
        return None
    last = _prefix(real, without)
    first = len(without) - _suffix(real, without, len(without))
    if n <= 0 or first > last:
        raise Unlocated(f"message {j}'s tool calls change the render beyond an insertion")
    q = next((q for q in range(first, last + 1) if q in bounds and q + n in bounds), first)
    return q, q + n


def _is_space(text: str, a: int, b: int) -> bool:
    return not text[a:b].strip()


def _extend_think(text: str, a: int, b: int) -> tuple[int, int]:
    """Reasoning with its tags: the ``<think>`` before it and ``</think>`` after it (whitespace between)."""
    before = text[:a].rstrip()
    if before.endswith("<think>"):
        a = len(before) - len("<think>")
    after = len(text[b:]) - len(text[b:].lstrip())
    if text.startswith("</think>", b + after):
        b += after + len("</think>")
    return a, b


@dataclass
class Expected:
    ids: np.ndarray
    masks: dict[str, np.ndarray]
    trainable: np.ndarray
    ranks: np.ndarray  # per token
    forced: np.ndarray  # per token: of a prompt message marked trained (``"training": true``)


def _regions(model: Model, real: str, messages: list[dict], tools: list | None, j: int,
             bounds: set[int]) -> list[tuple[int, int, int]]:
    """(start, end, rank) of what assistant message j writes, in text order, gaps of whitespace between
    them joined to the later one."""
    d = messages[j]
    regions: list[tuple[int, int, int]] = []
    content = d["content"] or ""
    think = _THINK.fullmatch(content) if content.startswith("<think>") else None
    parts = ([("think", think.group(1), REASONING), ("answer", think.group(2), RESPONSE)] if think
             else [("content", content, RESPONSE)])
    if d.get("reasoning_content"):
        parts.append(("reasoning_content", d["reasoning_content"], REASONING))
    for field, value, rank in parts:
        if not value:
            continue
        span = _locate(model, real, messages, tools, j, field)
        if span is None:
            continue
        if rank == REASONING:
            span = _extend_think(real, *span)
        regions.append((*span, rank))
    if d.get("tool_calls"):
        span = _locate_calls(model, real, messages, tools, j, bounds)
        if span is not None:
            regions.append((*span, TOOL_CALL))
    regions.sort()
    out: list[tuple[int, int, int]] = []
    for a, b, rank in regions:
        if out and out[-1][1] < a and _is_space(real, out[-1][1], a):
            a = out[-1][1]
        out.append((a, b, rank))
    return out


def _end_token(model: Model, text: str, at: int) -> tuple[int, int] | None:
    """The control token after position ``at`` with only whitespace between, or None."""
    pos = at + len(text[at:]) - len(text[at:].lstrip())
    for t in model.control_texts:
        if text.startswith(t, pos):
            return pos, pos + len(t)
    return None


def render(model: Model, conv: Conversation) -> str:
    """The oracle's render of a record."""
    messages, _ = as_dicts(conv, model)
    return model.render(messages, list(conv.tools) or None)


def expected(model: Model, conv: Conversation, enc: Encoding | None = None) -> Expected:
    """The loss of each token of a record (module docstring); ``enc``: the encoding of its render, if made."""
    real = render(model, conv)
    if enc is None:
        enc = model.tok.encode(real, add_special_tokens=False)
    offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    bounds = set(offsets[:, 0].tolist()) | set(offsets[:, 1].tolist())
    chars = _char_values(model, conv, real, bounds)
    values = _token_values(chars, offsets)
    control = np.isin(np.asarray(enc.ids), list(model.control))
    for t in np.flatnonzero(control):  # end if it covers an end token's character, whatever else it absorbed
        a, b = offsets[t]
        ends = chars[a:b][(chars[a:b] >> _BITS) == END]
        values[t] = ends.max() & (0xFF ^ _FORCED) if len(ends) else 0
    ranks = values >> _BITS
    trained, last, forced = (values & _UNTRAINED) == 0, (values & _LAST) != 0, (values & _FORCED) != 0
    masks = {name: np.isin(ranks, r) & trained | forced for name, r in TRAINED.items()}
    masks["last_turn"] &= last | forced
    return Expected(np.asarray(enc.ids), masks, trained, ranks, forced)


#: a character's value: its rank << _BITS | flags (_FORCED, _UNTRAINED, _LAST: among one rank's characters a
#: forced message's win, then an untrained one's, then the final assistant message's)
_BITS, _FORCED, _UNTRAINED, _LAST = 3, 4, 2, 1


def _char_values(model: Model, conv: Conversation, real: str, bounds: set[int]) -> np.ndarray:
    """The value of each character of the render: what each assistant message writes and its end token, the
    content of a prompt message marked untrained or trained (``forced``); 0 elsewhere."""
    messages, owners = as_dicts(conv, model)
    tools = list(conv.tools) or None
    final = max((j for j, d in enumerate(messages) if d["role"] == "assistant"), default=-1)
    chars = np.zeros(len(real), dtype=np.uint8)
    for j, d in enumerate(messages):
        if d["role"] != "assistant":
            for i, a, b in owners[j]:
                m = conv.messages[i]
                flag = _FORCED if getattr(m, "forced", False) else 0 if m.trained else _UNTRAINED
                span = _locate(model, real, messages, tools, j, "content", (a, b)) if flag else None
                if span is not None:
                    chars[span[0]:span[1]] = PROMPT << _BITS | flag
            continue
        flags = (0 if conv.messages[owners[j][0][0]].trained else _UNTRAINED) | (_LAST if j == final else 0)
        regions = _regions(model, real, messages, tools, j, bounds)
        for a, b, rank in regions:
            chars[a:b] = rank << _BITS | flags
        if regions:
            end = _end_token(model, real, regions[-1][1])
            if end is not None:
                chars[end[0]:end[1]] = END << _BITS | flags
    return chars


def _token_values(chars: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The highest character value of each token; a token of no characters takes the one before it."""
    starts, ends = offsets[:, 0], offsets[:, 1]
    out = np.zeros(len(starts), dtype=np.uint8)
    if not len(chars):
        return out
    empty = ends <= starts
    out[empty] = chars[np.clip(starts[empty] - 1, 0, len(chars) - 1)]
    width = int((ends - starts).max(initial=0))
    for k in range(width):
        idx = starts + k
        on = idx < ends
        out[on] = np.maximum(out[on], chars[idx[on]])
    return out


# ------------------------------------------------------------------------------------------------ comparing


def _context(model: Model, doc: dict, exp: Expected, got: np.ndarray, want: np.ndarray, t: int) -> str:
    """The tokens around token ``t``: text, packer's role and columns, the oracle's rank and columns."""
    from packer.output import roles as R
    rows = []
    ids = doc["input_ids"]
    for k in range(max(0, t - 6), min(len(ids), t + 7)):
        piece = model.tok.decode([int(ids[k])], skip_special_tokens=False)
        g, w = ("".join(str(int(x)) for x in cols[:, k]) for cols in (got, want))
        rows.append(f"{'>' if k == t else ' '} {k:5d} {piece!r:24} packer {R.ROLE_NAMES[int(doc['roles'][k])]:11}"
                    f" {g}  oracle {RANK_NAMES[int(exp.ranks[k])]:9} {w}")
    return "\n".join(rows)


def compare(model: Model, conv: Conversation, doc: dict, enc: Encoding | None = None) -> str | None:
    """None where packer's document is the oracle's, else what differs, with the tokens around it."""
    try:
        exp = expected(model, conv, enc)
    except Unlocated as e:
        return f"{conv.source.where()}: the oracle cannot label it: {e}"
    if not np.array_equal(doc["input_ids"], exp.ids):
        n = min(len(exp.ids), len(doc["input_ids"]))
        t = int(np.flatnonzero(np.append(doc["input_ids"][:n] != exp.ids[:n], True))[0])
        return f"{conv.source.where()}: packer's ids differ from the oracle's render at token {t}"
    got, want = _packer_columns(doc), _oracle_columns(exp)
    bad = np.flatnonzero((got != want).any(axis=0))
    if not len(bad):
        return None
    header = f"{conv.source.where()}: {len(bad)} tokens differ (columns: {', '.join(COLUMNS)})\n"
    return header + _context(model, doc, exp, got, want, int(bad[0]))


#: the columns compared, in the order of the digits in a failure's listing
COLUMNS = (*(f"mask_{n}" for n in TRAINED), "trainable", "forced")


def _packer_columns(doc: dict) -> np.ndarray:
    # a shard without a "forced" column (format version 2) has no forced token
    return np.stack([doc[c].astype(bool) if c in doc else np.zeros(len(doc["input_ids"]), bool) for c in COLUMNS])


def _oracle_columns(exp: Expected) -> np.ndarray:
    return np.stack([*(exp.masks[n] for n in TRAINED), exp.trainable, exp.forced])


# ------------------------------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def oracle_data(tmp_path_factory):  # type: ignore[no-untyped-def]
    need_shared()
    folder = tmp_path_factory.mktemp("oracle")
    paths = oracle_inputs(folder)
    return folder, paths, list(RecordReader(paths))


def _has_template(folder: Path) -> bool:
    return (folder / "chat_template.jinja").exists() or "chat_template" in json.loads(
        (folder / "tokenizer_config.json").read_text())


#: the shared tokenizers with a chat template (``_broken`` holds one that does not load)
MODELS = sorted(p.name for p in SHARED_TOKENIZERS.iterdir() if p.is_dir() and not p.name.startswith("_")
                and _has_template(p)) if SHARED_TOKENIZERS.is_dir() else []


def _template_error_confirmed(model: Model, conv: Conversation) -> bool:
    """The template raises on the record, or leaves out a tool call, a tool result or all the reasoning."""
    messages, _ = as_dicts(conv, model)
    tools = list(conv.tools) or None
    try:
        real = model.render(messages, tools)
    except jinja2.TemplateError:
        return True
    if tools and model.render(messages, None) == real:
        return True
    reasoning = False
    for j, d in enumerate(messages):
        if d.get("tool_calls"):
            bare = {k: v for k, v in d.items() if k != "tool_calls"}
            if model.render([*messages[:j], bare, *messages[j + 1:]], tools) == real:
                return True
        if d["role"] == "tool" and d["content"] and _locate(model, real, messages, tools, j, "content") is None:
            return True
        if d.get("reasoning_content"):
            reasoning |= _locate(model, real, messages, tools, j, "reasoning_content") is not None
    return any(d.get("reasoning_content") for d in messages) and not reasoning


@pytest.mark.parametrize("name", tokenizer_params(MODELS))
def test_masks_equal_the_oracle(name, oracle_data):  # type: ignore[no-untyped-def]
    """Every packed document's masks are the oracle's; every template_error is one the template makes."""
    folder, paths, convs = oracle_data
    tok = real_tokenizer(name)
    model = Model.load(SHARED_TOKENIZERS / name, tok.tokenizer)
    assert model is not None
    out = folder / f"out-{name}"
    # the tokenizers backend: the labels do not depend on it (a tiktoken build is byte-identical:
    # test_tiktoken_matrix), and qualifying a tiktoken core costs seconds per tokenizer
    build(paths, out, tokenizer=tok, template="tokenizer", seq_len=32768, tokenizer_backend="tokenizers")
    docs = read_documents(out)
    rejected = {}
    if (out / "rejected.jsonl").exists():
        rejected = {x["doc_id"]: x for x in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    failures: list[str] = []
    reasons: Counter[str] = Counter()
    packed = [c for c in convs if isinstance(c, Conversation) and c.source.doc_id in docs]
    encodings = model.tok.encode_batch([render(model, c) for c in packed], add_special_tokens=False)
    for conv, enc in zip(packed, encodings, strict=True):
        problem = compare(model, conv, docs[conv.source.doc_id], enc)
        if problem:
            failures.append(problem)
    for conv in convs:
        if not isinstance(conv, Conversation):
            continue
        doc_id = conv.source.doc_id
        if doc_id not in docs:
            reason = rejected[doc_id]["reason"]
            reasons[reason] += 1
            if reason == "template_error" and not _template_error_confirmed(model, conv):
                failures.append(f"{conv.source.where()}: packer rejects it ({rejected[doc_id]['detail']}); "
                                "the template renders all of it")
    assert len(docs) >= 300, f"only {len(docs)} documents packed (rejected: {dict(reasons)})"
    assert not failures, f"{len(failures)} of {len(docs)} documents differ:\n" + "\n\n".join(failures[:5])


def test_qwen3_injected_think_block_has_no_loss_before_a_bare_tool_call(tmp_path):
    """Qwen3 writes ``<think>\\n\\n</think>\\n\\n`` before the final assistant turn whatever it holds: it is
    ``marker`` with no loss under every built-in strategy but ``full`` before a bare tool call (content "" or
    null) exactly as before a content; the call from ``<tool_call>`` on is ``tool_call`` (issue 25, item 1)."""
    from packer.output import roles as R
    need_shared()
    user = {"role": "user", "content": "Weather in Oslo?"}
    calls = [call("get_weather", {"city": "Oslo"})]
    records = [{"messages": [user, {"role": "assistant", "content": "", "tool_calls": calls}], "tools": [WEATHER]},
               {"messages": [user, {"role": "assistant", "content": None, "tool_calls": calls}], "tools": [WEATHER]},
               {"messages": [user, {"role": "assistant", "content": "Sunny."}]}]
    tok = real_tokenizer("qwen3")
    m = build([write_jsonl(tmp_path / "r.jsonl", records)], tmp_path / "o", tokenizer=tok, template="tokenizer")
    assert m["counts"]["packed"] == 3
    block = tok.tokenizer.encode("<think>\n\n</think>\n\n", add_special_tokens=False).ids
    opening = tok.tokenizer.encode("<tool_call>", add_special_tokens=False).ids
    for doc_id, doc in read_documents(tmp_path / "o").items():
        ids = doc["input_ids"].tolist()
        at = next(k for k in range(len(ids)) if ids[k:k + len(block)] == block)
        think = slice(at, at + len(block))
        assert [R.ROLE_NAMES[int(r)] for r in doc["roles"][think]] == ["marker"] * len(block), doc_id
        for name in R.BUILTIN_STRATEGIES:
            assert doc[f"mask_{name}"][think].all() if name == "full" else not doc[f"mask_{name}"][think].any(), name
        after = at + len(block)
        first = "tool_call" if doc_id < 2 else "response"
        assert R.ROLE_NAMES[int(doc["roles"][after])] == first and doc["mask_answer_only"][after], doc_id
        assert (ids[after:after + len(opening)] == opening) == (doc_id < 2)


def _slices(folder: Path, names: tuple[str, ...]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_jsonl(folder / f"{Path(n).stem}.jsonl", _slice(_records(SHARED_DATA / n), NAMED.get(n, [])))
            for n in names]


def _side(unit: dict, branch: int) -> dict:
    """One side of a stored pair: its shared prefix and its own branch, every column."""
    keep = unit["branch"] != (3 - branch)
    return {k: v[keep] for k, v in unit.items()}


@pytest.mark.parametrize("name", tokenizer_params(MODELS))
def test_pair_sides_and_kto_masks_equal_the_oracle(name, tmp_path):  # type: ignore[no-untyped-def]
    """Each side of every stored pair (its shared prefix and its own branch) has the oracle's ids and masks for
    that side's conversation, on slices of every preference file of ../shared/data; so has every KTO document.
    Every rejected pair's template_error is one the template makes on one of its sides."""
    need_shared()
    tok = real_tokenizer(name)
    model = Model.load(SHARED_TOKENIZERS / name, tok.tokenizer)
    failures: list[str] = []
    for kind, names in (("pairs", PAIR_FILES), ("kto", KTO_FILES)):
        paths = _slices(tmp_path / kind, names)
        out = tmp_path / f"out-{kind}"
        build(paths, out, tokenizer=tok, template="tokenizer", seq_len=32768, tokenizer_backend="tokenizers")
        docs = read_documents(out)
        rejected = {}
        if (out / "rejected.jsonl").exists():
            rejected = {x["doc_id"]: x for x in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
        for item in RecordReader(paths):
            d = item.source.doc_id
            sides = [(item.chosen, 1), (item.rejected, 2)] if isinstance(item, Pair) else [(item, 0)]
            if d not in docs:
                reason = rejected[d]["reason"]
                if reason == "template_error" and not any(_template_error_confirmed(model, c) for c, _ in sides):
                    failures.append(f"{item.source.where()}: rejected ({rejected[d]['detail']}); the template "
                                    "renders both sides")
                continue
            for conv, branch in sides:
                problem = compare(model, conv, _side(docs[d], branch) if branch else docs[d])
                if problem:
                    failures.append(f"{'chosen' if branch == 1 else 'rejected' if branch else 'kto'}: {problem}")
        assert len(docs) >= 0.8 * len(list(RecordReader(paths))), f"{kind}: only {len(docs)} packed"
    assert not failures, f"{len(failures)} sides differ:\n" + "\n\n".join(failures[:5])
