"""`packer show`: one packed row, coloured by role and loss, or plain in a pipe; tool calls,
reasoning and tool results in colours of their own, tokens of untrained messages struck through,
and a row of format version 1 (no trainable column)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest
from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style
from rich.text import Text

from packer import build
from packer.inspect.show import (
    LOSS_STYLE,
    ROLE_STYLES,
    UNTRAINED_STYLE,
    load_row,
    row_trainable,
    show_row,
    token_texts,
    visible,
)
from packer.output import roles as R
from packer.output.container import read_table

from .helpers import DEMO_TOKENIZER, EXAMPLES, as_version_1

DEMO_INPUTS = [EXAMPLES / "alpaca_demo.json", EXAMPLES / "sharegpt_demo.json"]
STRATEGIES = ["instruction_tuning", "instruction_modelling", "last_turn", "prompt"]
RUN = re.compile(r"\[(" + "|".join(R.ROLES) + r")([+-])\]")
HEADER = re.compile(r"^── doc .* ──\n", re.M)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("show") / "shards"
    # small shards, so that global row numbers cross shard boundaries
    build(DEMO_INPUTS, out, tokenizer=DEMO_TOKENIZER, seq_len=256, strategy=["prompt=instruction,input"],
          shard_size=20_000 / 2**20)
    return out


@pytest.fixture(scope="module")
def manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def tok(demo_tok):
    return demo_tok.tokenizer


@pytest.fixture(scope="module")
def documents(out) -> dict[int, dict]:
    return {r["doc_id"]: r for r in ipc.open_file(out / "documents.arrow").read_all().to_pylist()}


@pytest.fixture(scope="module")
def sample_rows(out, manifest, tok) -> list[int]:
    """A row with the most documents, one with the most roles, one with characters split over tokens."""
    n = manifest["packing"]["rows"]
    rows = [load_row(out, r) for r in range(n)]
    most_docs = max(range(n), key=lambda r: len(rows[r]["seq_lens"]))
    most_roles = max(range(n), key=lambda r: (len(set(rows[r]["roles"].tolist())), len(rows[r]["seq_lens"])))
    split = max(range(n), key=lambda r: token_texts(tok, rows[r]["input_ids"], rows[r]["seq_lens"]).count(""))
    assert len(rows[most_docs]["seq_lens"]) >= 3
    assert token_texts(tok, rows[split]["input_ids"], rows[split]["seq_lens"]).count("") > 0
    return sorted({most_docs, most_roles, split})


def plain(out, row, strategy="instruction_tuning", **kw) -> str:
    console = Console(file=io.StringIO(), force_terminal=False, width=120)
    show_row(out, row, strategy, console=console, **kw)
    return console.file.getvalue()


def colour(out, row, strategy="instruction_tuning", **kw) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=120)
    show_row(out, row, strategy, console=console, **kw)
    return console.file.getvalue()


def header(doc_id: int, n: int, documents: dict) -> str:
    d = documents[doc_id]
    return f"── doc {doc_id} · record {d['record']} of {d['input']} · {n} tokens ──"


def parse_plain(text: str) -> tuple[list[str], list[str], list[list[tuple[str, bool, str]]]]:
    """(legend lines, headers, per document its runs as (role, loss, text))."""
    first = HEADER.search(text)
    assert first, text
    legend = text[: first.start()].splitlines()
    headers = [h.rstrip("\n") for h in HEADER.findall(text)]
    bodies = HEADER.split(text[first.start() :])[1:]
    docs = []
    for body in bodies:
        if not body.endswith("↵\n"):  # the line end printed after a document that ends without one
            assert body.endswith("\n")
            body = body[:-1]
        parts = RUN.split(body)
        assert parts[0] == "", f"text before the first run: {parts[0]!r}"
        docs.append([(parts[i], parts[i + 1] == "+", parts[i + 2]) for i in range(1, len(parts), 3)])
    return legend, headers, docs


def expected_runs(roles: np.ndarray, mask: np.ndarray, texts: list[str]) -> list[tuple[str, bool, str]]:
    runs: list[tuple[str, bool, str]] = []
    for code, loss, t in zip(roles.tolist(), mask.tolist(), texts, strict=True):
        name = R.ROLE_NAMES[code]
        if runs and runs[-1][:2] == (name, loss):
            runs[-1] = (name, loss, runs[-1][2] + t)
        else:
            runs.append((name, loss, t))
    return runs


def test_load_row_counts_across_shards(out, manifest):
    assert len(manifest["shards"]) > 2
    n = manifest["packing"]["rows"]
    tables = [read_table(out / s["file"]).to_pylist() for s in manifest["shards"]]
    flat = [(s["file"], i, row) for s, t in zip(manifest["shards"], tables, strict=True) for i, row in enumerate(t)]
    assert len(flat) == n
    for r in (0, len(tables[0]), n // 2, n - 1):
        got = load_row(out, r)
        file, local, row = flat[r]
        assert (got["row"], got["rows"], got["shard"], got["shard_row"]) == (r, n, file, local)
        for name, values in row.items():
            assert isinstance(got[name], np.ndarray) and got[name].tolist() == values, name
    assert load_row(out, -1)["row"] == n - 1


def test_row_out_of_range(out, manifest):
    n = manifest["packing"]["rows"]
    for bad in (n, n + 5, -n - 1):
        with pytest.raises(IndexError, match=rf"row {bad} out of range: .* has {n} rows \(rows 0\.\.{n - 1}\)"):
            load_row(out, bad)
        with pytest.raises(IndexError, match=f"has {n} rows"):
            show_row(out, bad, console=Console(file=io.StringIO()))


def test_unknown_strategy(out):
    with pytest.raises(ValueError, match=r"unknown strategy 'nope'; this output has: full, .*instruction_tuning.*"):
        show_row(out, 0, "nope", console=Console(file=io.StringIO()))


def test_not_an_output(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no manifest\.json"):
        show_row(tmp_path, 0, console=Console(file=io.StringIO()))


def test_visible():
    assert visible("a\tb\nc\r\x00\x7f\u200bé 你") == "a→b↵\nc␍␀␡⟨U+200B⟩é 你"


def test_token_texts_join_to_each_document(out, manifest, tok):
    for r in range(manifest["packing"]["rows"]):
        row = load_row(out, r)
        texts = token_texts(tok, row["input_ids"], row["seq_lens"])
        assert len(texts) == len(row["input_ids"])
        pos = 0
        for n in row["seq_lens"].tolist():
            ids = row["input_ids"][pos : pos + n].tolist()
            assert "".join(texts[pos : pos + n]) == tok.decode(ids, skip_special_tokens=False)
            pos += n


def test_plain_headers_legend_and_text(out, tok, documents, sample_rows, manifest):
    for r in sample_rows:
        row = load_row(out, r)
        text = plain(out, r)
        assert "\x1b[" not in text
        legend, headers, docs = parse_plain(text)
        mask = row["mask_instruction_tuning"]
        assert legend[0].startswith(f"row {r} of {row['rows']} ({row['shard']} row {row['shard_row']})")
        roles = ", ".join(manifest["strategies"]["instruction_tuning"])
        assert legend[1] == (
            f"strategy instruction_tuning: loss on {roles} · {mask.sum()} of {len(mask)} tokens carry loss"
        )
        assert "[role+] loss, [role-] no loss" in legend[2] and all(name in legend[2] for name in R.ROLES)
        seq_lens, doc_ids = row["seq_lens"].tolist(), row["doc_ids"].tolist()
        assert headers == [header(d, n, documents) for d, n in zip(doc_ids, seq_lens, strict=True)]
        pos = 0
        for n, runs in zip(seq_lens, docs, strict=True):
            decoded = tok.decode(row["input_ids"][pos : pos + n].tolist(), skip_special_tokens=False)
            assert "".join(t for _, _, t in runs) == visible(decoded)
            pos += n


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_plain_runs_follow_roles_and_mask(out, tok, sample_rows, strategy):
    for r in sample_rows:
        row = load_row(out, r)
        texts = [visible(t) for t in token_texts(tok, row["input_ids"], row["seq_lens"])]
        _, _, docs = parse_plain(plain(out, r, strategy))
        pos = 0
        for n, runs in zip(row["seq_lens"].tolist(), docs, strict=True):
            span = slice(pos, pos + n)
            assert runs == expected_runs(row["roles"][span], row[f"mask_{strategy}"][span], texts[span])
            pos += n


def char_styles(text: Text) -> list[Style]:
    styles = [Style.null()] * len(text)
    for span in text.spans:
        style = Style.parse(span.style) if isinstance(span.style, str) else span.style
        for i in range(span.start, span.end):
            styles[i] = styles[i] + style
    return styles


def ansi(style: Style) -> str:
    return style.render("x", color_system=ColorSystem.TRUECOLOR)


@pytest.mark.parametrize("strategy", ["instruction_tuning", "last_turn"])
def test_colour_marks_roles_and_loss_tokens_only(out, tok, documents, sample_rows, strategy, manifest):
    for r in sample_rows:
        row = load_row(out, r)
        raw = colour(out, r, strategy)
        assert "\x1b[" in raw
        text = Text.from_ansi(raw)
        plain_text = text.plain
        mask = row[f"mask_{strategy}"]
        assert f"strategy {strategy}: loss on {', '.join(manifest['strategies'][strategy])}" in plain_text
        assert f"{mask.sum()} of {len(mask)} tokens carry loss" in plain_text
        doc_headers = [header(d, n, documents) for d, n in zip(row["doc_ids"], row["seq_lens"], strict=True)]
        assert [line for line in plain_text.splitlines() if line.startswith("── doc")] == doc_headers
        # the body: every character of every token, in its role's colour, loss ones underlined on grey
        lines = text.split("\n")
        assert [line.plain for line in lines[:3] if line.plain.startswith("roles: ")]
        body = [line for line in lines[3:] if not line.plain.startswith("── doc")]
        got_styles = [(ch, s) for line in body for ch, s in zip(line.plain, char_styles(line), strict=True)]
        got = [(ch, ansi(s)) for ch, s in got_styles]
        texts = [visible(t) for t in token_texts(tok, row["input_ids"], row["seq_lens"])]
        want = []
        for t, code, loss in zip(texts, row["roles"].tolist(), mask.tolist(), strict=True):
            style = Style.parse(ROLE_STYLES[R.ROLE_NAMES[code]]) + (LOSS_STYLE if loss else Style.null())
            want += [(ch, ansi(style)) for ch in t if ch != "\n"]
        assert got == want
        underlined = "".join(ch for ch, s in got_styles if s.underline)
        on_grey = "".join(ch for ch, s in got_styles if s.bgcolor)
        loss_text = "".join(t for t, m in zip(texts, mask.tolist(), strict=True) if m).replace("\n", "")
        assert underlined == on_grey == loss_text


def test_tokenizer_missing_falls_back_to_ids(out, tmp_path, documents):
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    m = json.loads((moved / "manifest.json").read_text())
    m["tokenizer"]["source"] = m["tokenizer"]["resolved"] = str(tmp_path / "gone" / "demo-tokenizer")
    (moved / "manifest.json").write_text(json.dumps(m))
    row = load_row(moved, 0)
    for text in (plain(moved, 0), Text.from_ansi(colour(moved, 0)).plain):
        assert text.count("note: cannot load the tokenizer") == 1
        assert "showing token ids" in text and "token ids, not text" in text
    _, headers, docs = parse_plain(plain(moved, 0))
    assert len(headers) == len(row["seq_lens"])
    pos = 0
    for n, runs in zip(row["seq_lens"].tolist(), docs, strict=True):
        ids = row["input_ids"][pos : pos + n].tolist()
        assert "".join(t for _, _, t in runs) == "".join(f"{i} " for i in ids)
        pos += n
    # the tokenizer given explicitly (it moved): text again, no note
    text = plain(moved, 0, tokenizer=DEMO_TOKENIZER)
    assert "note:" not in text and "<|im_start|>" in text


def test_other_tokenizer_is_noted(out, tmp_path):
    other = tmp_path / "tokenizer.json"
    data = json.loads((DEMO_TOKENIZER / "tokenizer.json").read_text())
    data["model"]["vocab"]["zzz-extra"] = len(data["model"]["vocab"])  # same texts, another file
    other.write_text(json.dumps(data))
    text = plain(out, 0, tokenizer=other)
    assert text.count("is not the one this output was built with") == 1


def test_one_style_per_role():
    assert list(ROLE_STYLES) == list(R.ROLES)
    assert len({ansi(Style.parse(s)) for s in ROLE_STYLES.values()}) == len(R.ROLES)
    assert all(ansi(Style.parse(s) + LOSS_STYLE) != ansi(Style.parse(s)) for s in ROLE_STYLES.values())


# -- tool calls, reasoning, tool results; untrained messages (issue 15) -----------------------------

#: OpenAI messages: a call with reasoning, its result and the answer; then a turn marked weight 0 and one trained
TOOL_RECORDS = [
    {"messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "reasoning_content": "call the tool",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny 21C"},
        {"role": "assistant", "content": "It is sunny."},
    ]},
    {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "bad answer", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "good answer"},
    ]},
]
TOOL_STRATEGIES = ["instruction_tuning", "answer_only", "full"]


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("show_tools")
    (d / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TOOL_RECORDS))
    build([d / "t.jsonl"], d / "out", tokenizer=DEMO_TOKENIZER, seq_len=256, template="chatml")
    return d / "out"


def test_tool_roles_in_plain_runs(tools, tok):
    row = load_row(tools, 0)
    assert {R.ROLES[k] for k in ("tool_call", "reasoning", "tool")} <= set(row["roles"].tolist())
    texts = [visible(t) for t in token_texts(tok, row["input_ids"], row["seq_lens"])]
    for strategy in TOOL_STRATEGIES:
        text = plain(tools, 0, strategy)
        legend, _, docs = parse_plain(text)
        untrained = int((~row["trainable"]).sum())
        assert untrained > 0
        assert legend[1].endswith(f" · {untrained} in messages marked untrained "
                                  + ("(full ignores the marks)" if strategy == "full" else "(no loss on them)"))
        pos = 0
        for n, runs in zip(row["seq_lens"].tolist(), docs, strict=True):
            span = slice(pos, pos + n)
            assert runs == expected_runs(row["roles"][span], row[f"mask_{strategy}"][span], texts[span])
            pos += n
    runs = {(role, loss) for doc in parse_plain(plain(tools, 0, "answer_only"))[2] for role, loss, _ in doc}
    assert {("tool_call", True), ("reasoning", False), ("tool", False)} <= runs


@pytest.mark.parametrize("strategy", TOOL_STRATEGIES)
def test_colour_of_tool_roles_and_untrained_tokens(tools, tok, strategy):
    row = load_row(tools, 0)
    text = Text.from_ansi(colour(tools, 0, strategy))
    lines = text.split("\n")
    assert "untrained: struck through" in lines[2].plain
    body = [line for line in lines[3:] if not line.plain.startswith("── doc")]
    got = [(ch, ansi(s)) for line in body for ch, s in zip(line.plain, char_styles(line), strict=True)]
    texts = [visible(t) for t in token_texts(tok, row["input_ids"], row["seq_lens"])]
    mask, trainable = row[f"mask_{strategy}"].astype(bool), row["trainable"].astype(bool)
    want = []
    for t, code, loss, trained in zip(texts, row["roles"].tolist(), mask, trainable, strict=True):
        style = Style.parse(ROLE_STYLES[R.ROLE_NAMES[code]]) + (LOSS_STYLE if loss else Style.null())
        style += Style.null() if trained else UNTRAINED_STYLE
        want += [(ch, ansi(style)) for ch in t if ch != "\n"]
    assert got == want
    struck = "".join(ch for line in body for ch, s in zip(line.plain, char_styles(line), strict=True) if s.strike)
    assert struck == "".join(t for t, trained in zip(texts, trainable, strict=True) if not trained).replace("\n", "")
    assert "bad answer" in struck and "good answer" not in struck


def test_row_of_format_version_1_is_all_trainable(out, tmp_path):
    old = as_version_1(out, tmp_path / "v1")
    row = load_row(old, 0)
    assert "trainable" not in row and row_trainable(row).tolist() == [True] * len(row["input_ids"])
    assert plain(old, 0) == plain(out, 0)
    assert "untrained" not in Text.from_ansi(colour(old, 0)).plain


def test_untrained_style_shows_on_every_role_style():
    for s in ROLE_STYLES.values():
        for base in (Style.parse(s), Style.parse(s) + LOSS_STYLE):
            assert ansi(base + UNTRAINED_STYLE) != ansi(base)
