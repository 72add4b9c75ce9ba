"""Train a tiny, randomly initialised Llama with the Hugging Face ``Trainer`` on packed shards.

    python examples/train_hf.py                                   # instruction_modelling, 120 steps
    python examples/train_hf.py --strategy instruction_tuning --prompt-loss-weight 0.1

Needs the ``hf`` extra (``pip install -e '.[torch,hf]'``: transformers and accelerate). Builds the demo
shards (examples/*_demo.json, demo tokenizer, seq_len 512) into --data if they are not there yet.

The model uses ``attn_implementation="sdpa"`` and gets the block-diagonal causal 4D mask of
``collate_4d``, so a packed document attends only to itself (a 2D mask would let it attend to the
documents before it in the row). The Trainer passes the batch to ``model(**batch)``: ``input_ids``,
``labels``, ``position_ids`` and ``attention_mask`` are all keyword arguments Llama takes, and HF's loss
(the mean over tokens whose label is not -100, labels shifted inside the model) is the strategy's loss.

With ``--prompt-loss-weight`` or ``--normalize`` the items carry ``loss_weights``, which the model does
not accept: ``WeightedLossTrainer`` pops them and computes the weighted loss itself.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from train_torch import ensure_demo_shards  # the sibling example (python puts examples/ on sys.path)

from packer.collate import IGNORE_INDEX, collate_4d
from packer.dataset import PackedDataset

HERE = Path(__file__).resolve().parent


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * token loss) / sum(w); logits[t] predicts labels[t + 1] (labels are not shifted)."""
    per_token = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), reduction="none", ignore_index=IGNORE_INDEX
    )
    w = weights[:, 1:].flatten()
    # a batch whose documents have no loss token at all: zero, not NaN
    return (per_token * w).sum() / w.sum().clamp_min(1e-12)


class WeightedLossTrainer(transformers.Trainer):
    """A Trainer that weights each token's loss by the batch's ``loss_weights`` when it has them."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("loss_weights", None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = weighted_loss(outputs.logits, labels, weights)
        return (loss, outputs) if return_outputs else loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="instruction_modelling", help="loss-mask strategy of the shards")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-loss-weight", type=float, default=None, help="weight of prompt tokens, in [0, 1]")
    ap.add_argument("--normalize", choices=["sequence"], default=None, help="each document's weights sum to 1")
    ap.add_argument("--data", type=Path, default=HERE.parent / "build" / "demo-shards-512", help="shards directory")
    ap.add_argument("--output-dir", type=Path, default=HERE.parent / "build" / "train-hf")
    args = ap.parse_args()

    manifest = ensure_demo_shards(args.data)
    tok = manifest["tokenizer"]
    config = transformers.LlamaConfig(
        vocab_size=tok["vocab_size"], hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=manifest["seq_len"],
        pad_token_id=tok["pad_id"], eos_token_id=tok["eos_id"], bos_token_id=tok["bos_id"],
        use_cache=False,
    )
    torch.manual_seed(args.seed)
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
    print(f"model: {model.num_parameters() / 1e6:.2f}M parameters; strategy {args.strategy}")

    dataset = PackedDataset(
        args.data, strategy=args.strategy, seed=args.seed, batch_size=args.batch_size,
        prompt_loss_weight=args.prompt_loss_weight, normalize=args.normalize,
    )
    training_args = transformers.TrainingArguments(
        output_dir=str(args.output_dir),
        max_steps=args.steps,  # an IterableDataset has no length the Trainer could count epochs with
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=max(1, args.steps // 20),
        lr_scheduler_type="cosine",
        logging_steps=max(1, args.steps // 10),
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=2,
        # the collator's output is exactly what the model takes; there are no columns to drop
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        seed=args.seed,
    )
    trainer = WeightedLossTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=partial(collate_4d, pad_id=tok["pad_id"] or 0, dtype=model.dtype),
    )
    result = trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"loss: first logged {logged[0]:.3f} -> last logged {logged[-1]:.3f} ({result.global_step} steps)")


if __name__ == "__main__":
    main()
