"""Preference pairs: collating pair rows and scoring each side's log-probability.

A pair row (``packer build`` of DPO data, ``--pairs shared``, the default) stores each pair's shared token
prefix once, then the chosen suffix, then the rejected suffix. ``branch`` says which part a token is in
(0 prefix, 1 chosen, 2 rejected), ``seq_lens`` has one entry per pair. Two pairs in one row: ``a`` with
prefix ``p0 p1``, chosen ``c0 c1``, rejected ``r0``; ``b`` with prefix ``q0``, chosen ``d0``, rejected ``s0 s1``::

    input_ids    : p0 p1 c0 c1 r0 | q0 d0 s0 s1        seq_lens [5, 4]
    branch       :  0  0  1  1  2 |  0  1  2  2
    position_ids :  0  1  2  3  2 |  0  1  1  2        (the rejected suffix continues the prefix too)
    gather_index : -1  0  1  2  1 | -1  5  5  7        (the position whose logit predicts the token)
    pair_index   :  0  0  0  0  0 |  1  1  1  1

    attention_mask[0, 0] (query i = row, key j = column; 1 = may attend; additive 0 / finfo.min in the tensor)

             p0 p1 c0 c1 r0 q0 d0 s0 s1
        p0 [  1  .  .  .  .  .  .  .  . ]
        p1 [  1  1  .  .  .  .  .  .  . ]
        c0 [  1  1  1  .  .  .  .  .  . ]
        c1 [  1  1  1  1  .  .  .  .  . ]
        r0 [  1  1  .  .  1  .  .  .  . ]     the rejected side sees the prefix and itself, never c0 c1
        q0 [  .  .  .  .  .  1  .  .  . ]
        d0 [  .  .  .  .  .  1  1  .  . ]
        s0 [  .  .  .  .  .  1  .  1  . ]
        s1 [  .  .  .  .  .  1  .  1  1 ]

So each side's tokens see exactly what they would see run alone (prefix + that side, positions from 0), and
the model's logits at the side's positions are those of the side run alone. The logit that predicts token
``t`` is at ``t - 1`` except for the first rejected token, predicted by the prefix's last position (``r0``
by ``p1``, index 1; ``s0`` by ``q0``, index 5): ``gather_index`` holds it. No token is stored twice; a plain
shift would score ``r0`` with ``c1``'s logit. Prefix tokens with loss (a common prefix may run past the
prompt into tokens both completions share) count in BOTH sides' log-probabilities.

``--pairs separate`` rows store each side whole as its own document (``branch`` 1s then 2s, two
``seq_lens`` entries per pair, ``doc_ids`` the pair's twice): plain causal documents, for kernels that cannot
take a mask; :func:`pair_collator` pairs them and :func:`pair_logps` returns the same values.

Which attention implementation (HF ``attn_implementation``) takes which batch:

======================= ================= =================================================================
attention               ``pair_collator`` mask
======================= ================= =================================================================
``sdpa``, ``eager``     ``"sdpa"``/...    4D [B, 1, T, T], additive in the model's dtype (``eager`` adds it
                                          to the scores; ``dtype=torch.bool`` for sdpa only). transformers
                                          passes a 4D mask through as given.
``flex_attention``      ``"flex_..."``    a FlexAttention ``BlockMask`` (torch >= 2.5) of the same rule.
``flash_attention_2/3`` ``"flash_..."``   none: one flat row, ``cu_seq_lens``; only ``--pairs separate``
                                          rows. The varlen kernel takes contiguous causal documents, so it
                                          cannot express "the prefix, then skip the chosen suffix".
======================= ================= =================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..output import roles as R
from .collate import IGNORE_INDEX, _target_length

__all__ = [
    "PAIR_MODEL_KEYS",
    "PairLogps",
    "dpo_loss",
    "model_inputs",
    "pair_block_mask",
    "pair_collator",
    "pair_forward",
    "pair_layout",
    "pair_logps",
    "reference_logps",
]

#: the keys of a pair batch that go to the model (the rest is for :func:`pair_logps`)
PAIR_MODEL_KEYS = ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k",
                   "max_length_q", "max_length_k")
_REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")
_FLAT = ("flash_attention_2", "flash_attention_3")
_DENSE = ("sdpa", "eager")
_FLEX = ("flex_attention",)

Item = Mapping[str, Any]


# -- the layout of one row ---------------------------------------------------------------------------------------


class Layout(NamedTuple):
    """Per token of one row (int64 [T]): ``position_ids``, ``gather_index`` (row-local; -1: nothing predicts
    it) and ``pair`` (row-local pair number); per pair: ``doc_ids`` ([pairs], -1 where unknown)."""

    position_ids: torch.Tensor
    gather_index: torch.Tensor
    pair: torch.Tensor
    doc_ids: torch.Tensor


def pair_layout(branch: torch.Tensor, seq_lens: torch.Tensor, doc_ids: torch.Tensor | None = None,
                where: str = "row") -> Layout:
    """Positions, gather index and pair number of one pair row (shared or separate), checked.

    >>> lay = pair_layout(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([5]))
    >>> lay.position_ids.tolist(), lay.gather_index.tolist()
    ([0, 1, 2, 3, 2], [-1, 0, 1, 2, 1])
    """
    branch = branch.long()
    n = branch.numel()
    lens = seq_lens.long()
    if int(lens.sum()) != n or bool((lens <= 0).any()):
        raise ValueError(f"{where}: seq_lens {lens.tolist()} do not split its {n} tokens")
    if bool(((branch < 0) | (branch > 2)).any()):
        raise ValueError(f"{where}: branch values must be 0 (prefix), 1 (chosen) or 2 (rejected)")
    d = lens.numel()
    seg = torch.repeat_interleave(torch.arange(d), lens)
    starts = torch.cumsum(lens, 0) - lens
    local = torch.arange(n) - starts[seg]
    counts = torch.zeros(d, 3, dtype=torch.int64).index_put_((seg, branch), torch.ones(n, dtype=torch.int64),
                                                             accumulate=True)
    # within a document the branch never goes back: prefix, then chosen, then rejected
    steps = torch.diff(branch)
    if bool((steps[local[1:] > 0] < 0).any()):
        raise ValueError(f"{where}: a document's branch goes back (its tokens must be prefix, chosen, rejected)")
    pair_of_seg, docs = _pairs_of(counts, doc_ids, where)
    p = counts[:, 0]
    position_ids = local - torch.where(branch == R.REJECTED, counts[seg, 1], 0)
    gather = torch.arange(n) - 1
    gather[starts] = -1
    first_rejected = (branch == R.REJECTED) & (local == counts[seg, 0] + counts[seg, 1])
    prefix_last = torch.where(p[seg] > 0, starts[seg] + p[seg] - 1, -1)
    gather = torch.where(first_rejected, prefix_last, gather)
    return Layout(position_ids, gather, pair_of_seg[seg], docs)


def _pairs_of(counts: torch.Tensor, doc_ids: torch.Tensor | None, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair number of each document of a row: a shared document is a pair, a separate chosen document and the
    rejected one after it are one. Returns it and each pair's doc_id (-1 where not given)."""
    has = counts > 0
    shared = has[:, 1] & has[:, 2]
    alone = has[:, 1] ^ has[:, 2]
    pair_of_seg = torch.full((counts.shape[0],), -1, dtype=torch.int64)
    docs: list[int] = []
    k = 0
    while k < counts.shape[0]:
        doc = int(doc_ids[k]) if doc_ids is not None else -1
        if shared[k]:
            pair_of_seg[k] = len(docs)
            k += 1
        elif alone[k] and has[k, 1] and not has[k, 0] and k + 1 < counts.shape[0] and alone[k + 1] \
                and has[k + 1, 2] and not has[k + 1, 0]:
            if doc_ids is not None and int(doc_ids[k + 1]) != doc:
                raise ValueError(f"{where}: separate chosen document {doc} is followed by rejected document "
                                 f"{int(doc_ids[k + 1])}: the two sides of a pair must be adjacent")
            pair_of_seg[k : k + 2] = len(docs)
            k += 2
        else:
            raise ValueError(
                f"{where}: document {k} (doc_id {doc}) is not a pair: a shared document holds a prefix, a chosen "
                "and a rejected part (branch 0, 1, 2); a separate pair is a chosen document (branch 1) followed by "
                "its rejected document (branch 2)"
            )
        docs.append(doc)
    return pair_of_seg, torch.tensor(docs, dtype=torch.int64)


