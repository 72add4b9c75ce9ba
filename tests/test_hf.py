"""packer.train.hf: the HF Trainer trains on the weighted loss (checked against a hand computation from the same
model's logits), and the stock Trainer / a hand loop that drops the weights fails on its first step."""

from __future__ import annotations

import argparse
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is an optional extra (packer[torch])")
transformers = pytest.importorskip("transformers", reason="transformers not installed (extra packer[hf])")
pytest.importorskip("accelerate", reason="accelerate not installed (extra packer[hf])")
F = torch.nn.functional

from packer.train.collate import IGNORE_INDEX, LossWeightsIgnored, WeightedLabels, collate_4d  # noqa: E402
from packer.train.dataset import PackedDataset  # noqa: E402
from packer.train.hf import PackerTrainer, packer_collator, weighted_loss  # noqa: E402
from packer.train.masks import MaskNotBuilt, build_attention_mask  # noqa: E402

from .helpers import DEMO_TOKENIZER, EXAMPLES  # noqa: E402

sys.path.insert(0, str(EXAMPLES))
import train_hf  # noqa: E402

WEIGHTED = {"strategy": "instruction_tuning", "prompt_loss_weight": 0.1, "normalize": "sequence"}


def example_args(tmp_path, **changes) -> argparse.Namespace:
    args = train_hf.parse_args(["--output-dir", str(tmp_path / "trainer"), "--workers", "0"])
    for key, value in changes.items():
        setattr(args, key, value)
    return args


def spiky_llama(manifest):
    """The example's tiny Llama with a large output layer: token losses far apart, so weights matter."""
    model = train_hf.tiny_llama(manifest)
    torch.manual_seed(1)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.3)
    return model


def hand_loss(model, items) -> tuple[float, float]:
    """(weighted, unweighted) loss of these items, by hand from the model's logits."""
    # the Trainer moved the model to its device (a GPU where there is one)
    batch = {k: v.to(model.device) for k, v in collate_4d(items).items()}
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits
    labels = batch["labels"].as_subclass(torch.Tensor)[:, 1:].flatten()
    per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels, reduction="none", ignore_index=IGNORE_INDEX)
    w = batch["loss_weights"][:, 1:].flatten()
    return float((per_token * w).sum() / w.sum()), float(per_token[labels != IGNORE_INDEX].mean())


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_packer_trainer_loss_is_the_weighted_loss(demo_output, tmp_path, grad_accum):
    ds = PackedDataset(demo_output, shuffle=False, batch_size=2, **WEIGHTED)
    model = spiky_llama(ds.manifest)
    # lr 0: the logged loss of step 1 is the loss of the model as it is now
    args = example_args(tmp_path, steps=1, batch_size=2, grad_accum=grad_accum, lr=0.0)
    trainer = train_hf.make_trainer(model, ds, args)
    assert isinstance(trainer, PackerTrainer)
    trainer.train()
    logged = trainer.state.log_history[-1]["train_loss"]  # not rounded, unlike "loss"
    items = [item for _, item in zip(range(2 * grad_accum), iter(ds), strict=False)]
    weighted, unweighted = hand_loss(model, items)
    # over accumulated micro-batches: one weighted mean over all of them (not a mean of means)
    assert logged == pytest.approx(weighted, rel=1e-5)
    assert abs(weighted - unweighted) > 100 * 1e-5 * weighted  # the check can tell the two apart


@pytest.mark.parametrize(
    ("remove_unused_columns", "where"),
    [(True, "collator without their loss_weights"), (False, "cross_entropy")],  # items stripped / model's loss
)
def test_stock_trainer_with_weights_fails_on_the_first_step(demo_output, tmp_path, remove_unused_columns, where):
    ds = PackedDataset(demo_output, batch_size=2, **WEIGHTED)
    model = train_hf.tiny_llama(ds.manifest)
    trainer = train_hf.make_trainer(model, ds, example_args(tmp_path, steps=3, batch_size=2), stock=True)
    assert type(trainer) is transformers.Trainer
    trainer.args.remove_unused_columns = remove_unused_columns
    with pytest.raises(LossWeightsIgnored, match=r"packer\.train\.hf\.PackerTrainer") as e:
        trainer.train()
    assert where in str(e.value)
    assert trainer.state.global_step == 0


def test_stock_trainer_without_weights_is_unchanged(demo_output, tmp_path):
    ds = PackedDataset(demo_output, strategy="instruction_tuning", shuffle=False, batch_size=2)
    model = train_hf.tiny_llama(ds.manifest)
    trainer = train_hf.make_trainer(model, ds, example_args(tmp_path, steps=1, batch_size=2, lr=0.0), stock=True)
    trainer.train()
    logged = trainer.state.log_history[-1]["train_loss"]
    batch = collate_4d([item for _, item in zip(range(2), iter(ds), strict=False)])
    assert not isinstance(batch["labels"], WeightedLabels)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    with torch.no_grad():
        assert logged == pytest.approx(float(model(**batch).loss), rel=1e-5)


