"""The collators, and the claim they exist for: a packed row, fed with the right mask, gives every document
exactly the loss it has alone (a plain-torch model in float64, and HF Llama with sdpa and eager)."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra (packer[torch])")
F = torch.nn.functional

from packer.output import roles as R  # noqa: E402
from packer.train.collate import (  # noqa: E402
    IGNORE_INDEX,
    collate_4d,
    collate_docs,
    collate_flat,
    collate_flex,
    collate_padded,
    collator_for,
)

# --------------------------------------------------------------------------------------------------------------
# items as PackedDataset yields them, built from lists of documents


def make_item(docs, *, weights=None):
    """A packed row from documents given as ``(input_ids, loss_mask)`` pairs (lists).

    labels: the token where the mask is true, else -100, and -100 at every document's first token;
    position_ids restart at 0 per document. ``weights``: one list of floats per document -> loss_weights.
    """
    ids, labels, pos = [], [], []
    for doc_ids, mask in docs:
        assert len(doc_ids) == len(mask)
        ids += doc_ids
        labels += [IGNORE_INDEX] + [t if m else IGNORE_INDEX for t, m in zip(doc_ids[1:], mask[1:], strict=True)]
        pos += list(range(len(doc_ids)))
    item = {
        "input_ids": torch.tensor(ids, dtype=torch.int64),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "position_ids": torch.tensor(pos, dtype=torch.int64),
        "seq_lens": torch.tensor([len(d) for d, _ in docs], dtype=torch.int32),
    }
    if weights is not None:
        item["loss_weights"] = torch.tensor([w for ws in weights for w in ws], dtype=torch.float32)
    return item


#: strategies to build labels for: the built-ins (last_turn needs turns; it is instruction_tuning's roles
#: restricted further, nothing new for attention) and a user one
STRATEGIES = {name: roles for name, roles in R.BUILTIN_STRATEGIES.items() if name != "last_turn"}
STRATEGIES["prompt_only"] = ("instruction", "input")


def random_docs(gen, lengths, vocab):
    """Documents with random ids and random roles: (ids, roles) lists."""
    docs = []
    for n in lengths:
        ids = torch.randint(1, vocab, (n,), generator=gen).tolist()
        roles = torch.randint(1, 9, (n,), generator=gen).tolist()
        docs.append((ids, roles))
    return docs


def with_strategy(docs, strategy):
    codes = set(R.role_codes(STRATEGIES[strategy]))
    return [(ids, [r in codes for r in roles]) for ids, roles in docs]


def token_losses(logits, labels):
    """Per-token cross entropy, HF convention: logits[t] predicts labels[t + 1]; 0 where ignored."""
    logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    labels = labels[:, 1:].reshape(-1)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")


def summed_loss(logits, labels):
    return token_losses(logits, labels).sum()


# --------------------------------------------------------------------------------------------------------------
# shapes, dtypes, padding values


@pytest.fixture
def items():
    return [
        make_item([([5, 6, 7], [1, 1, 1]), ([8, 9], [0, 1])]),
        make_item([([10, 11, 12, 13], [0, 0, 1, 1])]),
        make_item([([14], [1]), ([15, 16], [1, 1])]),
    ]


def test_collate_padded(items):
    b = collate_padded(items, pad_id=3)
    assert set(b) == {"input_ids", "attention_mask", "labels", "position_ids"}
    for v in b.values():
        assert v.dtype == torch.int64 and v.shape == (3, 5)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 3], [14, 15, 16, 3, 3]]
    assert b["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, -100, 12, 13, -100], [-100, -100, 16, -100, -100]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0], [0, 0, 1, 0, 0]]
    # only items, default pad id 0
    assert collate_padded(items)["input_ids"][2].tolist() == [14, 15, 16, 0, 0]
    assert collate_padded(items, pad_to_multiple_of=4)["input_ids"].shape == (3, 8)
    assert collate_padded(items, pad_to_multiple_of=5)["input_ids"].shape == (3, 5)
    b = collate_padded(items, max_length=7)
    assert b["labels"].shape == (3, 7) and b["labels"][0, 5:].tolist() == [-100, -100]
    with pytest.raises(ValueError, match="max_length"):
        collate_padded(items, max_length=4)


def test_collate_flat(items):
    b = collate_flat(items)
    assert set(b) == {
        "input_ids", "labels", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"
    }
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]]
    assert b["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, -100, 12, 13, -100, -100, 16]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3, 0, 0, 1]]
    for key in ("input_ids", "labels", "position_ids"):
        assert b[key].dtype == torch.int64
    for key in ("cu_seq_lens_q", "cu_seq_lens_k"):
        assert b[key].dtype == torch.int32 and b[key].tolist() == [0, 3, 5, 9, 10, 12]
    assert b["max_length_q"] == b["max_length_k"] == 4 and isinstance(b["max_length_q"], int)
    # what transformers itself derives from the position_ids, where it can
    fa = pytest.importorskip("transformers.modeling_flash_attention_utils", reason="transformers not installed")
    if hasattr(fa, "prepare_fa_kwargs_from_position_ids"):
        (cu_q, _), (max_q, _) = fa.prepare_fa_kwargs_from_position_ids(b["position_ids"])
        assert cu_q.tolist() == b["cu_seq_lens_q"].tolist() and max_q == b["max_length_q"]


def reference_mask(items, length):
    """[B, L, L] bool, brute force: i may attend j iff both real, same document, j <= i; or i == j."""
    out = torch.zeros(len(items), length, length, dtype=torch.bool)
    for b, item in enumerate(items):
        doc_of = []
        for d, n in enumerate(item["seq_lens"].tolist()):
            doc_of += [d] * n
        for i in range(length):
            for j in range(length):
                real = i < len(doc_of) and j < len(doc_of)
                out[b, i, j] = (real and doc_of[i] == doc_of[j] and j <= i) or i == j
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.bool])
def test_collate_4d_mask_matches_reference(items, dtype):
    b = collate_4d(items, pad_id=3, dtype=dtype, pad_to_multiple_of=8)
    padded = collate_padded(items, pad_id=3, pad_to_multiple_of=8)
    for key in ("input_ids", "labels", "position_ids"):
        assert torch.equal(b[key], padded[key])
    mask = b["attention_mask"]
    assert mask.shape == (3, 1, 8, 8) and mask.dtype == dtype
    ref = reference_mask(items, 8)
    if dtype == torch.bool:
        assert torch.equal(mask[:, 0], ref)
    else:
        expected = torch.zeros(ref.shape, dtype=dtype).masked_fill(~ref, torch.finfo(dtype).min)
        assert torch.equal(mask[:, 0], expected)
    # every query (padding included) may attend to something: no all-masked row
    allowed = mask[:, 0] if dtype == torch.bool else mask[:, 0] == 0
    assert allowed.any(-1).all()


def test_collate_4d_worked_example():
    """The module docstring's picture."""
    item = make_item([([1, 2, 3], [1, 1, 1]), ([4, 5], [1, 1])])
    b = collate_4d([item])
    m = torch.finfo(torch.float32).min
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert b["labels"].tolist() == [[-100, 2, 3, -100, 5]]
    assert b["attention_mask"][0, 0].tolist() == [
        [0, m, m, m, m],
        [0, 0, m, m, m],
        [0, 0, 0, m, m],
        [m, m, m, 0, m],
        [m, m, m, 0, 0],
    ]
    assert collate_flat([item])["cu_seq_lens_q"].tolist() == [0, 3, 5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.bool])
