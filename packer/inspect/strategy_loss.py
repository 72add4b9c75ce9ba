"""Loss tokens per masking strategy, and per role of :data:`TOOL_ROLES`, from a build's manifest (for
``packer inspect``, :mod:`packer.inspect.report`): no shard is read.

A strategy puts loss on every token of its roles, less the tokens of messages marked untrained; tokens of
other messages marked ``"training": true`` (forced) have loss under every strategy::

    >>> role_loss("instruction_tuning", ["response", "end"], "tool", {"tool": 40}, {}, {}, {"tool": 3})
    3
"""

from __future__ import annotations

from ..output import roles as R

#: roles whose loss the report breaks out per strategy: what an agent writes besides its answer (calls,
#: reasoning) and what tools return. Whether a strategy trains on them moves its loss far more than the
#: prompt/response figures say, and plain instruction data has none of them.
TOOL_ROLES: tuple[str, ...] = ("tool_call", "reasoning", "tool")


def role_loss(strategy: str, roles: tuple[str, ...] | list[str], role: str, per_role: dict, untrained: dict,
              last_turn: dict, forced: dict | None = None) -> int | None:
    """Loss tokens of ``role`` under ``strategy``, from the manifest's counts; None where they cannot tell.

    A strategy puts loss on every token of its roles, less the tokens of messages marked untrained (all but
    ``full``). A last-turn strategy keeps only the final assistant turn: its split by role is the manifest's
    ``tokens.last_turn_loss_per_role`` (``last_turn``); an output without it (format version 1) leaves it
    unknown unless it is 0 (reading every shard to find it would cost a full pass over the data, and
    ``inspect`` reads only the manifest and documents.arrow). Tokens of messages other than the assistant's
    marked ``"training": true`` (``forced``, per role) have loss under every strategy, whatever their role.
    """
    if role not in roles:
        if strategy in R.LAST_TURN_STRATEGIES and forced and forced.get(role):
            split = last_turn.get(strategy)
            return None if split is None else int(split.get(role, 0))
        return int((forced or {}).get(role, 0))
    n = per_role.get(role, 0)  # an output built before the role existed has none
    if strategy not in R.UNFLAGGED_STRATEGIES:
        n -= untrained.get(role, 0)
    if n and strategy in R.LAST_TURN_STRATEGIES:
        split = last_turn.get(strategy)  # the manifest's split by role (outputs since format version 2)
        return None if split is None else int(split.get(role, 0))
    return n


def tool_roles(strategy: str, roles: list[str], loss: int, per_role: dict, untrained: dict,
               last_turn: dict, forced: dict | None = None) -> dict:
    """Per role of :data:`TOOL_ROLES`: its loss tokens under ``strategy`` and their share of its loss."""
    out = {}
    for role in TOOL_ROLES:
        n = role_loss(strategy, roles, role, per_role, untrained, last_turn, forced)
        share = None if n is None else round(n / loss, 6) if loss else 0.0
        out[role] = {"loss_tokens": n, "share": share}
    return out


def untrained_tokens(tokens: dict) -> dict:
    """Tokens of messages marked untrained (``"weight": 0`` / ``"training": false``), as the manifest counts
    them (0 in an output built before such marks were read)."""
    return marked_tokens(tokens, "untrained")


def forced_tokens(tokens: dict) -> dict:
    """Tokens of messages other than the assistant's marked ``"training": true`` (loss under every strategy),
    as the manifest counts them (0 in an output without any: format version 1, 2)."""
    return marked_tokens(tokens, "forced")


def marked_tokens(tokens: dict, key: str) -> dict:
    """The manifest's count of tokens marked ``key``, its split by role and its share of all tokens."""
    n = int(tokens.get(key, 0))
    total = tokens["total"]
    return {
        key: n,
        f"{key}_per_role": {k: int(v) for k, v in tokens.get(f"{key}_per_role", {}).items() if v},
        f"{key}_share": round(n / total, 6) if total else 0.0,
    }


def strategies(m: dict) -> dict:
    """The report's ``strategies``: per strategy, its roles, loss tokens, their share, and its loss on
    :data:`TOOL_ROLES`."""
    tokens, per_role = m["tokens"]["total"], m["tokens"]["per_role"]
    loss = m["tokens"]["loss"]
    untrained = untrained_tokens(m["tokens"])["untrained_per_role"]
    forced = forced_tokens(m["tokens"])["forced_per_role"]
    last_turn = m["tokens"].get("last_turn_loss_per_role", {})
    return {
        name: {"roles": roles, "loss_tokens": loss[name], "share": round(loss[name] / tokens, 6) if tokens else 0.0,
               "tool_roles": tool_roles(name, roles, loss[name], per_role, untrained, last_turn, forced)}
        for name, roles in m["strategies"].items()
    }


__all__ = ["TOOL_ROLES", "forced_tokens", "marked_tokens", "role_loss", "strategies", "tool_roles", "untrained_tokens"]
