"""Training on preference pair rows (issue 27, part 3): the collator's layout and mask, ``pair_logps`` against each
side run alone, gradients, ``--pairs separate``, ``dpo_loss`` against TRL's DPOTrainer, PackedDataset items."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from packer.output import roles as R  # noqa: E402
from packer.train.pairs import (  # noqa: E402
    dpo_loss,
    model_inputs,
    pair_block_mask,
    pair_collator,
    pair_logps,
    reference_logps,
)

from . import pairrows  # noqa: E402
from .helpers import DEMO_TOKENIZER, EXAMPLES, hf_tokenizer  # noqa: E402

SYSTEM = {"role": "system", "content": "You are terse."}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


#: (prompt, chosen, rejected): a common prefix running into the completions, one side's text a prefix of the
#: other's, a multi-turn prompt with a system message, completions with nothing in common
CHAT_PAIRS = [
    ([_user("What is 2+2?")], [_bot("The answer is 4.")], [_bot("The answer is 5.")]),
    ([_user("Say yes.")], [_bot("Yes")], [_bot("Yes, certainly, yes.")]),
    ([SYSTEM, _user("Hi"), _bot("Hello."), _user("Name a colour.")], [_bot("Blue.")], [_bot("I will not.")]),
    ([_user("Capital of France?")], [_bot("Paris.")], [_bot("Lyon, I think, or maybe Paris.")]),
    ([_user("Count to three.")], [_bot("1, 2, 3")], [_bot("1, 2, 3, 4")]),
]


def demo_tok():  # type: ignore[no-untyped-def]
    return hf_tokenizer(DEMO_TOKENIZER)


def sides(tok) -> list[tuple[dict, dict]]:  # type: ignore[no-untyped-def]
    """The chat pairs, plus raw pairs where one side's ids are a prefix of the other's (the cap keeps >= 1 token)."""
    out = [pairrows.chat_sides(tok, *p) for p in CHAT_PAIRS]
    a = tok("The answer is")["input_ids"]
    b = tok("The answer is four, or 4")["input_ids"]
    assert b[: len(a)] == a
    out.append((pairrows.hand_side(a, 1), pairrows.hand_side(b, 1)))  # chosen's ids a prefix of rejected's
    out.append((pairrows.hand_side(b, 2), pairrows.hand_side(a, 2)))  # and the other way round
    return out


def tiny_llama(vocab: int, attn: str, seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, attn_implementation=attn,
    )
    return transformers.LlamaForCausalLM(config).float().eval()


def side_logp(model, side: dict, mask_key: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Summed log-prob of one side run alone, unpacked, over its tokens in ``mask_key`` (the first has no logit)."""
    ids = torch.as_tensor(side["input_ids"], dtype=torch.int64)[None]
    logits = model(input_ids=ids, use_cache=False).logits[0].float()
    lp = logits[:-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    mask = torch.as_tensor(side[mask_key][1:], dtype=torch.bool)
    return lp[mask].sum(), mask.sum()


# -- layout and mask ----------------------------------------------------------------------------------------------


def test_layout_of_the_docstring_example() -> None:
    item = {"input_ids": [10, 11, 12, 13, 14, 20, 21, 22, 23], "branch": [0, 0, 1, 1, 2, 0, 1, 2, 2],
            "seq_lens": [5, 4], "labels": [-100, 11, 12, 13, 14, -100, 21, 22, 23]}
    b = pair_collator([item], dtype=torch.bool)
    assert b["position_ids"][0].tolist() == [0, 1, 2, 3, 2, 0, 1, 1, 2]
    assert b["gather_index"][0].tolist() == [-1, 0, 1, 2, 1, -1, 5, 5, 7]
    assert b["pair_index"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert b["attention_mask"][0, 0, 4].tolist() == [1, 1, 0, 0, 1, 0, 0, 0, 0]  # r0 sees p0 p1 and itself
    assert b["attention_mask"][0, 0, 7].tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 0]
    assert b["pair_doc_ids"].tolist() == [-1, -1]


def side_positions(unit: dict) -> list[list[int]]:
    """Row positions of each side's whole sequence, from the unit's own lengths (not its branch column)."""
    n = int(unit["seq_lens"].sum())
    if len(unit["seq_lens"]) == 2:  # separate
        c = int(unit["seq_lens"][0])
        return [list(range(c)), list(range(c, n))]
    p = int((unit["branch"] == 0).sum())
    c = int((unit["branch"] == 1).sum())
    return [list(range(p + c)), list(range(p)) + list(range(p + c, n))]


@pytest.mark.parametrize("separate", [False, True])
def test_attention_mask_against_an_independent_construction(separate: bool) -> None:
    tok = demo_tok()
    pairs = sides(tok)
    unit = pairrows.separate_unit if separate else pairrows.shared_unit
    units = [unit(c, r, i) for i, (c, r) in enumerate(pairs)]
    rows = [pairrows.pack(units[:3]), pairrows.pack(units[3:4]), pairrows.pack(units[4:])]
    batch = pair_collator(rows, strategy="full", dtype=torch.bool, pad_to_multiple_of=8)
    t = batch["input_ids"].shape[1]
    expect = torch.zeros(len(rows), t, t, dtype=torch.bool)
    for b, group in enumerate([units[:3], units[3:4], units[4:]]):
        start = 0
        for u in group:
            for seq in side_positions(u):  # each side sees its own sequence, causally: nothing else
                for i, q in enumerate(seq):
                    expect[b, start + q, [start + k for k in seq[: i + 1]]] = True
            start += int(u["seq_lens"].sum())
        expect[b, range(start, t), range(start, t)] = True  # padding: itself only
    assert torch.equal(batch["attention_mask"][:, 0], expect)
    float_mask = pair_collator(rows, strategy="full", pad_to_multiple_of=8)["attention_mask"][:, 0]
    assert torch.equal(float_mask == 0, expect)
    # no token sees another pair or the other branch
    pair, branch = batch["pair_index"], batch["branch"]
    sees = batch["attention_mask"][:, 0] & ~torch.eye(t, dtype=torch.bool)
    assert not (sees & (pair[:, :, None] != pair[:, None, :])).any()
    assert not (sees & (branch[:, :, None] * branch[:, None, :] == 2)).any()  # 1 and 2


def test_flex_block_mask_is_the_dense_mask() -> None:
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    tok = demo_tok()
    rows = pairrows.pair_rows(sides(tok), [3, 1, 3])
    batch = pair_collator(rows, strategy="full", dtype=torch.bool)
    block = pair_block_mask(batch)
    b, t = batch["input_ids"].shape
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, 2, t, 16) for _ in range(3))
    try:
        got = flex.flex_attention(q, k, v, block_mask=block)
    except Exception as e:  # a torch without a CPU flex kernel
        pytest.skip(f"flex_attention does not run here: {e}")
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=batch["attention_mask"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_flash_attention_refuses_shared_rows_and_flattens_separate_ones() -> None:
    tok = demo_tok()
    pairs = sides(tok)
    with pytest.raises(ValueError, match="--pairs separate"):
        pair_collator(pairrows.pair_rows(pairs, [4, 3]), strategy="full", attn_implementation="flash_attention_2")
    rows = pairrows.pair_rows(pairs, [4, 3], separate=True)
    flat = pair_collator(rows, strategy="full", attn_implementation="flash_attention_2")
    padded = pair_collator(rows, strategy="full")
    n = sum(len(r["input_ids"]) for r in rows)
    assert flat["input_ids"].shape == (1, n) and "attention_mask" not in flat
    lens = np.concatenate([r["seq_lens"] for r in rows])
    assert flat["cu_seq_lens_q"].tolist() == np.concatenate([[0], np.cumsum(lens)]).tolist()
    # the same logits per token give the same log-probs whichever layout
    torch.manual_seed(0)
    logits = torch.randn(1, n, 50)
    per_row = torch.zeros(2, padded["input_ids"].shape[1], 50)
    per_row[0, : len(rows[0]["input_ids"])] = logits[0, : len(rows[0]["input_ids"])]
    per_row[1, : len(rows[1]["input_ids"])] = logits[0, len(rows[0]["input_ids"]) :]
    flat["input_ids"] %= 50
    padded["input_ids"] %= 50
    for a, b in zip(pair_logps(logits, flat), pair_logps(per_row, padded), strict=True):
        torch.testing.assert_close(a, b)


def test_bad_rows_are_refused_with_the_item() -> None:
    item = {"input_ids": [1, 2, 3], "branch": [0, 1, 1], "seq_lens": [3], "labels": [-100, 2, 3]}
    with pytest.raises(ValueError, match=r"item 0: document 0 .* is not a pair"):
        pair_collator([item])
    item = {"input_ids": [1, 2, 3], "branch": [0, 2, 1], "seq_lens": [3], "labels": [-100, 2, 3]}
    with pytest.raises(ValueError, match="item 0: a document's branch goes back"):
        pair_collator([item])
    sep = {"input_ids": [1, 2, 3, 4], "branch": [1, 1, 2, 2], "seq_lens": [2, 2], "doc_ids": [7, 8],
           "labels": [-100, 2, -100, 4]}
    with pytest.raises(ValueError, match="chosen document 7 is followed by rejected document 8"):
        pair_collator([sep])


# -- log-probs: packed = each side alone --------------------------------------------------------------------------


def _loss_of(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    # a combination that weighs the two sides differently, so a swap or a missing token changes the gradient
    w = torch.arange(1, chosen.numel() + 1, dtype=chosen.dtype, device=chosen.device)
    return (w * chosen).sum() - 0.7 * (w * rejected).sum()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("mask_key", ["full", "completion"])
def test_pair_logps_equal_each_side_run_alone(attn: str, mask_key: str) -> None:
    tok = demo_tok()
    pairs = sides(tok)
    model = tiny_llama(len(tok), attn)
    rows = pairrows.pair_rows(pairs, [3, 1, 3])  # several pairs per row, rows of different lengths (padded)
    assert any(pairrows.common_prefix(c["input_ids"].tolist(), r["input_ids"].tolist())
               > int((~c["mask_completion"]).sum()) for c, r in pairs)  # a prefix runs into the completions
    batch = pair_collator(rows, strategy=mask_key, attn_implementation=attn, dtype=torch.float32)
    assert batch["attention_mask"].shape[0] == 3 and (batch["pair_index"] == -1).any()  # padded
    out = pair_logps(model(**model_inputs(batch)).logits, batch)
    alone = [[side_logp(model, s, f"mask_{mask_key}") for s in pair] for pair in pairs]
    chosen = torch.stack([a[0][0] for a in alone])
    rejected = torch.stack([a[1][0] for a in alone])
    torch.testing.assert_close(out.chosen_sum, chosen, rtol=1e-5, atol=0)
    torch.testing.assert_close(out.rejected_sum, rejected, rtol=1e-5, atol=0)
    assert out.chosen_tokens.tolist() == [float(a[0][1]) for a in alone]
    assert out.rejected_tokens.tolist() == [float(a[1][1]) for a in alone]
    torch.testing.assert_close(out.chosen_mean, chosen / out.chosen_tokens, rtol=1e-5, atol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_gradients_of_packed_pairs_equal_unpacked(attn: str) -> None:
    tok = demo_tok()
    pairs = sides(tok)
    model = tiny_llama(len(tok), attn)
    batch = pair_collator(pairrows.pair_rows(pairs, [4, 3]), strategy="completion", attn_implementation=attn)
    out = pair_logps(model(**model_inputs(batch)).logits, batch)
    _loss_of(out.chosen_sum, out.rejected_sum).backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    alone = [[side_logp(model, s, "mask_completion")[0] for s in pair] for pair in pairs]
    _loss_of(torch.stack([a[0] for a in alone]), torch.stack([a[1] for a in alone])).backward()
    for name, p in model.named_parameters():
        # relative to the tensor's scale: an element that is a sum of many terms of both signs keeps float32
        # rounding of its terms' size, not its own (an embedding row: ~3e-5 off on gradients of ~20)
        err = (packed[name] - p.grad).abs().max() / p.grad.abs().max()
        assert err < 1e-5, f"{name}: {err:.2e}"


def test_separate_rows_give_the_same_logps_as_shared_rows() -> None:
    tok = demo_tok()
    pairs = sides(tok)
    model = tiny_llama(len(tok), "sdpa")
    shared = pair_collator(pairrows.pair_rows(pairs, [4, 3]), strategy="completion")
    separate = pair_collator(pairrows.pair_rows(pairs, [2, 2, 3], separate=True), strategy="completion")
    assert separate["pair_doc_ids"].tolist() == shared["pair_doc_ids"].tolist() == list(range(len(pairs)))
    assert int((separate["branch"] == R.PREFIX).sum()) == 0
    a = pair_logps(model(**model_inputs(shared)).logits, shared)
    b = pair_logps(model(**model_inputs(separate)).logits, separate)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=0)
    # sharing stores fewer tokens
    assert int((shared["pair_index"] >= 0).sum()) < int((separate["pair_index"] >= 0).sum())


def test_reference_logps_and_dpo_loss() -> None:
    tok = demo_tok()
    policy, ref = tiny_llama(len(tok), "sdpa", seed=0), tiny_llama(len(tok), "sdpa", seed=1)
    batch = pair_collator(pairrows.pair_rows(sides(tok), [7]), strategy="completion")
    r = reference_logps(ref, batch)
    assert not r.chosen_sum.requires_grad
    p = pair_logps(policy(**model_inputs(batch)).logits, batch)
    loss = dpo_loss(p.chosen_sum, p.rejected_sum, r.chosen_sum, r.rejected_sum, beta=0.2)
    margin = (p.chosen_sum - r.chosen_sum) - (p.rejected_sum - r.rejected_sum)
    torch.testing.assert_close(loss, -torch.nn.functional.logsigmoid(0.2 * margin).mean())
    smooth = dpo_loss(p.chosen_sum, p.rejected_sum, r.chosen_sum, r.rejected_sum, beta=0.2, label_smoothing=0.1,
                      reduction="none")
    torch.testing.assert_close(smooth, -0.9 * torch.nn.functional.logsigmoid(0.2 * margin)
                               - 0.1 * torch.nn.functional.logsigmoid(-0.2 * margin))
    loss.backward()
    assert policy.lm_head.weight.grad is not None and ref.lm_head.weight.grad is None


# -- PackedDataset on pair and KTO rows ----------------------------------------------------------------------------


def _items(out, **kwargs) -> list[dict]:  # type: ignore[no-untyped-def]
    from packer.train.dataset import PackedDataset

    return list(PackedDataset(out, shuffle=False, return_doc_ids=True, **kwargs))


@pytest.mark.parametrize("separate", [False, True])
def test_packed_dataset_items_of_pair_rows_carry_branch(tmp_path, separate: bool) -> None:
    tok = demo_tok()
    rows = pairrows.pair_rows(sides(tok), [3, 1, 3], separate=separate)
    out = pairrows.write_output(tmp_path / "pairs", rows, ["full", "completion"], "pairs",
                                pairs="separate" if separate else "shared")
    items = _items(out, strategy="completion")
    assert len(items) == 3
    for item, row in zip(items, rows, strict=True):
        assert item["branch"].dtype == torch.uint8 and item["branch"].tolist() == row["branch"].tolist()
        assert item["seq_lens"].tolist() == row["seq_lens"].tolist()
        assert "doc_labels" not in item
    from_items = pair_collator(items)
    from_rows = pair_collator(rows, strategy="completion")
    for key in ("input_ids", "position_ids", "loss_mask", "branch", "gather_index", "pair_index", "pair_doc_ids",
                "attention_mask"):
        assert torch.equal(from_items[key], from_rows[key]), key
    # the item's own position_ids are the collator's: the rejected suffix continues the prefix
    n = len(items[0]["input_ids"])
    assert items[0]["position_ids"].tolist() == from_rows["position_ids"][0, :n].tolist()


def test_packed_dataset_reads_each_pair_once_and_resumes(tmp_path) -> None:
    from packer.train.dataset import PackedDataset

    tok = demo_tok()
    rows = pairrows.pair_rows(sides(tok), [1, 2, 1, 1, 2])
    out = pairrows.write_output(tmp_path / "pairs", rows, ["completion"], "pairs", pairs="shared")
    seen = []
    for rank in range(2):
        ds = PackedDataset(out, strategy="completion", seed=3, rank=rank, world_size=2, return_doc_ids=True)
        seen += [d for item in ds for d in item["doc_ids"].tolist()]
    assert sorted(seen) == list(range(7))
    ds = PackedDataset(out, strategy="completion", seed=3, return_doc_ids=True)
    whole = [item["doc_ids"].tolist() for item in ds]
    resumed = PackedDataset(out, strategy="completion", seed=3, return_doc_ids=True)
    resumed.load_state_dict(ds.state_dict(rows_seen=2))
    rest = [item for item in resumed]
    assert [item["doc_ids"].tolist() for item in rest] == whole[2:]
    assert all("branch" in item for item in rest)


def test_packed_dataset_items_of_kto_rows_carry_each_documents_label(tmp_path) -> None:
    tok = demo_tok()
    docs = [pairrows.chat_sides(tok, *p) for p in CHAT_PAIRS]
    units = []
    for i, (good, bad) in enumerate(docs):
        for k, (side, label) in enumerate([(good, True), (bad, False)]):
            unit = {**side, "seq_lens": np.array([len(side["input_ids"])], np.int32),
                    "doc_ids": np.array([2 * i + k], np.int64), "labels": np.array([label])}
            units.append(unit)
    rows = [pairrows.pack(units[:3]), pairrows.pack(units[3:])]
    out = pairrows.write_output(tmp_path / "kto", rows, ["completion"], "kto")
    items = _items(out, strategy="completion")
    labels = {d: bool(lab) for item in items for d, lab in zip(item["doc_ids"].tolist(), item["doc_labels"].tolist(),
                                                                strict=True)}
    assert labels == {d: d % 2 == 0 for d in range(10)}
    assert all(item["doc_labels"].dtype == torch.bool and "branch" not in item for item in items)


# -- dpo_loss against TRL's DPOTrainer ------------------------------------------------------------------------------

#: the tokenizers of the TRL comparison: the bundled demo (ChatML) and Qwen3, whose template injects an empty
#: think block into the last assistant turn (tokens TRL scores as completion)
TRL_TOKENIZERS = ["demo", pytest.param("qwen3", marks=pytest.mark.slow)]


def _tokenizer(name: str):  # type: ignore[no-untyped-def]
    from .helpers import SHARED_TOKENIZERS, need_shared

    if name == "demo":
        return DEMO_TOKENIZER, demo_tok()
    need_shared()
    return SHARED_TOKENIZERS / name, hf_tokenizer(SHARED_TOKENIZERS / name)


def trl_loss_and_sides(tok, tmp_path, beta: float):  # type: ignore[no-untyped-def]
    """TRL's DPOTrainer loss on CHAT_PAIRS (policy seed 0, reference seed 1), and the sides as TRL tokenized them."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    data = datasets.Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in CHAT_PAIRS])
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, report_to="none", bf16=False, use_cpu=True,
                         per_device_train_batch_size=len(CHAT_PAIRS), max_length=None, dataset_num_proc=None)
    trainer = trl.DPOTrainer(model=tiny_llama(len(tok), "sdpa", 0), ref_model=tiny_llama(len(tok), "sdpa", 1),
                             args=args, train_dataset=data, processing_class=tok)
    prepared = [trainer.train_dataset[i] for i in range(len(CHAT_PAIRS))]
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, trainer.data_collator(prepared))
    sides_ = [(pairrows.hand_side(e["prompt_ids"] + e["chosen_ids"], len(e["prompt_ids"])),
               pairrows.hand_side(e["prompt_ids"] + e["rejected_ids"], len(e["prompt_ids"]))) for e in prepared]
    return loss, sides_


def packer_dpo_loss(tok, rows: list[dict], strategy: str, beta: float):  # type: ignore[no-untyped-def]
    policy, ref = tiny_llama(len(tok), "sdpa", 0), tiny_llama(len(tok), "sdpa", 1)
    batch = pair_collator(rows, strategy=strategy)
    with torch.no_grad():
        p = pair_logps(policy(**model_inputs(batch)).logits, batch)
    r = reference_logps(ref, batch)
    return dpo_loss(p.chosen_sum, p.rejected_sum, r.chosen_sum, r.rejected_sum, beta=beta), p


@pytest.mark.parametrize("name", TRL_TOKENIZERS)
def test_dpo_loss_equals_trl_on_the_tokens_trl_scores(name: str, tmp_path) -> None:
    _, tok = _tokenizer(name)
    trl_loss, trl_sides = trl_loss_and_sides(tok, tmp_path, beta=0.3)
    for (c, r), (p, ch, rj) in zip(trl_sides, CHAT_PAIRS, strict=True):  # TRL's sides are the whole conversations
        assert c["input_ids"].tolist() == pairrows.chat_ids(tok, p + ch)
        assert r["input_ids"].tolist() == pairrows.chat_ids(tok, p + rj)
    # TRL's completion mask (every token after the prompt) as the mask column; pairs packed 3 + 2 into rows
    loss, _ = packer_dpo_loss(tok, pairrows.pair_rows(trl_sides, [3, 2]), "completion", beta=0.3)
    torch.testing.assert_close(loss, trl_loss, rtol=1e-5, atol=0)


def test_role_masks_score_fewer_tokens_than_trl(tmp_path) -> None:
    """packer's role masks leave out what TRL scores but the model never writes (the newline after <|im_end|>):
    fewer tokens and another loss than TRL's on the same pairs and models. ``instruction_tuning`` also scores the
    prompt's earlier assistant turns (shared prefix tokens: they count in both sides)."""
    tok_dir, tok = _tokenizer("demo")
    trl_loss, trl_sides = trl_loss_and_sides(tok, tmp_path, beta=0.3)
    convs = [conv for p, c, r in CHAT_PAIRS for conv in (p + c, p + r)]
    built = pairrows.built_sides(convs, tok_dir, tmp_path / "build")
    sides_ = list(zip(built[::2], built[1::2], strict=True))
    for (c, r), (tc, tr) in zip(sides_, trl_sides, strict=True):
        assert c["input_ids"].tolist() == tc["input_ids"].tolist()
        assert r["input_ids"].tolist() == tr["input_ids"].tolist()
        for side, trl_side in ((c, tc), (r, tr)):  # last_turn: a strict subset of TRL's tokens
            assert not (side["mask_last_turn"] & ~trl_side["mask_completion"]).any()
            assert side["mask_last_turn"].sum() < trl_side["mask_completion"].sum()
    rows = pairrows.pair_rows(sides_, [5])
    theirs, theirs_p = packer_dpo_loss(tok, pairrows.pair_rows(trl_sides, [5]), "completion", beta=0.3)
    torch.testing.assert_close(theirs, trl_loss, rtol=1e-5, atol=0)
    last, last_p = packer_dpo_loss(tok, rows, "last_turn", beta=0.3)
    assert (last_p.chosen_tokens < theirs_p.chosen_tokens).all()
    assert (last_p.rejected_tokens < theirs_p.rejected_tokens).all()
    assert abs(float(last - theirs)) > 1e-4
    # instruction_tuning adds the multi-turn prompt's "Hello." turn to both sides: the same margin (a shared
    # token's log-prob cancels in chosen - rejected) but other means (IPO, length-normalised losses)
    it, it_p = packer_dpo_loss(tok, rows, "instruction_tuning", beta=0.3)
    extra = (it_p.chosen_tokens - last_p.chosen_tokens).tolist()
    assert extra == (it_p.rejected_tokens - last_p.rejected_tokens).tolist() and extra[2] > 0 == extra[0]
    torch.testing.assert_close(it, last, rtol=1e-5, atol=0)
    assert not torch.allclose(it_p.chosen_mean[2], last_p.chosen_mean[2])


# -- the TRL trainer and the example --------------------------------------------------------------------------------


def _trainer(tmp_path, train_dataset, **config):  # type: ignore[no-untyped-def]
    trl = pytest.importorskip("trl")
    from packer.train.dpo import PackerDPOTrainer

    tok = demo_tok()
    args = trl.DPOConfig(output_dir=str(tmp_path / "dpo"), beta=0.2, report_to="none", bf16=False, use_cpu=True,
                         per_device_train_batch_size=2, gradient_checkpointing=False, max_steps=1, **config)
    policy, ref = tiny_llama(len(tok), "sdpa", 0), tiny_llama(len(tok), "sdpa", 1)
    return PackerDPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=train_dataset,
                            processing_class=tok), policy, ref


def test_packer_dpo_trainer_loss_and_precomputed_reference(tmp_path) -> None:
    from packer.train.dataset import PackedDataset
    from packer.train.dpo import as_pair_dataset

    tok = demo_tok()
    rows = pairrows.pair_rows(sides(tok), [3, 1, 3])
    out = pairrows.write_output(tmp_path / "pairs", rows, ["full", "completion"], "pairs", pairs="shared")
    ds = PackedDataset(out, strategy="completion", shuffle=False, return_doc_ids=True)
    trainer, policy, ref = _trainer(tmp_path, ds)
    items = list(ds)
    batch = trainer.data_collator(items)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        p = pair_logps(policy(**model_inputs(batch)).logits, batch)
    r = reference_logps(ref, batch)
    torch.testing.assert_close(loss, dpo_loss(p.chosen_sum, p.rejected_sum, r.chosen_sum, r.rejected_sum, beta=0.2))
    # precomputed: a map-style dataset gets one reference value per pair of each row, passed on by the collator
    trainer, _, _ = _trainer(tmp_path, as_pair_dataset(ds), precompute_ref_log_probs=True)
    pre = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    torch.testing.assert_close(pre["ref_chosen_logps"], r.chosen_sum, rtol=1e-5, atol=0)
    torch.testing.assert_close(pre["ref_rejected_logps"], r.rejected_sum, rtol=1e-5, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(trainer.compute_loss(trainer.model, pre), loss, rtol=1e-5, atol=0)


@pytest.mark.slow
def test_train_dpo_example_loss_goes_down(tmp_path) -> None:
    """examples/train_dpo.py as a user runs it: it builds the bundled dpo_demo.jsonl into pair shards, then trains."""
    from .test_examples import first_last, run

    pytest.importorskip("trl")
    stdout = run(str(EXAMPLES / "train_dpo.py"), "--data", str(tmp_path / "pairs"), "--steps", "40",
                 "--output-dir", str(tmp_path / "train"))
    assert json.loads((tmp_path / "pairs" / "manifest.json").read_text())["kind"] == "pairs"
    first, last = first_last(stdout)
    assert last < first - 0.2, stdout  # from about ln 2 = 0.69 (policy = reference at the start)


@pytest.mark.slow
def test_pair_logps_with_flex_attention_equal_each_side_run_alone() -> None:
    """A Llama with attn_implementation="flex_attention" and the collator's BlockMask (forward only: torch has no
    FlexAttention backward on CPU; compiling the kernel takes ~20 s)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    tok = demo_tok()
    pairs = sides(tok)
    model = tiny_llama(len(tok), "flex_attention")
    batch = pair_collator(pairrows.pair_rows(pairs, [3, 1, 3]), strategy="completion",
                          attn_implementation="flex_attention")
    with torch.no_grad():
        out = pair_logps(model(**model_inputs(batch)).logits, batch)
        alone = [[side_logp(model, s, "mask_completion")[0] for s in pair] for pair in pairs]
    torch.testing.assert_close(out.chosen_sum, torch.stack([a[0] for a in alone]), rtol=1e-5, atol=0)
    torch.testing.assert_close(out.rejected_sum, torch.stack([a[1] for a in alone]), rtol=1e-5, atol=0)


# -- end to end: the build's own pair rows ------------------------------------------------------------------------


def _built(tmp_path, data, tokenizer, **options):  # type: ignore[no-untyped-def]
    from packer import build

    out = tmp_path / "built"
    build([data], out, tokenizer=tokenizer, **options)
    return out


@pytest.mark.parametrize("separate", [False, True])
def test_build_rows_through_packed_dataset_equal_each_side_run_alone(tmp_path, separate: bool) -> None:
    """examples/dpo_demo.jsonl built by packer, read by PackedDataset, collated, scored: each pair's log-probs are
    those of its two sides' apply_chat_template ids run alone (strategy full: every token but the first)."""
    from .test_pairs_build import load_records, oracle_sides

    tok = demo_tok()
    records = load_records(EXAMPLES / "dpo_demo.jsonl")[:24]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = _built(tmp_path, data, DEMO_TOKENIZER, seq_len=256, pairs="separate" if separate else "shared")
    items = _items(out, strategy="full")
    assert sum(len(set(i["doc_ids"].tolist())) for i in items) == len(records)
    model = tiny_llama(len(tok), "sdpa")
    batch = pair_collator(items, attn_implementation="sdpa", dtype=torch.float32)
    with torch.no_grad():
        got = pair_logps(model(**model_inputs(batch)).logits, batch)
        want = []
        for d in batch["pair_doc_ids"].tolist():
            sides_ = [pairrows.chat_ids(tok, s) for s in oracle_sides(records[d])]
            want.append([side_logp(model, {"input_ids": ids, "mask_full": np.ones(len(ids), bool)}, "mask_full")[0]
                         for ids in sides_])
    torch.testing.assert_close(got.chosen_sum, torch.stack([w[0] for w in want]), rtol=1e-5, atol=0)
    torch.testing.assert_close(got.rejected_sum, torch.stack([w[1] for w in want]), rtol=1e-5, atol=0)


def test_built_pair_rows_once_across_ranks_and_workers_and_resume(tmp_path) -> None:
    """A real pair build read by PackedDataset in 2 ranks x 2 DataLoader workers: every pair exactly once, with its
    branch; a resume mid-epoch (workers 2 -> 1) yields exactly the rest, collated as before."""
    from functools import partial

    from torch.utils.data import DataLoader

    from packer.train.dataset import PackedDataset

    out = _built(tmp_path, EXAMPLES / "dpo_demo.jsonl", DEMO_TOKENIZER, seq_len=192)
    n_pairs = json.loads((out / "manifest.json").read_text())["counts"]["packed"]

    def load(ds, workers):  # type: ignore[no-untyped-def]
        return list(DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=list))

    make = partial(PackedDataset, out, "instruction_tuning", seed=5, return_doc_ids=True, batch_size=2)
    seen = [d for rank in range(2) for batch in load(make(rank=rank, world_size=2), 2) for item in batch
            for d in item["doc_ids"].tolist()]
    assert sorted(seen) == list(range(n_pairs))  # one seq_lens entry (doc_id) per pair: each pair once
    full = load(make(), 2)
    state = make().state_dict(rows_seen=6)
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(state)))
    rest = load(resumed, 1)
    assert [[i["doc_ids"].tolist() for i in b] for b in rest] == [[i["doc_ids"].tolist() for i in b] for b in full[3:]]
    a, b = pair_collator(rest[0]), pair_collator(full[3])
    assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "branch", "position_ids", "gather_index", "loss_mask"))


def test_sft_collators_refuse_pair_rows(tmp_path) -> None:
    """Pair rows through an SFT collator would train each pair as one document (rejected seeing chosen): refused."""
    from packer.train.collate import collator_for

    out = _built(tmp_path, EXAMPLES / "dpo_demo.jsonl", DEMO_TOKENIZER, seq_len=256)
    items = _items(out, strategy="instruction_tuning")[:2]
    for attn in ("sdpa", "eager", "flash_attention_2", "flex_attention"):
        with pytest.raises(ValueError, match=r"preference pairs.*pair_collator"):
            collator_for(attn)(items)