# -- from an item to one row ----------------------------------------------------------------------------------------


def _loss_of(item: Item, strategy: str | None, where: str) -> torch.Tensor:
    """The loss mask of one item: its ``labels`` (a PackedDataset item), or a raw shard row's mask column."""
    if strategy is not None and f"mask_{strategy}" in item:
        return torch.as_tensor(np.asarray(item[f"mask_{strategy}"]), dtype=torch.bool).reshape(-1)
    if "labels" in item:
        labels = torch.as_tensor(item["labels"]).as_subclass(torch.Tensor)
        return labels.reshape(-1) != IGNORE_INDEX
    if "loss_mask" in item:
        return torch.as_tensor(np.asarray(item["loss_mask"]), dtype=torch.bool).reshape(-1)
    raise ValueError(f"{where}: no 'labels', 'loss_mask' or mask column mask_{strategy} (keys: {', '.join(item)})")


def _row(item: Item, i: int, strategy: str | None) -> dict[str, Any]:
    where = f"item {i}"
    for key in ("input_ids", "branch", "seq_lens"):
        if key not in item:
            raise ValueError(f"{where} has no {key!r}: not a pair row (keys: {', '.join(item)})")
    ids = torch.as_tensor(np.asarray(item["input_ids"]), dtype=torch.int64).reshape(-1)
    branch = torch.as_tensor(np.asarray(item["branch"]), dtype=torch.int64).reshape(-1)
    seq_lens = torch.as_tensor(np.asarray(item["seq_lens"]), dtype=torch.int64).reshape(-1)
    doc_ids = torch.as_tensor(np.asarray(item["doc_ids"]), dtype=torch.int64).reshape(-1) if "doc_ids" in item else None
    loss = _loss_of(item, strategy, where)
    if not (branch.numel() == loss.numel() == ids.numel()):
        raise ValueError(f"{where}: {ids.numel()} input_ids, {branch.numel()} branch, {loss.numel()} mask values")
    lay = pair_layout(branch, seq_lens, doc_ids, where)
    row = {"input_ids": ids, "branch": branch, "loss": loss & (lay.gather_index >= 0), "layout": lay,
           "seq_lens": seq_lens}
    for key in _REF_KEYS:
        if key in item:
            row[key] = torch.as_tensor(np.asarray(item[key]), dtype=torch.float32).reshape(-1)
            if row[key].numel() != lay.doc_ids.numel():
                raise ValueError(f"{where}: {key} has {row[key].numel()} values for {lay.doc_ids.numel()} pairs")
    return row


