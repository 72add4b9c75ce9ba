"""Train a tiny, randomly initialised Llama with the Hugging Face ``Trainer`` on packed shards.

    python examples/train_hf.py                                   # instruction_modelling, 120 steps
    python examples/train_hf.py --strategy instruction_tuning --prompt-loss-weight 0.1

Needs the ``hf`` extra (``pip install -e '.[torch,hf]'``: transformers and accelerate). Builds the demo
shards (examples/*_demo.json, demo tokenizer, seq_len 512) into --data if they are not there yet.

The model uses ``attn_implementation="sdpa"``. ``packer_collator`` gives it ``collate_docs``: the loader
ships each token's document id, and ``PackerTrainer`` makes the block-diagonal causal 4D mask of them on
the device in the step, so a packed document attends only to itself (a 2D mask would let it attend to the
documents before it in the row). The Trainer passes the batch to ``model(**batch)``: ``input_ids``,
``labels``, ``position_ids`` and ``attention_mask`` are all keyword arguments Llama takes, and HF's loss
(the mean over tokens whose label is not -100, labels shifted inside the model) is the strategy's loss.

With ``--prompt-loss-weight`` or ``--normalize`` the items carry ``loss_weights``, which the model does not
accept and the stock ``Trainer`` drops (``remove_unused_columns``). ``packer.train.hf.PackerTrainer`` keeps them
and trains on the weighted loss; ``--stock-trainer`` runs the plain ``transformers.Trainer`` instead, which
then stops at its first step with ``LossWeightsIgnored`` rather than train prompt tokens at weight 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers
from train_torch import ensure_demo_shards  # the sibling example (python puts examples/ on sys.path)

from packer import PackedDataset, PackerTrainer, packer_collator

HERE = Path(__file__).resolve().parent


def tiny_llama(manifest: dict, seed: int = 0) -> transformers.PreTrainedModel:
    """A randomly initialised 2-layer Llama (0.6M parameters) over the shards' tokenizer, sdpa attention."""
    tok = manifest["tokenizer"]
    config = transformers.LlamaConfig(
        vocab_size=tok["vocab_size"],
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=manifest["seq_len"],
        pad_token_id=tok["pad_id"],
        eos_token_id=tok["eos_id"],
        bos_token_id=tok["bos_id"],
        use_cache=False,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa")


def model_and_dataset(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The tiny model and the shards' ``PackedDataset`` (built first where missing), as the options say."""
    manifest = ensure_demo_shards(args.data)
    model = tiny_llama(manifest, args.seed)
    print(f"model: {model.num_parameters() / 1e6:.2f}M parameters; strategy {args.strategy}")
    dataset = PackedDataset(
        args.data,
        strategy=args.strategy,
        seed=args.seed,
        batch_size=args.batch_size,
        prompt_loss_weight=args.prompt_loss_weight,
        normalize=args.normalize,
    )
    return model, dataset


def training_kwargs(args: argparse.Namespace) -> dict:
    """The ``TrainingArguments`` of this example (TRL's ``SFTConfig`` takes them too)."""
    return dict(
        output_dir=str(args.output_dir),
        max_steps=args.steps,  # an IterableDataset has no length the Trainer could count epochs with
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        warmup_steps=max(1, args.steps // 20),
        lr_scheduler_type="cosine",
        logging_steps=max(1, args.steps // 10),
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=args.workers,
        use_cpu=not torch.cuda.is_available(),
        seed=args.seed,
    )


def make_trainer(model, dataset: PackedDataset, args: argparse.Namespace, *, stock: bool = False):
    """The Trainer of this example: ``PackerTrainer`` with the collator for the model's attention."""
    training_args = transformers.TrainingArguments(**training_kwargs(args))
    trainer_class = transformers.Trainer if stock else PackerTrainer
    return trainer_class(
        model=model,
        args=training_args,
        train_dataset=dataset,
        # sdpa: collate_docs ships each token's document id; PackerTrainer makes the block-diagonal causal
        # mask of them on the device, so documents stay apart. The stock Trainer passes the batch on untouched:
        # it gets collate_4d's mask, made in the loader (host_mask=True)
        data_collator=packer_collator(model, pad_id=dataset.manifest["tokenizer"]["pad_id"], host_mask=stock),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="instruction_modelling", help="loss-mask strategy of the shards")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-loss-weight", type=float, default=None, help="weight of prompt tokens, in [0, 1]")
    ap.add_argument("--normalize", choices=["sequence"], default=None, help="each document's weights sum to 1")
    ap.add_argument("--stock-trainer", action="store_true", help="plain transformers.Trainer (weights: fails)")
    ap.add_argument("--data", type=Path, default=HERE.parent / "build" / "demo-shards-512", help="shards directory")
    ap.add_argument("--output-dir", type=Path, default=HERE.parent / "build" / "train-hf")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    model, dataset = model_and_dataset(args)
    trainer = make_trainer(model, dataset, args, stock=args.stock_trainer)
    result = trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"loss: first logged {logged[0]:.3f} -> last logged {logged[-1]:.3f} ({result.global_step} steps)")


if __name__ == "__main__":
    main()
