"""Train a tiny causal LM, written in plain torch, on packed shards: PackedDataset + collate_docs.

    python examples/train_torch.py                               # instruction_tuning, 300 steps
    python examples/train_torch.py --strategy instruction_modelling --steps 200 --seed 1

Builds the demo shards (examples/*_demo.json, demo tokenizer, seq_len 512) into --data if they are not
there yet. The model (about 1M parameters, rotary positions from ``position_ids``) attends through a
block-diagonal causal mask, so each packed document sees only itself: the loss of a row is the sum of its
documents' losses alone (tests/test_collate.py checks this to 1e-9 in float64). The loader ships each
token's document id (``collate_docs``, O(T) a row); the step makes the mask of them where the model runs
(``packed_attention_mask``), not the loader (``collate_4d``, O(T^2) a row).
300 steps took 3 minutes on 2 CPU cores shared with other jobs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from packer import PackedDataset, build
from packer.options import DEMO_TOKENIZER
from packer.train.collate import IGNORE_INDEX, collate_docs
from packer.train.masks import packed_attention_mask

HERE = Path(__file__).resolve().parent
DEMO_INPUTS = [HERE / "alpaca_demo.json", HERE / "sharegpt_demo.json"]


def ensure_demo_shards(out: Path, seq_len: int = 512) -> dict:
    """The manifest of ``out``, building the demo shards there first if needed."""
    if not (out / "manifest.json").exists():
        print(f"building demo shards in {out} (seq_len {seq_len})")
        build([str(p) for p in DEMO_INPUTS], str(out), tokenizer=str(DEMO_TOKENIZER), seq_len=seq_len)
    return json.loads((out / "manifest.json").read_text())


def rotary(x: torch.Tensor, position_ids: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding of x [B, H, T, Dh] at position_ids [B, T] (restarting at 0 per document)."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)
    angles = position_ids[:, None, :, None].float() * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, position_ids), rotary(k, position_ids)
        # mask [B, 1, T, T], additive: 0 within a document (causal), finfo.min elsewhere
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab: int, dim: int = 128, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor):
        x = self.emb(input_ids)
        for block in self.blocks:
            x = block(x, position_ids, attention_mask)
        return self.head(self.norm(x))


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over the tokens with loss; logits[t] predicts labels[t + 1] (HF convention)."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="instruction_tuning", help="loss-mask strategy of the shards")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=HERE.parent / "build" / "demo-shards-512", help="shards directory")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--log-every", type=int, default=20)
    args = ap.parse_args()

    manifest = ensure_demo_shards(args.data)
    if args.strategy not in manifest["strategies"]:
        ap.error(f"strategy {args.strategy!r} not in the shards; they have: {', '.join(manifest['strategies'])}")
    vocab = manifest["tokenizer"]["vocab_size"]
    pad_id = manifest["tokenizer"]["pad_id"] or 0

    torch.manual_seed(args.seed)
    model = TinyLM(vocab)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters; strategy {args.strategy}; {manifest['packing']['rows']} rows")

    dataset = PackedDataset(args.data, strategy=args.strategy, shuffle=True, seed=args.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=2,
        # seq_lens is consumed here: the batch holds input_ids, labels, position_ids and each token's
        # document id (attention_mask), of which the step makes the 4D mask
        collate_fn=partial(collate_docs, pad_id=pad_id),
    )

    def batches():
        for epoch in itertools.count():
            dataset.set_epoch(epoch)  # a new shuffle each epoch (workers are restarted with it)
            yield from loader

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    )

    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for step, batch in enumerate(itertools.islice(batches(), args.steps), 1):
        mask = packed_attention_mask(batch["attention_mask"], dtype=torch.float32)  # on the ids' device
        logits = model(batch["input_ids"], batch["position_ids"], mask)
        loss = lm_loss(logits, batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            window = losses[-args.log_every :]
            elapsed = time.perf_counter() - start
            print(f"step {step:4d}  loss {sum(window) / len(window):.3f}  {elapsed:6.1f}s")

    n = min(args.log_every, len(losses))
    first, last = sum(losses[:n]) / n, sum(losses[-n:]) / n
    elapsed = time.perf_counter() - start
    print(f"loss: first {n} steps {first:.3f} -> last {n} steps {last:.3f}  ({len(losses)} steps, {elapsed:.1f}s)")


if __name__ == "__main__":
    main()
