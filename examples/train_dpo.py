"""Train a tiny, randomly initialised Llama with DPO (TRL's ``DPOTrainer``) on packed preference pairs.

    python examples/train_dpo.py                          # builds build/demo-pairs-512 first, 40 steps
    python examples/train_dpo.py --data PAIRS --strategy instruction_tuning

Needs TRL besides the ``hf`` extra (``pip install -e '.[torch,hf]' trl``; tested with trl 1.16, transformers 5).
The demo pairs are ``dpo_demo.jsonl`` (240 questions whose answers are computed: the chosen answer is right, the
rejected one wrong, most of its words the same; made by ``make_dpo_demo.py``), built with the demo tokenizer into
pair rows (several pairs per row; each pair's prompt and the answers' common first words stored once).

``PackerDPOTrainer`` is ``DPOTrainer`` with the packed rows' collator (a 4D mask for sdpa: each token sees its
pair's prefix and its own side only), ``pair_logps`` per pair, and DPO's sigmoid loss; the reference model is
a frozen copy of the initial policy.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import transformers
from trl import DPOConfig

from packer import PackedDataset, PackerDPOTrainer
from packer.options import DEMO_TOKENIZER

HERE = Path(__file__).resolve().parent


def ensure_pair_shards(data: Path) -> dict:
    """The manifest of the pair build at ``data``, built from the bundled ``dpo_demo.jsonl`` first where missing."""
    if not (data / "manifest.json").exists():
        from packer import build

        build([HERE / "dpo_demo.jsonl"], data, tokenizer=str(DEMO_TOKENIZER), seq_len=512)
    return json.loads((data / "manifest.json").read_text())


def tiny_llama(vocab: int, seed: int) -> transformers.PreTrainedModel:
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                                      use_cache=False)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="instruction_tuning", help="loss-mask strategy of the shards")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=2, help="packed rows per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=HERE.parent / "build" / "demo-pairs-512", help="pair shards")
    ap.add_argument("--output-dir", type=Path, default=HERE.parent / "build" / "train-dpo")
    args = ap.parse_args()

    ensure_pair_shards(args.data)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(DEMO_TOKENIZER / "tokenizer.json"),
                                               pad_token="<|endoftext|>", eos_token="<|im_end|>")
    model = tiny_llama(len(tok), args.seed)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    dataset = PackedDataset(args.data, strategy=args.strategy, seed=args.seed, batch_size=args.batch_size,
                            return_doc_ids=True)
    config = DPOConfig(
        output_dir=str(args.output_dir), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, beta=args.beta, lr_scheduler_type="constant", logging_steps=max(1, args.steps // 8),
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), seed=args.seed,
        # DPOConfig defaults to bf16, which a CPU runs much slower than float32
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), gradient_checkpointing=False,
    )
    trainer = PackerDPOTrainer(model=model, ref_model=ref, args=config, train_dataset=dataset, processing_class=tok)
    result = trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    print(f"reward accuracy: first logged {logged[0]['rewards/accuracies']:.2f} -> "
          f"last logged {logged[-1]['rewards/accuracies']:.2f}")
    print(f"loss: first logged {logged[0]['loss']:.4f} -> last logged {logged[-1]['loss']:.4f} "
          f"({result.global_step} steps)")


if __name__ == "__main__":
    main()
