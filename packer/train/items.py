"""Making a training item (a dict of tensors) from one packed row: labels, positions, loss weights.

:func:`make_item` turns a :class:`packer.train.rows.Row` into what :class:`packer.train.dataset.PackedDataset`
yields. A row of two documents, strategy ``instruction_tuning`` (``<s>`` special, ``U:``/``R:`` marker,
``hi``/``2+2?`` instruction, ``yo``/``4`` response, ``</s>`` end)::

    tokens       :  <s>   U:   hi   R:   yo  </s> |  <s>   U:  2+2?  R:    4  </s>
    input_ids    :    1   17   40   18   77    2  |    1   17   93   18   31    2
    roles        :  spe  mar  ins  mar  res  end  |  spe  mar  ins  mar  res  end
    mask         :    0    0    0    0    1    1  |    0    0    0    0    1    1
    labels       : -100 -100 -100 -100   77    2  | -100 -100 -100 -100   31    2
    position_ids :    0    1    2    3    4    5  |    0    1    2    3    4    5
    seq_lens     : [6, 6]

Under ``instruction_modelling`` the instructions ``hi``/``2+2?`` get labels too. Labels are NOT shifted
(the Hugging Face convention: the model shifts them), and the first token of every document is -100 under
every strategy, ``full`` included, so no document is trained to predict its successor's first token.

A pair row of a preference build (``branch``: 0 the pair's shared prefix, 1 chosen, 2 rejected; one ``seq_lens``
entry per pair) gives its ``branch`` to the item too, and its rejected suffix's positions continue the prefix
(:mod:`packer.train.pairs` collates it)::

    tokens       :  <s>   U:   hi   R:   yo  </s> |  no  </s>
    branch       :    0    0    0    0    1    1  |   2    2
    position_ids :    0    1    2    3    4    5  |   4    5
    seq_lens     : [8]

A KTO row's item has ``doc_labels`` (bool [D], each document's label). With ``prompt_loss_weight=0.1,
normalize="sequence"`` the item also has ``loss_weights``::

    weights (raw) :    0    0  0.1    0    1    1  |    0    0  0.1    0    1    1
    loss_weights  :    0    0 .048    0 .476 .476  |    0    0 .048    0 .476 .476   (each document sums to 1)
    labels        : -100 -100   40 -100   77    2  | -100 -100   93 -100   31    2   (-100 where weight is 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..output import roles as R
from .collate import IGNORE_INDEX, WeightedLabels
from .rows import Row

__all__ = ["IGNORE_INDEX", "NORMALIZE_MODES", "ItemSpec", "make_item"]

#: the values of ``normalize`` besides None
NORMALIZE_MODES = ("sequence",)


@dataclass(frozen=True)
class ItemSpec:
    """How rows become items: the strategy and the opt-in extras."""

    role_lut: np.ndarray | None  # bool[256] when the strategy is a role set, else None (mask column)
    prompt_lut: np.ndarray  # bool[256]: prompt roles
    prompt_loss_weight: float | None
    normalize: str | None
    return_doc_ids: bool
    #: tokens of messages marked untrained (``Row.trainable`` False) get no loss or weight; False only
    #: for the ``full`` strategy, which trains on every token
    flagged: bool = True

    @property
    def weighted(self) -> bool:
        return self.prompt_loss_weight is not None or self.normalize is not None


def make_item(row: Row, spec: ItemSpec) -> dict[str, torch.Tensor]:
    ids = row.ids.astype(np.int64)
    lens = row.seq_lens.astype(np.int64)
    starts = np.cumsum(lens) - lens
    n = len(ids)
    loss = spec.role_lut[row.roles] if spec.role_lut is not None else row.mask
    assert loss is not None
    untrained = row.trainable is not None and spec.flagged and not row.trainable.all()
    if untrained and spec.role_lut is not None:
        loss &= row.trainable  # a mask column already leaves them out
    # content of a message other than the assistant's marked "training": true: loss under every strategy
    forced = row.forced if row.forced is not None and row.forced.any() else None
    if forced is not None and spec.role_lut is not None:
        loss |= forced  # a mask column has them already
    position_ids = np.arange(n, dtype=np.int64) - np.repeat(starts, lens)
    if row.branch is not None:
        position_ids = _pair_positions(position_ids, row.branch, lens)
    item: dict[str, torch.Tensor] = {}
    if spec.weighted:
        weights = loss.astype(np.float64)
        if spec.prompt_loss_weight is not None:
            prompt = spec.prompt_lut[row.roles]
            if untrained:
                prompt &= row.trainable
            if forced is not None:
                prompt &= ~forced  # trained as a response is: weight 1
            weights[prompt] = spec.prompt_loss_weight
        weights[starts] = 0.0  # a document's first token is predicted from the previous document
        if spec.normalize == "sequence":
            totals = np.add.reduceat(weights, starts)
            weights /= np.repeat(np.where(totals > 0, totals, 1.0), lens)
        # labels exactly where the weight is positive, so a plain mean over labels sees the same tokens
        has_label = weights > 0
    else:
        has_label = loss  # a fresh array (a lookup or an unpacking), ours to change
        has_label[starts] = False
    labels = np.where(has_label, ids, IGNORE_INDEX)
    item["input_ids"] = torch.from_numpy(ids)
    item["labels"] = torch.from_numpy(labels)
    item["position_ids"] = torch.from_numpy(position_ids)
    item["seq_lens"] = torch.from_numpy(row.seq_lens.astype(np.int32))  # a copy: the view is read-only
    if spec.weighted:
        item["loss_weights"] = torch.from_numpy(weights.astype(np.float32))
        # labels that refuse an unweighted loss (see packer.train.collate.WeightedLabels): the weights cannot be lost
        item["labels"] = WeightedLabels.of(item["labels"])
    if spec.return_doc_ids:
        item["doc_ids"] = torch.from_numpy(row.doc_ids.astype(np.int64))
    if row.branch is not None:
        item["branch"] = torch.from_numpy(row.branch.astype(np.uint8))  # a copy: the view is read-only
    if row.labels is not None:
        item["doc_labels"] = torch.from_numpy(row.labels.astype(bool))
    return item


def _pair_positions(local: np.ndarray, branch: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Positions of a pair row: a rejected suffix continues its prefix, so it restarts where the chosen began
    (each token's position within its document, less the document's chosen tokens on the rejected branch)."""
    doc = np.repeat(np.arange(len(lens)), lens)
    chosen = np.bincount(doc, weights=branch == R.CHOSEN, minlength=len(lens)).astype(np.int64)
    return local - np.where(branch == R.REJECTED, chosen[doc], 0)
