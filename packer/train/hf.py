"""Hugging Face ``Trainer`` and TRL ``SFTTrainer`` on packed shards, with the loss weights kept.

::

    from packer import PackedDataset
    from packer.train.hf import PackerTrainer, packer_collator

    ds = PackedDataset("shards/", strategy="instruction_tuning", prompt_loss_weight=0.1, batch_size=8)
    trainer = PackerTrainer(model=model, args=TrainingArguments(..., max_steps=1000), train_dataset=ds,
                            data_collator=packer_collator(model, pad_id=ds.manifest["tokenizer"]["pad_id"]))
    trainer.train()

:class:`PackerTrainer` is a ``transformers.Trainer`` that keeps the batch's ``loss_weights`` (the stock
``remove_unused_columns=True`` would drop them: they are no argument of the model) and, when a batch has
them, computes :func:`packer.train.collate.weighted_loss` from the model's logits instead of the model's own
(unweighted) loss. Over gradient accumulation and ranks it divides by the sum of the weights of all the
step's micro-batches (``average_tokens_across_devices``: of all ranks too), as the Trainer does with its
token count. Batches without weights train exactly as with ``Trainer``. :class:`PackerSFTTrainer` is the
same on TRL's ``SFTTrainer`` (:func:`as_hf_iterable` gives it the ``datasets.IterableDataset`` it wants);
:class:`PackerTrainerMixin` puts it on any other ``Trainer`` subclass. Batches of
:func:`packer.train.collate.collate_docs` (``packer_collator`` for sdpa/eager) and ``collate_flex`` carry
document ids: the mixin makes the attention mask of them on the device, after the batch got there
(:func:`packer.train.masks.build_attention_mask`).

The stock ``Trainer`` with weighted data fails on its first step rather than train on the wrong loss: the
collators give weighted batches :class:`packer.train.collate.WeightedLabels`, which raise
:class:`packer.train.collate.LossWeightsIgnored` inside the model's own loss.

Needs the ``hf`` extra (transformers, accelerate; TRL for ``PackerSFTTrainer``). Importing this module
imports neither: the classes are made on first use.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .collate import LossWeightsIgnored, WeightedLabels, collator_for, weighted_loss
from .masks import DocumentIds, build_attention_mask

#: classes made on first access (they subclass transformers' and TRL's trainers)
_LAZY = ("PackerSFTTrainer", "PackerTrainer")

__all__ = [
    *_LAZY,
    "LossWeightsIgnored",
    "PackerTrainerMixin",
    "WeightedLabels",
    "as_hf_iterable",
    "packer_collator",
    "to_dataset",
    "weighted_loss",
]

WEIGHTS = "loss_weights"


def packer_collator(model: Any, *, pad_id: int | None = 0, host_mask: bool = False, **kwargs: Any) -> Callable:
    """The collator that isolates packed documents under ``model``'s attention implementation.

    ``collate_flat`` for flash attention; for sdpa/eager ``collate_docs`` (document ids: the trainer makes
    the 4D mask on the device, in ``model.dtype``; :class:`PackerTrainer`/:class:`PackerSFTTrainer` do, a
    stock ``Trainer`` fails on its first step), or with ``host_mask=True`` ``collate_4d`` (the mask made in
    the loader, in ``model.dtype``: for a stock ``Trainer``); ``collate_flex`` for flex_attention.
    ``kwargs`` go to :func:`packer.train.collate.collator_for` (``pad_to_multiple_of``, ``max_length``,
    ``pad_multiple``).
    """
    config = model.config
    attn = getattr(config, "_attn_implementation", None) or "eager"
    return collator_for(
        attn, pad_id=pad_id or 0, dtype=kwargs.pop("dtype", model.dtype), host_mask=host_mask, **kwargs
    )


class PackerTrainerMixin:
    """Keeps ``loss_weights`` through a ``transformers.Trainer`` and trains on the weighted loss.

    Put it before the Trainer class: ``class MyTrainer(PackerTrainerMixin, transformers.Trainer)``.
    """

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()  # type: ignore[misc]
        # a pair row's branch reaches the collator, which refuses it (trained as SFT rows, a pair's rejected
        # tokens would see its chosen ones): PackerDPOTrainer trains pair rows
        for key in (WEIGHTS, "branch"):
            if key not in self._signature_columns:  # type: ignore[attr-defined]
                self._signature_columns.append(key)  # type: ignore[attr-defined]

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """On the device: the document ids of ``collate_docs``/``collate_flex`` made into the model's mask."""
        inputs = super()._prepare_inputs(inputs)  # type: ignore[misc]
        ids = inputs.get("attention_mask")
        #: the batch's real tokens, counted before the ids become a mask that cannot count them
        self._packer_tokens = (ids.as_subclass(torch.Tensor) > 0).sum() if isinstance(ids, DocumentIds) else None
        return build_attention_mask(inputs, self.model)  # type: ignore[attr-defined]

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> Any:
        # include_num_input_tokens_seen="non_padding" sums attention_mask: count the ids' real tokens instead
        ids = inputs.get("attention_mask")
        if isinstance(ids, DocumentIds):
            inputs = {**inputs, "attention_mask": ids.as_subclass(torch.Tensor) > 0}
        return super()._track_num_input_tokens(inputs)  # type: ignore[misc]

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Any:
        """The Trainer's loss normaliser; for weighted batches the sum of the weights over the step."""
        count = super()._get_num_items_in_batch(batch_samples, device)  # type: ignore[misc]
        if count is None or not batch_samples or WEIGHTS not in batch_samples[0]:
            return count
        total = sum(b[WEIGHTS].sum(dtype=torch.float32).to(device) for b in batch_samples)
        args = self.args  # type: ignore[attr-defined]
        if args.average_tokens_across_devices and args.world_size > 1:
            total = self.accelerator.gather(total).sum()  # type: ignore[attr-defined]
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(WEIGHTS, None)
        if weights is None:
            return super().compute_loss(  # type: ignore[misc]
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        labels = inputs.pop("labels")
        inputs["use_cache"] = False
        outputs = model(**inputs)  # no labels: the model computes no (unweighted) loss of its own
        loss = weighted_loss(outputs.logits, labels, weights, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:  # type: ignore[attr-defined]
            # as Trainer.compute_loss: the normaliser counts every rank, DDP averages the gradients over them
            loss = loss * self.accelerator.num_processes  # type: ignore[attr-defined]
        return (loss, outputs) if return_outputs else loss


@functools.cache
def _trainer_class() -> type:
    import transformers

    return type(
        "PackerTrainer",
        (PackerTrainerMixin, transformers.Trainer),
        {
            "__module__": __name__,
            "__doc__": "``transformers.Trainer`` that keeps ``loss_weights`` and trains on the weighted loss.",
        },
    )


class _CountedBlockMask:
    """A ``BlockMask`` whose ``sum()`` is the batch's real tokens (made a subclass of torch's on first use)."""

    _packer_tokens: torch.Tensor

    def sum(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._packer_tokens


class _SFTTokenCount:
    """TRL's ``SFTTrainer`` logs ``num_tokens`` as ``inputs["attention_mask"].sum()`` after the forward: of a 4D
    mask made from document ids that is a sum of T x T additive entries (NaN), and a ``BlockMask`` has no
    ``sum`` (the step failed). The batch's real tokens, counted from its ids, go in instead; the loss is TRL's."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        tokens, mask = getattr(self, "_packer_tokens", None), inputs.get("attention_mask")
        if tokens is None or "_total_train_tokens" not in vars(self) or not model.training:
            return super().compute_loss(  # type: ignore[misc]
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        from torch.nn.attention.flex_attention import BlockMask

        if isinstance(mask, BlockMask):
            mask.__class__ = _counted_block_mask_class()
            mask._packer_tokens = tokens
        before = self._total_train_tokens
        result = super().compute_loss(  # type: ignore[misc]
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        # in place of what TRL's loss added (packer's weighted loss adds nothing), as TRL counts: over ranks
        counted = self.accelerator.gather_for_metrics(tokens).sum().item()  # type: ignore[attr-defined]
        self._total_train_tokens = before + counted // getattr(self, "_tp_size", 1)
        self._metrics["train"]["num_tokens"] = [self._total_train_tokens]  # type: ignore[attr-defined]
        return result


@functools.cache
def _counted_block_mask_class() -> type:
    from torch.nn.attention.flex_attention import BlockMask

    return type("CountedBlockMask", (_CountedBlockMask, BlockMask), {"__module__": __name__})


@functools.cache
def _sft_trainer_class() -> type:
    from trl import SFTTrainer

    return type(
        "PackerSFTTrainer",
        (_SFTTokenCount, PackerTrainerMixin, SFTTrainer),
        {
            "__module__": __name__,
            "__doc__": "TRL ``SFTTrainer`` that keeps ``loss_weights`` and trains on the weighted loss.",
        },
    )


def as_hf_iterable(dataset: torch.utils.data.IterableDataset, num_workers: int = 0) -> Any:
    """``dataset`` (a :class:`packer.train.dataset.PackedDataset`) as a ``datasets.IterableDataset``, for TRL.

    TRL's ``SFTTrainer`` takes only ``datasets`` datasets. The rows are read by ``dataset`` itself, so its
    rank and DataLoader-worker split and its order are kept: give the DataLoader's ``num_workers``
    (``dataloader_num_workers``) here. ``set_epoch`` is not forwarded: call ``dataset.set_epoch`` yourself
    between epochs (or train for ``max_steps`` within one).
    """
    import datasets

    def rows(workers: list[int]) -> Iterator[dict[str, Any]]:
        # datasets deals the `workers` list out to the DataLoader workers (one each), or all of it to the
        # main process: either way one pass of `dataset`, which splits rows by worker on its own
        for item in dataset:
            yield {k: v.as_subclass(torch.Tensor).numpy() for k, v in item.items()}

    hf = datasets.IterableDataset.from_generator(rows, gen_kwargs={"workers": list(range(max(1, num_workers)))})
    return hf.with_format("torch")


def to_dataset(output: str | os.PathLike, split: str = "train", *, verify: bool = False) -> Any:
    """The rows of ``split``'s shards as one ``datasets.Dataset``, memory-mapped: no copy, nothing written to the
    datasets cache (each shard is ``datasets.Dataset.from_file``, concatenated in manifest order).

    The columns are the shards' (``input_ids``, ``roles``, ``seq_lens``, ``doc_ids``, ``trainable``,
    ``mask_<strategy>``...; ``docs/output.md``): the rows as packed, not the labels or weights of a
    :class:`~packer.train.dataset.PackedDataset`. ``verify``: check each shard's sha256 first (its size is always
    checked). The output must be local and of format version 5 or later (Arrow IPC stream shards); an older one
    raises :class:`~packer.output.layout.ShardError` saying to rebuild it (the same build command, run again)::

        >>> ds = to_dataset("shards/")                        # doctest: +SKIP
        >>> ds[0]["input_ids"][:4], ds.num_rows               # doctest: +SKIP
        ([151644, 8948, 198, 2610], 1200)
    """
    try:
        import datasets
    except ImportError as e:
        raise ImportError("to_dataset needs Hugging Face datasets: pip install 'packer[hf]' (or datasets)") from e

    import pyarrow.fs as pafs

    from ..output.container import is_stream
    from ..output.layout import FORMAT_VERSION, ShardError, output_file, read_manifest, split_shards
    from ..output.shards import shard_schema
    from .rows import check_shards, open_root

    fs, root = open_root(output, None)
    if not isinstance(fs, pafs.LocalFileSystem):
        raise ValueError(f"{output}: datasets memory-maps local files only: copy the output to a local disk first, "
                         "or read it with packer.PackedDataset (any pyarrow filesystem)")
    m = read_manifest(root)
    version = m["format"]["version"]
    if not is_stream(version):
        raise ShardError(f"{root}: packer-shards version {version}: its shards are Arrow IPC files, which "
                         f"datasets.Dataset.from_file cannot map: run its build command again with this packer "
                         f"(it rebuilds it in version {FORMAT_VERSION}, stream shards), or copy it into the datasets "
                         "cache with datasets.load_dataset(\"arrow\", data_files=[...shard paths...])")
    shards = split_shards(m, split, root)
    check_shards(fs, root, shards, verify)
    parts = [datasets.Dataset.from_file(output_file(root, s["file"]), split=datasets.NamedSplit(split))
             for s in shards]
    if not parts:  # an output with no rows: its schema, no rows
        empty = shard_schema(list(m["strategies"]), version, m.get("kind", "sft")).empty_table()
        return datasets.Dataset(datasets.table.InMemoryTable(empty), split=datasets.NamedSplit(split))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts, split=datasets.NamedSplit(split))


def __getattr__(name: str) -> Any:
    if name == "PackerTrainer":
        return _trainer_class()
    if name == "PackerSFTTrainer":
        return _sft_trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
