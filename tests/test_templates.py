"""Templates render the text a model sees and label every character's role;
tokens then take roles from their character offsets (the straddling rule)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Callable

import numpy as np
import pytest

from packer.output import roles as R
from packer.read.records import Conversation, Message, Rejection, Source
from packer.tokens.templates import BUILTIN_TEMPLATES, ChatTemplate, Rendered
from packer.tokens.tokenize import Labeller, TokenizerInfo, char_codes, token_roles

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
    b = Labeller(tok)([r])
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


def custom(tok: TokenizerInfo, source: str, system: str = "merge", assemble: bool = True) -> ChatTemplate:
    tok = dataclasses.replace(tok, chat_template=source)
    return ChatTemplate("custom", source, tok, input_field=False, system=system, assemble=assemble)


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
    )
    r = render(tpl, c)
    assert "first thoughts" not in r.text  # the template dropped it
    assert "".join(role_text(r, "response")) == "A1\n\nA2"
    assert "".join(role_text(r, "reasoning")) == "<think>\nsecond thoughts\n</think>"
    # the model writes <think> ... </think> itself in the final turn: reasoning, then the answer, flagged last
    assert ("<think>\nsecond thoughts\n</think>", "reasoning", True) in segments(r)
    assert ("\n\nA2", "response", True) in segments(r)


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
    source = "{% if messages[1].role == 'system' %}{{ raise_exception('no system') }}{% endif %}x"
    r = custom(demo_tok, source).render(conv(("user", "u"), ("system", "s"), ("assistant", "a")))
    assert isinstance(r, Rejection) and r.reason == "template_error" and "no system" in r.detail
    # a leading system message the template refuses: rejected only under system="reject" (test_policies.py)
    source = "{% if messages[0].role == 'system' %}{{ raise_exception('no system') }}{% endif %}x"
    r = custom(demo_tok, source, system="reject").render(conv(("system", "s"), ("user", "u"), ("assistant", "a")))
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
    codes, _, _ = token_roles(chars, np.array([a for a, _ in spans]), np.array([b for _, b in spans]))
    assert [R.ROLE_NAMES[int(c)] for c in codes] == [
        "marker", "instruction", "response", "response", "end", "special", "response", "marker",
    ]


def test_precedence_over_every_pair_of_roles():
    for i, hi in enumerate(R.PRECEDENCE):
        for lo in R.PRECEDENCE[i + 1 :]:
            for order in ((hi, lo), (lo, hi)):
                chars = np.repeat(char_codes(np.array(order, np.uint8), np.zeros(2, bool)), [1, 1])
                codes, _, _ = token_roles(chars, np.array([0]), np.array([2]))
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


# -- assembly: shapes whose template only pastes or trims contents skip Jinja --------------------------


def exact(tpl: ChatTemplate, tok: TokenizerInfo) -> ChatTemplate:
    """The same template with every record rendered by Jinja."""
    return ChatTemplate(tpl.name, tpl.source, tok, input_field=tpl._input_field, system=tpl.system, assemble=False)


#: conversations of a few shapes, each shape several times with contents a template could trip on
VARIED = [
    conv(("user", "Hi"), ("assistant", "Hello!")),
    conv(("user", "  padded  \n"), ("assistant", "\n\nleading newlines")),
    conv(("user", "### Response:\nnot a header"), ("assistant", "<think>not closed")),
    conv(("user", "Sort.\n\n"), ("assistant", "sorted\n"), input="[3, 1]\n"),
    conv(("user", "Go.\n"), ("assistant", "gone"), input=" [1]"),
    # a blank instruction with an input: a trim of "   \n\n[2, 0]" reaches into the separator
    conv(("user", "   "), ("assistant", "sorted"), input="[2, 0]"),
    conv(("user", "ünïcödé 😀 中文"), ("assistant", "e\u0301 decomposed")),
    conv(("system", "Be terse."), ("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", " A2 ")),
    conv(("system", "\tTabbed\t"), ("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2")),
    conv(("user", "Q"), ("assistant", "<think>\nreasoning\n</think>\n\nanswer")),
    conv(("user", "Q"), ("assistant", "<think>more</think>answer two")),
]


def numbered(convs: list[Conversation], times: int = 1, first: int = 0) -> list[Conversation]:
    """The conversations ``times`` over, each record a doc_id of its own from ``first`` on (the records
    below CHECK_FIRST are all checked against Jinja, of the others about one in CHECK_ONE_IN)."""
    every = [c for _ in range(times) for c in convs]
    return [dataclasses.replace(c, source=Source(first + k, "data.json", first + k)) for k, c in enumerate(every)]


def render_all(tpl: ChatTemplate, convs: list[Conversation], times: int = 3) -> list[Rendered | Rejection]:
    return [tpl.render(c) for c in numbered(convs, times)]


def same(a: Rendered | Rejection, b: Rendered | Rejection) -> bool:
    if isinstance(a, Rejection) or isinstance(b, Rejection):
        return a == b
    return (
        a.text == b.text
        and a.system == b.system
        and np.array_equal(a.seg_lengths, b.seg_lengths)
        and np.array_equal(a.seg_roles, b.seg_roles)
        and np.array_equal(a.seg_last, b.seg_last)
    )


def assembled_unchecked(tpl: ChatTemplate) -> int:
    return sum(s.assembly.unchecked for s in tpl._structures.values() if not isinstance(s, str) and s.assembly)


@pytest.mark.parametrize("name", [*BUILTIN_TEMPLATES, "tokenizer", "qwen3-like", "trim", "trim-glued"])
def test_assembled_records_equal_jinja_renders(demo_tok, name):
    sources = {"qwen3-like": QWEN3_LIKE, "trim": TRIM, "trim-glued": TRIM_GLUED}
    tpl = custom(demo_tok, sources[name]) if name in sources else ChatTemplate.named(name, demo_tok)
    fast, slow = render_all(tpl, VARIED), render_all(exact(tpl, demo_tok), VARIED)
    assert all(same(a, b) for a, b in zip(fast, slow, strict=True))
    if name == "qwen3-like":  # it looks into the content ('</think>' in c, c.split): never assembled
        assert assembled_unchecked(tpl) == 0
    else:  # doc_ids 16 to 32 are unchecked but 27: those of shapes the template pastes into are assembled
        assert assembled_unchecked(tpl) >= len(VARIED)


TRIM = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content | trim + '<|im_end|>\\n' }}{% endfor %}"
# trims text glued around the content: the trim reaches the content's ends through whitespace
TRIM_GLUED = ("{% for m in messages %}{{ '<|im_start|>' + m.role + ('\\n' + m.content + '\\n\\n') | trim }}"
              "{{ '<|im_end|>\\n' }}{% endfor %}")


@pytest.mark.parametrize(
    "use",
    [
        "('x' in m.content) ~ m.content",
        "m.content if m.content | length > 3 else 'short'",
        "m.content.split() | join(' ')",
        "m.content | upper",
        "(m.content ~ '!') | replace('a', 'b')",
        "m.content | tojson",
        "m.content | e",
        "m.content | trim('!')",
        "(m.content + '!') | trim('!')",
        "m.content[:5]",
        "m.content == 'Hi'",
        "m.content | list | first",
        "'{}'.format(m.content)",
        "m.content | title",
    ],
)
def test_template_doing_more_than_paste_or_trim_is_not_assembled(demo_tok, use):
    tpl = custom(demo_tok, "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}{{ " + use + " }}"
                           "{{ '<|im_end|>\\n' }}{% endfor %}")
    fast, slow = render_all(tpl, VARIED), render_all(exact(tpl, demo_tok), VARIED)
    assert all(same(a, b) for a, b in zip(fast, slow, strict=True))
    assert assembled_unchecked(tpl) == 0


def word_count_template() -> str:
    # wordcount reads the content through a regex: no probe hook sees it, and the placeholder and the
    # probe both have fewer than 20 words: only the checks of real records can catch it
    return ("{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
            "{{ 'long' if messages[0].content | wordcount > 20 else 'short' }}")


def jinja_renders(tpl: ChatTemplate) -> list[int]:
    """The doc_ids of the records ``tpl`` renders by Jinja from now on (the records of :func:`records`,
    whose contents name their doc_id; renders of placeholders and probes are not records)."""
    seen: list[int] = []
    render = tpl._render

    def spy(messages: list[dict], tools: list | None = None) -> str:
        ids = {int(m.group(1)) for d in messages if (m := re.search(r"\bq(\d+)\b", str.__str__(d["content"])))}
        seen.extend(sorted(ids))
        return render(messages, tools)

    tpl._render = spy  # type: ignore[method-assign]
    return seen


def records(n: int, long: int = -1) -> list[Conversation]:
    """n records of three shapes in turn, each one's content naming its doc_id; the record ``long``
    has a long instruction (more than 20 words)."""
    out = []
    for k in range(n):
        q = f"q{k}" + " many" * 30 * (k == long)
        turns = [("user", q), ("assistant", "ok")]
        if k % 3 == 1:
            turns.insert(0, ("system", "S"))
        elif k % 3 == 2:
            turns += [("user", "again"), ("assistant", "b")]
        out.extend(numbered([conv(*turns)], first=k))
    return out


def in_parts(
    make: Callable[[], ChatTemplate], convs: list[Conversation], cuts: list[int]
) -> tuple[list[Rendered | Rejection], list[int]]:
    """Render ``convs`` in parts cut at ``cuts``, each part by a template of its own (as separate
    processes would); the renders and the doc_ids rendered by Jinja."""
    out: list[Rendered | Rejection] = []
    seen: list[int] = []
    for a, b in itertools.pairwise([0, *cuts, len(convs)]):
        tpl = make()
        spied = jinja_renders(tpl)
        out.extend(tpl.render(c) for c in convs[a:b])
        seen.extend(spied)
    return out, seen


def test_checked_records_are_picked_by_doc_id_alone():
    from packer.tokens.assembly import CHECK_FIRST, CHECK_ONE_IN, checked

    assert all(checked(d) for d in range(CHECK_FIRST))
    n = CHECK_ONE_IN * 4000
    assert 0.9 < sum(checked(d) for d in range(CHECK_FIRST, CHECK_FIRST + n)) / (n / CHECK_ONE_IN) < 1.1
    # a shape that recurs with a period is checked about as often as any: a hash, not doc_id % 32
    for period in (2, 3, 32, 64, 89, 1000):
        for start in range(3):
            picked = sum(checked(CHECK_FIRST + start + k * period) for k in range(CHECK_ONE_IN * 100))
            assert 60 < picked < 150, (period, start)


def test_the_records_checked_do_not_depend_on_how_the_input_is_split(demo_tok):
    from packer.tokens.assembly import checked

    convs = records(300)
    make = functools.partial(ChatTemplate.named, "chatml", demo_tok)
    whole, seen = in_parts(make, convs, [])
    parts, seen_parts = in_parts(make, convs, [37, 150])
    # every shape here is assembled: the records rendered by Jinja are the checked ones, in any split
    assert seen == seen_parts == [d for d in range(len(convs)) if checked(d)]
    assert 16 + 5 < len(seen) < 16 + 20
    slow, every = in_parts(functools.partial(make, assemble=False), convs, [37])
    assert every == list(range(len(convs)))  # assemble=False: every record by Jinja
    assert all(same(a, b) and same(a, c) for a, b, c in zip(whole, parts, slow, strict=True))


def first_hashed_check() -> int:
    """The first doc_id past CHECK_FIRST that is checked."""
    from packer.tokens.assembly import CHECK_FIRST, checked

    return next(d for d in range(CHECK_FIRST, 10_000) if checked(d))


def test_a_drifting_template_is_caught_by_a_checked_record(demo_tok):
    from packer.tokens.assembly import checked
    from packer.tokens.templates import TemplateDrift

    make = functools.partial(custom, demo_tok, word_count_template())
    for long in (0, 5, first_hashed_check()):  # checked: the first record of a shape too, in any split
        convs = records(long + 10, long=long)
        for cuts in ([], [long], [long + 1] if long else [3]):
            with pytest.raises(TemplateDrift, match=rf"record {long}: template .* renders this record otherwise"):
                in_parts(make, convs, cuts)
    # assemble=False renders every record by Jinja: the long one's fixed text differs, it is rejected
    long = first_hashed_check()
    convs = records(long + 10, long=long)
    out, seen = in_parts(functools.partial(make, assemble=False), convs, [])
    assert seen == list(range(len(convs)))
    assert [k for k, r in enumerate(out) if isinstance(r, Rejection)] == [long]
    assert out[long].reason == "template_error"
    assert all(r.text.endswith("short") for r in out if isinstance(r, Rendered))
    # an unchecked record is assembled: a look the probe cannot see goes unseen there (Jinja's render
    # would be rejected), the same in any split
    late = long + 3
    convs = records(late + 10, long=late)
    assert not checked(late) and isinstance(exact(make(), demo_tok).render(convs[late]), Rejection)
    for cuts in ([], [late], [5, late + 2]):
        out, seen = in_parts(make, convs, cuts)
        assert late not in seen and out[late].text.endswith("short")


@pytest.mark.parametrize("part_bytes", [None, 700])
def test_build_starts_over_with_jinja_after_a_drift(demo_tok, tmp_path, part_bytes):
    # one decision for the whole build, however many parts the input is mapped in
    import json

    from packer import build
    from packer.pipeline.build import BuildEvents
    from packer.read.formats import RecordReader

    from .helpers import DEMO_TOKENIZER, read_documents

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.json").write_bytes((DEMO_TOKENIZER / "tokenizer.json").read_bytes())
    cfg = json.loads((DEMO_TOKENIZER / "tokenizer_config.json").read_text())
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": word_count_template()}))
    long = first_hashed_check()  # checked, after records of its shape assembled unchecked
    rows = [{"instruction": f"a few words {k}", "output": "ok"} for k in range(long + 10)]
    rows[long]["instruction"] = "many " * 30
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    notices: list[str] = []
    m = build([data], tmp_path / "o", tokenizer=tok_dir, template="tokenizer", seq_len=512,
              events=BuildEvents(on_notice=notices.append), part_size=part_bytes and part_bytes / 2**20)
    assert sum("building again" in n for n in notices) == 1, notices
    # Jinja's render of the long record has other fixed text ("long"): not assembled, it is rejected
    assert m["counts"]["packed"] == len(rows) - 1 and m["counts"]["rejected"] == {"template_error": 1}
    jinja = ChatTemplate("tokenizer", word_count_template(), demo_tok, input_field=False, assemble=False)
    docs = read_documents(tmp_path / "o")
    for item in RecordReader([data]):
        if item.source.doc_id != long:
            text = render(jinja, item).text  # the demo tokenizer is tok_dir's, with another chat template
            assert docs[item.source.doc_id]["input_ids"].tolist() == demo_tok.tokenizer.encode(text).ids


# -- system messages under templates that refuse them (--system) ------------------------------------------

#: as Gemma's own template: no system role, contents trimmed
GEMMA_LIKE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for m in messages %}{% set role = 'model' if m.role == 'assistant' else m.role %}"
    "{{ '<|im_start|>' + role + '\\n' + m.content | trim + '<|im_end|>\\n' }}{% endfor %}"
)
#: Mistral-7B-Instruct v0.1's own template (roles must alternate: a system message raises)
MISTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
SYSTEM_CONV = conv(("system", " Be terse. "), ("user", "Q1 "), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2"))


def test_refusing_a_system_message_is_found_by_rendering(demo_tok):
    assert custom(demo_tok, GEMMA_LIKE).refuses_system and custom(demo_tok, MISTRAL_V01).refuses_system
    for name in BUILTIN_TEMPLATES:  # the built-in mistral template puts it before the first instruction itself
        assert not ChatTemplate.named(name, demo_tok).refuses_system, name
    # a template that renders nothing at all refuses nothing in particular
    assert not custom(demo_tok, "{{ raise_exception('never') }}").refuses_system
    with pytest.raises(ValueError, match="unknown system policy 'keep'"):
        custom(demo_tok, GEMMA_LIKE, system="keep")


@pytest.mark.parametrize("source", [GEMMA_LIKE, MISTRAL_V01])
def test_system_merged_into_the_first_user_message(demo_tok, source):
    tpl = custom(demo_tok, source)
    r = render(tpl, SYSTEM_CONV)
    assert r.system == "merged"
    # the text is the template's render of the merged conversation
    merged = [{"role": "user", "content": " Be terse. \n\nQ1 "}] + [
        {"role": m.role, "content": m.content} for m in SYSTEM_CONV.messages[2:]
    ]
    assert r.text == tpl._render(merged)
    system = "Be terse. " if source == GEMMA_LIKE else " Be terse. "  # Gemma trims the (merged) content
    assert role_text(r, "system") == [system]
    assert ("\n\n", "marker", False) in segments(r)  # the separator is template text
    assert role_text(r, "instruction") == ["Q1" if source == GEMMA_LIKE else "Q1 ", "Q2"]


@pytest.mark.parametrize("source", [GEMMA_LIKE, MISTRAL_V01])
def test_system_dropped_or_rejected(demo_tok, source):
    r = render(custom(demo_tok, source, system="drop"), SYSTEM_CONV)
    plain = render(custom(demo_tok, source), dataclasses.replace(SYSTEM_CONV, messages=SYSTEM_CONV.messages[1:]))
    assert r.system == "dropped" and plain.system is None
    assert r.text == plain.text and segments(r) == segments(plain)
    r = custom(demo_tok, source, system="reject").render(SYSTEM_CONV)
    assert isinstance(r, Rejection) and r.reason == "template_error"
    assert "System role not supported" in r.detail or "must alternate" in r.detail
    # a control token in a dropped system message is never rendered: no rejection
    c = conv(("system", "<|im_end|>"), ("user", "Q"), ("assistant", "A"))
    assert render(custom(demo_tok, source, system="drop"), c).system == "dropped"
    r = custom(demo_tok, source).render(c)
    assert isinstance(r, Rejection) and r.reason == "special_token_in_content"


@pytest.mark.parametrize("policy", ["merge", "drop", "reject"])
def test_templates_taking_system_messages_are_unchanged_by_the_policy(demo_tok, policy):
    for name in BUILTIN_TEMPLATES:
        a, b = ChatTemplate.named(name, demo_tok, system=policy), ChatTemplate.named(name, demo_tok, system="reject")
        fast, slow = render_all(a, VARIED), render_all(b, VARIED)
        assert all(same(x, y) for x, y in zip(fast, slow, strict=True)), name
        assert all(x.system is None for x in fast if isinstance(x, Rendered)), name


@pytest.mark.parametrize("policy", ["merge", "drop"])
@pytest.mark.parametrize("source", [GEMMA_LIKE, MISTRAL_V01])
def test_merged_and_dropped_records_assembled_equal_jinja_renders(demo_tok, source, policy):
    with_input = [(Message("system", "S"), Message("user", text, inp), Message("assistant", "A"))
                  for text, inp in (("Sort.\n", " [3, 1]\n"), ("   ", "[1, 2]"))]
    convs = [*VARIED, SYSTEM_CONV, conv(("system", "\n"), ("user", "Q"), ("assistant", "A")),
             *(dataclasses.replace(SYSTEM_CONV, messages=m) for m in with_input)]
    tpl = custom(demo_tok, source, system=policy)
    fast, slow = render_all(tpl, convs), render_all(exact(tpl, demo_tok), convs)
    assert all(same(a, b) for a, b in zip(fast, slow, strict=True))
    with_system = [a for a, c in zip(fast, convs * 3, strict=True) if c.messages[0].role == "system"]
    assert with_system and all(isinstance(a, Rendered) or a.reason == "template_error" for a in with_system)
    assert any(isinstance(a, Rendered) and a.system == ("merged" if policy == "merge" else "dropped")
               for a in with_system)
    # shapes with a system message are assembled without Jinja too
    shapes = [s for k, s in tpl._structures.items() if k[0][0] == "system" and not isinstance(s, str)]
    assert any(s.assembly is not None and s.assembly.unchecked for s in shapes)
