"""Attention masks made on the device, in the training step, from the document ids a collator ships.

:func:`packer.train.collate.collate_docs` (and :func:`~packer.train.collate.collate_flex`) put in
``attention_mask`` the document of every token, [B, L] int32: 1, 2, ... for the documents of a row, 0 at
the padding after them. That is O(L) per row, where :func:`~packer.train.collate.collate_4d` ships the
[B, 1, L, L] mask itself (134 MB as ``torch.bool`` for 8 x 4096, 537 MB as float32, made on one loader
core and copied to the GPU every step). The step turns the ids into the mask where the model runs::

    batch = {k: v.to(device) for k, v in batch.items()}
    ids = batch.pop("attention_mask")
    mask = packed_attention_mask(ids, dtype=model.dtype)        # sdpa / eager: [B, 1, L, L], as collate_4d's
    mask = flex_block_mask(ids)                                 # flex_attention: a BlockMask
    logits = model(**batch, attention_mask=mask).logits

or ``build_attention_mask(batch, model)`` does it in place (:class:`packer.train.hf.PackerTrainer` calls it).

The ids are a :class:`DocumentIds`: moved, pinned, pickled, sliced and concatenated like any tensor, but
used as a mask (a dtype change, arithmetic, a comparison: what a model does with a 2D padding mask) they
raise :class:`MaskNotBuilt`. A 2D mask of document ids is no padding mask, and a model that took it as one
would let every document attend to the ones before it in its row without a word.

>>> ids = torch.tensor([[1, 1, 1, 2, 2, 0]])          # documents of 3 and 2 tokens, one padding token
>>> packed_attention_mask(ids, dtype=torch.bool)[0, 0].int().tolist()
[[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]]
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import torch

__all__ = ["DocumentIds", "MaskNotBuilt", "build_attention_mask", "flex_block_mask", "packed_attention_mask"]

_NOT_BUILT = (
    "this batch's attention_mask holds the document id of every token (packer.train.collate.collate_docs / "
    "collate_flex), not a mask, and it was used as {what}. Build the mask on the device first: "
    "packer.train.masks.packed_attention_mask(ids, dtype=model.dtype) for sdpa/eager, flex_block_mask(ids) for "
    "flex_attention, or build_attention_mask(batch, model) for either; packer.train.hf.PackerTrainer and "
    "PackerSFTTrainer do it for you. With a stock Trainer use packer_collator(model, host_mask=True) "
    "(collate_4d)."
)


class MaskNotBuilt(RuntimeError):
    """Document ids (:class:`DocumentIds`) were used as an attention mask without being made into one."""


# what moves, stores or regroups the ids without reading them as a mask: a DataLoader (pin_memory, worker
# pickling), accelerate (send_to_device, concatenating and slicing dispatched batches), the Trainer (.to)
_STRUCTURAL = {
    getattr(torch.Tensor, name)
    for name in (
        "to", "cuda", "cpu", "pin_memory", "is_pinned", "contiguous", "is_contiguous", "detach", "clone",
        "__getitem__", "split", "chunk", "narrow", "view", "reshape", "size", "dim", "numel", "element_size",
        "__len__", "share_memory_", "is_shared", "untyped_storage", "data_ptr", "__repr__", "__format__",
        "__reduce_ex__", "__deepcopy__", "record_stream", "as_subclass", "tolist", "numpy", "unbind", "__iter__",
    )
} | {torch.cat, torch.stack, torch.split, torch.chunk, torch.unbind, torch.narrow}


class DocumentIds(torch.Tensor):
    """Per-token document ids [B, L] (1, 2, ... per row, 0 at padding) that refuse to be used as a mask.

    Structural operations (``.to(device)``, ``pin_memory``, slicing, ``torch.cat``, pickling) keep the
    guard; anything that reads the values (a dtype change, arithmetic, comparisons, reductions) raises
    :class:`MaskNotBuilt`. ``ids.as_subclass(torch.Tensor)`` is the plain tensor.

    >>> ids = DocumentIds.of(torch.tensor([[1, 1, 2, 0]], dtype=torch.int32))
    >>> ids.to("cpu")[:, :2].shape
    torch.Size([1, 2])
    >>> ids.to(torch.bool)
    Traceback (most recent call last):
    ...
    packer.train.masks.MaskNotBuilt: this batch's attention_mask holds the document id of every token ...
    """

    @staticmethod
    def of(ids: torch.Tensor) -> DocumentIds:
        return ids if isinstance(ids, DocumentIds) else ids.as_subclass(DocumentIds)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        if func not in _STRUCTURAL and name != "__get__":  # __get__: attribute reads (shape, ndim, device)
            raise MaskNotBuilt(_NOT_BUILT.format(what=f"the input of {name}"))
        out = super().__torch_function__(func, types, args, kwargs)
        if isinstance(out, torch.Tensor) and out.dtype not in (torch.int32, torch.int64):
            raise MaskNotBuilt(_NOT_BUILT.format(what=f"a {out.dtype} tensor ({name})"))
        return out

    def __reduce_ex__(self, protocol):
        # across DataLoader worker processes: rebuilt as the plain tensor, then guarded again
        return _rebuild_document_ids, (self.as_subclass(torch.Tensor),)


def _rebuild_document_ids(ids: torch.Tensor) -> DocumentIds:
    return DocumentIds.of(ids)


def _plain(ids: torch.Tensor) -> torch.Tensor:
    if ids.dim() != 2:
        raise ValueError(f"document ids must be [batch, length], not {list(ids.shape)}")
    return ids.as_subclass(torch.Tensor)


def packed_attention_mask(ids: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The block-diagonal causal mask [B, 1, L, L] of document ids [B, L], on their device.

    Query i may attend key j when both are in the same document (id > 0) and j <= i; every query may attend
    itself (a padding query would otherwise attend nothing: NaN in SDPA's softmax and in the gradients).
    Floating ``dtype``: additive, 0.0 allowed, ``torch.finfo(dtype).min`` elsewhere (``eager`` needs this);
    ``torch.bool``: True allowed (``sdpa``). Equal to :func:`packer.train.collate.collate_4d`'s mask.
    """
    if not (dtype.is_floating_point or dtype == torch.bool):
        raise ValueError(f"dtype must be a floating type or torch.bool, not {dtype}")
    ids = _plain(ids)
    allowed = (ids[:, :, None] == ids[:, None, :]) & (ids > 0)[:, :, None]
    allowed = allowed.tril_()  # j <= i
    allowed.diagonal(dim1=1, dim2=2).fill_(True)
    if dtype != torch.bool:
        allowed = torch.zeros(allowed.shape, dtype=dtype, device=ids.device).masked_fill_(
            ~allowed, torch.finfo(dtype).min
        )
    return allowed.unsqueeze(1)


