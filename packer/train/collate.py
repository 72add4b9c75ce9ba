"""Collate functions: packed rows from :class:`packer.train.dataset.PackedDataset` into model batches.

A packed row holds several documents back to back. Restarting ``position_ids`` at 0 per document is not
enough to keep them apart: attention must also be stopped at document boundaries, or each document
attends to the ones before it in the row. Each collator below gets that right for a different attention
implementation (see the table).

Two documents ``a`` (3 tokens) and ``b`` (2 tokens) in one row, ``seq_lens = [3, 2]``::

    input_ids    : a0   a1   a2   b0   b1
    position_ids : 0    1    2    0    1
    labels       : -100 a1   a2   -100 b1      (strategy "full"; the model shifts them)

    collate_4d: attention_mask[0, 0] (query i = row, key j = column; additive, 0 = may attend)

              a0    a1    a2    b0    b1
        a0 [   0  -inf  -inf  -inf  -inf ]
        a1 [   0     0  -inf  -inf  -inf ]
        a2 [   0     0     0  -inf  -inf ]
        b0 [-inf  -inf  -inf     0  -inf ]
        b1 [-inf  -inf  -inf     0     0 ]

    (``-inf`` is ``torch.finfo(dtype).min`` in the tensor.)

    collate_docs / collate_flex: attention_mask [[1 1 1 2 2]] (document ids, int32, 0 at padding); the
                  step makes the mask above of it on the device (packed_attention_mask) or a BlockMask

    collate_flat: input_ids [[a0 a1 a2 b0 b1]], position_ids [[0 1 2 0 1]],
                  cu_seq_lens_q = cu_seq_lens_k = [0, 3, 5] (int32), max_length_q = max_length_k = 3

Which collator for which attention implementation (HF ``attn_implementation``; checked against
transformers 5.25 and torch 2.13, see ``tests/test_collate.py`` and ``tests/test_masks.py``):

=========================== ==================== =========================================================
attention                   collator             why
=========================== ==================== =========================================================
``flash_attention_2``/``3`` ``collate_flat``     one row of all tokens; the varlen kernel gets the document
                                                 boundaries from ``cu_seq_lens_*``: isolated, no padding.
``sdpa``, ``eager``         ``collate_docs``     ships document ids [B, L]; the step makes the block-diagonal
                                                 causal 4D mask on the device (``packer.train.masks``:
                                                 ``packed_attention_mask``; ``PackerTrainer`` does it), which
                                                 HF uses as given. On GPU an arbitrary mask rules out SDPA's
                                                 flash kernel (memory-efficient is used).
``sdpa``, ``eager``, batch  ``collate_4d``       the same mask made on the host: O(L^2) per row, 0.02-0.1M
untouched (stock Trainer)                        tokens/s per worker at 8 x 4096. Memory B*L*L (``dtype=torch.bool``:
                                                 1 byte each, ``sdpa`` only).
``flex_attention``          ``collate_flex``     document ids, L a multiple of 128; the step makes a
                                                 ``BlockMask`` (``flex_block_mask``; ``PackerTrainer`` does it).
plain torch SDPA            ``collate_docs``     ``attn_mask=packed_attention_mask(ids, dtype=q.dtype)``.
any, one document per row   ``collate_padded``   the 2D padding mask is all there is to mask.
=========================== ==================== =========================================================

Context parallelism wants every document's length a multiple of 2 x the CP size: ``pad_multiple=N`` (every
collator) pads each document at its end with ``pad_id`` to a multiple of N; labels are -100 and
``loss_weights`` 0 there, ``seq_lens``/``cu_seq_lens_*``/document ids count the padded lengths, and
``position_ids`` go on counting through the padding (3 tokens padded to 4: positions 0 1 2 3), so that
every boundary rule (restarting positions, as transformers and Megatron derive documents from them, too)
sees the padded documents. Real tokens never attend the padding (it comes after them in their document).

``collate_padded`` on rows that hold several documents is WRONG with every implementation: the 2D mask
only hides padding, so a document attends to the earlier documents of its row (with flash attention the
2D mask makes it unpad row by row; with sdpa/eager a 2D mask turns off transformers' packed-sequence
detection). The loss does not cross documents (labels are -100 at each document's first token) but the
hidden states do, so the model trains on contaminated contexts and the loss differs from the documents'
own losses.

``collate_flat`` with sdpa/eager: transformers 4.57.6 to 5.25 (Llama-family models built on
``masking_utils.create_causal_mask``, torch >= 2.6) derives a block-diagonal mask from restarting
``position_ids``, but only when there is no ``attention_mask`` AND no cache. The default
``config.use_cache=True`` makes a cache even in training (unless gradient checkpointing is on), and then
documents leak silently; pass ``use_cache=False``. Even then that mask is N*N over all the batch's tokens,
and older versions do not do it. ``collate_docs`` and ``collate_4d`` depend on none of this.

The outputs hold only what HF causal LMs accept as keyword arguments (``collate_docs``/``collate_flex``:
once the step has made ``attention_mask`` a mask; the ids refuse to be used as one, raising
:class:`packer.train.masks.MaskNotBuilt`, so a stock Trainer fails at its first step instead of letting
documents see each other through a 2D "padding" mask), plus ``loss_weights`` (float32,
present when the items have it; 0 at padding): pop it, and ``labels``, before ``model(**batch)`` and weight
the per-token loss with :func:`weighted_loss` (or use :class:`packer.train.hf.PackerTrainer`). ``seq_lens`` is
consumed, not passed on.

**The weights cannot be dropped silently.** In a weighted batch ``labels`` is a :class:`WeightedLabels`, a
tensor that behaves as the plain int64 labels it holds except that it refuses to be the target of an
unweighted loss: ``F.cross_entropy``/``F.nll_loss`` with a reduction other than ``"none"``, or a
``gather``/``take_along_dim`` index (label smoothing, fused log-prob heads) raise :class:`LossWeightsIgnored`.
That is what the model's own loss does when a stock HF ``Trainer`` (``remove_unused_columns`` either way),
TRL's ``SFTTrainer`` or a hand loop passes the batch on without the weights, so the first step fails
instead of training prompt tokens at weight 1. A per-token ``F.cross_entropy(..., reduction="none")`` (the
start of every weighted loss) is allowed; :func:`weighted_loss` and ``labels.as_subclass(torch.Tensor)``
take the plain labels. Signatures are ``functools.partial``
friendly::

    DataLoader(ds, batch_size=8, collate_fn=partial(collate_docs, pad_id=manifest["tokenizer"]["pad_id"]))
    DataLoader(ds, batch_size=8, collate_fn=collator_for("flash_attention_2"))
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .masks import DocumentIds, MaskNotBuilt, packed_attention_mask

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "DocumentIds",
    "LossWeightsIgnored",
    "MaskNotBuilt",
    "WeightedLabels",
    "collate_4d",
    "collate_docs",
    "collate_flat",
    "collate_flex",
    "collate_padded",
    "collator_for",
    "weighted_loss",
]

# --------------------------------------------------------------------------------------------------------------
# the guard: labels of a weighted batch refuse an unweighted loss

_IGNORED_HOW = (
    "this batch has loss_weights (PackedDataset(prompt_loss_weight=..., normalize=...)) but its labels went into "
    "{what}, which ignores them: every token with a label would train at weight 1. "
    "With the Hugging Face Trainer use packer.train.hf.PackerTrainer (TRL: packer.train.hf.PackerSFTTrainer), which "
    "keeps "
    "loss_weights and weights the loss; in your own loop pop 'labels' and 'loss_weights' from the batch before "
    "model(**batch) and use packer.train.collate.weighted_loss(logits, labels, weights). "
    "Or build the dataset without prompt_loss_weight/normalize."
)


class LossWeightsIgnored(RuntimeError):
    """The labels of a batch with ``loss_weights`` went into a loss that does not use the weights."""


def _bound(func: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    try:
        return inspect.signature(func).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):  # a builtin without a signature, or an unusual call: judge by position
        return {}


def _check_use(func: Callable, args: tuple, kwargs: dict) -> None:
    if func in (F.cross_entropy, F.nll_loss):
        bound = _bound(func, args, kwargs)
        target = bound.get("target", args[1] if len(args) > 1 else None)
        reduction = bound.get("reduction", "mean")
        if bound.get("reduce") is False or bound.get("size_average") is False:
            reduction = "none" if bound.get("reduce") is False else "sum"
        if isinstance(target, WeightedLabels) and reduction != "none":
            raise LossWeightsIgnored(_IGNORED_HOW.format(what=f"{func.__name__}(reduction={reduction!r})"))
    elif func in (torch.gather, torch.Tensor.gather, torch.take_along_dim, torch.Tensor.take_along_dim):
        index = kwargs.get("index", kwargs.get("indices"))
        if index is None:
            index = next((a for a in args[1:] if isinstance(a, torch.Tensor)), None)
        if isinstance(index, WeightedLabels):
            raise LossWeightsIgnored(_IGNORED_HOW.format(what=f"the index of {func.__name__} (a log-prob gather)"))


def _plain_unless_labels(value: Any) -> Any:
    # only integer results stay guarded (slices, shifts, moves, masked copies of the labels); masks, counts
    # cast to float and anything computed with logits go on as plain tensors
    if isinstance(value, WeightedLabels):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            return value.as_subclass(torch.Tensor)
        return value
    if isinstance(value, tuple | list):
        return type(value)(_plain_unless_labels(v) for v in value)
    return value


class WeightedLabels(torch.Tensor):
    """The ``labels`` of a batch that has ``loss_weights``: plain labels that refuse an unweighted loss.

    Every operation works as on a plain tensor; integer results (slices, ``.to(device)``, ``F.pad``,
    ``torch.where``) stay guarded. Used as the target of ``F.cross_entropy``/``F.nll_loss`` with a
    reduction other than ``"none"``, or as the index of ``gather``/``take_along_dim``, it raises
    :class:`LossWeightsIgnored`. ``labels.as_subclass(torch.Tensor)`` is the plain tensor.

    >>> labels = WeightedLabels.of(torch.tensor([[-100, 5, 6]]))
    >>> logits = torch.zeros(1, 3, 8)
    >>> F.cross_entropy(logits[0], labels[0], reduction="none").tolist()[1:]  # per token: allowed
    [2.079441547393799, 2.079441547393799]
    >>> F.cross_entropy(logits[0], labels[0])
    Traceback (most recent call last):
    ...
    packer.train.collate.LossWeightsIgnored: this batch has loss_weights ...
    """

    @staticmethod
    def of(labels: torch.Tensor) -> WeightedLabels:
        return labels if isinstance(labels, WeightedLabels) else labels.as_subclass(WeightedLabels)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        _check_use(func, args, kwargs)
        return _plain_unless_labels(super().__torch_function__(func, types, args, kwargs))

    def __reduce_ex__(self, protocol):
        # across DataLoader worker processes: rebuilt as the plain tensor, then guarded again
        return _rebuild_weighted_labels, (self.as_subclass(torch.Tensor),)


def _rebuild_weighted_labels(labels: torch.Tensor) -> WeightedLabels:
    return WeightedLabels.of(labels)


def weighted_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    num_items: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """``sum(w * token cross-entropy) / sum(w)``: the loss of a batch with ``loss_weights``.

    ``logits`` [B, T, V] (or [1, N, V] after :func:`collate_flat`), ``labels`` and ``weights`` as collated
    (unshifted: logits at ``t`` predict the label at ``t + 1``). ``num_items``: the normaliser to divide by
    instead of this batch's ``sum(w)``, e.g. the sum of the weights over all micro-batches of a gradient
    accumulation step and all ranks. A batch without a positive weight gives 0, not NaN.
    """
    labels = labels.as_subclass(torch.Tensor)
    per_token = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten().to(logits.device),
        reduction="none",
        ignore_index=IGNORE_INDEX,
    )
    w = weights[:, 1:].flatten().to(per_token)
    total = (per_token * w).sum()
    if num_items is None:
        return total / w.sum().clamp_min(1e-12)
    return total / torch.as_tensor(num_items, dtype=total.dtype, device=total.device).clamp_min(1e-12)


Item = Mapping[str, Any]


def _row(item: Item, i: int) -> dict[str, torch.Tensor]:
    """One item as 1-D tensors of the dtypes the collators produce, checked for consistency."""
    if "input_ids" not in item:
        raise ValueError(f"item {i} has no 'input_ids' (keys: {', '.join(item)})")
    if "branch" in item:  # as one causal document, a pair's rejected tokens would see its chosen ones
        raise ValueError(f"item {i} is a row of preference pairs (it has 'branch'): collate it with "
                         "packer.pair_collator, which keeps each pair's two sides apart; these collators are for "
                         "supervised rows")
    ids = torch.as_tensor(item["input_ids"], dtype=torch.int64).reshape(-1)
    n = ids.numel()
    if n == 0:
        raise ValueError(f"item {i} is empty")
    if "seq_lens" in item:
        seq_lens = torch.as_tensor(item["seq_lens"], dtype=torch.int64).reshape(-1)
    elif "position_ids" in item:
        starts = (torch.as_tensor(item["position_ids"]).reshape(-1) == 0).nonzero().reshape(-1)
        if starts.numel() == 0 or starts[0] != 0:
            raise ValueError(f"item {i}: position_ids must start at 0 when there is no 'seq_lens'")
        seq_lens = torch.diff(starts, append=torch.tensor([n]))
    else:
        seq_lens = torch.tensor([n])
    if int(seq_lens.sum()) != n or bool((seq_lens <= 0).any()):
        raise ValueError(f"item {i}: seq_lens {seq_lens.tolist()} do not split its {n} tokens")
    if "position_ids" in item:
        pos = torch.as_tensor(item["position_ids"], dtype=torch.int64).reshape(-1)
    else:
        pos = torch.arange(n) - torch.repeat_interleave(torch.cumsum(seq_lens, 0) - seq_lens, seq_lens)
    if "labels" not in item:
        raise ValueError(f"item {i} has no 'labels' (keys: {', '.join(item)})")
    labels = torch.as_tensor(item["labels"], dtype=torch.int64).reshape(-1)
    row = {"input_ids": ids, "labels": labels, "position_ids": pos, "seq_lens": seq_lens}
    if "loss_weights" in item:
        row["loss_weights"] = torch.as_tensor(item["loss_weights"], dtype=torch.float32).reshape(-1)
    for key in ("labels", "position_ids", "loss_weights"):
        if key in row and row[key].numel() != n:
            raise ValueError(f"item {i}: {key} has {row[key].numel()} values for {n} input_ids")
    return row


def _pad_documents(row: dict[str, torch.Tensor], multiple: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Every document of ``row`` padded at its end to a multiple of ``multiple`` tokens.

    The padding belongs to its document: ``seq_lens`` count it, ``position_ids`` go on counting through it
    (a document of 3 tokens padded to 4 has positions 0 1 2 3), so every boundary rule (restarting
    positions, ``cu_seq_lens``, document ids) sees padded documents; ids ``pad_id``, labels -100, weights 0.
    """
    lens = row["seq_lens"]
    padded = -(-lens // multiple) * multiple
    if torch.equal(padded, lens):
        return row
    total, n = int(padded.sum()), int(lens.sum())
    # running sums instead of repeat_interleave (slow on CPU): each document's shift, added where it starts
    shift = torch.zeros(n, dtype=torch.int64)
    shift[torch.cumsum(lens, 0)[:-1]] = (padded - lens)[:-1]
    dest = torch.arange(n) + torch.cumsum(shift, 0)
    start = torch.zeros(total, dtype=torch.int64)
    start[torch.cumsum(padded, 0)[:-1]] = padded[:-1]
    out = {
        "input_ids": torch.full((total,), pad_id, dtype=torch.int64),
        "labels": torch.full((total,), IGNORE_INDEX, dtype=torch.int64),
        "position_ids": torch.arange(total) - torch.cumsum(start, 0),
        "seq_lens": padded,
    }
    if "loss_weights" in row:
        out["loss_weights"] = torch.zeros(total, dtype=torch.float32)
    for key in ("input_ids", "labels", "position_ids", "loss_weights"):
        if key in row:
            out[key].scatter_(0, dest, row[key])  # scatter_: 3-5x faster than out[key][dest] = ... on CPU
    return out


def _rows(items: Sequence[Item], pad_multiple: int | None = None, pad_id: int = 0) -> list[dict[str, torch.Tensor]]:
    if len(items) == 0:
        raise ValueError("cannot collate an empty batch")
    rows = [_row(item, i) for i, item in enumerate(items)]
    weighted = sum("loss_weights" in r for r in rows)
    if weighted not in (0, len(rows)):
        raise ValueError("some items have 'loss_weights' and some do not")
    if not weighted and any(isinstance(r["labels"], WeightedLabels) for r in rows):
        # a weighted PackedDataset's items, stripped of their weights on the way (the HF Trainer's
        # remove_unused_columns=True removes every key the model's forward does not take, per item)
        raise LossWeightsIgnored(
            _IGNORED_HOW.format(what="a collator without their loss_weights (dropped from the items before it)")
        )
    if pad_multiple is not None:
        if isinstance(pad_multiple, bool) or int(pad_multiple) < 1:
            raise ValueError(f"pad_multiple must be a positive number of tokens, not {pad_multiple!r}")
        rows = [_pad_documents(r, int(pad_multiple), pad_id) for r in rows]
    return rows


def _target_length(longest: int, pad_to_multiple_of: int | None, max_length: int | None) -> int:
    if max_length is not None:
        if longest > max_length:
            raise ValueError(f"a row has {longest} tokens, more than max_length={max_length}")
        return max_length
    if pad_to_multiple_of:
        return -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    return longest


def _padded(
    rows: list[dict[str, torch.Tensor]], pad_id: int, pad_to_multiple_of: int | None, max_length: int | None
) -> tuple[dict[str, torch.Tensor], int]:
    """Right-pad every row to one length: input_ids with pad_id, labels -100, position_ids 0, weights 0."""
    length = _target_length(max(r["input_ids"].numel() for r in rows), pad_to_multiple_of, max_length)
    b = len(rows)
    out = {
        "input_ids": torch.full((b, length), pad_id, dtype=torch.int64),
        "attention_mask": torch.zeros((b, length), dtype=torch.int64),
        "labels": torch.full((b, length), IGNORE_INDEX, dtype=torch.int64),
        "position_ids": torch.zeros((b, length), dtype=torch.int64),
    }
    if "loss_weights" in rows[0]:
        out["loss_weights"] = torch.zeros((b, length), dtype=torch.float32)
    for i, r in enumerate(rows):
        n = r["input_ids"].numel()
        out["attention_mask"][i, :n] = 1
        for key in ("input_ids", "labels", "position_ids", "loss_weights"):
            if key in out:
                out[key][i, :n] = r[key]
    if "loss_weights" in out:
        out["labels"] = WeightedLabels.of(out["labels"])
    return out, length


def _document_ids(rows: list[dict[str, torch.Tensor]], length: int) -> DocumentIds:
    """[B, length] int32: 1, 2, ... for the documents of each row, 0 at the padding after them."""
    ids = torch.zeros((len(rows), length), dtype=torch.int32)
    for i, r in enumerate(rows):
        ends = torch.cumsum(r["seq_lens"], 0)
        ids[i, ends[:-1]] = 1  # +1 where each document after the first starts: the running sum counts them
        if int(ends[-1]) < length:
            ids[i, int(ends[-1])] = -ends.numel()  # the running sum is -1 from the first padding token on
    torch.cumsum(ids, 1, out=ids)
    ids += 1
    return DocumentIds.of(ids)


def collate_padded(
    items: Sequence[Item],
    *,
    pad_id: int = 0,
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
    pad_multiple: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-padded batch with a 2D ``attention_mask`` (1 real token, 0 padding).

    Returns ``input_ids`` (pad_id), ``attention_mask``, ``labels`` (-100), ``position_ids`` (0), all int64
    [B, L], and ``loss_weights`` float32 [B, L] (0) when the items have it. L is the longest row, rounded up
    to ``pad_to_multiple_of``, or exactly ``max_length`` (a longer row raises ``ValueError``).
    ``pad_multiple``: each document first padded to a multiple of that many tokens (see the module docstring).

    Only correct for rows holding one document each: see the module docstring.
    """
    out, _ = _padded(_rows(items, pad_multiple, pad_id), pad_id, pad_to_multiple_of, max_length)
    return out


def collate_docs(
    items: Sequence[Item],
    *,
    pad_id: int = 0,
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
    pad_multiple: int | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`collate_padded` with the document ids as ``attention_mask``: the mask is made in the step.

    ``attention_mask`` is a :class:`packer.train.masks.DocumentIds` [B, L] int32 (1, 2, ... per document of
    a row, 0 at padding): O(L) per row. On the device, ``packed_attention_mask(ids, dtype=model.dtype)``
    makes :func:`collate_4d`'s mask of it (sdpa, eager) and ``flex_block_mask(ids)`` a FlexAttention
    ``BlockMask``; ``packer.train.masks.build_attention_mask(batch, model)`` picks, and
    :class:`packer.train.hf.PackerTrainer` calls it. Used as a mask before that, the ids raise
    :class:`packer.train.masks.MaskNotBuilt`.

    >>> b = collate_docs([{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, -100, 9], "seq_lens": [3, 2]},
    ...                   {"input_ids": [1, 2], "labels": [-100, 2]}])
    >>> b["attention_mask"].tolist(), b["position_ids"].tolist()
    ([[1, 1, 1, 2, 2], [1, 1, 0, 0, 0]], [[0, 1, 2, 0, 1], [0, 1, 0, 0, 0]])
    """
    rows = _rows(items, pad_multiple, pad_id)
    out, length = _padded(rows, pad_id, pad_to_multiple_of, max_length)
    out["attention_mask"] = _document_ids(rows, length)
    return out


def collate_flex(
    items: Sequence[Item],
    *,
    pad_id: int = 0,
    pad_to_multiple_of: int | None = 128,
    max_length: int | None = None,
    pad_multiple: int | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`collate_docs` for ``attn_implementation="flex_attention"``: L rounded up to a multiple of 128.

    128 is FlexAttention's block: no partial last block, and few distinct shapes for the kernel that
    transformers compiles (a new L can mean a new compile).

    The step makes the ``BlockMask`` on the device: ``packer.train.masks.flex_block_mask(batch["attention_mask"])``
    (``build_attention_mask``, or :class:`packer.train.hf.PackerTrainer`, does it). Not on the host: a
    ``BlockMask`` evaluates all L * L pairs when made (``collate_4d``'s cost) and holds a closure over the ids
    that cannot be pickled from a DataLoader worker.
    """
    return collate_docs(
        items, pad_id=pad_id, pad_to_multiple_of=pad_to_multiple_of, max_length=max_length, pad_multiple=pad_multiple
    )


def collate_4d(
    items: Sequence[Item],
    *,
    pad_id: int = 0,
    dtype: torch.dtype = torch.float32,
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
    pad_multiple: int | None = None,
) -> dict[str, torch.Tensor]:
    """Like :func:`collate_padded`, but ``attention_mask`` is a block-diagonal causal mask [B, 1, L, L], made here.

    Query i may attend key j when both are tokens of the same document and j <= i. With a floating
    ``dtype`` (the model's dtype: SDPA wants the mask in the query's dtype) the mask is additive: 0.0 where
    allowed, ``torch.finfo(dtype).min`` elsewhere. With ``dtype=torch.bool`` it is True where allowed
    (4x smaller than float32; fine for SDPA, wrong for HF ``eager``, which adds the mask to the scores).

    The mask is O(L^2) made on the loader's core and copied every step (8 x 4096: 0.02-0.1M tokens/s per worker,
    BENCHMARKS.md). Prefer :func:`collate_docs`, which ships the document ids and makes the same mask on the
    device; use this one where the batch must go to ``model(**batch)`` untouched (a stock HF ``Trainer``, a
    trainer you cannot hook) or for short rows.
    """
    if not (dtype.is_floating_point or dtype == torch.bool):
        raise ValueError(f"dtype must be a floating type or torch.bool, not {dtype}")
    out = collate_docs(
        items, pad_id=pad_id, pad_to_multiple_of=pad_to_multiple_of, max_length=max_length, pad_multiple=pad_multiple
    )
    out["attention_mask"] = packed_attention_mask(out["attention_mask"], dtype=dtype)
    return out


def collate_flat(
    items: Sequence[Item], *, pad_id: int = 0, pad_multiple: int | None = None
) -> dict[str, torch.Tensor | int]:
    """Padding-free batch: every row concatenated into one sequence, for flash attention's varlen kernel.

    Returns ``input_ids``, ``labels``, ``position_ids`` int64 [1, N] (N = all tokens of the batch),
    ``cu_seq_lens_q`` and ``cu_seq_lens_k`` int32 [D + 1] (cumulative document lengths over the whole
    batch, starting with 0), ``max_length_q`` and ``max_length_k`` (int, the longest document), in the
    names of transformers' ``FlashAttentionKwargs``; and ``loss_weights`` float32 [1, N] when the items have
    it. No ``attention_mask``: there is no padding, unless ``pad_multiple`` pads each document (with
    ``pad_id``) to a multiple of that many tokens, as context parallelism wants; the lengths then count it.
    """
    rows = _rows(items, pad_multiple, pad_id)
    seq_lens = torch.cat([r["seq_lens"] for r in rows])
    cu = torch.zeros(seq_lens.numel() + 1, dtype=torch.int32)
    torch.cumsum(seq_lens, 0, out=cu[1:])
    longest = int(seq_lens.max())
    out: dict[str, torch.Tensor | int] = {
        key: torch.cat([r[key] for r in rows]).unsqueeze(0) for key in ("input_ids", "labels", "position_ids")
    }
    out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu.clone(), max_length_q=longest, max_length_k=longest)
    if "loss_weights" in rows[0]:
        out["loss_weights"] = torch.cat([r["loss_weights"] for r in rows]).unsqueeze(0)
        out["labels"] = WeightedLabels.of(out["labels"])
    return out


_FOR_ATTENTION = {
    "flash_attention_2": "flat",
    "flash_attention_3": "flat",
    "sdpa": "docs",
    "eager": "docs",
    "flex_attention": "flex",
}


def collator_for(
    attn_implementation: str,
    *,
    pad_id: int = 0,
    dtype: torch.dtype = torch.float32,
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
    pad_multiple: int | None = None,
    host_mask: bool = False,
) -> Callable[[Sequence[Item]], dict]:
    """The collate function that keeps packed documents apart under an HF ``attn_implementation``.

    ``flash_attention_2``/``flash_attention_3`` -> :func:`collate_flat` (``pad_to_multiple_of`` and
    ``max_length`` do not apply); ``sdpa``/``eager`` -> :func:`collate_docs` (the step makes the mask:
    ``packer.train.masks.build_attention_mask``), or with ``host_mask=True`` :func:`collate_4d` in ``dtype``
    (the model's dtype; a batch ready for ``model(**batch)``); ``flex_attention`` -> :func:`collate_flex`
    (``pad_to_multiple_of`` defaults to 128 there). ``pad_multiple`` pads every document (all collators).

    >>> collator_for("flash_attention_2") is collate_flat
    True
    """
    kind = _FOR_ATTENTION.get(attn_implementation)
    if kind is None:
        raise ValueError(
            f"no collator known to isolate packed documents under attn_implementation={attn_implementation!r}; "
            f"known: {', '.join(_FOR_ATTENTION)}"
        )
    if kind == "flat":
        return collate_flat if pad_multiple is None else functools.partial(
            collate_flat, pad_id=pad_id, pad_multiple=pad_multiple
        )
    common = dict(pad_id=pad_id, max_length=max_length, pad_multiple=pad_multiple)
    if kind == "flex":
        return functools.partial(collate_flex, pad_to_multiple_of=pad_to_multiple_of or 128, **common)
    if host_mask:
        return functools.partial(collate_4d, dtype=dtype, pad_to_multiple_of=pad_to_multiple_of, **common)
    return functools.partial(collate_docs, pad_to_multiple_of=pad_to_multiple_of, **common)
