"""The ``packer`` command line: a thin layer over :func:`packer.build.build`.

Exit codes: 0 success, 1 the build failed (bad input file, tokenizer,
output directory, ``--strict`` rejection), 2 wrong usage.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .build import DEFAULT_SHARD_BYTES, OVERLONG_POLICIES, BuildEvents, build
from .formats import FORMATS
from .pack import ALGORITHMS
from .records import BuildError, Rejection
from .templates import BUILTIN_TEMPLATES

#: the demo tokenizer bundled with the repository (see examples/README.md)
DEMO_TOKENIZER = Path(__file__).resolve().parents[1] / "examples" / "demo-tokenizer"
#: rejections echoed one by one before the rest are only counted
MAX_ECHOED_REJECTIONS = 10

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="packer")
def main() -> None:
    """Instruction-tuning data to packed, role-labelled Arrow shards."""


@main.command("build")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    default="shards",
    show_default=True,
    type=click.Path(file_okay=False),
    help="output directory",
)
@click.option(
    "--tokenizer",
    "tokenizer",
    type=click.Path(),
    default=None,
    help="model directory with tokenizer.json (+ tokenizer_config.json), or a tokenizer.json file "
    "[default: the bundled demo tokenizer]",
)
@click.option(
    "--template",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "tokenizer", *BUILTIN_TEMPLATES]),
    help="auto: the tokenizer's chat_template if it has one, else alpaca",
)
@click.option(
    "--format",
    "fmt",
    default=None,
    type=click.Choice(FORMATS),
    help="input format [default: detected per file]",
)
@click.option("--seq-len", default=4096, show_default=True, type=click.IntRange(min=2))
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    metavar="NAME=ROLE,...",
    help="an extra masking strategy (repeatable), e.g. prompt_only=instruction,input",
)
@click.option(
    "--packing",
    default="bfd",
    show_default=True,
    type=click.Choice(ALGORITHMS),
    help="bfd: best-fit decreasing, ffd: first-fit decreasing, nextfit: keeps input order",
)
@click.option(
    "--overlong",
    default="drop",
    show_default=True,
    type=click.Choice(OVERLONG_POLICIES),
    help="records longer than --seq-len: drop them, or truncate (rejected if no response is left)",
)
@click.option(
    "--shard-size",
    default=DEFAULT_SHARD_BYTES // 2**20,
    show_default=True,
    type=click.IntRange(min=1),
    help="approximate maximum shard size in MiB",
)
@click.option("--overwrite", is_flag=True, help="replace a non-empty output directory")
@click.option("--strict", is_flag=True, help="fail on the first rejected record")
@click.option(
    "--dedupe", is_flag=True, help="reject exact duplicate conversations after the first (else: kept, counted)"
)
@click.option("-q", "--quiet", is_flag=True, help="no progress, no per-record messages")
def build_cmd(inputs, output, tokenizer, template, fmt, seq_len, strategies, packing, overlong, shard_size,
              overwrite, strict, dedupe, quiet) -> None:  # fmt: skip
    """Pack INPUTS (JSON, JSONL or Parquet; Alpaca, ShareGPT or messages) into OUTPUT."""
    if tokenizer is None:
        if not (DEMO_TOKENIZER / "tokenizer.json").is_file():
            _fail(f"no --tokenizer given and the demo tokenizer is missing ({DEMO_TOKENIZER})")
        tokenizer = DEMO_TOKENIZER
        err.print(f"no --tokenizer given: using the bundled demo tokenizer {DEMO_TOKENIZER}", soft_wrap=True)
    echoed = 0

    def on_rejection(rej: Rejection) -> None:
        nonlocal echoed
        echoed += 1
        if quiet:
            return
        if echoed <= MAX_ECHOED_REJECTIONS:
            err.print(f"rejected: {rej.message()}", markup=False, soft_wrap=True)
        elif echoed == MAX_ECHOED_REJECTIONS + 1:
            err.print(f"... more rejections are listed in {Path(output) / 'rejected.jsonl'}", soft_wrap=True)

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[records]:,} records, {task.fields[tokens]:,} tokens"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet or not err.is_terminal,
    )
    task = progress.add_task("building", records=0, tokens=0)
    events = BuildEvents(
        on_records=lambda n, t: progress.update(task, records=n, tokens=t),
        on_rejection=on_rejection,
        on_notice=lambda msg: err.print(f"warning: {msg}", markup=False, soft_wrap=True),
    )
    try:
        with progress:
            manifest = build(
                list(inputs), output, tokenizer=tokenizer, template=template, fmt=fmt, seq_len=seq_len,
                strategies=strategies, packing=packing, overlong=overlong, overwrite=overwrite, strict=strict,
                dedupe=dedupe, shard_bytes=shard_size * 2**20, events=events,
            )  # fmt: skip
    except BuildError as e:
        _fail(str(e))
    _print_summary(manifest, output)


def _print_summary(m: dict, output: str) -> None:
    c, t, p = m["counts"], m["tokens"], m["packing"]
    table = Table(title=f"packer build -> {output}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("records read", f"{c['records']:,}")
    table.add_row("packed", f"{c['packed']:,}" + (f" ({c['truncated']:,} truncated)" if c["truncated"] else ""))
    table.add_row("rejected", f"{sum(c['rejected'].values()):,}")
    for reason, n in c["rejected"].items():
        table.add_row(f"  {reason}", f"{n:,}")
    for reason, n in c["dropped_turns"].items():
        table.add_row(f"turns dropped: {reason}", f"{n:,}")
    if c.get("duplicates"):
        table.add_row(
            "exact duplicates", f"{c['duplicates']:,}" + (" (rejected)" if "duplicate" in c["rejected"] else " (kept)")
        )
    table.add_row("tokens", f"{t['total']:,}")
    for name, n in t["loss"].items():
        share = n / t["total"] if t["total"] else 0.0
        table.add_row(f"  loss tokens {name}", f"{n:,} ({share:.1%})")
    table.add_row("rows", f"{p['rows']:,} x {m['seq_len']} (lower bound {p['lower_bound_rows']:,})")
    table.add_row("packing efficiency", f"{p['efficiency']:.4f}")
    table.add_row("shards", f"{len(m['shards'])}")
    table.add_row("time", f"{m['build_seconds']:.2f} s")
    out.print(table)


@main.command("inspect")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (schemas/report.schema.json)")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="also write a self-contained HTML report with plots and sample rows",
)
@click.option(
    "--strategy",
    default="instruction_tuning",
    show_default=True,
    help="strategy whose loss tokens the HTML sample rows mark",
)
def inspect_cmd(output, as_json, html_file, strategy) -> None:  # fmt: skip
    """Mask statistics of a build OUTPUT: lengths, ratios, loss tokens per strategy."""
    import json

    from .report import inspect, print_report, render_html

    try:
        report = inspect(output)
    except (FileNotFoundError, KeyError, OSError) as e:
        _fail(str(e))
    if strategy not in report["strategies"]:
        _fail(f"unknown strategy {strategy!r}; this output has {', '.join(report['strategies'])}")
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report, out)
    if html_file:
        Path(html_file).write_text(render_html(report, output, strategy=strategy), encoding="utf-8")
        err.print(f"wrote {html_file}", soft_wrap=True)


@main.command("verify")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--no-hashes", is_flag=True, help="check sizes and invariants only, not sha256")
def verify_cmd(output, no_hashes) -> None:
    """Check a build OUTPUT: shard sizes and hashes, roles, masks, documents once each."""
    from .verify import verify

    problems = verify(output, hashes=not no_hashes)
    for p in problems:
        err.print(f"problem: {p}", markup=False, soft_wrap=True)
    if problems:
        sys.exit(1)
    out.print(f"ok: {output} verified")


@main.command("show")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--row", default=0, show_default=True, type=int, help="row across all shards (negative: from the end)")
@click.option(
    "--strategy", default="instruction_tuning", show_default=True, help="strategy whose loss tokens are marked"
)
@click.option("--tokenizer", default=None, type=click.Path(), help="tokenizer to decode with [default: the manifest's]")
def show_cmd(output, row, strategy, tokenizer) -> None:  # fmt: skip
    """The tokens of one packed row, coloured by role; loss tokens underlined."""
    from .show import show_row

    try:
        show_row(output, row, strategy, tokenizer=tokenizer, console=out)
    except (FileNotFoundError, IndexError, ValueError, OSError) as e:
        _fail(str(e))