def test_collate_4d_no_nan_in_attention(items, dtype):
    """SDPA, and the eager formula, give finite outputs everywhere, padding included, and finite gradients."""
    b = collate_4d(items, dtype=dtype, pad_to_multiple_of=8)
    gen = torch.Generator().manual_seed(0)
    fdtype = torch.float32 if dtype == torch.bool else dtype
    q, k, v = (torch.randn(3, 2, 8, 4, generator=gen).to(fdtype).requires_grad_() for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=b["attention_mask"])
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    if dtype != torch.bool:  # HF eager: scores + mask, softmax
        scores = (q @ k.transpose(-1, -2)) / 2 + b["attention_mask"]
        assert torch.isfinite(torch.softmax(scores.float(), -1)).all()


def test_loss_weights_pass_through():
    items = [
        make_item([([1, 2, 3], [1, 1, 1]), ([4, 5], [1, 1])], weights=[[0.5, 1.0, 2.0], [0.25, 1.0]]),
        make_item([([6, 7], [1, 1])], weights=[[3.0, 4.0]]),
    ]
    for collate in (collate_padded, collate_4d):
        b = collate(items)
        assert b["loss_weights"].dtype == torch.float32
        assert b["loss_weights"].tolist() == [[0.5, 1.0, 2.0, 0.25, 1.0], [3.0, 4.0, 0.0, 0.0, 0.0]]
    b = collate_flat(items)
    assert b["loss_weights"].dtype == torch.float32 and b["loss_weights"].shape == (1, 7)
    assert b["loss_weights"].tolist() == [[0.5, 1.0, 2.0, 0.25, 1.0, 3.0, 4.0]]
    with pytest.raises(ValueError, match="loss_weights"):
        collate_padded([items[0], make_item([([6, 7], [1, 1])])])


