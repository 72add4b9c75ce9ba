"""A control token never takes a content role, whatever content it absorbed.

A special added token with a strip flag (Phi-3's ``<|assistant|>``, ``rstrip``)
swallows the whitespace after it; when that whitespace opens a response, the
straddling rule alone would make the control token a ``response`` token, and
``instruction_tuning`` would teach the model to emit ``<|assistant|>``.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest

import packer.tokens.tokenize as T
from packer import build
from packer.output import roles as R
from packer.output.container import read_table
from packer.tokens.tokenize import char_codes, control_lut, token_roles

from .helpers import CHAT_TOKENIZERS, SHARED_DATA, need_shared, real_tokenizer, tokenizer_params


def test_the_worked_example():
    assert doctest.testmod(T).failed == 0


def values(*segments: tuple[int, int, bool]) -> np.ndarray:
    """Per-character values of segments (role code, length, last turn)."""
    roles = np.array([r for r, _, _ in segments], np.uint8)
    last = np.array([f for _, _, f in segments], bool)
    return np.repeat(char_codes(roles, last), [n for _, n, _ in segments])


@pytest.mark.parametrize(
    ("segments", "span", "expected", "absorbed"),
    [
        # a marker token that swallowed a response's leading newline: special, not response
        ([(R.SPECIAL, 3, False), (R.RESPONSE, 2, True)], (0, 4), R.SPECIAL, 1),
        # an end-of-turn token that swallowed the newline after it (template text): end
        ([(R.END, 3, True), (R.BOILERPLATE, 1, False)], (0, 4), R.END, 0),
        # an end-of-turn token that swallowed trailing response whitespace before it: end, 1 absorbed
        ([(R.RESPONSE, 1, True), (R.END, 3, True)], (0, 4), R.END, 1),
        # a special token that swallowed a user's instruction text and a system message's
        ([(R.INSTRUCTION, 2, False), (R.SPECIAL, 3, False), (R.SYSTEM, 1, False)], (0, 6), R.SPECIAL, 3),
    ],
)
def test_a_control_token_is_special_or_end(segments, span, expected, absorbed):
    chars = values(*segments)
    starts, ends = np.array([span[0]]), np.array([span[1]])
    codes, _, n = token_roles(chars, starts, ends, np.array([True]))
    assert codes.tolist() == [expected] and n == absorbed
    # not a control token (e.g. an added token not flagged special): the straddling rule as before
    codes, _, n = token_roles(chars, starts, ends, np.array([False]))
    first = next(c for c in R.PRECEDENCE if c in {r for r, _, _ in segments})
    assert codes.tolist() == [first] and n == 0


def test_control_lut_marks_the_special_added_tokens(demo_tok):
    lut = control_lut(demo_tok)
    ids = {demo_tok.tokenizer.token_to_id(t) for t in demo_tok.special_tokens}
    assert set(np.flatnonzero(lut).tolist()) == ids and ids


def sample_inputs(folder: Path, per_file: int) -> list[Path]:
    """The first ``per_file`` records of every data file of ../shared/data, in its own format."""
    out = []
    for src in sorted(SHARED_DATA.iterdir()):
        if src.suffix == ".jsonl" and src.name.split("_")[0] in ("messages", "alpaca", "sharegpt"):
            lines = src.read_text(encoding="utf-8").splitlines()[:per_file]
            dst = folder / src.name
            dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
        elif src.suffix == ".json" and src.name.split("_")[0] in ("alpaca", "sharegpt"):
            records = json.loads(src.read_text(encoding="utf-8"))
            records = records[:per_file] if isinstance(records, list) else records
            dst = folder / src.name
            dst.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        else:
            continue
        out.append(dst)
    return out


@pytest.mark.parametrize("name", tokenizer_params(CHAT_TOKENIZERS))
def test_no_control_token_has_a_content_role_in_real_shards(name, tmp_path):
    need_shared()
    tok = real_tokenizer(name)
    inputs = sample_inputs(tmp_path, 150)
    m = build(inputs, tmp_path / "o", tokenizer=tok, seq_len=4096, template="tokenizer")
    lut = control_lut(tok)
    content = R.role_codes(R.CONTENT_ROLES)
    seen_control = 0
    for shard in m["shards"]:
        t = read_table(tmp_path / "o" / shard["file"])
        ids = t.column("input_ids").combine_chunks().flatten().to_numpy()
        roles = t.column("roles").combine_chunks().flatten().to_numpy()
        control = lut[ids]
        seen_control += int(control.sum())
        assert not np.isin(roles[control], content).any(), "a control token took a content role"
        it = t.column("mask_instruction_tuning").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        # the only control tokens with loss are end-of-turn tokens
        assert (roles[control & it] == R.END).all()
    assert seen_control > m["counts"]["packed"]  # every document has some


def test_phi3_absorbs_content_and_the_manifest_counts_it(tmp_path):
    """Phi-3's `<|assistant|>` (rstrip) swallows the newline that opens some AlpaGasus responses."""
    need_shared()
    tok = real_tokenizer("phi-3-mini-instruct")
    m = build([SHARED_DATA / "messages_alpagasus_claude_t45_alpaca.jsonl"], tmp_path / "o", tokenizer=tok,
              seq_len=4096, template="tokenizer")
    absorbed = m["tokens"]["control_absorbed_chars"]
    assert absorbed > 0
    lut = control_lut(tok)
    assistant = tok.tokenizer.token_to_id("<|assistant|>")
    n_assistant = 0
    for shard in m["shards"]:
        t = read_table(tmp_path / "o" / shard["file"])
        ids = t.column("input_ids").combine_chunks().flatten().to_numpy()
        roles = t.column("roles").combine_chunks().flatten().to_numpy()
        assert (roles[ids == assistant] == R.SPECIAL).all()
        assert not np.isin(roles[lut[ids]], R.role_codes(R.CONTENT_ROLES)).any()
        n_assistant += int((ids == assistant).sum())
    assert n_assistant >= m["counts"]["packed"]


def test_byte_level_tokenizers_absorb_nothing(demo_output):
    m = json.loads((demo_output / "manifest.json").read_text())
    assert m["tokens"]["control_absorbed_chars"] == 0
