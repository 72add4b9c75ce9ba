"""The map stage of a preference build: a pair's two sides -> one unit of tokens, its shared prefix stored once.

A DPO pair is two conversations that share their prompt, ``prompt + chosen`` and ``prompt + rejected``. Each
side is rendered with the chat template and tokenized whole, as the model sees it; the **shared prefix** is the
longest common prefix of the two sides' tokens (ids, roles and flags alike), capped so each side keeps at least
one token of its own. It is never a separately tokenized prompt: a template or a merge at the boundary can make
the prompt's tokens differ from the start of a side's. A pair is stored as one unit, prefix first::

    chosen  : <|im_start|>user\\n2+2?<|im_end|>\\n<|im_start|>assistant\\n The answer is 4 <|im_end|>\\n
    rejected: <|im_start|>user\\n2+2?<|im_end|>\\n<|im_start|>assistant\\n The answer is 5 <|im_end|>\\n
    unit    : [<|im_start|> user ... assistant \\n The answer is]  [4 <|im_end|> \\n]  [5 <|im_end|> \\n]
    branch  :  0 ...                                         0      1 1 1             2 2 2
    position:  0 ...                                         12     13 14 15          13 14 15

"The answer is" are response tokens both sides wrote: they stay in the prefix, with their roles, and count in
both sides' log-probabilities (packer.train). With ``pairs="separate"`` nothing is shared: the unit is the two
whole sides, chosen then rejected (branch 1s, then 2s), two causal documents of one row.

The branch travels with each token's flags through the rest of the build: the chosen tokens have
:data:`packer.output.roles.CHOSEN_FLAG`, and the shard writer makes the ``branch`` column of it (a pair's tokens
before its chosen ones are its prefix, those after them its rejected branch).

A unit longer than ``seq_len``: with ``overlong="drop"`` it is rejected; with ``"truncate"`` both completions are
cut to the same largest length that fits (a shorter one stays whole), unless the prefix leaves fewer than 2
tokens a side, or a side would keep nothing the assistant wrote (rejected). ``"split"`` is refused for pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..output import roles as R
from ..read.records import Pair, Rejection, Source
from ..tokens.templates import Rendered
from ..tokens.tokenize import TokenizedBatch, char_codes
from .spill import RejectionSpill

if TYPE_CHECKING:
    from .part import PartMapper

_ASSISTANT_LUT = R.role_lut(R.ASSISTANT_ROLES)
_PROMPT_LUT = R.role_lut(R.PROMPT_ROLES)
_WRITTEN_LUT = R.role_lut(("response", "tool_call", "reasoning"))
#: a side: (ids, roles, flags)
Side = tuple[np.ndarray, np.ndarray, np.ndarray]
#: pairs labelled at once (two texts each)
PAIR_BATCH = 256
#: the fewest tokens each side must keep of its own when a pair is truncated
MIN_SIDE = 2


#: the roles whose last-turn flag the shards keep (in the last_turn strategy's mask); on any other token the flag
#: is not stored, so two sides may share the token whatever it says (Phi-3's ``<|assistant|>`` takes it from the
#: newline it absorbs, in one side and not the other)
_LAST_KEPT = np.where(R.role_lut(R.BUILTIN_STRATEGIES["last_turn"]), 0xFF, 0xFF & ~R.LAST_FLAG).astype(np.uint8)


def shared_prefix(chosen: Side, rejected: Side) -> int:
    """How many leading tokens the two sides share: the longest common prefix of their ids, roles and flags (as
    far as the shards keep them), capped so each side keeps at least one token.

    >>> ids = lambda *v: (np.array(v), np.zeros(len(v), np.uint8), np.zeros(len(v), np.uint8))
    >>> shared_prefix(ids(1, 2, 3, 4), ids(1, 2, 3, 5)), shared_prefix(ids(1, 2), ids(1, 2, 3))
    (3, 1)
    """
    n = min(len(chosen[0]), len(rejected[0]))
    same = (chosen[0][:n] == rejected[0][:n]) & (chosen[1][:n] == rejected[1][:n])
    same &= (chosen[2][:n] & _LAST_KEPT[chosen[1][:n]]) == (rejected[2][:n] & _LAST_KEPT[rejected[1][:n]])
    common = n if same.all() else int(np.argmin(same))
    return min(common, n - 1)


@dataclass(frozen=True)
class Unit:
    """A pair as stored: its tokens (prefix, chosen suffix, rejected suffix, branch bits set) and the lengths of
    the three (with ``pairs="separate"`` the tokens are the two whole sides, the lengths the same three)."""

    ids: np.ndarray
    roles: np.ndarray
    flags: np.ndarray
    prefix: int
    chosen: int
    rejected: int

    def __len__(self) -> int:
        return len(self.ids)


def make_unit(chosen: Side, rejected: Side) -> Unit:
    """The unit of a pair from its two labelled sides (:data:`Side`), its shared prefix stored once.

    >>> side = lambda *v: (np.array(v, np.int32), np.full(len(v), 7, np.uint8), np.zeros(len(v), np.uint8))
    >>> u = make_unit(side(1, 2, 3, 4), side(1, 2, 5))
    >>> u.ids.tolist(), (u.flags // R.CHOSEN_FLAG).tolist(), (u.prefix, u.chosen, u.rejected)
    ([1, 2, 3, 4, 5], [0, 0, 1, 1, 0], (2, 2, 1))
    """
    p = shared_prefix(chosen, rejected)
    c_flags = chosen[2][p:] | np.uint8(R.CHOSEN_FLAG)
    return Unit(
        np.concatenate([chosen[0], rejected[0][p:]]), np.concatenate([chosen[1], rejected[1][p:]]),
        np.concatenate([chosen[2][:p], c_flags, rejected[2][p:]]), p, len(chosen[0]) - p, len(rejected[0]) - p,
    )


def separate(unit: Unit) -> Unit:
    """``unit`` laid out with nothing shared: the whole chosen side, then the whole rejected side (the prefix
    twice, on each branch).

    >>> u = separate(make_unit(*[(np.array(v), np.zeros(len(v), np.uint8), np.zeros(len(v), np.uint8))
    ...                          for v in ([1, 2, 3, 4], [1, 2, 5])]))
    >>> u.ids.tolist(), (u.flags // R.CHOSEN_FLAG).tolist(), (u.prefix, u.chosen, u.rejected)
    ([1, 2, 3, 4, 1, 2, 5], [1, 1, 1, 1, 0, 0, 0], (2, 2, 1))
    """
    p, c = unit.prefix, unit.chosen
    pick = np.concatenate([np.arange(p + c), np.arange(p), np.arange(p + c, len(unit))])
    flags = unit.flags[pick]
    flags[:p] |= np.uint8(R.CHOSEN_FLAG)
    flags[p + c :] &= np.uint8(~R.CHOSEN_FLAG & 0xFF)  # the prefix again, now on the rejected side
    return Unit(unit.ids[pick], unit.roles[pick], flags, p, c, unit.rejected)


def fit(unit: Unit, seq_len: int, prefix_copies: int = 1) -> int | str:
    """The length ``k`` both completions are cut to so that ``unit`` fits ``seq_len`` (a shorter one stays
    whole), or why it cannot be; ``prefix_copies`` 2 where the prefix is stored twice (``pairs="separate"``).

    >>> u = Unit(np.zeros(10), np.zeros(10), np.zeros(10), 4, 4, 2)   # prefix 4, chosen 4, rejected 2
    >>> fit(u, 10), fit(u, 8), fit(u, 5)
    (4, 2, 'the prompt (4 tokens) leaves fewer than 2 tokens a side within seq_len 5')
    """
    room = seq_len - prefix_copies * unit.prefix
    if room < 2 * MIN_SIDE:
        return f"the prompt ({unit.prefix} tokens) leaves fewer than {MIN_SIDE} tokens a side within seq_len {seq_len}"
    short, long_ = sorted((unit.chosen, unit.rejected))
    if short + long_ <= room:
        return long_
    return room - short if 2 * short <= room else room // 2


def truncate(unit: Unit, k: int) -> Unit:
    """``unit`` (shared) with each completion cut to its first ``k`` tokens."""
    c, r = min(unit.chosen, k), min(unit.rejected, k)
    p = unit.prefix
    keep = np.zeros(len(unit), dtype=bool)
    keep[: p + c] = True
    keep[p + unit.chosen : p + unit.chosen + r] = True
    return Unit(unit.ids[keep], unit.roles[keep], unit.flags[keep], p, c, r)


def side_has_loss(unit: Unit) -> bool:
    """Each side keeps something the assistant wrote (in the prefix or its own suffix)."""
    p, c = unit.prefix, unit.chosen
    shared = _ASSISTANT_LUT[unit.roles[:p]].any()
    return bool(shared or (_ASSISTANT_LUT[unit.roles[p : p + c]].any() and _ASSISTANT_LUT[unit.roles[p + c :]].any()))


class PairMapper:
    """The pairs of one part, for its :class:`~packer.pipeline.part.PartMapper` ``m``: render both sides as they
    come (:meth:`add`), label them a batch at a time (:meth:`flush`), decide each pair and spill the kept units."""

    def __init__(self, m: PartMapper) -> None:
        self.m = m
        self.layout = m.spec.pairs
        self.batch: list[tuple[int, Rendered, Rendered]] = []
        self.chars = 0

    def add(self, pair: Pair, src: Source) -> None:
        got = []
        for conv in (pair.chosen, pair.rejected):
            r = self.m.tpl.render(conv)
            if isinstance(r, Rejection):
                self.m.reject(Rejection(src, r.reason, f"{'chosen' if conv is pair.chosen else 'rejected'}: "
                                        f"{r.detail}"), RejectionSpill.READ)
                return
            got.append(r)
        self.batch.append((src.doc_id, got[0], got[1]))
        self.chars += len(got[0].text) + len(got[1].text)
        if len(self.batch) >= PAIR_BATCH or self.chars >= 1 << 21:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch, self.chars = self.batch, [], 0
        tb = self.label([r for _, c, rj in batch for r in (c, rj)], np.repeat([d for d, _, _ in batch], 2))
        units: list[Unit] = []
        kept: list[int] = []
        for k, (doc_id, _, _) in enumerate(batch):
            sides = [tuple(x[tb.offsets[j] : tb.offsets[j + 1]] for x in (tb.ids, tb.roles, tb.flags))
                     for j in (2 * k, 2 * k + 1)]
            unit = self.decide(doc_id, sides[0], sides[1])  # type: ignore[arg-type]
            if unit is not None:
                units.append(unit)
                kept.append(doc_id)
        self.spill(units, np.array(kept, dtype=np.int64))

    def label(self, rendered: list[Rendered], doc_ids: np.ndarray) -> TokenizedBatch:
        """Tokenize and label the sides (``doc_ids``: each one's pair), on this thread; the sides of the pairs
        :func:`~packer.tokens.assembly.checked` picks are checked as a conversation's are
        (:meth:`PartMapper._verify`)."""
        m = self.m
        batch = m.labeller.prepare([r.seg_lengths for r in rendered],
                                   [char_codes(r.seg_roles, r.seg_last, r.seg_train, r.seg_forced) for r in rendered],
                                   [r.text for r in rendered])
        encodings, reference = m._encode(batch, m._picks(doc_ids))
        tb = m.labeller.label(batch, encodings)
        m._verify(doc_ids, batch, tb, reference)
        return tb

    def decide(self, doc_id: int, chosen: Side, rejected: Side) -> Unit | None:
        """The unit of a pair as it will be packed (truncated where it must be), or None: rejected."""
        m, seq_len = self.m, self.m.spec.seq_len
        src = m.source(doc_id)
        if np.array_equal(chosen[0], rejected[0]):
            m.reject(Rejection(src, "identical_sides", f"both sides are the same {len(chosen[0])} tokens"),
                     RejectionSpill.TOKENS)
            return None
        unit = make_unit(chosen, rejected)
        copies = 2 if self.layout == "separate" else 1
        stored = len(unit) + (copies - 1) * unit.prefix  # separate: the prefix in both sides
        m.docs.encoded[m._row(doc_id)] = stored
        if stored <= seq_len:
            return unit if copies == 1 else separate(unit)
        size = f"{stored} tokens (prompt {unit.prefix}, chosen {unit.chosen}, rejected {unit.rejected})"
        if m.spec.overlong != "truncate":
            m.reject(Rejection(src, "overlong", f"pair of {size} > seq_len {seq_len}"), RejectionSpill.TOKENS)
            return None
        k = fit(unit, seq_len, copies)
        if isinstance(k, str):
            m.reject(Rejection(src, "overlong", f"pair of {size} > seq_len {seq_len}: {k}"), RejectionSpill.TOKENS)
            return None
        cut = truncate(unit, k)
        if not side_has_loss(cut):
            m.reject(Rejection(src, "overlong_no_loss", f"pair of {size} > seq_len {seq_len}, and cut to {k} "
                               "tokens a completion, a side keeps nothing the assistant wrote"), RejectionSpill.TOKENS)
            return None
        m.reject(Rejection(src, "overlong", f"pair truncated from {size}: completions cut to {k} tokens"),
                 RejectionSpill.TOKENS, action="truncated")
        return cut if copies == 1 else separate(cut)

    def spill(self, units: list[Unit], kept: np.ndarray) -> None:
        """Spill the kept units, and their per-record token counts, in doc_id order."""
        m = self.m
        rows = kept - m.part.first_doc_id
        lens = np.array([len(u) for u in units], dtype=np.int64)
        for name, values in (("shared_tokens", [u.prefix for u in units]), ("chosen_tokens", [u.chosen for u in units]),
                             ("rejected_tokens", [u.rejected for u in units]),
                             ("prompt_tokens", [int(_PROMPT_LUT[u.roles].sum()) for u in units]),
                             ("response_tokens", [int(_WRITTEN_LUT[u.roles].sum()) for u in units])):
            getattr(m.docs, name)[rows] = values
        m.docs.tokens[rows] = lens
        m.docs.spilled[rows] = 1
        m.docs.pieces[rows] = 1
        empty = np.zeros(0, dtype=np.uint8)
        ids = np.concatenate([u.ids for u in units]) if units else np.zeros(0, np.int32)
        roles = np.concatenate([u.roles for u in units]) if units else empty
        flags = np.concatenate([u.flags for u in units]) if units else empty
        m._spill(ids, roles, flags, lens, rows)
