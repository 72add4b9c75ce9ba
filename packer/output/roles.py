"""The role and strategy tables: the single source of truth for both.

Every token of a packed row carries one role code (uint8). A strategy is the
set of roles that carry loss; each built-in strategy becomes one boolean mask
column in every shard, so the choice is made at training time.

    text   : <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n
    roles  : special marker instruction special marker special marker response end marker
    IT mask: 0       0      0           0       0      0       0      1        1   0
    IM mask: 0       0      1           0       0      0       0      1        1   0

An assistant turn that reasons and calls a tool, and the tool's result (Qwen3's template)::

    text       : <think>\nlook it up\n</think>  \n\n<tool_call>\n{"name": "f", ...}\n</tool_call>  <|im_end|> ... sunny
    roles      : reasoning ................  tool_call ............................  end        ... tool
    IT mask    : 1                           1                                       1              0
    answer_only: 0                           1                                       1              0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import numpy as np

PAD = 0
SPECIAL = 1
MARKER = 2
BOILERPLATE = 3
SYSTEM = 4
INSTRUCTION = 5
INPUT = 6
RESPONSE = 7
END = 8
TOOL_CALL = 9
REASONING = 10
TOOL = 11

#: role name -> code, in code order (code 0, padding, is never stored)
ROLES: Mapping[str, int] = MappingProxyType(
    {
        "special": SPECIAL,
        "marker": MARKER,
        "boilerplate": BOILERPLATE,
        "system": SYSTEM,
        "instruction": INSTRUCTION,
        "input": INPUT,
        "response": RESPONSE,
        "end": END,
        "tool_call": TOOL_CALL,
        "reasoning": REASONING,
        "tool": TOOL,
    }
)
ROLE_NAMES: Mapping[int, str] = MappingProxyType({v: k for k, v in ROLES.items()})
#: the number of role codes, padding's 0 included (12; one more than ``len(ROLES)``): the length of an
#: array indexed by role code, such as a count per role, ``np.bincount(roles, minlength=N_ROLES)``
N_ROLES = max(ROLES.values()) + 1

#: A token whose characters come from several segments takes the first role
#: of this list (the contract's straddling rule), except a control token (an
#: added token the tokenizer flags special): it is ``end`` if it covers a
#: character of an end-of-turn token, else ``special``, whatever content it
#: absorbed (see CONTROL_TOKEN_RULE).
PRECEDENCE: tuple[int, ...] = (
    RESPONSE, TOOL_CALL, REASONING, END, TOOL, INPUT, INSTRUCTION, SYSTEM, BOILERPLATE, MARKER, SPECIAL,
)
#: the roles of message content (what a control token never takes)
CONTENT_ROLES: tuple[str, ...] = ("system", "instruction", "input", "response", "tool_call", "reasoning", "tool")
CONTROL_TOKEN_RULE = (
    "a control token (an added token the tokenizer flags special) is 'end' if it covers a character of an "
    "end-of-turn token, else 'special', whatever content it absorbed (a Phi-3 '<|assistant|>' that swallows "
    "the newline opening a response stays 'special'); manifest tokens.control_absorbed_chars counts the "
    "content characters so absorbed"
)

#: strategy name -> roles with loss. ``last_turn`` is special: its roles are
#: further limited to the final assistant turn of each document. Every strategy but ``full`` also
#: leaves out the tokens of messages marked untrained (``"weight": 0``, ``"training": false``).
#: Tool results (``tool``) are what a tool returned, not what the model should write: only ``full``
#: puts loss on them. ``answer_only`` is instruction tuning without the reasoning.
BUILTIN_STRATEGIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "full": tuple(ROLES),
        "instruction_modelling": (
            "boilerplate", "system", "instruction", "input", "response", "end", "tool_call", "reasoning",
        ),
        "boilerplate_masked": ("system", "instruction", "input", "response", "end", "tool_call", "reasoning"),
        "instruction_tuning": ("response", "end", "tool_call", "reasoning"),
        "last_turn": ("response", "end", "tool_call", "reasoning"),
        "answer_only": ("response", "end", "tool_call"),
    }
)
#: the one strategy that ignores per-message training flags (``"weight": 0`` / ``"training": false``;
#: a ``"training": true`` on a non-assistant message needs no exception: ``full`` trains every token)
UNFLAGGED_STRATEGIES = frozenset({"full"})
#: strategies whose loss is restricted to the final assistant turn
LAST_TURN_STRATEGIES = frozenset({"last_turn"})

#: roles counted as the prompt of an example (the paper's "instruction")
PROMPT_ROLES: tuple[str, ...] = ("system", "instruction", "input")
#: roles of what the model writes in an assistant turn (its loss under instruction tuning)
ASSISTANT_ROLES: tuple[str, ...] = ("response", "tool_call", "reasoning", "end")

#: per-token flag bits that travel with the roles through a build (spill files, :mod:`packer.output.gather`):
#: the token is in the document's final assistant turn; the token belongs to a message marked untrained;
#: the token is content of a non-assistant message marked ``"training": true`` / ``"weight": 1``
#: (Axolotl's ``message_field_training``: the flag overrides the role, so it has loss under every strategy)
LAST_FLAG = 1
UNTRAINED_FLAG = 2
FORCED_FLAG = 4
#: the fourth and last flag bit (a spill file keeps four beside the role code), whose meaning is the output's kind:
#: in a pair build the token is on its pair's chosen branch (the pair's tokens before its chosen ones are its
#: shared prefix, those after them its rejected branch: the shards' ``branch`` column, :data:`BRANCHES`); in a KTO
#: build the token's document is labelled desirable (``"label": true``: the shards' per-document ``labels``)
CHOSEN_FLAG = 8
DESIRABLE_FLAG = 8

#: the codes of a pair row's ``branch`` column: the pair's shared prefix, its chosen suffix, its rejected suffix
BRANCHES: Mapping[str, int] = MappingProxyType({"prefix": 0, "chosen": 1, "rejected": 2})
PREFIX, CHOSEN, REJECTED = 0, 1, 2


def role_codes(names: Iterable[str]) -> tuple[int, ...]:
    """Codes of role names, raising ``ValueError`` naming an unknown one.

    >>> role_codes(["response", "end"])
    (7, 8)
    """
    out = []
    for name in names:
        if name not in ROLES:
            raise ValueError(f"unknown role {name!r}; known roles: {', '.join(ROLES)}")
        out.append(ROLES[name])
    return tuple(out)


def role_lut(names: Iterable[str]) -> np.ndarray:
    """A bool[256] table, True at the codes of ``names``: ``role_lut(names)[roles]`` is the mask of a
    uint8 role array.

    >>> role_lut(["response", "end"])[np.array([1, 7, 8, 5], dtype=np.uint8)].tolist()
    [False, True, True, False]
    """
    lut = np.zeros(256, dtype=bool)
    lut[list(role_codes(names))] = True
    return lut


def parse_strategy(spec: str) -> tuple[str, tuple[str, ...]]:
    """Parse a user strategy ``name=role,role,...``.

    >>> parse_strategy("prompt_and_answer=instruction,response,end")
    ('prompt_and_answer', ('instruction', 'response', 'end'))
    """
    name, sep, roles = spec.partition("=")
    name = name.strip()
    if not sep or not name or not name.replace("_", "").isalnum():
        raise ValueError(f"strategy {spec!r} is not of the form name=role,role,... (name: letters, digits, _)")
    if name in BUILTIN_STRATEGIES:
        raise ValueError(f"strategy {name!r} is built in; choose another name")
    parts = tuple(dict.fromkeys(r.strip() for r in roles.split(",") if r.strip()))
    if not parts:
        raise ValueError(f"strategy {name!r} names no role")
    role_codes(parts)
    return name, parts


def strategy_table(extra: Iterable[str] = ()) -> dict[str, tuple[str, ...]]:
    """Built-in strategies plus user ones given as ``name=role,...`` specs."""
    table = dict(BUILTIN_STRATEGIES)
    for spec in extra:
        name, roles = parse_strategy(spec)
        if name in table:
            raise ValueError(f"strategy {name!r} given twice")
        table[name] = roles
    return table