def test_bad_batches():
    with pytest.raises(ValueError, match="empty batch"):
        collate_padded([])
    bad = make_item([([1, 2, 3], [1, 1, 1])])
    bad["seq_lens"] = torch.tensor([2, 2], dtype=torch.int32)
    for collate in (collate_padded, collate_4d, collate_flat):
        with pytest.raises(ValueError, match="seq_lens"):
            collate([bad])
    with pytest.raises(ValueError, match="labels"):
        collate_flat([{"input_ids": torch.tensor([1, 2])}])
    with pytest.raises(ValueError, match="dtype"):
        collate_4d([make_item([([1, 2], [1, 1])])], dtype=torch.int64)


def test_items_without_seq_lens_use_position_ids(items):
    stripped = [{k: v for k, v in item.items() if k != "seq_lens"} for item in items]
    assert torch.equal(collate_4d(stripped)["attention_mask"], collate_4d(items)["attention_mask"])
    assert collate_flat(stripped)["cu_seq_lens_q"].tolist() == collate_flat(items)["cu_seq_lens_q"].tolist()


def test_partial_and_collator_for(items):
    assert torch.equal(partial(collate_padded, pad_id=7)(items)["input_ids"][2], torch.tensor([14, 15, 16, 7, 7]))
    assert collator_for("flash_attention_2") is collate_flat
    c = collator_for("sdpa", pad_id=7, dtype=torch.bfloat16)
    assert c.func is collate_docs and "attention_mask" in c(items)
    c = collator_for("sdpa", pad_id=7, dtype=torch.bfloat16, host_mask=True)
    b = c(items)
    assert b["attention_mask"].dtype == torch.bfloat16 and b["input_ids"][2, -1] == 7
    assert collator_for("flex_attention").func is collate_flex
    with pytest.raises(ValueError, match="flex_attention"):
        collator_for("paged_attention")


def test_dataloader(items):
    loader = torch.utils.data.DataLoader(items, batch_size=2, collate_fn=partial(collate_4d, pad_id=1))
    shapes = [b["attention_mask"].shape for b in loader]
    assert shapes == [(2, 1, 5, 5), (1, 1, 3, 3)]


# --------------------------------------------------------------------------------------------------------------
# the packing test: a plain-torch causal LM


