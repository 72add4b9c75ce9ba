"""Train a tiny, randomly initialised Llama with TRL's ``SFTTrainer`` on packed shards.

    python examples/train_trl.py                                   # instruction_tuning, 60 steps
    python examples/train_trl.py --prompt-loss-weight 0.1 --normalize sequence

Needs TRL besides the ``hf`` extra (``pip install -e '.[torch,hf]' trl``; tested with trl 1.16 on
transformers 4.57 and 5.24). The shards are already tokenized, packed and masked, so TRL must do none of it:

- ``dataset_kwargs={"skip_prepare_dataset": True}``: no tokenizing, truncating or label building;
- ``packing=False``, ``padding_free=False``: no re-packing (the rows are packed already);
- ``data_collator=packer_collator(model)``: packer's collator (for sdpa each token's document id, made into
  the block-diagonal 4D mask on the device by ``PackerSFTTrainer``, so each packed document attends only to
  itself), not TRL's, which would rebuild ``labels`` from ``input_ids``;
- ``PackerSFTTrainer``: ``SFTTrainer`` keeping ``loss_weights`` (``--prompt-loss-weight``/``--normalize``)
  and training on the weighted loss; the stock ``SFTTrainer`` stops on such batches (LossWeightsIgnored).

TRL takes only ``datasets`` datasets: ``as_hf_iterable`` wraps the ``PackedDataset``, which still reads the
rows (its rank and worker split and order are kept).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers
from train_hf import model_and_dataset, training_kwargs  # a sibling example (python puts examples/ on sys.path)
from trl import SFTConfig

from packer import PackerSFTTrainer, as_hf_iterable, packer_collator
from packer.options import DEMO_TOKENIZER

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="instruction_tuning", help="loss-mask strategy of the shards")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-loss-weight", type=float, default=None, help="weight of prompt tokens, in [0, 1]")
    ap.add_argument("--normalize", choices=["sequence"], default=None, help="each document's weights sum to 1")
    ap.add_argument("--data", type=Path, default=HERE.parent / "build" / "demo-shards-512", help="shards directory")
    ap.add_argument("--output-dir", type=Path, default=HERE.parent / "build" / "train-trl")
    args = ap.parse_args()

    model, dataset = model_and_dataset(args)
    config = SFTConfig(
        **training_kwargs(args),
        dataset_kwargs={"skip_prepare_dataset": True},  # already tokenized, packed and masked
        packing=False,
        padding_free=False,
        # SFTConfig defaults to bf16, which a CPU runs ~8x slower than float32 (its matmuls are not native)
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )
    trainer = PackerSFTTrainer(
        model=model,
        args=config,
        train_dataset=as_hf_iterable(dataset, num_workers=args.workers),
        data_collator=packer_collator(model, pad_id=dataset.manifest["tokenizer"]["pad_id"]),
        # TRL wants a tokenizer (it saves it with the model); it tokenizes nothing here
        processing_class=transformers.PreTrainedTokenizerFast(tokenizer_file=str(DEMO_TOKENIZER / "tokenizer.json")),
    )
    result = trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"loss: first logged {logged[0]:.3f} -> last logged {logged[-1]:.3f} ({result.global_step} steps)")


if __name__ == "__main__":
    main()
