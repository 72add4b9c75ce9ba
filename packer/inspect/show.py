"""``packer show``: the tokens of one packed row, coloured by role and loss.

Each token is decoded on its own (incrementally within its document, so a
character split over several byte-level tokens shows on the token that
completes it) and printed in the colour of its role; the tokens that carry
loss under the chosen strategy are underlined on a grey background. A header
line opens each document of the row::

    ── doc 17 · record 3 of examples/alpaca_demo.json · 212 tokens ──

When the console is not a terminal (a pipe, a file), the same is printed
plainly: consecutive tokens of the same role and loss form a run, prefixed
``[role+]`` (loss) or ``[role-]`` (no loss)::

    [special-]<|im_start|>[marker-]user↵
    [instruction-]Hi[special-]<|im_end|>[marker-]↵
    [special-]<|im_start|>[marker-]assistant↵
    [response+]Hello![end+]<|im_end|>[marker-]↵

Invisible characters are made visible: a newline is ``↵`` followed by a real
newline, a tab ``→``, other control characters their Unicode control picture.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
from rich.console import Console
from rich.style import Style
from rich.text import Text
from tokenizers import Tokenizer

from ..output import roles as R
from ..output.container import is_stream, open_local
from ..output.layout import DOCUMENTS_FILE, locate_row, output_file, read_manifest, row_starts, split_shards
from ..output.shards import mask_column
from ..tokens.loader import TokenizerInfo, find_tokenizer, load_tokenizer

#: role name -> rich style of its tokens. What the assistant writes besides its answer is bold like the
#: answer (a call) or italic (its reasoning, as thought is often set); a tool's result gets a colour of
#: its own, near no other role's (256-colour orange; a 16-colour terminal shows the nearest it has).
ROLE_STYLES: dict[str, str] = {
    "special": "dim",
    "marker": "bright_blue",
    "boilerplate": "magenta",
    "system": "yellow",
    "instruction": "cyan",
    "input": "green",
    "response": "bold",
    "end": "red",
    "tool_call": "bold bright_magenta",
    "reasoning": "italic",
    "tool": "dark_orange",
}
#: added to the role style of a token that carries loss
LOSS_STYLE = Style(underline=True, bgcolor="grey23")
#: a pair row's branches: the shared prefix, the chosen and the rejected completions (their headers' colours)
BRANCH_NAMES = {0: "prefix (shared)", 1: "chosen", 2: "rejected"}
BRANCH_STYLES = {"prefix (shared)": "bold", "chosen": "bold green", "rejected": "bold red"}
#: added to the style of a token of a message marked untrained ("weight": 0 / "training": false)
UNTRAINED_STYLE = Style(strike=True)
HEADER_STYLE = Style(bold=True)
#: how invisible characters are shown (a newline keeps a real newline after its mark)
VISIBLE = {"\n": "↵\n", "\t": "→", "\r": "␍"}


def load_row(output: str | os.PathLike, row: int, split: str = "train") -> dict:
    """One packed row of a build output, by its global index across the shards
    (in manifest order; a negative index counts from the end).

    Returns the row's columns as numpy arrays (``input_ids``, ``roles``,
    ``seq_lens``, ``doc_ids``, ``mask_<strategy>``...) and where it lives:
    ``row`` (global index), ``rows`` (rows in the output), ``shard`` (file
    name) and ``shard_row`` (row within that shard). Raises ``IndexError``
    saying how many rows exist when ``row`` is out of range. ``split="eval"``: a row of the held-out
    eval split.
    """
    out = Path(output)
    manifest = read_manifest(out)
    shards = split_shards(manifest, split, str(out))
    starts = row_starts([int(s["rows"]) for s in shards])
    k, local = locate_row(starts, row, str(out) if split == "train" else f"the eval split of {out}")
    shard = shards[k]
    with pa.memory_map(output_file(out, shard["file"])) as source:
        batches = open_local(source, is_stream(manifest["format"]["version"]))[1]
        try:
            b, in_batch = locate_row(row_starts([batch.num_rows for batch in batches]), local)
        except IndexError:
            raise IndexError(
                f"row {row}: {shard['file']} holds fewer rows than the manifest says ({shard['rows']})"
            ) from None
        batch = batches[b]
        result: dict = {"row": int(starts[k]) + local, "rows": int(starts[-1]), "shard": shard["file"],
                        "shard_row": local}
        for name in batch.schema.names:
            values = batch.column(name).slice(in_batch, 1).flatten()
            result[name] = values.to_numpy(zero_copy_only=False).copy()
    return result


def visible(text: str) -> str:
    """``text`` with newlines, tabs and other control characters made visible."""
    out = []
    for ch in text:
        if ch in VISIBLE:
            out.append(VISIBLE[ch])
        elif ch < " " or ch == "\x7f":
            out.append(chr(0x2400 + (ord(ch) if ch < " " else 0x21)))  # ␀..␟, ␡
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"⟨U+{ord(ch):04X}⟩")
        else:
            out.append(ch)
    return "".join(out)


def _decode_document(tok: Tokenizer, ids: Sequence[int]) -> list[str]:
    # incremental decoding, as tokenizers' DecodeStream does (kept here for
    # tokenizers < 0.21): decode a short window of context plus the new token,
    # emit what it adds; a token that ends inside a character (byte-level
    # BPE) emits "" and the token that completes the character emits it whole
    texts: list[str] = []
    window: list[int] = []
    prefix = ""
    prefix_index = 0
    for token in ids:
        window.append(token)
        text = tok.decode(window, skip_special_tokens=False)
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            if text.startswith(prefix):
                texts.append(text[len(prefix) :])
            else:  # a decoder that rewrites its context: fall back to the token alone
                texts.append(tok.decode([token], skip_special_tokens=False))
            new_index = len(window) - prefix_index
            window = window[prefix_index:]
            prefix = tok.decode(window, skip_special_tokens=False)
            prefix_index = new_index
        else:
            texts.append("")
    if window and len(window) > prefix_index:  # the document ended inside a character
        text = tok.decode(window, skip_special_tokens=False)
        if text.startswith(prefix) and len(text) > len(prefix):
            texts[-1] = text[len(prefix) :]
    return texts


def token_texts(tok: Tokenizer, ids: Sequence[int], seq_lens: Sequence[int]) -> list[str]:
    """The text of each token of a row, decoded document by document.

    Within a document the texts join to ``tok.decode(ids, skip_special_tokens=False)``.
    """
    ids = [int(i) for i in ids]
    texts: list[str] = []
    pos = 0
    for n in seq_lens:
        texts += _decode_document(tok, ids[pos : pos + int(n)])
        pos += int(n)
    if pos != len(ids):
        raise ValueError(f"seq_lens sum to {pos}, the row has {len(ids)} tokens")
    return texts


def _tokenizer(manifest: dict, override, out: Path) -> tuple[Tokenizer | None, list[str]]:  # type: ignore[no-untyped-def]
    """The tokenizer to decode with, and notes to print about it."""
    if isinstance(override, Tokenizer):
        return override, []
    if isinstance(override, TokenizerInfo):
        info = override
    else:
        built = manifest.get("tokenizer", {})
        # as typed at the build, else where it was then, else beside the output (find_tokenizer)
        source = override if override is not None else find_tokenizer(built, out) or built.get("source")
        if source is None:
            return None, ["the manifest names no tokenizer; showing token ids (give one with --tokenizer)"]
        try:
            info = load_tokenizer(source)
        except Exception as e:  # BuildError, OSError, a broken file: the ids are still worth showing
            return None, [f"cannot load the tokenizer: {e}; showing token ids instead (--tokenizer gives one)"]
    notes = []
    built = manifest.get("tokenizer", {})
    expected = built.get("sha256")
    if built.get("loader", "file") != info.loader:
        # the ids of a transformers-loaded build decode the same with tokenizer.json (one vocabulary), and
        # loading transformers would cost seconds; its sha256 covers more files, so it is not compared
        notes.append(f"this output's ids follow transformers {built.get('transformers_version')}; decoded with "
                     f"{info.source}'s tokenizer.json (the same vocabulary)")
    elif expected and info.sha256 != expected:
        notes.append(f"tokenizer {info.source} is not the one this output was built with (sha256 differs)")
    return info.tokenizer, notes


def _documents(out: Path, doc_ids: Sequence[int]) -> dict[int, dict]:
    path = Path(output_file(out, DOCUMENTS_FILE))
    if not path.is_file():
        return {}
    with pa.memory_map(str(path)) as source:
        table = ipc.open_file(source).read_all()
        wanted = [c for c in ("doc_id", "input", "record", "status") if c in table.column_names]
        if "doc_id" not in wanted:
            return {}
        table = table.select(wanted).filter(pc.is_in(table["doc_id"], pa.array(list(doc_ids), pa.int64())))
        return {r["doc_id"]: r for r in table.to_pylist()}


def _header(doc_id: int, length: int, info: dict | None, label: bool | None = None) -> str:
    parts = [f"doc {doc_id}"]
    if label is not None:  # a KTO record
        parts.append("desirable" if label else "undesirable")
    if info is not None and info.get("input") is not None:
        parts.append(f"record {info['record']} of {info['input']}")
    parts.append(f"{length} tokens")
    if info is not None and info.get("status") == "truncated":
        parts.append("truncated")
    return "── " + " · ".join(parts) + " ──"


def show_row(
    output: str | os.PathLike,
    row: int = 0,
    strategy: str = "instruction_tuning",
    *,
    tokenizer: str | os.PathLike | TokenizerInfo | Tokenizer | None = None,
    console: Console | None = None,
    split: str = "train",
) -> None:
    """Print the tokens of one packed row (of ``split``), coloured by role, loss tokens marked.

    ``tokenizer`` overrides the manifest's tokenizer source (when it moved);
    if none can be loaded, token ids are shown instead, with a note. On a
    console that is not a terminal the plain form (``[role±]`` runs) is
    printed. Raises ``ValueError`` for a strategy the output does not have,
    ``IndexError`` for a row out of range.
    """
    out = Path(output)
    console = console if console is not None else Console(highlight=False)
    manifest = read_manifest(out)
    strategies = manifest.get("strategies", {})
    if strategy not in strategies:
        raise ValueError(f"unknown strategy {strategy!r}; this output has: {', '.join(strategies)}")
    data = load_row(out, row, split)
    if mask_column(strategy) not in data:
        raise ValueError(f"strategy {strategy!r} has no {mask_column(strategy)} column in {data['shard']}")
    ids, role_codes, mask = data["input_ids"], data["roles"], data[mask_column(strategy)].astype(bool)
    seq_lens, doc_ids = data["seq_lens"], data["doc_ids"]
    trainable = row_trainable(data)
    names = {int(v): k for k, v in manifest.get("roles", R.ROLES).items()}
    tok, notes = _tokenizer(manifest, tokenizer, out)
    branch = data.get("branch")
    # a pair row: each document (pair) in its branches, decoded apart (a suffix does not continue the other)
    pieces = _branch_lengths(seq_lens, branch) if branch is not None else [[n] for n in seq_lens.tolist()]
    if tok is not None:
        texts = [visible(t) for t in token_texts(tok, ids, [n for p in pieces for n in p])]
    else:
        texts = [f"{i} " for i in ids.tolist()]
    docs = _documents(out, doc_ids.tolist())
    plain = not console.is_terminal or console.no_color or console.color_system is None

    for note in notes:
        console.out(f"note: {note}", highlight=False)
    _legend(console, plain, data, manifest, strategy, int(mask.sum()), len(ids), tok is not None,
            int((~trainable).sum()))
    pos = 0
    labels = data.get("labels")
    for k, (length, doc_id) in enumerate(zip(seq_lens.tolist(), doc_ids.tolist(), strict=True)):
        header = _header(doc_id, length, docs.get(doc_id), None if labels is None else bool(labels[k]))
        _print_line(console, plain, header, HEADER_STYLE)
        for n in pieces[k]:
            if branch is not None:
                name = BRANCH_NAMES[int(branch[pos])]
                _print_line(console, plain, f"· {name} ·", BRANCH_STYLES[name])
            _print_span(console, plain, range(pos, pos + n), texts, role_codes, mask, trainable, names)
            pos += n


def _print_line(console: Console, plain: bool, line: str, style: Style | str) -> None:
    if plain:
        console.out(line, highlight=False)
    else:
        console.print(Text(line, style=style), soft_wrap=True)


def _print_span(console: Console, plain: bool, span: range, texts: list[str], role_codes: np.ndarray,
                mask: np.ndarray, trainable: np.ndarray, names: dict) -> None:
    """Print tokens ``span`` of the row: runs of ``[role±]`` in plain form, else coloured by role."""
    if plain:
        console.out(_plain_runs(span, texts, role_codes, mask, names), highlight=False, end="")
    else:
        body = Text()
        for j in span:
            role = names.get(int(role_codes[j]), "?")
            style = Style.parse(ROLE_STYLES.get(role, "none"))
            style = style + LOSS_STYLE if mask[j] else style
            body.append(texts[j], style=style if trainable[j] else style + UNTRAINED_STYLE)
        console.print(body, soft_wrap=True, end="")
    last = texts[span[-1]] if len(span) else "\n"
    if not last.endswith("\n"):
        console.out("", highlight=False)


def _branch_lengths(seq_lens: np.ndarray, branch: np.ndarray) -> list[list[int]]:
    """Per document of a pair row, the lengths of its runs of one branch (prefix, chosen, rejected).

    >>> _branch_lengths(np.array([5, 2]), np.array([0, 0, 1, 2, 2, 1, 2]))
    [[2, 1, 2], [1, 1]]
    """
    out, pos = [], 0
    for n in seq_lens.tolist():
        b = branch[pos : pos + n]
        cuts = np.flatnonzero(np.diff(b)) + 1
        out.append(np.diff(np.concatenate([[0], cuts, [n]])).tolist())
        pos += n
    return out


def row_trainable(data: dict) -> np.ndarray:
    """The row's ``trainable`` column as bool; all True for a shard of format version 1, which has none."""
    if "trainable" in data:
        return data["trainable"].astype(bool)
    return np.ones(len(data["input_ids"]), dtype=bool)