# -- the collator ----------------------------------------------------------------------------------------------------


def pair_collator(
    items: Sequence[Item],
    *,
    attn_implementation: str = "sdpa",
    pad_id: int = 0,
    dtype: torch.dtype = torch.float32,
    strategy: str | None = None,
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """A batch of pair rows for the model and :func:`pair_logps` (see the module docstring for the layout).

    ``items``: :class:`packer.train.dataset.PackedDataset` items of a pair build (``labels`` give the loss
    mask), or raw shard rows (``input_ids``, ``branch``, ``seq_lens``, ``doc_ids`` and the ``mask_<strategy>``
    column of ``strategy``). Returns, padded right to one length ``T`` (``B`` rows, ``N`` pairs in all):

    - ``input_ids`` int64 [B, T] (``pad_id``); ``position_ids`` int64 [B, T] (0 at padding);
    - ``attention_mask``: [B, 1, T, T] additive in ``dtype`` (bool where ``dtype=torch.bool``) for
      ``sdpa``/``eager``, a ``BlockMask`` for ``flex_attention``; none for flash attention, which gets one flat
      row [1, all tokens] and ``cu_seq_lens_q/k``, ``max_length_q/k`` (separate rows only);
    - ``loss_mask`` bool [B, T]: the strategy's loss on tokens that have a predicting position;
    - ``branch``, ``gather_index`` (index in the same row of the position whose logit predicts the token),
      ``pair_index`` (pair number in the batch), int64 [B, T], -1 at padding (and ``gather_index`` -1 at each
      pair's first token); ``pair_doc_ids`` int64 [N];
    - ``ref_chosen_logps``, ``ref_rejected_logps`` float32 [N] when the items carry them (precomputed).

    Only the keys of :data:`PAIR_MODEL_KEYS` go to the model: use :func:`model_inputs`.
    """
    if len(items) == 0:
        raise ValueError("cannot collate an empty batch")
    rows = [_row(item, i, strategy) for i, item in enumerate(items)]
    if attn_implementation in _FLAT:
        return _flat_batch(rows)
    if attn_implementation not in _DENSE + _FLEX:
        raise ValueError(f"pair_collator: unknown attn_implementation {attn_implementation!r}; known: "
                         f"{', '.join(_DENSE + _FLEX + _FLAT)}")
    out = _padded_batch(rows, pad_id, pad_to_multiple_of, max_length)
    if attn_implementation in _FLEX:
        out["attention_mask"] = pair_block_mask(out)
    else:
        out["attention_mask"] = _dense_mask(out["pair_index"], out["branch"], dtype)
    return out


def _padded_batch(rows: list[dict], pad_id: int, multiple: int | None, max_length: int | None) -> dict[str, Any]:
    length = _target_length(max(r["input_ids"].numel() for r in rows), multiple, max_length)
    b = len(rows)

    def full(value: int, dt: torch.dtype = torch.int64) -> torch.Tensor:
        return torch.full((b, length), value, dtype=dt)

    out = {"input_ids": full(pad_id), "position_ids": full(0), "loss_mask": full(0, torch.bool),
           "branch": full(-1), "gather_index": full(-1), "pair_index": full(-1)}
    first_pair = 0
    for i, r in enumerate(rows):
        n = r["input_ids"].numel()
        lay = r["layout"]
        out["input_ids"][i, :n] = r["input_ids"]
        out["position_ids"][i, :n] = lay.position_ids
        out["loss_mask"][i, :n] = r["loss"]
        out["branch"][i, :n] = r["branch"]
        out["gather_index"][i, :n] = lay.gather_index
        out["pair_index"][i, :n] = lay.pair + first_pair
        first_pair += lay.doc_ids.numel()
    _finish(out, rows)
    return out


def _finish(out: dict[str, Any], rows: list[dict]) -> None:
    out["pair_doc_ids"] = torch.cat([r["layout"].doc_ids for r in rows])
    present = [sum(key in r for r in rows) for key in _REF_KEYS]
    if any(0 < k < len(rows) for k in present):
        raise ValueError("some items have precomputed reference log-probs and some do not")
    for key, k in zip(_REF_KEYS, present, strict=True):
        if k:
            out[key] = torch.cat([r[key] for r in rows])


def _flat_batch(rows: list[dict]) -> dict[str, Any]:
    """All rows as one flat row for flash attention's varlen kernel: separate pairs only."""
    for i, r in enumerate(rows):
        if bool((r["branch"] == R.PREFIX).any()):
            raise ValueError(
                f"item {i} has shared pairs (a prefix both sides attend to): flash attention's varlen kernel takes "
                "only contiguous causal documents and cannot express that mask. Build with --pairs separate, or "
                "use attn_implementation 'sdpa', 'eager' or 'flex_attention'"
            )
    offsets = np.cumsum([0] + [r["input_ids"].numel() for r in rows])
    first = np.cumsum([0] + [r["layout"].doc_ids.numel() for r in rows])
    seq_lens = torch.cat([r["seq_lens"] for r in rows])
    cu = torch.zeros(seq_lens.numel() + 1, dtype=torch.int32)
    torch.cumsum(seq_lens, 0, out=cu[1:])
    gather = [torch.where(r["layout"].gather_index >= 0, r["layout"].gather_index + int(o), -1)
              for r, o in zip(rows, offsets, strict=False)]
    out: dict[str, Any] = {
        "input_ids": torch.cat([r["input_ids"] for r in rows])[None],
        "position_ids": torch.cat([r["layout"].position_ids for r in rows])[None],
        "loss_mask": torch.cat([r["loss"] for r in rows])[None],
        "branch": torch.cat([r["branch"] for r in rows])[None],
        "gather_index": torch.cat(gather)[None],
        "pair_index": torch.cat([r["layout"].pair + int(f) for r, f in zip(rows, first, strict=False)])[None],
        "cu_seq_lens_q": cu, "cu_seq_lens_k": cu.clone(),
        "max_length_q": int(seq_lens.max()), "max_length_k": int(seq_lens.max()),
    }
    _finish(out, rows)
    return out


def _allowed(pair_index: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """bool [B, T, T]: query i may attend key j (same pair, j <= i, j in the prefix or on i's branch)."""
    length = pair_index.shape[1]
    idx = torch.arange(length, device=pair_index.device)
    causal = idx[None, :] <= idx[:, None]
    same = (pair_index[:, :, None] == pair_index[:, None, :]) & (pair_index >= 0)[:, :, None]
    seen = (branch[:, None, :] == R.PREFIX) | (branch[:, None, :] == branch[:, :, None])
    allowed = same & causal & seen
    # a padding query attends to itself only: an all-masked row is NaN in softmax, and a NaN at padding
    # still reaches the gradients of shared weights (see packer.train.collate.collate_4d)
    return allowed | torch.eye(length, dtype=torch.bool, device=pair_index.device)


def _dense_mask(pair_index: torch.Tensor, branch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if not (dtype.is_floating_point or dtype == torch.bool):
        raise ValueError(f"dtype must be a floating type or torch.bool, not {dtype}")
    allowed = _allowed(pair_index, branch)
    if dtype == torch.bool:
        return allowed.unsqueeze(1)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def pair_block_mask(batch: Mapping[str, Any], device: torch.device | str | None = None) -> Any:
    """The FlexAttention ``BlockMask`` of a padded pair batch (the rule of the 4D mask), built on ``device``
    (default: the batch's). Build it where the model runs: the mask function holds the batch's tensors."""
    from torch.nn.attention.flex_attention import create_block_mask

    device = torch.device(device) if device is not None else batch["pair_index"].device
    pair = batch["pair_index"].to(device)
    branch = batch["branch"].to(device)
    b, length = pair.shape

    def mask_mod(bi, h, q, k):  # type: ignore[no-untyped-def]
        same = (pair[bi, q] == pair[bi, k]) & (pair[bi, q] >= 0)
        seen = (branch[bi, k] == R.PREFIX) | (branch[bi, k] == branch[bi, q])
        return (same & (k <= q) & seen) | (q == k)

    return create_block_mask(mask_mod, b, None, length, length, device=device)


# -- the model side ------------------------------------------------------------------------------------------------


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a pair batch the model takes (:data:`PAIR_MODEL_KEYS`), ``use_cache=False``. A ``BlockMask``
    made on another device than ``input_ids`` (the collator's, in a DataLoader worker) is made again there."""
    out = {k: batch[k] for k in PAIR_MODEL_KEYS if k in batch} | {"use_cache": False}
    mask = out.get("attention_mask")
    blocks = getattr(mask, "kv_num_blocks", None)
    if blocks is not None and blocks.device != batch["input_ids"].device:
        out["attention_mask"] = pair_block_mask(batch, batch["input_ids"].device)
    return out


def pair_forward(model: Any, batch: Mapping[str, Any]) -> torch.Tensor:
    """``model(**model_inputs(batch)).logits``: logits [B, T, V] of a pair batch."""
    return model(**model_inputs(batch)).logits


class PairLogps(NamedTuple):
    """Per pair (float32 [N], in ``pair_doc_ids`` order): summed and mean log-probabilities of each side
    over its tokens with loss, and how many tokens (a shared prefix token with loss counts in both)."""

    chosen_sum: torch.Tensor
    rejected_sum: torch.Tensor
    chosen_mean: torch.Tensor
    rejected_mean: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor


def pair_logps(logits: torch.Tensor, batch: Mapping[str, Any], mask: torch.Tensor | None = None) -> PairLogps:
    """Each pair's chosen and rejected log-probabilities from the logits of a :func:`pair_collator` batch.

    ``mask`` (bool [B, T], default ``batch["loss_mask"]``): the tokens to score. A token counts for the chosen
    side when its branch is 0 or 1 and for the rejected side when 0 or 2, and is scored by the logit at its
    ``gather_index``. Only the scored tokens' logits are turned into log-probabilities (a [tokens, V]
    log-softmax in float32), never the whole [B, T, V].

    >>> batch = pair_collator([{"input_ids": [5, 6, 7, 8], "branch": [0, 0, 1, 2], "seq_lens": [4],
    ...                         "labels": [-100, -100, 7, 8]}])
    >>> out = pair_logps(torch.zeros(1, 4, 16), batch)       # uniform over 16 tokens: log(1/16) each
    >>> round(out.chosen_sum.item(), 4), round(out.rejected_sum.item(), 4), out.rejected_tokens.tolist()
    (-2.7726, -2.7726, [1.0])
    """
    mask = batch["loss_mask"] if mask is None else mask.to(torch.bool)
    device = logits.device
    gather = batch["gather_index"].to(device)
    pair = batch["pair_index"].to(device)
    branch = batch["branch"].to(device)
    sel = mask.to(device) & (gather >= 0) & (pair >= 0)
    rows, cols = sel.nonzero(as_tuple=True)
    targets = batch["input_ids"].to(device)[rows, cols]
    picked = logits[rows, gather[rows, cols]].float()  # [tokens, V]
    lp = picked.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    n = int(batch["pair_doc_ids"].numel())
    p, br = pair[rows, cols], branch[rows, cols]
    sums, counts = [], []
    for other in (R.REJECTED, R.CHOSEN):  # chosen: every branch but rejected; rejected: but chosen
        side = br != other
        sums.append(torch.zeros(n, device=device, dtype=lp.dtype).index_add(0, p[side], lp[side]))
        counts.append(torch.zeros(n, device=device).index_add(0, p[side], torch.ones_like(lp[side])))
    return PairLogps(sums[0], sums[1], sums[0] / counts[0].clamp_min(1), sums[1] / counts[1].clamp_min(1),
                     counts[0], counts[1])


def reference_logps(model: Any, batch: Mapping[str, Any], mask: torch.Tensor | None = None,
                    forward: Callable[[Any, Mapping[str, Any]], torch.Tensor] = pair_forward) -> PairLogps:
    """:func:`pair_logps` of ``model`` under ``torch.no_grad``: the reference model's, or the policy's own with
    its PEFT adapters disabled (a ``PeftModel`` is run inside ``disable_adapter()``)."""
    import contextlib

    off = model.disable_adapter() if hasattr(model, "disable_adapter") and hasattr(model, "peft_config") \
        else contextlib.nullcontext()
    with torch.no_grad(), off:
        return pair_logps(forward(model, batch), batch, mask)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Sigmoid DPO (TRL's ``loss_type="sigmoid"``; with ``label_smoothing`` the conservative cDPO form).

    ``-(1 - ls) * logsigmoid(beta * m) - ls * logsigmoid(-beta * m)``, ``m = (pc - rc) - (pr - rr)``, per pair;
    ``reduction`` ``"mean"`` (TRL's), ``"sum"`` or ``"none"``.

    >>> round(dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
    ...                torch.tensor([-2.0]), beta=0.5).item(), 4)
    0.3133
    """
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(beta * margin) * (1 - label_smoothing) - F.logsigmoid(-beta * margin) * label_smoothing
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    raise ValueError(f"reduction {reduction!r} is not one of 'mean', 'sum', 'none'")


def pair_collator_for(model: Any, **kwargs: Any) -> Callable[[Sequence[Item]], dict]:
    """:func:`pair_collator` for ``model``'s attention implementation and dtype (``kwargs`` go to it)."""
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    kwargs.setdefault("dtype", model.dtype)
    return functools.partial(pair_collator, attn_implementation=attn, **kwargs)
