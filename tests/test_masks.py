"""Masks made on the device (packer.train.masks) from the document ids of collate_docs/collate_flex: the same
mask, and the same losses, as collate_4d's host mask (sdpa, eager); FlexAttention's BlockMask gives every
document its own loss; pad_multiple pads documents without changing any document's loss."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="torch is an optional extra (packer[torch])")

from packer.train.collate import (  # noqa: E402
    collate_4d,
    collate_docs,
    collate_flat,
    collate_flex,
    collate_padded,
    collator_for,
    weighted_loss,
)
from packer.train.masks import (  # noqa: E402
    DocumentIds,
    MaskNotBuilt,
    build_attention_mask,
    document_causal,
    flex_block_mask,
    packed_attention_mask,
)

from .test_collate import (  # noqa: E402
    hf_alone,
    hf_docs,
    items,  # noqa: F401 (a fixture)
    llama,  # noqa: F401 (a fixture)
    make_item,
    packed_per_doc,
    reference_mask,
    token_losses,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.bool])
def test_device_mask_equals_collate_4d(items, dtype):  # noqa: F811
    for kw in ({}, {"pad_to_multiple_of": 8}, {"pad_multiple": 4}):
        host = collate_4d(items, pad_id=3, dtype=dtype, **kw)
        b = collate_docs(items, pad_id=3, **kw)
        assert set(b) == set(host)
        for key in ("input_ids", "labels", "position_ids"):
            assert torch.equal(b[key], host[key])
        ids = b["attention_mask"]
        assert isinstance(ids, DocumentIds) and ids.dtype == torch.int32 and ids.shape == b["input_ids"].shape
        assert torch.equal(packed_attention_mask(ids, dtype=dtype), host["attention_mask"])
    ref = reference_mask(items, 8)
    assert torch.equal(collate_4d(items, dtype=torch.bool, pad_to_multiple_of=8)["attention_mask"][:, 0], ref)
    assert collate_docs(items)["attention_mask"].tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0], [1, 2, 2, 0, 0]]


def test_document_ids_refuse_to_be_a_mask(items):  # noqa: F811
    ids = collate_docs(items)["attention_mask"]
    # what a DataLoader, accelerate and the Trainer do with it keeps it (and its guard)
    for moved in (ids.to("cpu"), ids.pin_memory() if torch.cuda.is_available() else ids.clone(), ids[:2],
                  torch.cat([ids, ids]), pickle.loads(pickle.dumps(ids))):
        assert isinstance(moved, DocumentIds) and moved.dtype == torch.int32
    assert ids.ndim == 2 and ids.shape[0] == 3
    # what models do with a 2D padding mask raises
    for use in (lambda m: m.to(torch.bool), lambda m: m.sum(-1), lambda m: m == 0, lambda m: 1.0 - m,
                lambda m: m[:, None, None, :].float(), lambda m: torch.nn.functional.scaled_dot_product_attention(
                    torch.zeros(3, 1, 5, 4), torch.zeros(3, 1, 5, 4), torch.zeros(3, 1, 5, 4), attn_mask=m)):
        with pytest.raises(MaskNotBuilt, match="packed_attention_mask"):
            use(ids)
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        packed_attention_mask(ids[0])


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_hf_llama_device_mask_same_loss_as_collate_4d(llama, impl):  # noqa: F811
    """The cheap path's loss (weighted too) equals collate_4d's; the ids straight into the model raise."""
    model = llama[impl]
    gen = torch.Generator().manual_seed(5)
    weights = [[torch.rand(len(ids), generator=gen).tolist() for ids, _ in row] for row in hf_docs()]
    items = [make_item(row, weights=w) for row, w in zip(hf_docs(), weights, strict=True)]  # noqa: F811
    with torch.no_grad():
        host = collate_4d(items, dtype=model.dtype)
        logits = model(input_ids=host["input_ids"], attention_mask=host["attention_mask"],
                       position_ids=host["position_ids"]).logits
        expected = weighted_loss(logits, host["labels"], host["loss_weights"])
        b = collate_docs(items)
        labels, w = b.pop("labels"), b.pop("loss_weights")
        with pytest.raises(MaskNotBuilt):
            model(**b)
        build_attention_mask(b, model)
        assert b["attention_mask"].shape == host["attention_mask"].shape
        got = weighted_loss(model(**b).logits, labels, w)
    assert math.isclose(got, expected, rel_tol=1e-6) and expected > 0
    assert torch.equal(packed_attention_mask(collate_docs(items)["attention_mask"], dtype=model.dtype),
                       host["attention_mask"])


def test_flex_block_mask_is_the_device_mask(items):  # noqa: F811
    ids = collate_flex(items)["attention_mask"]
    assert ids.shape == (3, 128)  # L rounded up to FlexAttention's block
    dense = flex_block_mask(ids).to_dense()  # block level: 1 where a 128 x 128 block is computed at all
    assert dense.shape == (3, 1, 1, 1) and bool(dense.all())
    with pytest.raises(ValueError, match="flash attention"):
        build_attention_mask({"attention_mask": ids}, attn_implementation="flash_attention_2")


def test_hf_llama_flex_attention_loss_is_the_documents_losses(llama):  # noqa: F811
    """attn_implementation="flex_attention" with the BlockMask made from collate_flex's ids: every document's
    per-token losses are its losses alone (torch 2.13 runs FlexAttention forward on CPU; its backward needs a
    GPU, so this checks the loss, not a training step)."""
    from packer.train.masks import document_causal

    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch.nn.attention.flex_attention", reason="this torch has no FlexAttention")
    model = llama["sdpa"]
    flex = transformers.LlamaForCausalLM._from_config(copy.deepcopy(model.config), attn_implementation="flex_attention")
    flex.load_state_dict(model.state_dict())
    flex = flex.float().eval()
    rows = [[(ids + ids[:140], mask + mask[:140]) for ids, mask in row] if i == 0 else row
            for i, row in enumerate(hf_docs())]  # a document over 128 tokens: several blocks, some partial
    items = [make_item(row) for row in rows]  # noqa: F811
    with torch.no_grad():
        expected = hf_alone(model, rows)
        b = build_attention_mask(collate_flex(items, pad_id=0), flex)
        assert b["input_ids"].shape[1] % 128 == 0 and type(b["attention_mask"]).__name__ == "BlockMask"
        # the BlockMask's own mask_mod, evaluated densely, is collate_4d's mask
        ids = collate_flex(items)["attention_mask"]
        L = ids.shape[1]
        q, kv = torch.arange(L)[:, None], torch.arange(L)[None, :]
        dense = torch.stack([document_causal(ids)(torch.tensor(i), 0, q, kv) for i in range(len(items))])
        assert torch.equal(dense, collate_4d(items, dtype=torch.bool, pad_to_multiple_of=128)["attention_mask"][:, 0])
        logits = flex(**b).logits
        assert torch.isfinite(logits).all()
        losses = token_losses(logits, b["labels"]).view(len(rows), -1)
        got = packed_per_doc(losses, rows)
    assert math.isclose(losses.sum(), sum(e.sum() for e in expected), rel_tol=1e-5)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-4)


def test_pad_multiple():
    items = [  # noqa: F811
        make_item([([5, 6, 7], [1, 1, 1]), ([8, 9], [0, 1])], weights=[[1.0, 2.0, 3.0], [4.0, 5.0]]),
        make_item([([10, 11, 12, 13], [0, 0, 1, 1])], weights=[[1.0] * 4]),
    ]
    flat = collate_flat(items, pad_id=3, pad_multiple=4)
    assert flat["input_ids"].tolist() == [[5, 6, 7, 3, 8, 9, 3, 3, 10, 11, 12, 13]]
    assert flat["labels"].tolist() == [[-100, 6, 7, -100, -100, 9, -100, -100, -100, -100, 12, 13]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]]  # counting on in the padding
    assert flat["loss_weights"].tolist() == [[1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]]
    assert flat["cu_seq_lens_q"].tolist() == [0, 4, 8, 12] and flat["max_length_q"] == 4
    docs = collate_docs(items, pad_id=3, pad_multiple=4)
    assert docs["attention_mask"].tolist() == [[1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 0, 0, 0, 0]]
    assert docs["input_ids"][0].tolist() == flat["input_ids"][0, :8].tolist()
    padded = collate_padded(items, pad_multiple=4)
    assert padded["attention_mask"].tolist() == [[1] * 8, [1] * 4 + [0] * 4]
    for collate in (collate_flat, collate_docs, collate_4d, collate_flex):
        assert torch.equal(collate(items, pad_multiple=1)["labels"], collate(items)["labels"])
        with pytest.raises(ValueError, match="pad_multiple"):
            collate(items, pad_multiple=0)
    with pytest.raises(ValueError, match="max_length"):
        collate_docs(items, pad_multiple=4, max_length=7)
    assert collator_for("flash_attention_2", pad_multiple=4)(items)["cu_seq_lens_q"].tolist() == [0, 4, 8, 12]
    assert collator_for("flex_attention", pad_multiple=4)(items)["input_ids"].shape == (2, 128)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_hf_llama_pad_multiple_keeps_every_documents_loss(llama, impl):  # noqa: F811
    model = llama[impl]
    rows = hf_docs()
    with torch.no_grad():
        expected = hf_alone(model, rows)
        b = build_attention_mask(collate_docs([make_item(row) for row in rows], pad_multiple=8), model)
        losses = token_losses(model(**b).logits, b["labels"]).view(len(rows), -1)
    padded_rows = [[(ids + [0] * (-len(ids) % 8), mask) for ids, mask in row] for row in rows]
    got = packed_per_doc(losses, padded_rows)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g[: len(e)], e, rtol=0, atol=1e-4)
        assert not g[len(e):].any()  # the padding carries no loss


@st.composite
def _batches(draw):
    """Random packed rows (1-3 documents of 1-6 tokens, random loss masks and weights), and collate options."""
    rows = []
    for _ in range(draw(st.integers(1, 3))):
        docs = []
        for _ in range(draw(st.integers(1, 3))):
            n = draw(st.integers(1, 6))
            docs.append((draw(st.lists(st.integers(4, 99), min_size=n, max_size=n)),
                         draw(st.lists(st.booleans(), min_size=n, max_size=n))))
        rows.append(docs)
    return rows, draw(st.sampled_from([None, 1, 2, 4])), draw(st.sampled_from([None, 8]))


def _oracle(rows, pad_multiple, pad_to_multiple_of):
    """Token by token, from the documents alone: each row's document number per position (0 padding), the
    ids and labels, and the allowed [B, L, L]: the same document, key not after query; every query itself."""
    per_row = []
    for docs in rows:
        doc, ids, labels = [], [], []
        for d, (tokens, mask) in enumerate(docs, start=1):
            size = len(tokens) if not pad_multiple else -(-len(tokens) // pad_multiple) * pad_multiple
            doc += [d] * size
            ids += tokens + [3] * (size - len(tokens))
            labels += [-100] + [t if m else -100 for t, m in zip(tokens[1:], mask[1:], strict=True)]
            labels += [-100] * (size - len(tokens))
        per_row.append((doc, ids, labels))
    length = max(len(d) for d, _, _ in per_row)
    length = -(-length // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else length
    docs = [d + [0] * (length - len(d)) for d, _, _ in per_row]
    allowed = [[[q == k or (row[q] == row[k] > 0 and k <= q) for k in range(length)] for q in range(length)]
               for row in docs]
    return (docs, [i + [3] * (length - len(i)) for _, i, _ in per_row],
            [lab + [-100] * (length - len(lab)) for _, _, lab in per_row], torch.tensor(allowed))


@settings(max_examples=150, deadline=None)
@given(case=_batches())
def test_every_collator_masks_as_the_oracle(case):
    """Random rows, pad_multiple and pad_to_multiple_of: collate_4d's host mask, the device mask made of
    collate_docs' ids (bool and additive) and the FlexAttention rule all equal a mask computed position by
    position from the documents; ids, labels and document ids too, and collate_flat's cu_seq_lens."""
    rows, pad_multiple, pad_to_multiple_of = case
    batch = [make_item(docs) for docs in rows]
    docs, ids, labels, allowed = _oracle(rows, pad_multiple, pad_to_multiple_of)
    kw = {"pad_id": 3, "pad_multiple": pad_multiple, "pad_to_multiple_of": pad_to_multiple_of}
    host = collate_4d(batch, dtype=torch.bool, **kw)
    assert torch.equal(host["attention_mask"][:, 0], allowed)
    b = collate_docs(batch, **kw)
    assert b["attention_mask"].as_subclass(torch.Tensor).tolist() == docs
    assert b["input_ids"].tolist() == ids and b["labels"].tolist() == labels
    assert torch.equal(packed_attention_mask(b["attention_mask"], dtype=torch.bool)[:, 0], allowed)
    additive = packed_attention_mask(b["attention_mask"], dtype=torch.float32)[:, 0]
    assert torch.equal(additive == 0, allowed) and bool((additive[~allowed] == torch.finfo(torch.float32).min).all())
    plain = b["attention_mask"].as_subclass(torch.Tensor)
    rule = document_causal(plain)
    n = plain.shape[1]
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    assert torch.equal(torch.stack([rule(torch.tensor(i), None, q, k) for i in range(len(rows))]), allowed)
    flat = collate_flat(batch, pad_id=3, pad_multiple=pad_multiple)
    lens = [sum(1 for x in row if x == d) for row in docs for d in range(1, max(row) + 1)]
    assert flat["cu_seq_lens_q"].tolist() == [sum(lens[:i]) for i in range(len(lens) + 1)]
    assert flat["input_ids"][0].tolist() == [t for row, i in zip(docs, ids, strict=True)
                                            for x, t in zip(row, i, strict=True) if x > 0]
