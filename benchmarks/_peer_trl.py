"""What TRL's ``SFTTrainer`` runs on a dataset before training; run by ``bench_peers.py`` in the peers venv.

Loads a ``messages`` JSONL with ``datasets.load_dataset("json")`` into a fresh cache directory (a first run,
nothing reused), then constructs a real ``SFTTrainer`` (a tiny random Qwen2 model, so the model costs nothing)
with ``assistant_only_loss=True, packing=True, packing_strategy="bfd"``: its constructor converts, renders,
tokenizes with assistant masks, builds labels and packs the training set. Prints one JSON line: the seconds
from loading to the prepared dataset, rows, tokens, documents packed and documents truncated (counted by
wrapping TRL's own ``_pack_bfd`` to see the lengths before it cuts them to ``max_length``).

Not importable from the project's venv (TRL is a benchmark-only dependency, never in pyproject).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", help="messages JSONL")
    parser.add_argument("tokenizer", help="model directory with the tokenizer")
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--num-proc", type=int, default=None, help="SFTConfig.dataset_num_proc (default: None)")
    args = parser.parse_args()

    start_imports = time.perf_counter()
    import datasets
    import pyarrow.compute as pc
    import transformers
    import trl
    import trl.data_utils
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    imports_s = time.perf_counter() - start_imports
    seen: dict[str, int] = {"documents": 0, "truncated": 0, "tokens_before_truncation": 0}
    original_pack_bfd = trl.data_utils._pack_bfd

    def counting_pack_bfd(examples, seq_length, *a, **kw):  # type: ignore[no-untyped-def]
        # lengths as tokenized, before TRL cuts documents longer than max_length
        lengths = pc.list_value_length(examples.column(0)).to_numpy(zero_copy_only=False)
        seen["documents"] += int((lengths > 0).sum())
        seen["truncated"] += int((lengths > seq_length).sum())
        seen["tokens_before_truncation"] += int(lengths.sum())
        return original_pack_bfd(examples, seq_length, *a, **kw)

    trl.data_utils._pack_bfd = counting_pack_bfd

    with tempfile.TemporaryDirectory(prefix="trl-bench-") as tmp:
        start = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        ds = datasets.load_dataset("json", data_files=args.data, split="train", cache_dir=f"{tmp}/cache")
        # a tiny random model: SFTTrainer needs one, and its size must not count
        cfg = Qwen2Config(
            vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=args.max_length,
        )
        model = Qwen2ForCausalLM(cfg)
        config = SFTConfig(
            output_dir=f"{tmp}/out", max_length=args.max_length, packing=True, packing_strategy="bfd",
            assistant_only_loss=True, dataset_num_proc=args.num_proc, report_to=[], use_cpu=True,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tok)
        train = trainer.train_dataset
        seconds = time.perf_counter() - start
        seq_lengths = train.with_format("arrow")["seq_lengths"]
        tokens = int(pc.sum(pc.list_value_length(train.with_format("arrow")["input_ids"])).as_py())
        n_docs = int(pc.sum(pc.list_value_length(seq_lengths)).as_py())
        print(json.dumps({
            "seconds": seconds, "imports_seconds": imports_s, "rows": len(train), "tokens": tokens,
            "documents": n_docs, "records": len(ds), **seen,
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                         "datasets": datasets.__version__, "tokenizers": __import__("tokenizers").__version__},
        }))


if __name__ == "__main__":
    main()
