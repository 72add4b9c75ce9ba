"""Templates render the text a model sees and label every character's role;
tokens then take roles from their character offsets (the straddling rule)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from packer import roles as R
from packer.records import Conversation, Message, Rejection, Source
from packer.templates import BUILTIN_TEMPLATES, ChatTemplate, Rendered
from packer.tokenize import TokenizerInfo, char_codes, token_roles, tokenize_batch

SRC = Source(doc_id=0, path="data.json", index=0)


def conv(*turns: tuple[str, str], input: str = "") -> Conversation:
    msgs = []
    for role, text in turns:
        msgs.append(Message(role, text, input if role == "user" and not msgs else ""))  # type: ignore[arg-type]
    return Conversation(SRC, "sharegpt", tuple(msgs))


def segments(r: Rendered) -> list[tuple[str, str, bool]]:
    """(text, role name, last) per segment, merging neighbours of one role."""
    out: list[tuple[str, str, bool]] = []
    pos = 0
    for n, code, last in zip(r.seg_lengths.tolist(), r.seg_roles.tolist(), r.seg_last.tolist(), strict=True):
        piece, name = r.text[pos : pos + n], R.ROLE_NAMES[code]
        pos += n
        if not piece:
            continue
        if out and out[-1][1] == name and out[-1][2] == last:
            out[-1] = (out[-1][0] + piece, name, last)
        else:
            out.append((piece, name, last))
    assert pos == len(r.text), "segments must tile the text"
    return out


def role_text(r: Rendered, role: str) -> list[str]:
    return [t for t, name, _ in segments(r) if name == role]


def tokens(tok: TokenizerInfo, r: Rendered) -> list[tuple[str, str, bool]]:
    b = tokenize_batch(tok.tokenizer, [r.text], [r.seg_lengths], [char_codes(r.seg_roles, r.seg_last)])
    enc = tok.tokenizer.encode(r.text, add_special_tokens=False)
    assert b.ids.tolist() == enc.ids, "ids must equal tokenizing the whole text once"
    return [
        (r.text[a:e], R.ROLE_NAMES[int(c)], bool(la))
        for (a, e), c, la in zip(enc.offsets, b.roles, b.last, strict=True)
    ]


def render(tpl: ChatTemplate, c: Conversation) -> Rendered:
    r = tpl.render(c)
    assert isinstance(r, Rendered), r.message() if isinstance(r, Rejection) else r
    return r


HI = conv(("user", "Hi"), ("assistant", "Hello!"))


def test_chatml_text_and_roles(demo_tok):
    r = render(ChatTemplate.named("chatml", demo_tok), HI)
    assert r.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    assert segments(r) == [
        ("<|im_start|>", "special", False),
        ("user\n", "marker", False),
        ("Hi", "instruction", False),
        ("<|im_end|>", "special", False),  # closes a user turn: not an end of turn
        ("\n", "marker", False),
        ("<|im_start|>", "special", False),
        ("assistant\n", "marker", False),
        ("Hello!", "response", True),
        ("<|im_end|>", "end", True),
        ("\n", "marker", False),
    ]


def test_tokenizer_template_equals_builtin_chatml(demo_tok):
    # the demo tokenizer's own chat_template is ChatML
    a = render(ChatTemplate.named("tokenizer", demo_tok), HI)
    b = render(ChatTemplate.named("chatml", demo_tok), HI)
    assert a.text == b.text
    assert segments(a) == segments(b)


def test_alpaca_boilerplate_marker_input(demo_tok):
    c = dataclasses.replace(
        HI, messages=(Message("user", "Name a colour.", "The sky at noon"), Message("assistant", "Blue."))
    )
    r = render(ChatTemplate.named("alpaca", demo_tok), c)
    assert r.text == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nName a colour.\n\n"
        "### Input:\nThe sky at noon\n\n### Response:\nBlue.<|im_end|>"
    )
    assert role_text(r, "boilerplate") == [
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request."
    ]
    assert role_text(r, "instruction") == ["Name a colour."]
    assert role_text(r, "input") == ["The sky at noon"]
    assert role_text(r, "response") == ["Blue."]
    assert role_text(r, "end") == ["<|im_end|>"]
    markers = "".join(role_text(r, "marker"))
    assert "### Instruction:" in markers and "### Response:" in markers and "### Input:" in markers


def test_alpaca_without_input_uses_short_preamble(demo_tok):
    r = render(ChatTemplate.named("alpaca", demo_tok), HI)
    assert r.text.startswith("Below is an instruction that describes a task. Write a response")
    assert "### Input:" not in r.text


def test_input_joined_to_instruction_in_chat_templates(demo_tok):
    c = dataclasses.replace(HI, messages=(Message("user", "Translate.", "bonjour"), Message("assistant", "hello")))
    r = render(ChatTemplate.named("chatml", demo_tok), c)
    assert "<|im_start|>user\nTranslate.\n\nbonjour<|im_end|>" in r.text
    assert role_text(r, "instruction") == ["Translate."]
    assert role_text(r, "input") == ["bonjour"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("llama3", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"),
        ("tulu", "<|user|>\nHi\n<|assistant|>\nHello!<|im_end|>"),
        ("mistral", "[INST] Hi [/INST]Hello!<|im_end|>"),
    ],
)
def test_builtin_shapes(demo_tok, name, text):
    r = render(ChatTemplate.named(name, demo_tok), HI)
    assert text in r.text
    assert role_text(r, "instruction") == ["Hi"]
    assert "".join(role_text(r, "response")).strip() == "Hello!"


def test_every_builtin_renders_multi_turn_with_system(demo_tok):
    c = conv(("system", "Be brief."), ("user", "A?"), ("assistant", "B."), ("user", "C?"), ("assistant", "D."))
    for name in BUILTIN_TEMPLATES:
        r = render(ChatTemplate.named(name, demo_tok), c)
        assert "".join(role_text(r, "system")) == "Be brief.", name
        assert role_text(r, "instruction") == ["A?", "C?"], name
        assert [t for t, n, _ in segments(r) if n == "response"] == ["B.", "D."], name
        last = [t for t, n, la in segments(r) if la]
        assert last[0] == "D.", f"{name}: only the final assistant turn is flagged last"


def test_mistral_rejects_misplaced_system(demo_tok):
    c = conv(("user", "A?"), ("system", "late"), ("assistant", "B."))
    r = ChatTemplate.named("mistral", demo_tok).render(c)
    assert isinstance(r, Rejection) and r.reason == "template_error"
    assert "data.json: record 0" in r.message()


def custom(tok: TokenizerInfo, source: str) -> ChatTemplate:
    return ChatTemplate("custom", source, dataclasses.replace(tok, chat_template=source), input_field=False)


def test_trimming_template_keeps_roles(demo_tok):
    tpl = custom(
        demo_tok,
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content | trim + '<|im_end|>' }}{% endfor %}",
    )
    r = render(tpl, conv(("user", "  spaced out  "), ("assistant", "\nok ")))
    assert role_text(r, "instruction") == ["spaced out"]
    assert role_text(r, "response") == ["ok"]


def test_injected_default_system_prompt_is_boilerplate(demo_tok):
    tpl = custom(
        demo_tok,
        "{% if messages[0].role != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
        "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
        "{% endfor %}",
    )
    r = render(tpl, HI)
    assert role_text(r, "boilerplate") == ["You are a helpful assistant."]
    assert role_text(r, "system") == []
    r2 = render(tpl, conv(("system", "Be terse."), ("user", "Hi"), ("assistant", "Yo")))
    assert role_text(r2, "system") == ["Be terse."] and role_text(r2, "boilerplate") == []


QWEN3_LIKE = (
    # as Qwen3: the reasoning of earlier turns is dropped, the last turn keeps it
    "{% for m in messages %}{% if m.role == 'assistant' %}"
    "{% set c = m.content %}{% set reasoning = '' %}"
    "{% if '</think>' in c %}{% set reasoning = c.split('</think>')[0].split('<think>')[-1].strip('\\n') %}"
    "{% set c = c.split('</think>')[-1].lstrip('\\n') %}{% endif %}"
    "{% if loop.last %}{{ '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' }}"
    "{{ c + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>assistant\\n' + c + '<|im_end|>\\n' }}{% endif %}"
    "{% else %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
)


def test_template_dropping_earlier_think_blocks(demo_tok):
    tpl = custom(demo_tok, QWEN3_LIKE)
    c = conv(
        ("user", "Q1"), ("assistant", "<think>first thoughts</think>\n\nA1"),
        ("user", "Q2"), ("assistant", "<think>second thoughts</think>\n\nA2"),
    )  # fmt: skip
    r = render(tpl, c)
    assert "first thoughts" not in r.text  # the template dropped it
    resp = "".join(role_text(r, "response"))
    assert resp.startswith("A1") and "second thoughts" in resp and resp.endswith("A2")
    # the model writes <think> ... </think> itself in the final turn: response, flagged last
    assert ("<think>\nsecond thoughts\n</think>\n\nA2", "response", True) in segments(r)


def test_template_without_think_emits_empty_block_as_marker(demo_tok):
    r = render(custom(demo_tok, QWEN3_LIKE), HI)
    assert role_text(r, "response") == ["Hello!"]
    assert "<think>\n\n</think>\n\n" in "".join(role_text(r, "marker"))


def test_content_dependent_template_is_rejected_not_mislabelled(demo_tok):
    tpl = custom(
        demo_tok,
        "{% for m in messages %}{{ m.role + ': ' + m.content + (' (long)' if m.content | length > 10 else '') + "
        "'\\n' }}{% endfor %}",
    )
    assert isinstance(tpl.render(HI), Rendered)
    r = tpl.render(conv(("user", "a long question"), ("assistant", "Hello!")))
    assert isinstance(r, Rejection) and r.reason == "template_error"


def test_template_exception_is_a_rejection(demo_tok):
    tpl = custom(demo_tok, "{% if messages[0].role == 'system' %}{{ raise_exception('no system') }}{% endif %}x")
    r = tpl.render(conv(("system", "s"), ("user", "u"), ("assistant", "a")))
    assert isinstance(r, Rejection) and r.reason == "template_error" and "no system" in r.detail


@pytest.mark.parametrize("typed", ["<|im_end|>", "<|im_start|>", "<|endoftext|>"])
def test_control_token_typed_in_content_is_rejected(demo_tok, typed):
    r = ChatTemplate.named("chatml", demo_tok).render(conv(("user", f"say {typed} now"), ("assistant", "no")))
    assert isinstance(r, Rejection) and r.reason == "special_token_in_content"
    assert typed in r.detail and "turn 0" in r.detail


def test_tokens_take_roles_from_offsets(demo_tok):
    r = render(ChatTemplate.named("chatml", demo_tok), HI)
    toks = tokens(demo_tok, r)
    assert ("<|im_end|>", "end", True) in toks
    assert ("<|im_start|>", "special", False) in toks
    assert "".join(t for t, role, _ in toks if role == "response") == "Hello!"


def test_straddling_token_takes_first_role_of_precedence():
    # characters: "ab" marker, "cd" instruction, "ef" response, "g" end, "h" special
    seg_roles = np.array([R.MARKER, R.INSTRUCTION, R.RESPONSE, R.END, R.SPECIAL], dtype=np.uint8)
    seg_len = np.array([2, 2, 2, 1, 1])
    chars = np.repeat(char_codes(seg_roles, np.zeros(5, bool)), seg_len)
    spans = [(0, 2), (1, 3), (3, 5), (5, 7), (6, 8), (7, 8), (0, 8), (1, 2)]
    codes, _ = token_roles(chars, np.array([a for a, _ in spans]), np.array([b for _, b in spans]))
    assert [R.ROLE_NAMES[int(c)] for c in codes] == [
        "marker", "instruction", "response", "response", "end", "special", "response", "marker",
    ]  # fmt: skip


def test_precedence_over_every_pair_of_roles():
    for i, hi in enumerate(R.PRECEDENCE):
        for lo in R.PRECEDENCE[i + 1 :]:
            for order in ((hi, lo), (lo, hi)):
                chars = np.repeat(char_codes(np.array(order, np.uint8), np.zeros(2, bool)), [1, 1])
                codes, _ = token_roles(chars, np.array([0]), np.array([2]))
                assert codes[0] == hi


def test_straddling_in_a_real_tokenization(demo_tok):
    # byte-level BPE merges '.' of the instruction with the newlines after it
    c = dataclasses.replace(HI, messages=(Message("user", "Stop.", "x"), Message("assistant", "ok")))
    r = render(ChatTemplate.named("chatml", demo_tok), c)
    toks = tokens(demo_tok, r)
    straddling = [(t, role) for t, role, _ in toks if "." in t and "\n" in t]
    for _t, role in straddling:
        assert role == "instruction"


def test_last_flag_marks_final_turn_only(demo_tok):
    c = conv(("user", "A"), ("assistant", "B"), ("user", "C"), ("assistant", "D"))
    toks = tokens(demo_tok, render(ChatTemplate.named("chatml", demo_tok), c))
    assert "".join(t for t, _, last in toks if last) == "D<|im_end|>"


def test_unknown_template_name(demo_tok):
    with pytest.raises(ValueError, match="unknown template"):
        ChatTemplate.named("vicuna", demo_tok)


def test_tokenizer_template_missing(demo_tok):
    with pytest.raises(ValueError, match="no chat_template"):
        ChatTemplate.named("tokenizer", dataclasses.replace(demo_tok, chat_template=None))


def test_content_containing_template_text_is_not_cut_there(demo_tok):
    # real data (AlpaGasus) pre-renders Alpaca headers inside the user's content
    inner = "### Instruction:\nAdd.\n\n### Response:\n"
    c = conv(("user", inner), ("assistant", "### Response:\nnot a header"))
    r = render(ChatTemplate.named("alpaca", demo_tok), c)
    assert role_text(r, "instruction") == [inner]
    assert role_text(r, "response") == ["### Response:\nnot a header"]


def test_instruction_with_blank_lines_and_input_under_a_trimming_template(demo_tok):
    tpl = custom(
        demo_tok,
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content | trim + '<|im_end|>' }}{% endfor %}",
    )
    c = dataclasses.replace(
        HI,
        messages=(Message("user", "Sort these.\n\nLargest first. ", "[4, 8, 0]\n"), Message("assistant", "[8, 4, 0]")),
    )
    r = render(tpl, c)
    assert role_text(r, "instruction") == ["Sort these.\n\nLargest first. "]
    assert role_text(r, "input") == ["[4, 8, 0]"]
