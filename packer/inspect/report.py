"""``packer inspect``: the statistics that decide a masking strategy.

Shi et al. (NeurIPS 2024) found instruction modelling (loss on the prompt too)
helps most when prompts are long relative to outputs and when there are few
examples. This report puts those two figures, and everything else needed to
choose, one command away. It reads only what the build stored (the manifest
and ``documents.arrow``; the shards only for the HTML samples): no
re-tokenizing, no input files.

Lengths count per packed example: ``prompt`` = system + instruction + input,
``response`` = assistant content; in tokens and in the paper's words
(whitespace-split words of each message, +1 per message)::

    >>> r = inspect("shards/")                                     # doctest: +SKIP
    >>> r["words"]["prompt"]["mean"], r["words"]["response"]["mean"], r["words"]["ratio_of_means"]  # doctest: +SKIP
    (41.72, 442.75, 0.094)                                          # LIMA, as the paper's Table 5
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from .. import fsio
from ..output import roles as R
from ..output.container import read_table
from ..output.layout import (
    DOCUMENTS_FILE,
    MANIFEST_FILE,
    REJECTED_FILE,
    ShardError,
    manifest_files,
    output_file,
    read_manifest,
)
from ..output.shards import mask_column
from .preference import preference, print_preference, summary
from .strategy_loss import TOOL_ROLES, forced_tokens, strategies, untrained_tokens

REPORT_FORMAT = {"name": "packer-report", "version": 1}

#: the paper's data sets (Table 5; lengths in words), to place one's own data beside
PAPER_DATASETS = [
    {"name": "Stanford Alpaca", "examples": 52002, "prompt_words": 18.6, "response_words": 45.2, "ratio": 0.41},
    {"name": "LIMA", "examples": 1030, "prompt_words": 41.7, "response_words": 442.8, "ratio": 0.09},
    {"name": "Less MMLU Chat", "examples": 13533, "prompt_words": 217.0, "response_words": 8.2, "ratio": 26.3},
]
#: an example count up to which the paper's "small data" finding applies (its IM
#: gains were largest on 1k-14k example sets); a heuristic threshold, not a law
SMALL_DATASET = 20_000
#: prompt/response word ratio (of means) from which prompts count as long
LONG_PROMPT_RATIO = 1.0
#: histogram of per-example prompt/response ratios: log2 bins
RATIO_BINS = [2.0**k for k in range(-8, 9)]


def _lengths(prompt: np.ndarray, response: np.ndarray) -> dict:
    ratio = prompt / np.maximum(response, 1)
    mean_r = response.mean() if response.size else 0.0
    return {
        "prompt": summary(prompt),
        "response": summary(response),
        "ratio": summary(ratio),
        "ratio_of_means": round(float(prompt.mean() / mean_r), 4) if mean_r else None,
        "ratio_histogram": _histogram(ratio),
    }


def _histogram(ratio: np.ndarray) -> dict:
    edges = np.array([0.0, *RATIO_BINS, np.inf])
    counts, _ = np.histogram(ratio, bins=edges)
    return {"edges": [float(e) for e in edges[1:-1]], "counts": counts.tolist()}


def _recommendation(n_examples: int, ratio_of_means: float | None) -> dict:
    long_prompts = ratio_of_means is not None and ratio_of_means >= LONG_PROMPT_RATIO
    small = n_examples <= SMALL_DATASET
    ratio_txt = "n/a" if ratio_of_means is None else f"{ratio_of_means:.2f}"
    facts = (
        f"prompt/response length ratio {ratio_txt} (words, ratio of means; long prompts from {LONG_PROMPT_RATIO:g}) "
        f"and {n_examples:,} examples (small up to {SMALL_DATASET:,})"
    )
    if long_prompts and small:
        strategy, why = "instruction_modelling", "both factors favour loss on the instruction"
    elif long_prompts or small:
        strategy = "instruction_modelling"
        why = "one of the two factors favours loss on the instruction; expect a smaller gain"
    else:
        strategy, why = "instruction_tuning", "neither factor favours loss on the instruction"
    text = (
        f"Try {strategy} first: {why} ({facts}). Shi et al. (NeurIPS 2024) found instruction modelling helps most "
        "with long instructions relative to outputs and with few examples. This is a heuristic from two figures, "
        "not a prediction: train with both strategies from these shards and compare on your evaluation."
    )
    return {"strategy": strategy, "long_prompts": long_prompts, "small_dataset": small, "text": text}


def _packed_columns(out: Path) -> Callable[..., np.ndarray]:
    """``col(name, dtype=float64)``: a column of documents.arrow over the packed (and truncated) records
    of the train split (all of them in an output without an eval split, or written before there was one).

    The file is memory-mapped and only the columns asked for are read, as numpy arrays, with no Python
    object a record: at 10M records this is seconds and a few hundred MB (``benchmarks/bench_inspect.py``).
    """
    # not closed here: the columns read are views of the map, which lives as long as they do
    docs = ipc.open_file(pa.memory_map(output_file(out, DOCUMENTS_FILE))).read_all()
    packed = pc.is_in(docs.column("status"), value_set=pa.array(["packed", "truncated"])).to_numpy(
        zero_copy_only=False
    )
    if "split" in docs.column_names:
        packed &= pc.fill_null(pc.equal(docs.column("split"), "train"), False).to_numpy(zero_copy_only=False)

    def col(name: str, dtype: type = np.float64) -> np.ndarray:
        return docs.column(name).to_numpy(zero_copy_only=False)[packed].astype(dtype)

    return col


def _splits(m: dict) -> dict:
    """Documents, rows and tokens of each split; ``eval`` is None in an output without one."""
    held_out = m.get("eval")
    train_docs = (sum(i["documents"] for i in m["mix"]["inputs"]) if m.get("mix")
                  else m["counts"]["packed"] - (held_out["documents"] if held_out else 0))
    out: dict = {"train": {"documents": train_docs,
                           "rows": m["packing"]["rows"], "tokens": m["tokens"]["total"]}, "eval": None}
    if held_out:
        out["eval"] = {"documents": held_out["documents"], "rows": held_out["packing"]["rows"],
                       "tokens": held_out["tokens"]["total"], "fraction": held_out["fraction"],
                       "records": held_out["records"], "seed": held_out["seed"],
                       "leaked_duplicates": held_out["leaked_duplicates"]}
    return out


def _remote_manifest(uri: str) -> dict:
    """The manifest of the output URI ``uri``; :func:`packer.output.layout.read_manifest`'s errors, naming the URI."""
    fs, root = fsio.resolve(uri)
    try:
        return read_manifest(root, fs)
    except ShardError as e:
        raise type(e)(str(e).replace(root, uri.partition("?")[0].rstrip("/"), 1)) from None