def document_causal(ids: torch.Tensor) -> Callable:
    """FlexAttention ``mask_mod`` of document ids [B, L]: the rule of :func:`packed_attention_mask`."""
    ids = _plain(ids)

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        doc = ids[b, q]
        return ((doc == ids[b, kv]) & (kv <= q) & (doc > 0)) | (q == kv)

    return mask_mod


def flex_block_mask(ids: torch.Tensor, *, block_size: int = 128) -> Any:
    """A FlexAttention ``BlockMask`` (document-causal, as :func:`packed_attention_mask`) of ids [B, L].

    Made on the ids' device: ``create_block_mask`` evaluates the mask for all B * L * L pairs, which on a
    loader core costs what :func:`packer.train.collate.collate_4d` does, and a ``BlockMask`` holds a
    closure over the ids that cannot cross DataLoader worker processes. HF models take it as
    ``attention_mask`` under ``attn_implementation="flex_attention"``; in plain torch pass it as
    ``flex_attention(q, k, v, block_mask=...)``.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    plain = _plain(ids)
    b, length = plain.shape
    return create_block_mask(
        document_causal(plain), b, None, length, length, device=plain.device, BLOCK_SIZE=block_size
    )


_BUILDERS = {"sdpa": "4d", "eager": "4d", "flex_attention": "flex"}


def build_attention_mask(
    batch: MutableMapping[str, Any], model: Any = None, *, attn_implementation: str | None = None,
    dtype: torch.dtype | None = None,
) -> MutableMapping[str, Any]:
    """Replace ``batch["attention_mask"]``, if it holds :class:`DocumentIds`, with the mask ``model`` needs.

    The attention implementation and dtype come from ``model`` (``config._attn_implementation``,
    ``model.dtype``) unless given. sdpa/eager: :func:`packed_attention_mask` in that dtype; flex_attention:
    :func:`flex_block_mask`. Other batches are returned unchanged. Call it after moving the batch to the
    device.
    """
    ids = batch.get("attention_mask")
    if not isinstance(ids, DocumentIds):
        return batch
    if attn_implementation is None:
        attn_implementation = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    kind = _BUILDERS.get(attn_implementation)
    if kind is None:
        raise ValueError(
            f"document ids cannot be made into a mask for attn_implementation={attn_implementation!r} (known: "
            f"{', '.join(_BUILDERS)}); for flash attention collate with packer.train.collate.collate_flat"
        )
    if kind == "flex":
        batch["attention_mask"] = flex_block_mask(ids)
    else:
        batch["attention_mask"] = packed_attention_mask(ids, dtype=dtype or getattr(model, "dtype", torch.float32))
    return batch
