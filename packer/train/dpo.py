"""TRL's ``DPOTrainer`` on packed preference pairs: :class:`PackerDPOTrainer`.

::

    from packer import PackedDataset, PackerDPOTrainer
    from trl import DPOConfig

    ds = PackedDataset("pairs/", strategy="instruction_tuning", batch_size=4)
    trainer = PackerDPOTrainer(model=model, ref_model=ref, args=DPOConfig(..., per_device_train_batch_size=4),
                               train_dataset=ds, processing_class=tokenizer)
    trainer.train()

TRL 1.16's ``DPOTrainer`` assumes one padded sequence per side, the batch ``[chosen; rejected]`` split with
``chunk(2)`` and a completion mask shifted by one. Packed pair rows are none of that, so these methods are
replaced:

- ``_prepare_dataset``: nothing to do (the rows are tokenized, masked and packed); a
  :class:`packer.train.dataset.PackedDataset` is wrapped as a ``datasets.IterableDataset`` (TRL takes only those);
- ``_set_signature_columns_if_needed``: the item keys of pair rows, so no column is dropped;
- ``_compute_loss``: one forward over the packed rows with :func:`packer.train.pairs.pair_collator`'s mask,
  :func:`packer.train.pairs.pair_logps` per pair, and the loss of ``args.loss_type``: ``"sigmoid"``
  (:func:`packer.train.pairs.dpo_loss`; with ``label_smoothing`` the cDPO form, which TRL's sigmoid leaves out),
  ``"ipo"`` and ``"sigmoid_norm"`` (on the per-token means); TRL's metrics (rewards, margins, accuracies, logps);
- ``compute_ref_log_probs``: the same on the reference model (or the policy with its PEFT adapter off) under
  ``torch.no_grad``;
- ``_precompute_ref_logps`` (``precompute_ref_log_probs=True``): a map-style ``datasets.Dataset`` of pair rows
  gets list columns ``ref_chosen_logps``/``ref_rejected_logps`` (one value per pair of the row), which the
  collator passes on. A ``PackedDataset`` is iterable: TRL refuses that too (see :func:`as_pair_dataset`).

The data collator defaults to :func:`packer.train.pairs.pair_collator_for` the model (its attention
implementation and dtype). Needs the ``hf`` extra and TRL; importing this module imports neither.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch

from .pairs import PairLogps, dpo_loss, pair_collator_for, pair_forward, pair_layout, pair_logps

#: the class made on first access (it subclasses TRL's DPOTrainer)
_LAZY = ("PackerDPOTrainer",)

__all__ = [*_LAZY, "PAIR_ITEM_KEYS", "PackerDPOMixin", "as_pair_dataset"]

#: keys of pair-row items (PackedDataset items, or raw shard rows) the trainer keeps
PAIR_ITEM_KEYS = [
    "input_ids", "labels", "position_ids", "seq_lens", "doc_ids", "branch", "loss_weights", "roles", "trainable",
    "forced", "ref_chosen_logps", "ref_rejected_logps",
]
_LOSSES = ("sigmoid", "ipo", "sigmoid_norm")


def as_pair_dataset(dataset: Any) -> Any:
    """A :class:`packer.train.dataset.PackedDataset` (or any iterable of pair items) read once into a map-style
    ``datasets.Dataset``, in its order: what ``precompute_ref_log_probs=True`` needs. Holds every row in memory."""
    import datasets

    rows = [{k: v.as_subclass(torch.Tensor).numpy() for k, v in item.items()} for item in dataset]
    return datasets.Dataset.from_list(rows).with_format("torch")


class PackerDPOMixin:
    """The ``DPOTrainer`` methods replaced for packed pair rows (put it before ``trl.DPOTrainer``)."""

    def __init__(self, model: Any, ref_model: Any = None, args: Any = None, data_collator: Any = None,
                 train_dataset: Any = None, eval_dataset: Any = None, **kwargs: Any) -> None:
        from .hf import as_hf_iterable

        workers = getattr(args, "dataloader_num_workers", 0) or 0
        if isinstance(train_dataset, torch.utils.data.IterableDataset):
            train_dataset = as_hf_iterable(train_dataset, num_workers=workers)
        if isinstance(eval_dataset, torch.utils.data.IterableDataset):
            eval_dataset = as_hf_iterable(eval_dataset, num_workers=workers)
        if data_collator is None:
            tok = kwargs.get("processing_class")
            pad = getattr(getattr(tok, "tokenizer", tok), "pad_token_id", None) or 0
            data_collator = pair_collator_for(model, pad_id=pad)
        bad = [t for t in (getattr(args, "loss_type", None) or ["sigmoid"]) if t not in _LOSSES]
        if bad:
            raise ValueError(f"PackerDPOTrainer: loss_type {', '.join(bad)} is not supported on packed pairs; "
                             f"supported: {', '.join(_LOSSES)}")
        super().__init__(model=model, ref_model=ref_model, args=args, data_collator=data_collator,  # type: ignore[call-arg]
                         train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        return dataset  # tokenized, masked and packed by packer build

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:  # type: ignore[has-type]
            self._signature_columns = [*PAIR_ITEM_KEYS, *(f"mask_{s}" for s in _strategies(self))]

    def _ref_context(self, model: Any) -> Any:
        """The PEFT adapter off (or the "ref" adapter on) when the reference is the policy itself."""
        from accelerate.utils import is_peft_model

        if getattr(self, "ref_model", None) is None and is_peft_model(self.model):  # type: ignore[attr-defined]
            from trl.trainer.utils import use_adapter

            unwrapped = self.accelerator.unwrap_model(self.model)  # type: ignore[attr-defined]
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    def _ref_logps(self, model: Any, inputs: dict) -> PairLogps:
        with torch.no_grad(), self._ref_context(model), self.accelerator.autocast():  # type: ignore[attr-defined]
            return pair_logps(pair_forward(model, inputs), inputs)

    def compute_ref_log_probs(self, model: Any, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference log-probabilities (summed, per pair) of one collated batch of pair rows."""
        ref = self._ref_logps(model, inputs)
        return ref.chosen_sum, ref.rejected_sum

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        import datasets

        if not isinstance(dataset, datasets.Dataset):
            raise ValueError("precompute_ref_log_probs=True needs a map-style datasets.Dataset of pair rows "
                             "(packer.train.dpo.as_pair_dataset(PackedDataset(...)) makes one), or set it False")
        model = self.ref_model or self.model  # type: ignore[attr-defined]
        device = self.accelerator.device  # type: ignore[attr-defined]
        chosen: list[list[float]] = []
        rejected: list[list[float]] = []
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = _to(self.data_collator(items), device)  # type: ignore[attr-defined]
            ref = self._ref_logps(model, batch)
            counts = [pair_layout(torch.as_tensor(it["branch"]), torch.as_tensor(it["seq_lens"])).doc_ids.numel()
                      for it in items]
            for c, r in zip(ref.chosen_sum.split(counts), ref.rejected_sum.split(counts), strict=True):
                chosen.append(c.tolist())
                rejected.append(r.tolist())
        dataset = dataset.add_column("ref_chosen_logps", chosen)
        return dataset.add_column("ref_rejected_logps", rejected)

    def _compute_loss(self, model: Any, inputs: dict, return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"  # type: ignore[attr-defined]
        policy = pair_logps(pair_forward(model, inputs), inputs)
        if "ref_chosen_logps" in inputs:
            ref_c, ref_r = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_c, ref_r = self.compute_ref_log_probs(self.ref_model or model, inputs)  # type: ignore[attr-defined]
        loss = torch.zeros((), device=policy.chosen_sum.device)
        for loss_type, weight in zip(self.loss_types, self.loss_weights, strict=True):  # type: ignore[attr-defined]
            loss = loss + weight * self._pair_loss(loss_type, policy, ref_c, ref_r)
        self._log_pairs(mode, policy, ref_c, ref_r, inputs)
        if return_outputs:
            return loss, {"chosen_logps": policy.chosen_sum, "rejected_logps": policy.rejected_sum}
        return loss

    def _pair_loss(self, loss_type: str, p: PairLogps, ref_c: torch.Tensor, ref_r: torch.Tensor) -> torch.Tensor:
        beta = self.beta  # type: ignore[attr-defined]
        if loss_type == "sigmoid":
            return dpo_loss(p.chosen_sum, p.rejected_sum, ref_c, ref_r, beta, self.label_smoothing)  # type: ignore[attr-defined]
        # TRL's length-normalised forms: each side's log-ratio over its scored tokens
        delta = (p.chosen_sum - ref_c) / p.chosen_tokens.clamp_min(1) \
            - (p.rejected_sum - ref_r) / p.rejected_tokens.clamp_min(1)
        if loss_type == "ipo":
            return ((delta - 1 / (2 * beta)) ** 2).mean()
        return -torch.nn.functional.logsigmoid(beta * delta).mean()  # sigmoid_norm

    def _log_pairs(self, mode: str, p: PairLogps, ref_c: torch.Tensor, ref_r: torch.Tensor, inputs: dict) -> None:
        gather = self.accelerator.gather_for_metrics  # type: ignore[attr-defined]
        metrics = self._metrics[mode]  # type: ignore[attr-defined]
        chosen = (self.beta * (p.chosen_sum - ref_c)).detach()  # type: ignore[attr-defined]
        rejected = (self.beta * (p.rejected_sum - ref_r)).detach()  # type: ignore[attr-defined]
        metrics["rewards/chosen"].append(gather(chosen).mean().item())
        metrics["rewards/rejected"].append(gather(rejected).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen > rejected).float()).mean().item())
        metrics["rewards/margins"].append(gather(chosen - rejected).mean().item())
        metrics["logps/chosen"].append(gather(p.chosen_sum.detach()).mean().item())
        metrics["logps/rejected"].append(gather(p.rejected_sum.detach()).mean().item())
        if mode == "train":  # tokens the model ran on (padding left out)
            self._total_train_tokens += int(gather((inputs["pair_index"] >= 0).sum()).sum())  # type: ignore[attr-defined]
        metrics["num_tokens"] = [self._total_train_tokens]  # type: ignore[attr-defined]


def _strategies(trainer: Any) -> list[str]:
    collator = getattr(trainer, "data_collator", None)
    strategy = getattr(collator, "keywords", {}).get("strategy") if collator is not None else None
    return [strategy] if strategy else []


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@functools.cache
def _trainer_class() -> type:
    from trl import DPOTrainer

    return type(
        "PackerDPOTrainer",
        (PackerDPOMixin, DPOTrainer),
        {"__module__": __name__, "__doc__": "TRL ``DPOTrainer`` on packed preference pair rows (see the module)."},
    )


def __getattr__(name: str) -> Any:
    if name == "PackerDPOTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