def _plain_runs(span: range, texts: list[str], role_codes: np.ndarray, mask: np.ndarray, names: dict) -> str:
    parts = []
    current = None
    for j in span:
        key = (names.get(int(role_codes[j]), "?"), bool(mask[j]))
        if key != current:
            parts.append(f"[{key[0]}{'+' if key[1] else '-'}]")
            current = key
        parts.append(texts[j])
    return "".join(parts)


def _legend(console: Console, plain: bool, data: dict, manifest: dict, strategy: str, loss: int, length: int,
            decoded: bool, untrained: int) -> None:
    docs = len(data["seq_lens"])
    unit = "pair" if "branch" in data and manifest.get("pairs") != "separate" else "document"
    console.out(
        f"row {data['row']} of {data['rows']} ({data['shard']} row {data['shard_row']}) · "
        f"{docs} {unit}{'s' if docs != 1 else ''} · {length} tokens (seq_len {manifest.get('seq_len', '?')})",
        highlight=False,
    )
    roles = ", ".join(manifest["strategies"][strategy])
    if strategy in R.LAST_TURN_STRATEGIES:
        roles += " (final assistant turn only)"
    line = f"strategy {strategy}: loss on {roles} · {loss} of {length} tokens carry loss"
    if untrained:
        # said only where there are some, so the line of a row without any keeps its form
        flags = "full ignores the marks" if strategy in R.UNFLAGGED_STRATEGIES else "no loss on them"
        line += f" · {untrained} in messages marked untrained ({flags})"
    console.out(line, highlight=False)
    marks = "↵ newline, → tab" if decoded else "token ids, not text"
    if plain:
        console.out(f"runs: [role+] loss, [role-] no loss · roles: {' '.join(ROLE_STYLES)} · {marks}", highlight=False)
        return
    legend = Text("roles: ")
    for name, style in ROLE_STYLES.items():
        legend.append(name, style=style)
        legend.append(" ")
    legend.append("· loss: ")
    legend.append("underlined on grey", style=LOSS_STYLE)
    if untrained:
        legend.append(" · untrained: ")
        legend.append("struck through", style=UNTRAINED_STYLE)
    legend.append(f" · {marks}")
    console.print(legend, soft_wrap=True)