def inspect(output: str | os.PathLike) -> dict:
    """The report of a build output as a JSON-ready dict (``schemas/report.schema.json``).

    Lengths, tokens, loss shares and packing are the train split's; ``splits`` counts both.

    Raises :class:`packer.output.layout.MissingShardError` (a ``FileNotFoundError``) or
    :class:`packer.output.layout.ShardError` (a ``ValueError``) when ``output`` is not a packer output.

    ``output`` may be a URI (``s3://bucket/shards``; :mod:`packer.fsio`): its manifest and documents.arrow
    (all the report reads) are copied into a temporary local folder first.
    """
    if fsio.is_uri(output):
        uri = str(output)
        _remote_manifest(uri)  # not a packer output: the error names the URI
        with fsio.local_copy(uri, [MANIFEST_FILE, DOCUMENTS_FILE]) as local:
            report = inspect(local)
        report["output"] = uri
        report["records"]["rejected_file"] = fsio.join(uri, REJECTED_FILE)
        return report
    out = Path(output)
    m = read_manifest(out)
    for name in manifest_files(m):  # the report describes these files: none may be a link out of the folder
        output_file(out, name)
    col = _packed_columns(out)
    turns = col("turns")
    words = _lengths(col("prompt_words"), col("response_words"))
    return {
        "format": REPORT_FORMAT,
        "output": str(out),
        "records": _records(m, out),
        "splits": _splits(m),
        # a mixture (--mix): per input, the train split's documents (copies included) and share of its tokens
        "mix": m.get("mix"),
        "tokens": _tokens(m, col),
        "words": words,
        "strategies": strategies(m),
        "packing": _packing(m, col),
        "multi_turn": _multi_turn(m, turns),
        # a preference output's pairs (or KTO labels): packer.inspect.preference; None for supervised data
        "preference": preference(m, col),
        "recommendation": _recommendation(len(turns), words["ratio_of_means"]),
        "paper_datasets": PAPER_DATASETS,
        "template": m["template"]["name"],
        "tokenizer": m["tokenizer"]["source"],
        # which tokenizer behaviour the ids follow, and where the other one parts from it (outputs built
        # before the choice existed followed tokenizer.json)
        "tokenizer_loader": {
            "loader": m["tokenizer"].get("loader", "file"),
            "transformers_version": m["tokenizer"].get("transformers_version"),
            "difference": m["tokenizer"].get("loader_difference"),
        },
        "control_absorbed_chars": m["tokens"].get("control_absorbed_chars", 0),
    }


