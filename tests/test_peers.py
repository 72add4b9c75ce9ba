"""What packer keeps right where its peers differ, pinned on real tokenizers.

Compared record by record with transformers' ``return_assistant_tokens_mask``,
TRL's ``assistant_only_loss`` and open-instruct's prefix masking, every
difference is at a template boundary, and packer is right there:

- the newline after an end-of-turn token has no loss (it is never sampled:
  generation stops at the end token);
- the generation prompt, newline included (``<|im_start|>assistant\\n``), has no loss;
- Qwen3's empty ``<think>\\n\\n</think>\\n\\n`` that the template injects has no loss;
- the next turn's header (``<|im_start|>user\\n``, Phi-3's ``<|user|>``) has no loss,
  however the template renders a prefix of the conversation.

One check covers them all: under ``instruction_tuning`` the tokens with loss,
run by run, decode to exactly each assistant message followed by its
end-of-turn token, nothing before, between or after.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from packer import build
from packer.output.container import read_table
from packer.read.formats import RecordReader
from packer.read.records import Conversation

from .helpers import SHARED_DATA, need_shared, real_tokenizer

#: tokenizer -> its end-of-turn token
END_TOKENS = {"qwen2.5-instruct": "<|im_end|>", "qwen3": "<|im_end|>", "phi-3-mini-instruct": "<|end|>",
              "llama-3-8b-instruct": "<|eot_id|>"}


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


@pytest.mark.parametrize("name", sorted(END_TOKENS))
def test_loss_is_each_assistant_message_and_its_end_token_and_nothing_else(name, tmp_path):
    need_shared()
    tok = real_tokenizer(name)
    # multi-turn conversations without a system message, whose text has no leading/trailing blanks to trim
    src = SHARED_DATA / "sharegpt_v3_unfiltered_cleaned_split_first3000.json"
    picked = []
    for conv in RecordReader([src]):
        if not isinstance(conv, Conversation) or conv.messages[0].role == "system":
            continue
        if sum(m.role == "assistant" for m in conv.messages) >= 2 and len(conv.messages) <= 8 \
                and all(m.content == m.content.strip() and "<think>" not in m.content for m in conv.messages):
            picked.append(conv)
        if len(picked) == 40:
            break
    path = tmp_path / "multi.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": m.role, "content": m.content} for m in c.messages]})
                            + "\n" for c in picked), encoding="utf-8")
    m = build([path], tmp_path / "o", tokenizer=tok, template="tokenizer", seq_len=8192)
    assert m["counts"]["packed"] == len(picked) == 40
    end = END_TOKENS[name]
    checked = 0
    for shard in m["shards"]:
        t = read_table(tmp_path / "o" / shard["file"])
        for row in t.to_pylist():
            pos = 0
            for length, doc_id in zip(row["seq_lens"], row["doc_ids"], strict=True):
                ids = np.asarray(row["input_ids"][pos : pos + length])
                it = np.asarray(row["mask_instruction_tuning"][pos : pos + length])
                pos += length
                got = [tok.tokenizer.decode(ids[a:b].tolist(), skip_special_tokens=False) for a, b in runs(it)]
                want = [msg.content + end for msg in picked[doc_id].messages if msg.role == "assistant"]
                assert got == want, (name, doc_id)
                checked += 1
    assert checked == 40