def test_packer_trainer_counts_the_real_tokens_of_document_id_batches(demo_output, tmp_path):
    """include_num_input_tokens_seen="non_padding" sums attention_mask: PackerTrainer counts the ids' real
    tokens (their sum would be a sum of document numbers, and the guard refuses it)."""
    ds = PackedDataset(demo_output, strategy="instruction_tuning", shuffle=False, batch_size=2)
    model = train_hf.tiny_llama(ds.manifest)
    trainer = train_hf.make_trainer(model, ds, example_args(tmp_path, steps=1, batch_size=2, lr=0.0))
    trainer.args.include_num_input_tokens_seen = "non_padding"
    trainer.train()
    items = [item for _, item in zip(range(2), iter(ds), strict=False)]
    assert trainer.state.num_input_tokens_seen == sum(len(item["input_ids"]) for item in items)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("impl", ["sdpa", "flex_attention"])
def test_packer_sft_trainer_counts_the_real_tokens_and_keeps_the_loss(demo_output, tmp_path, impl, weighted):
    """TRL's SFTTrainer logs num_tokens as attention_mask.sum(): NaN on the additive 4D mask made in the step, and
    a BlockMask has no sum (the step failed). PackerSFTTrainer counts the batch's real tokens; its loss is the
    loss of collate_4d's batch. (Forward only, in training mode: torch has no FlexAttention backward on CPU.)"""
    trl = pytest.importorskip("trl", reason="TRL not installed")
    if impl == "flex_attention":
        pytest.importorskip("torch.nn.attention.flex_attention")
    from packer.train.hf import PackerSFTTrainer, as_hf_iterable

    ds = PackedDataset(demo_output, shuffle=False, **(WEIGHTED if weighted else {"strategy": "instruction_tuning"}))
    model = train_hf.tiny_llama(ds.manifest)
    model.set_attn_implementation(impl)
    collate = packer_collator(model)
    config = trl.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, report_to=[], bf16=False, packing=False,
                           padding_free=False, dataset_kwargs={"skip_prepare_dataset": True})
    trainer = PackerSFTTrainer(model=model, args=config, train_dataset=as_hf_iterable(ds), data_collator=collate,
                               processing_class=transformers.PreTrainedTokenizerFast(
                                   tokenizer_file=str(DEMO_TOKENIZER / "tokenizer.json")))
    items = [item for _, item in zip(range(2), iter(ds), strict=False)]
    for step in (1, 2):
        model.train()
        with torch.no_grad():
            loss = trainer.compute_loss(model, trainer._prepare_inputs(collate(items)))
        assert trainer._metrics["train"]["num_tokens"] == [step * sum(len(item["input_ids"]) for item in items)]
    model.eval()
    model.set_attn_implementation("sdpa")  # the same weights; collate_4d's dense mask is for sdpa/eager
    if weighted:
        expected = hand_loss(model, items)[0]
    else:
        with torch.no_grad():
            expected = float(model(**collate_4d(items)).loss)  # the model's own loss, on the host-made mask
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_stock_trainer_with_document_ids_fails_on_the_first_step(demo_output, tmp_path):
    """packer_collator's default for sdpa ships document ids; a Trainer that does not make them into a mask
    hands them to the model as a 2D "padding" mask, which must fail, not train documents on each other."""
    ds = PackedDataset(demo_output, strategy="instruction_tuning", batch_size=2)
    model = train_hf.tiny_llama(ds.manifest)
    args = transformers.TrainingArguments(**train_hf.training_kwargs(example_args(tmp_path, steps=2, batch_size=2)))
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds, data_collator=packer_collator(model))
    with pytest.raises(MaskNotBuilt, match=r"PackerTrainer"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_hand_loop_that_keeps_labels_in_the_batch_fails(demo_output):
    ds = PackedDataset(demo_output, **WEIGHTED)
    model = train_hf.tiny_llama(ds.manifest)
    batch = build_attention_mask(packer_collator(model)([next(iter(ds))]), model)
    assert isinstance(batch["labels"], WeightedLabels)
    weights = batch.pop("loss_weights")
    with pytest.raises(LossWeightsIgnored):
        model(**batch)  # the model's own (mean) loss over the labels
    labels = batch.pop("labels")
    loss = weighted_loss(model(**batch).logits, labels, weights)
    assert torch.isfinite(loss) and loss > 0