def _records(m: dict, out: Path) -> dict:
    """The report's ``records``: what became of the records read (the manifest's counts)."""
    c = m["counts"]
    return {
        "read": c["records"],
        "packed": c["packed"],
        "truncated": c["truncated"],
        "rejected": c["rejected"],
        "rejected_total": sum(c["rejected"].values()),
        "rejected_file": str(out / REJECTED_FILE),
        "dropped_turns": c.get("dropped_turns", {}),
        "system_policy": c.get("system_policy", {}),
        "unsampled": c.get("unsampled", 0),
    }


def _tokens(m: dict, col: Callable[..., np.ndarray]) -> dict:
    """The report's ``tokens``: per role, marked untrained or forced, and per example (``col``: documents.arrow's
    columns over the train split's packed records)."""
    tokens, per_role = m["tokens"]["total"], m["tokens"]["per_role"]
    return {
        "total": tokens,
        "per_role": per_role,
        "per_role_share": {k: round(v / tokens, 6) if tokens else 0.0 for k, v in per_role.items()},
        **untrained_tokens(m["tokens"]),
        **forced_tokens(m["tokens"]),
        # tokens of the roles that tools and reasoning bring; all 0 in plain instruction data
        "tool_roles": {role: int(per_role.get(role, 0)) for role in TOOL_ROLES},
        **_lengths(col("prompt_tokens"), col("response_tokens")),
    }


def _packing(m: dict, col: Callable[..., np.ndarray]) -> dict:
    """The report's ``packing``: rows, efficiency, and documents per row (from documents.arrow's ``col``)."""
    # documents per row: a row is (shard, row in shard); count the documents of each row that has any
    shard_col, row_col = col("shard", np.int64), col("row", np.int64)
    row_key = shard_col * (int(row_col.max()) + 1 if len(row_col) else 1) + row_col
    per_row = np.bincount(row_key) if len(row_key) else np.zeros(0, np.int64)
    docs_per_row = per_row[per_row > 0]
    return {
        "algorithm": m["packing"]["algorithm"],
        "rows": m["packing"]["rows"],
        "seq_len": m["seq_len"],
        "efficiency": m["packing"]["efficiency"],
        "lower_bound_rows": m["packing"].get("lower_bound_rows"),
        "documents_per_row": summary(np.asarray(docs_per_row, dtype=np.float64)),
    }


def _multi_turn(m: dict, turns: np.ndarray) -> dict:
    """The report's ``multi_turn``: turns per example, and how much of the loss the last turn holds."""
    loss = m["tokens"]["loss"]
    it_loss = loss.get("instruction_tuning", 0)
    return {
        "turns": summary(turns),
        "multi_turn_examples": int((turns > 2).sum()),
        # of instruction_tuning's loss tokens (the assistant turns), the share in each document's final one
        "last_turn_loss_share": round(loss["last_turn"] / it_loss, 6) if it_loss and "last_turn" in loss else None,
    }