def rotary(x, position_ids, base=10000.0):
    """Rotary embedding of x [B, H, T, Dh] at position_ids [B, T]."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, dtype=x.dtype) / half)
    angles = position_ids[:, None, :, None].to(x.dtype) * freqs  # [B, 1, T, half]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Block(torch.nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.out = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))

    def forward(self, x, position_ids, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, position_ids), rotary(k, position_ids)
        if mask is None:  # plain causal: what packing without a block-diagonal mask amounts to
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class TinyLM(torch.nn.Module):
    def __init__(self, vocab=97, dim=32, heads=4, layers=2):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.blocks = torch.nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids, position_ids, attention_mask=None):
        x = self.emb(input_ids)
        for block in self.blocks:
            x = block(x, position_ids, attention_mask)
        return self.head(self.norm(x))


@pytest.fixture(scope="module")
def tiny_lm():
    torch.manual_seed(0)
    return TinyLM().double().eval()


def alone(model_fn, ids, mask):
    """Summed loss of one document run alone (its own labels: -100 at its first token)."""
    item = make_item([(ids, mask)])
    logits = model_fn(item["input_ids"][None], item["position_ids"][None])
    return summed_loss(logits, item["labels"][None])


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_packed_loss_equals_documents_alone(tiny_lm, strategy):
    gen = torch.Generator().manual_seed(1)
    row_a = with_strategy(random_docs(gen, [7, 12, 5], 97), strategy)  # the brief's 3 documents in one row
    row_b = with_strategy(random_docs(gen, [9, 4], 97), strategy)  # a shorter row: padding in the batch
    items = [make_item(row_a), make_item(row_b)]
    with torch.no_grad():
        expected = sum(alone(tiny_lm, ids, mask) for ids, mask in row_a + row_b)
        assert expected > 0
        for dtype in (torch.float64, torch.bool):
            b = collate_4d(items, dtype=dtype, pad_to_multiple_of=8)
            logits = tiny_lm(b["input_ids"], b["position_ids"], b["attention_mask"])
            assert math.isclose(summed_loss(logits, b["labels"]), expected, rel_tol=0, abs_tol=1e-9)
            assert torch.isfinite(logits).all()  # padding positions too
        # without the block-diagonal mask (causal only, position_ids still restarting), documents see the
        # ones before them and the loss changes: the test above can fail
        b = collate_4d(items[:1])
        logits = tiny_lm(b["input_ids"], b["position_ids"], None)
        leaky = summed_loss(logits, b["labels"])
        alone_a = sum(alone(tiny_lm, ids, mask) for ids, mask in row_a)
        assert abs(leaky - alone_a) > 1e-3


# --------------------------------------------------------------------------------------------------------------
# the same with HF transformers' Llama


@pytest.fixture(scope="module")
def llama():
    transformers = pytest.importorskip("transformers", reason="transformers not installed (extra packer[hf])")
    config = transformers.LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=256,
    )
    models = {}
    for impl in ("sdpa", "eager"):
        torch.manual_seed(0)
        # a config each: the model keeps (and sets the implementation on) the config object it is given
        model = transformers.LlamaForCausalLM._from_config(copy.deepcopy(config), attn_implementation=impl)
        models[impl] = model.float().eval()
    for impl, model in models.items():
        assert model.config._attn_implementation == impl
    assert torch.equal(models["sdpa"].lm_head.weight, models["eager"].lm_head.weight)
    return models


def hf_docs():
    gen = torch.Generator().manual_seed(2)
    rows = [[13, 30, 8], [21, 5], [17]]
    return [with_strategy(random_docs(gen, lengths, 300), "instruction_modelling") for lengths in rows]


def hf_alone(model, rows):
    """Per-token losses of every document run alone, in batch order."""
    out = []
    for ids, mask in (doc for row in rows for doc in row):
        item = make_item([(ids, mask)])
        logits = model(input_ids=item["input_ids"][None], position_ids=item["position_ids"][None]).logits
        out.append(token_losses(logits, item["labels"][None]))
    return out


def packed_per_doc(losses, rows):
    """Split per-token losses of a padded batch [B, L-1] into the documents' own per-token loss vectors."""
    out = []
    for b, row in enumerate(rows):
        start = 0
        for ids, _ in row:
            # a document's own losses: its tokens 1..n-1 predicted from 0..n-2 -> shifted positions start..start+n-2
            out.append(losses[b, start : start + len(ids) - 1])
            start += len(ids)
    return out


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_hf_llama_collate_4d(llama, impl):
    model = llama[impl]
    rows = hf_docs()
    items = [make_item(row) for row in rows]
    with torch.no_grad():
        expected = hf_alone(model, rows)
        b = collate_4d(items, pad_id=0, dtype=torch.float32)
        assert set(b) == {"input_ids", "attention_mask", "labels", "position_ids"}
        logits = model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"]
        ).logits
        assert torch.isfinite(logits).all()
        losses = token_losses(logits, b["labels"]).view(len(rows), -1)
        got = packed_per_doc(losses, rows)
        # the tokens where a document starts carry no loss, and padding none
        assert math.isclose(losses.sum(), sum(e.sum() for e in expected), rel_tol=1e-6, abs_tol=1e-4)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-4)
        # HF's own loss (mean over label tokens) agrees
        out = model(**b)
        n = (b["labels"][:, 1:] != IGNORE_INDEX).sum()
        assert math.isclose(out.loss * n, losses.sum(), rel_tol=1e-5)
        if impl == "sdpa":  # a boolean 4D mask works with sdpa too
            bb = collate_4d(items, dtype=torch.bool)
            logits_b = model(
                input_ids=bb["input_ids"], attention_mask=bb["attention_mask"], position_ids=bb["position_ids"]
            ).logits
            torch.testing.assert_close(logits_b, logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_hf_llama_packed_rows_need_more_than_a_2d_mask(llama, impl):
    """collate_padded's 2D mask on packed rows: documents attend to their predecessors; losses differ.
    On rows of one document each, collate_padded is right."""
    model = llama[impl]
    rows = hf_docs()
    with torch.no_grad():
        expected = hf_alone(model, rows)
        b = collate_padded([make_item(row) for row in rows])
        logits = model(**b).logits
        got = packed_per_doc(token_losses(logits, b["labels"]).view(len(rows), -1), rows)
        assert not torch.allclose(got[1], expected[1], atol=1e-3)  # the second document of the first row
        torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-4)  # the first one is alone anyway
        unpacked = [[doc] for row in rows for doc in row]
        b = collate_padded([make_item(row) for row in unpacked])
        logits = model(**b).logits
        got = packed_per_doc(token_losses(logits, b["labels"]).view(len(unpacked), -1), unpacked)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-4)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_hf_llama_collate_flat(llama, impl):
    """The flat batch is meant for flash attention, which reads cu_seq_lens_*. transformers versions with
    masking_utils.find_packed_sequence_indices (checked: 4.57.6, 5.24.0) also make the sdpa/eager mask block-diagonal
    from restarting position_ids, but only with no attention_mask AND no cache: with the default
    use_cache=True (config.use_cache, training included unless gradient checkpointing) a DynamicCache is made
    and the detection is skipped, so documents leak."""
    transformers = pytest.importorskip("transformers")
    masking_utils = pytest.importorskip("transformers.masking_utils")
    if not hasattr(masking_utils, "find_packed_sequence_indices"):
        pytest.skip("this transformers does not detect packed sequences from position_ids")
    model = llama[impl]
    rows = hf_docs()
    flat_rows = [[doc for row in rows for doc in row]]
    with torch.no_grad():
        expected = hf_alone(model, rows)
        b = collate_flat([make_item(row) for row in rows])
        got = packed_per_doc(token_losses(model(**b, use_cache=False).logits, b["labels"]).view(1, -1), flat_rows)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-4)
        if transformers.__version__.startswith(("4.57.", "5.24.")):  # the trap, as found in the versions checked
            assert model.config.use_cache
            leaky = packed_per_doc(token_losses(model(**b).logits, b["labels"]).view(1, -1), flat_rows)
            assert not torch.allclose(leaky[1], expected[1], atol=1e-3)