# -- terminal ---------------------------------------------------------------


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def print_report(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """The report as rich tables and a histogram on ``console``."""
    _print_header(r, console)
    _print_records(r, console)
    print_preference(r, console)
    _print_strategies(r, console)
    _print_tool_roles(r, console)
    _print_roles(r, console)
    _print_lengths(r, console)
    _print_packing(r, console)
    _print_paper(r, console)


def _print_header(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """The output, its template and tokenizer, which tokenizer behaviour its ids follow."""
    from rich.markup import escape

    console.print(f"[bold]packer inspect[/] {r['output']}  (template {r['template']}, tokenizer {r['tokenizer']})")
    tl = r["tokenizer_loader"]
    via = f"transformers {tl['transformers_version']}" if tl["loader"] == "transformers" else "tokenizer.json as it is"
    console.print(f"ids follow: {via}", markup=False)
    if tl["difference"]:
        console.print(f"[yellow]the other tokenizer loader gives other ids:[/] {escape(tl['difference'])}")
    if r["control_absorbed_chars"]:
        console.print(f"control tokens absorbed {r['control_absorbed_chars']:,} characters of content "
                      "(they keep the role special or end)", markup=False)


def _print_records(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """What became of the records, the splits, and the mixture."""
    from rich.table import Table

    rec = r["records"]
    t = Table(title="Records", title_justify="left", show_header=False)
    t.add_row("read", f"{rec['read']:,}")
    t.add_row("packed", f"{rec['packed']:,}" + (f" ({rec['truncated']:,} truncated)" if rec["truncated"] else ""))
    t.add_row("rejected", f"{rec['rejected_total']:,}" + (f"  (see {rec['rejected_file']})" if rec["rejected"] else ""))
    for reason, n in rec["rejected"].items():
        t.add_row(f"  {reason}", f"{n:,}")
    for what, n in rec["system_policy"].items():
        t.add_row(f"system message {what}", f"{n:,}")
    for reason, n in rec["dropped_turns"].items():
        t.add_row(f"turns dropped: {reason}", f"{n:,}")
    for name, sp in r["splits"].items():
        if r["splits"]["eval"] is not None and sp is not None:
            t.add_row(f"{name} split", f"{sp['documents']:,} documents, {sp['rows']:,} rows, {sp['tokens']:,} tokens")
    if r["records"].get("unsampled"):
        t.add_row("unsampled (--mix)", f"{r['records']['unsampled']:,}")
    console.print(t)
    if r.get("mix"):
        t = Table(title=f"Mixture (train split, seed {r['mix']['seed']})", title_justify="left")
        for h in ("input", "weight", "records", "documents", "tokens", "token share"):
            t.add_column(h, justify="left" if h == "input" else "right")
        for i in r["mix"]["inputs"]:
            t.add_row(i["path"], f"{i['weight']:g}", f"{i['records']:,}", f"{i['documents']:,}", f"{i['tokens']:,}",
                      f"{i['token_share']:.1%}")
        console.print(t)
    if r["splits"]["eval"] is not None:
        console.print("the tables below are of the train split", markup=False)


def _print_strategies(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """Loss tokens per strategy."""
    from rich.table import Table

    t = Table(title="Loss tokens per strategy", title_justify="left")
    for h in ("strategy", "roles with loss", "loss tokens", "share"):
        t.add_column(h, justify="right" if h in ("loss tokens", "share") else "left")
    for name, s in r["strategies"].items():
        t.add_row(name, ", ".join(s["roles"]), f"{s['loss_tokens']:,}", f"{s['share']:.1%}")
    console.print(t)


def _print_roles(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """Tokens per role, and those marked untrained or forced."""
    from rich.table import Table

    untrained = r["tokens"]["untrained_per_role"]
    t = Table(title=f"Tokens per role (total {r['tokens']['total']:,})", title_justify="left")
    t.add_column("role")
    t.add_column("tokens", justify="right")
    t.add_column("share", justify="right")
    if untrained:
        t.add_column("untrained", justify="right")
    for name, n in r["tokens"]["per_role"].items():
        cells = [name, f"{n:,}", f"{r['tokens']['per_role_share'][name]:.1%}"]
        t.add_row(*cells, *([f"{untrained.get(name, 0):,}"] if untrained else []))
    console.print(t)
    if r["tokens"]["untrained"]:
        console.print(
            f"untrained: {r['tokens']['untrained']:,} tokens ({r['tokens']['untrained_share']:.1%}) are in messages "
            "marked \"weight\": 0 / \"training\": false; they carry no loss under any strategy but "
            f"{', '.join(sorted(R.UNFLAGGED_STRATEGIES))}", markup=False, soft_wrap=True,
        )
    if r["tokens"]["forced"]:
        per_role = ", ".join(f"{k} {v:,}" for k, v in r["tokens"]["forced_per_role"].items())
        console.print(
            f"forced: {r['tokens']['forced']:,} tokens ({r['tokens']['forced_share']:.1%}; {per_role}) are in "
            "messages other than the assistant's marked \"training\": true; they carry loss under every strategy",
            markup=False, soft_wrap=True,
        )


def _print_lengths(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """Prompt and response lengths per example, and a histogram of their ratio."""
    from rich.table import Table

    t = Table(title="Per example: prompt (system+instruction+input) vs response", title_justify="left")
    for h in ("unit", "", "mean", "median", "p10", "p90"):
        t.add_column(h, justify="left" if h in ("unit", "") else "right")
    for unit in ("words", "tokens"):
        for part in ("prompt", "response", "ratio"):
            s = r[unit][part]
            t.add_row(unit if part == "prompt" else "", part, _fmt(s["mean"]), _fmt(s["median"]), _fmt(s["p10"]),
                      _fmt(s["p90"]))
        t.add_row("", "ratio of means", _fmt(r[unit]["ratio_of_means"], 3), "", "", "")
    console.print(t)

    console.print("[bold]prompt/response ratio per example (words)[/]")
    hist = r["words"]["ratio_histogram"]
    labels = ["< " + _ratio_label(hist["edges"][0])]
    labels += [f"{_ratio_label(a)}-{_ratio_label(b)}" for a, b in zip(hist["edges"], hist["edges"][1:], strict=False)]
    labels += [">= " + _ratio_label(hist["edges"][-1])]
    top = max(hist["counts"]) or 1
    for label, n in zip(labels, hist["counts"], strict=True):
        if n:
            console.print(f"  {label:>13} {'█' * max(1, round(40 * n / top))} {n:,}")


def _print_packing(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """Rows, efficiency, documents per row, turns."""
    from rich.table import Table

    p, mt = r["packing"], r["multi_turn"]
    t = Table(title="Packing and turns", title_justify="left", show_header=False)
    t.add_row("rows", f"{p['rows']:,} x {p['seq_len']} ({p['algorithm']}; lower bound {p['lower_bound_rows']:,})")
    t.add_row("efficiency", f"{p['efficiency']:.4f}")
    t.add_row(
        "documents per row",
        f"mean {_fmt(p['documents_per_row']['mean'])}, max {_fmt(p['documents_per_row']['max'], 0)}",
    )
    t.add_row("turns per example", f"mean {_fmt(mt['turns']['mean'])}, max {_fmt(mt['turns']['max'], 0)}")
    t.add_row("multi-turn examples", f"{mt['multi_turn_examples']:,}")
    if mt["last_turn_loss_share"] is not None:
        t.add_row("loss tokens in the last turn", f"{mt['last_turn_loss_share']:.1%} of instruction_tuning's")
    console.print(t)


def _print_paper(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """The build beside the paper's data sets, and the recommendation."""
    from rich.table import Table

    t = Table(title="Beside the paper's data sets (words)", title_justify="left")
    for h in ("data set", "examples", "prompt", "response", "ratio"):
        t.add_column(h, justify="left" if h == "data set" else "right")
    w = r["words"]
    t.add_row("[bold]this build[/]", f"{r['records']['packed']:,}", _fmt(w["prompt"]["mean"], 1),
              _fmt(w["response"]["mean"], 1), _fmt(w["ratio_of_means"]))
    for d in PAPER_DATASETS:
        t.add_row(d["name"], f"{d['examples']:,}", f"{d['prompt_words']}", f"{d['response_words']}", f"{d['ratio']}")
    console.print(t)
    console.print(f"[bold]Recommendation:[/] {r['recommendation']['text']}", soft_wrap=True)


def _tool_role_cell(entry: dict) -> str:
    n = entry["loss_tokens"]
    return "n/a" if n is None else f"{n:,} ({entry['share']:.1%})" if n else "-"


def _print_tool_roles(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """Loss tokens of tool calls, reasoning and tool results per strategy, and their share of its loss; only
    for an output that has such tokens (a plain instruction data set would get a table of zeros)."""
    from rich.table import Table

    present = [role for role, n in r["tokens"]["tool_roles"].items() if n]
    if not present:
        return
    t = Table(title="Tool calls, reasoning, tool results: loss tokens", title_justify="left",
              caption="in brackets: the share of the strategy's loss; in a header: all tokens of the role",
              caption_justify="left")
    t.add_column("strategy")
    for role in present:
        t.add_column(f"{role} ({r['tokens']['tool_roles'][role]:,})", justify="right")
    for name, s in r["strategies"].items():
        t.add_row(name, *(_tool_role_cell(s["tool_roles"][role]) for role in present))
    console.print(t)
    if any(s["tool_roles"][role]["loss_tokens"] is None for s in r["strategies"].values() for role in present):
        console.print("n/a: the manifest keeps only the total of a last-turn strategy, not its split by role",
                      markup=False, soft_wrap=True)


def _ratio_label(x: float) -> str:
    return f"{x:g}" if x >= 1 else f"1/{1 / x:g}"


# -- HTML -------------------------------------------------------------------

ROLE_COLOURS = {
    "special": "#9e9e9e", "marker": "#5c6bc0", "boilerplate": "#ab47bc", "system": "#f9a825",
    "instruction": "#00897b", "input": "#43a047", "response": "#1e88e5", "end": "#e53935",
    "tool_call": "#d81b60", "reasoning": "#6d4c41", "tool": "#ef6c00",
}


def _svg_bars(labels: list[str], values: list[float], *, width: int = 640, unit: str = "") -> str:
    """A horizontal bar chart as inline SVG (no scripts, no external references)."""
    row_h, left = 22, 150
    top = max(values) if values and max(values) > 0 else 1
    parts = [f'<svg width="{width}" height="{row_h * len(values) + 8}">']
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        w = (width - left - 90) * v / top
        y = i * row_h + 4
        parts.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" font-size="12">{html.escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="#1e88e5"/>')
        parts.append(
            f'<text x="{left + w + 4:.1f}" y="{y + 15}" font-size="12">{html.escape(f"{v:,.4g}{unit}")}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _length_histogram(values: np.ndarray, title: str) -> str:
    if values.size == 0:
        return ""
    top = max(float(values.max()), 1.0)
    edges = np.unique(np.geomspace(1, top + 1, num=12).round())
    counts, _ = np.histogram(values, bins=np.concatenate([[0], edges]))
    labels = [f"< {int(e):,}" for e in edges]
    return f"<h3>{html.escape(title)}</h3>" + _svg_bars(labels, counts.astype(float).tolist())


def _sample_rows_html(out: Path, m: dict, strategy: str, n_rows: int) -> str:
    from ..tokens.loader import find_tokenizer, load_tokenizer

    try:
        tok = load_tokenizer(find_tokenizer(m["tokenizer"], out) or m["tokenizer"]["source"]).tokenizer
    except Exception:  # the report stays useful when the tokenizer moved
        tok = None
    if not m["shards"]:
        return ""
    table = read_table(output_file(out, m["shards"][0]["file"]), m["format"]["version"]).slice(0, n_rows).to_pylist()
    names = {v: k for k, v in m["roles"].items()}
    blocks = []
    for i, row in enumerate(table):
        spans, pos = [], 0
        # a shard of format version 1 has no trainable column: every token trainable
        trainable = row.get("trainable") or [True] * len(row["input_ids"])
        for length, doc_id in zip(row["seq_lens"], row["doc_ids"], strict=True):
            spans.append(f'<div class="doc">document {doc_id}</div>')
            for j in range(pos, pos + length):
                piece = (
                    tok.decode([row["input_ids"][j]], skip_special_tokens=False) if tok else f"[{row['input_ids'][j]}]"
                )
                role = names.get(row["roles"][j], "?")
                loss = " loss" if row[mask_column(strategy)][j] else ""
                untrained = "" if trainable[j] else " untrained"
                text = html.escape(piece).replace("\n", "↵<br>")
                spans.append(f'<span class="r-{role}{loss}{untrained}" title="{role}">{text}</span>')
            pos += length
        blocks.append(f"<h3>row {i}</h3><div class='row'>{''.join(spans)}</div>")
    return "".join(blocks)


def _tool_roles_html(r: dict) -> str:
    """The tool-call, reasoning and tool-result loss per strategy, and the untrained tokens; "" for an
    output that has none of them."""
    esc = html.escape
    parts = []
    present = [role for role, n in r["tokens"]["tool_roles"].items() if n]
    if present:
        head = "".join(f"<th>{esc(role)} ({r['tokens']['tool_roles'][role]:,})</th>" for role in present)
        body = "".join(
            f"<tr><td>{esc(name)}</td>"
            + "".join(f"<td>{esc(_tool_role_cell(s['tool_roles'][role]))}</td>" for role in present) + "</tr>"
            for name, s in r["strategies"].items()
        )
        parts.append("<h2>Tool calls, reasoning, tool results</h2><p>loss tokens per strategy (share of its "
                     f"loss)</p><table><tr><th>strategy</th>{head}</tr>{body}</table>")
    if r["tokens"]["untrained"]:
        per_role = ", ".join(f"{esc(k)} {v:,}" for k, v in r["tokens"]["untrained_per_role"].items())
        parts.append(f"<p>untrained: {r['tokens']['untrained']:,} tokens ({r['tokens']['untrained_share']:.1%}; "
                     f"{per_role}) in messages marked weight 0 / training false: no loss under any strategy but "
                     f"{esc(', '.join(sorted(R.UNFLAGGED_STRATEGIES)))} (struck through below)</p>")
    if r["tokens"]["forced"]:
        per_role = ", ".join(f"{esc(k)} {v:,}" for k, v in r["tokens"]["forced_per_role"].items())
        parts.append(f"<p>forced: {r['tokens']['forced']:,} tokens ({r['tokens']['forced_share']:.1%}; {per_role}) "
                     "in messages other than the assistant's marked training true: loss under every strategy</p>")
    return "".join(parts)


def _splits_html(r: dict) -> str:
    held_out = r["splits"]["eval"]
    if held_out is None:
        return ""
    parts = [f"{name}: {sp['documents']:,} documents, {sp['rows']:,} rows, {sp['tokens']:,} tokens"
             for name, sp in r["splits"].items()]
    return f"<p>splits: {html.escape('; '.join(parts))} (the figures below are the train split's)</p>"


def render_html(
    r: dict, output: str | os.PathLike, *, strategy: str = "instruction_tuning", sample_rows: int = 3
) -> str:
    """One self-contained HTML page: tables, length and ratio histograms (SVG),
    loss-token share per strategy and sample rows coloured by role and loss. ``output`` may be a URI: its
    manifest, documents.arrow and first shard are copied into a temporary local folder first."""
    if fsio.is_uri(output):
        uri = str(output)
        m = _remote_manifest(uri)
        first = [s["file"] for s in m["shards"][:1]]
        with fsio.local_copy(uri, [MANIFEST_FILE, DOCUMENTS_FILE, *first]) as local:
            return render_html(r, local, strategy=strategy, sample_rows=sample_rows)
    out = Path(output)
    m = read_manifest(out)
    col = _packed_columns(out)
    esc = html.escape
    style = "".join(f".r-{k}{{color:{v}}}" for k, v in ROLE_COLOURS.items())
    legend = " ".join(f'<span class="r-{k}">{k}</span>' for k in ROLE_COLOURS)
    hist = r["words"]["ratio_histogram"]
    ratio_labels = ["< " + _ratio_label(hist["edges"][0])]
    ratio_labels += [
        f"{_ratio_label(a)}-{_ratio_label(b)}" for a, b in zip(hist["edges"], hist["edges"][1:], strict=False)
    ]
    ratio_labels += [">= " + _ratio_label(hist["edges"][-1])]
    strategies = r["strategies"]
    rows_html = "".join(
        f"<tr><td>{esc(k)}</td><td>{v['mean']}</td><td>{v['median']}</td><td>{v['p10']}</td><td>{v['p90']}</td></tr>"
        for k, v in (
            ("prompt words", r["words"]["prompt"]), ("response words", r["words"]["response"]),
            ("prompt tokens", r["tokens"]["prompt"]), ("response tokens", r["tokens"]["response"]),
        )
    )
    rec = r["records"]
    rejected = "".join(f"<li>{esc(k)}: {v:,}</li>" for k, v in rec["rejected"].items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>packer inspect: {esc(r["output"])}</title>
<style>
body{{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child{{text-align:left}}
.row{{font-family:monospace;white-space:pre-wrap;border:1px solid #ddd;padding:8px;line-height:1.6}}
.doc{{background:#eee;font-size:11px;margin-top:4px}} .loss{{text-decoration:underline;background:#fff3c4}}
.untrained{{text-decoration:line-through}} .loss.untrained{{text-decoration:underline line-through}}
{style}
</style></head><body>
<h1>packer inspect</h1>
<p>{esc(r["output"])} &middot; template {esc(r["template"])} &middot; tokenizer {esc(r["tokenizer"])}</p>
<h2>Recommendation</h2><p>{esc(r["recommendation"]["text"])}</p>
<h2>Records</h2><p>read {rec["read"]:,}, packed {rec["packed"]:,} ({rec["truncated"]:,} truncated),
rejected {rec["rejected_total"]:,} (listed in {esc(rec["rejected_file"])})</p><ul>{rejected}</ul>
{_splits_html(r)}
<h2>Loss-token share per strategy</h2>
{_svg_bars(list(strategies), [100 * s["share"] for s in strategies.values()], unit="%")}
{_tool_roles_html(r)}
<h2>Lengths per example</h2>
<table><tr><th>length</th><th>mean</th><th>median</th><th>p10</th><th>p90</th></tr>{rows_html}</table>
<p>prompt/response ratio of means: {r["words"]["ratio_of_means"]} (words), {r["tokens"]["ratio_of_means"]} (tokens)</p>
<h3>prompt/response ratio per example (words)</h3>
{_svg_bars(ratio_labels, [float(c) for c in hist["counts"]])}
{_length_histogram(col("prompt_words"), "prompt length (words)")}
{_length_histogram(col("response_words"), "response length (words)")}
<h2>Packing</h2><p>{r["packing"]["rows"]:,} rows x {r["packing"]["seq_len"]}, efficiency
{r["packing"]["efficiency"]:.4f}, documents per row (mean) {r["packing"]["documents_per_row"]["mean"]}</p>
<h2>Sample rows ({esc(strategy)}; loss tokens underlined)</h2><p>{legend}</p>
{_sample_rows_html(out, m, strategy, sample_rows)}
</body></html>
"""
