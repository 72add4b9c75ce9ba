"""The ``packer`` command line: a thin layer over the Python API.

Exit codes: 0 success; 1 the command failed (one line on stderr that says why
and what to do next); 2 wrong usage; 130 interrupted (Ctrl-C) and 143
terminated (SIGTERM), after which a build has left its output folder as it was.

Only click and :mod:`packer.options` are imported up front, and each command
imports what it needs, so ``packer --help`` starts at once and ``inspect``,
``show`` and ``verify`` never load numba. An unexpected error (a bug in packer)
is one line too; ``--debug`` or ``PACKER_DEBUG=1`` shows its traceback.
Output to a pipe that closes early (``| head``) stops quietly; the command
itself goes on and finishes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from ._version import __version__
from .options import DEMO_TOKENIZER, cli_options, export_options, shown_default

#: rejections echoed one by one before the rest are only counted
MAX_ECHOED_REJECTIONS = 10


class _Stream:
    """A text stream that goes quiet once its reader has gone (``| head``), so the command can finish."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._break()

    def _break(self) -> None:
        self.broken = True
        # the interpreter flushes the real stream at exit: aim its descriptor at /dev/null so that stays quiet
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def isatty(self) -> bool:
        return not self.broken and self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"


class _IO:
    """stdout and stderr of one command, as rich consoles over :class:`_Stream` (made per invocation)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.out = Console(file=_Stream(sys.stdout), highlight=False)  # type: ignore[arg-type]
        self.err = Console(file=_Stream(sys.stderr), highlight=False, stderr=True)  # type: ignore[arg-type]

    def say(self, message: str, style: str = "") -> None:
        self.err.print(message, style=style or None, markup=False, soft_wrap=True)

    def fail(self, message: str, code: int = 1) -> None:
        self.err.print(f"[bold red]error:[/] {_escape(message)}", soft_wrap=True)
        sys.exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _io() -> _IO:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, _IO):
        root.obj = _IO()
    return root.obj


def _debug() -> bool:
    return os.environ.get("PACKER_DEBUG", "") not in ("", "0")


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        os.environ["PACKER_DEBUG"] = "1"


_debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
    help="show the traceback of an unexpected error (also PACKER_DEBUG=1)",
)


class _Command(click.Command):
    def get_short_help_str(self, limit: int = 45) -> str:
        # each command's first line in full in `packer --help`, not cut with "..."
        return super().get_short_help_str(limit=1000)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that a build cleans up as it does on Ctrl-C."""


def _stopped(e: KeyboardInterrupt, detail: str = "") -> None:
    """One line for Ctrl-C (exit 130) or SIGTERM (exit 143)."""
    what = "terminated" if isinstance(e, _Terminated) else "interrupted"
    _io().say(f"{what}: {detail}" if detail else what)
    sys.exit(143 if isinstance(e, _Terminated) else 130)


class _Packer(click.Group):
    command_class = _Command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt as e:
            _stopped(e)
        except Exception as e:
            from .read.records import BuildError

            if isinstance(e, BuildError):
                _io().fail(str(e))
            if _debug():
                raise
            if isinstance(e, OSError) and e.strerror:  # the system said no (disk full, permissions): not a bug
                _io().fail(f"{e.filename}: {e.strerror}" if e.filename else e.strerror)
            _io().fail(f"unexpected {type(e).__name__}: {e} (a bug in packer: run again with --debug for the "
                       "traceback, and please report it)")


@click.group(cls=_Packer)
@click.version_option(__version__, prog_name="packer")
@_debug_option
def main() -> None:
    """Instruction-tuning data to packed, role-labelled Arrow shards."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the option ``name`` was given (on the command line or by an environment variable)."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _build_option(o: Any) -> Any:
    """The click option of one :class:`~packer.options.Option`."""
    kw: dict[str, Any] = {"help": o.help, "metavar": o.metavar}
    if o.kind in ("bool", "weights"):  # weights: --mix, a flag that makes each INPUT PATH:WEIGHT
        return click.option(o.flag, o.name, is_flag=True, help=o.help)
    if o.kind == "strings":
        return click.option(o.flag, o.name, multiple=True, **kw)
    if o.kind == "columns":
        return click.option(o.flag, o.name, default=None, callback=lambda ctx, param, value: _columns(value), **kw)
    if o.choices is not None:
        kw["type"] = click.Choice(o.choices)
    elif o.kind == "path":
        kw["type"] = click.Path()
    elif o.kind in ("int", "float"):
        rng = click.IntRange if o.kind == "int" else click.FloatRange
        bounded = o.minimum is not None or o.maximum is not None
        plain = int if o.kind == "int" else float
        kw["type"] = rng(o.minimum, o.maximum, min_open=o.open_minimum) if bounded else plain
    if o.default is None:  # say what "not given" means, where it means more than nothing
        shown = shown_default(o)
        kw["help"] += f"  [default: {shown}]" if shown != "none" else ""
    return click.option(o.flag, o.name, default=o.default, show_default=o.default is not None, **kw)


def _build_options(f: Any) -> Any:
    """Every ``packer build`` flag, made from :class:`~packer.options.BuildOptions` (one home per option)."""
    for o in reversed(list(cli_options())):
        f = _build_option(o)(f)
    return f


@main.command("build")
@click.argument("inputs", nargs=-1, type=click.Path(), callback=lambda ctx, param, value: _inputs(value))
@click.option(
    "--recipe", type=click.Path(dir_okay=False), default=None, metavar="RECIPE.toml",
    help="read the inputs (with weights, columns) and options from a TOML recipe file, in place of INPUTS; "
    "options given beside it override the recipe's",
)
@click.option(
    "-o", "--output", default="shards", show_default=True, type=click.Path(file_okay=False),
    help="output folder: created, or replaced if it holds a packer output (see --overwrite); "
    "a folder holding anything else is refused",
)
@_build_options
@click.option("-q", "--quiet", is_flag=True,
              help="nothing on stdout (no summary), no progress, no per-record messages; warnings and errors still "
              "on stderr, and the exit code says how it went")
@_debug_option
def build_cmd(inputs: tuple[str, ...], recipe: str | None, output: str, quiet: bool, **settings: Any) -> None:
    """Pack INPUTS (JSON, JSONL, Parquet, HF datasets; Alpaca, ShareGPT, messages, prompt/completion or text) into
    the folder OUTPUT."""
    io = _io()
    mix = settings.pop("mix")
    # only what was given: the rest is BuildOptions' default (or the recipe's)
    ctx = click.get_current_context()
    opts = {"output": output, **{k: v for k, v in settings.items() if _given(ctx, k)}}
    if recipe is not None:
        inputs, opts = _with_recipe(io, recipe, inputs, mix, opts)
    elif not inputs:
        raise click.MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == "inputs"))
    elif mix:
        inputs, opts["mix"] = _mix_inputs(io, inputs)
    else:
        _no_weights(io, inputs)
    output, tokenizer, template = opts.pop("output"), opts.get("tokenizer"), opts.get("template", "auto")
    demo = tokenizer is None
    if demo:
        if not (DEMO_TOKENIZER / "tokenizer.json").is_file():
            io.fail(f"no --tokenizer given, and packer's demo tokenizer is missing from {DEMO_TOKENIZER} "
                    "(a broken install?); pass --tokenizer <model folder>")
        tokenizer = DEMO_TOKENIZER

    from .pipeline.build import build

    progress, events = _events(io, quiet, output, demo)
    # "as it was" only of a folder that was there (a URI is not looked at for this)
    as_it_was = f"; {output} is as it was before this build" if "://" in str(output) or os.path.lexists(output) else ""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with progress, _LogLines(io):
            manifest = build(list(inputs), output, events=events, **{**opts, "tokenizer": tokenizer})
    except KeyboardInterrupt as e:
        _stopped(e, f"nothing was written{as_it_was}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not quiet:  # -q: the exit code says it went well; the manifest says what was built
        _print_summary(io, manifest, output, template, demo=Path(tokenizer) == DEMO_TOKENIZER)


class _LogLines:
    """The ``packer`` logger's warnings as the command's own ``warning:`` lines on stderr, for the duration."""

    def __init__(self, io: _IO) -> None:
        import logging

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                io.say(f"warning: {record.getMessage()}", style="yellow")

        self.logger = logging.getLogger("packer")
        self.handler = Handler(logging.WARNING)

    def __enter__(self) -> None:
        self.logger.addHandler(self.handler)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)


def _events(io: _IO, quiet: bool, output: str, demo: bool) -> tuple[Any, Any]:
    """The progress display and the build events that print rejections, warnings and notes."""
    echoed = 0

    def on_rejection(rej: Any) -> None:
        nonlocal echoed
        echoed += 1
        if quiet:
            return
        if echoed <= MAX_ECHOED_REJECTIONS:
            io.say(f"rejected: {rej.message()}")
        elif echoed == MAX_ECHOED_REJECTIONS + 1:
            io.say(f"... further rejections are not shown; {_join(output, 'rejected.jsonl')} lists them all "
                   "once the build completes")

    progress, events = _progress(io, quiet)
    events.on_rejection = on_rejection
    events.on_notice = lambda msg: io.say(f"warning: {msg}", style="yellow")
    if not quiet:
        events.on_info = lambda msg: io.say(f"note: {msg}")
    if demo:  # said once the build starts, so that an error before it stays one line
        events.on_start = lambda: io.say(
            "warning: no --tokenizer given: building with packer's tiny demo tokenizer (2,048 tokens, trained on "
            "the demo data), for trying packer out; its shards are useless for training a model. Pass "
            "--tokenizer <model folder> (with tokenizer.json) for real work.", style="bold yellow")
    return progress, events


def _with_recipe(io: _IO, recipe: str, inputs: tuple[str, ...], mix: bool,
                 opts: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The inputs and build options of ``--recipe``: the recipe's, overridden by the options given on the command
    line beside it (``opts``); INPUTS or --mix beside it, or a mistake in it, is one line (exit 2). A key under an
    older name is a warning line."""
    import warnings

    from .recipe import RecipeError, load_recipe

    if inputs or mix:
        io.fail(f"--recipe {recipe}: give the inputs (and their weights) in the recipe's [[inputs]] tables, "
                f"not as {'--mix' if mix else 'INPUTS'} beside it", 2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecationWarning)
            kwargs = load_recipe(recipe)
    except RecipeError as e:
        io.fail(str(e), 2)
    for w in caught:
        io.say(f"warning: {w.message}", style="yellow")
    paths = tuple(kwargs.pop("inputs"))
    try:
        _inputs(paths)
    except click.BadParameter as e:
        io.fail(f"{recipe}: inputs: {e.message}", 2)
    # the recipe's output wins over -o's default, not over an -o given beside it
    given = {k: v for k, v in opts.items() if k != "output" or _given(click.get_current_context(), "output")}
    return paths, {"output": opts["output"], **kwargs, **given}


def _split_weight(arg: str) -> tuple[str, str] | None:
    """``PATH:WEIGHT`` -> (PATH, WEIGHT), or None where ``arg`` has no ``:`` or is an existing path."""
    path, colon, weight = arg.rpartition(":")
    if not colon or not path or os.path.exists(arg):
        return None
    return path, weight


def _mix_inputs(io: _IO, args: tuple[str, ...]) -> tuple[tuple[str, ...], list[float]]:
    """``--mix``'s INPUTS, each PATH:WEIGHT, as paths and weights; a wrong one is one line (exit 2)."""
    paths, weights = [], []
    for arg in args:
        pair = _split_weight(arg)
        if pair is None:
            io.fail(f"--mix: {arg} has no weight; with --mix give every input as PATH:WEIGHT "
                    "(e.g. --mix a.jsonl:1.0 b.json:0.3), not plain inputs beside it", 2)
        path, text = pair  # type: ignore[misc]
        try:
            w = float(text)
        except ValueError:
            w = float("nan")
        if not (w >= 0 and w != float("inf")):
            io.fail(f"--mix: the weight {text!r} given to {path} is not a number >= 0 (1.0 = every record once)", 2)
        paths.append(path)
        weights.append(w)
    try:
        _inputs(tuple(paths))
    except click.BadParameter as e:
        io.fail(f"--mix: {e.message}", 2)
    return tuple(paths), weights


def _no_weights(io: _IO, args: tuple[str, ...]) -> None:
    """Inputs given as PATH:WEIGHT without --mix: one line saying to add it (exit 2)."""
    for arg in args:
        pair = _split_weight(arg)
        if pair is not None and os.path.exists(pair[0]):
            io.fail(f"{arg}: no such input; to weight inputs give --mix before them (--mix {arg} ...), "
                    "every input as PATH:WEIGHT", 2)


def _inputs(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The inputs; a folder is a usage error (exit 2) unless HF datasets wrote it (save_to_disk's state.json, or
    a DatasetDict's dataset_dict.json, which the build refuses naming its splits)."""
    for p in paths:
        hf = any(os.path.isfile(os.path.join(p, name)) for name in ("state.json", "dataset_dict.json"))
        if os.path.isdir(p) and not hf:
            raise click.BadParameter(f"{p}: is a directory; give the data files in it, or a folder written by HF "
                                     "datasets' save_to_disk (with state.json)", param_hint="INPUTS")
    return paths


def _columns(value: str | None) -> tuple[tuple[str, str], ...] | None:
    """``--columns`` as (field, column) pairs; a wrong one is a usage error (exit 2)."""
    if value is None:
        return None
    from .read.formats import parse_columns
    from .read.records import BuildError

    try:
        return parse_columns(value)
    except BuildError as e:
        raise click.BadParameter(str(e).removeprefix("--columns").lstrip(": "), param_hint="--columns") from None


def _progress(io: _IO, quiet: bool) -> tuple[Any, Any]:
    """A rich progress display (bars with percentage and ETA, per phase) and the build events that drive it;
    none with ``-q`` or where stderr is not a terminal (nor rich.progress imported: ~10 ms of a small build)."""
    from .pipeline.build import BuildEvents

    if quiet or not io.err.is_terminal:
        return contextlib.nullcontext(), BuildEvents()
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description:<8}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"), console=io.err, transient=True,
    )
    tasks: dict[str, Any] = {}
    counts = [0, 0]

    def on_progress(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total, detail="")
        detail = f"{counts[0]:,} records, {counts[1]:,} tokens" if phase == "reading" else ""
        progress.update(tasks[phase], completed=done, total=total, detail=detail)

    def on_records(records: int, tokens: int) -> None:
        counts[:] = records, tokens

    return progress, BuildEvents(on_records=on_records, on_progress=on_progress)


def _join(output: str, name: str) -> str:
    """A file of the output folder: a local path or within a URI (s3://bucket/out/rejected.jsonl)."""
    from .fsio import join

    return join(output, name)


def _print_summary(io: _IO, m: dict, output: str, template: str, *, demo: bool) -> None:
    from rich.table import Table

    c, t, p = m["counts"], m["tokens"], m["packing"]
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    tok, tpl = m["tokenizer"], m["template"]["name"]
    if template == "auto":
        tpl += (" (auto: the tokenizer's own chat_template)" if tpl == "tokenizer"
                else " (auto: the tokenizer has no chat_template, so the Alpaca layout)")
    # what was built from what, unwrapped whatever the length of the paths
    io.out.print(f"packer build -> {output}", markup=False, soft_wrap=True)
    note = ": the demo tokenizer, not for training" if demo else ""
    if tok.get("loader") == "transformers":
        note += f", ids from transformers {tok['transformers_version']}"
    at = f" at {tok['revision'][:12]}" if tok.get("revision") else ""  # a Hub id: the commit of its files
    io.out.print(f"tokenizer: {tok['source']}{at} ({tok['vocab_size']:,} tokens){note}", markup=False,
                 soft_wrap=True)
    io.out.print(f"template:  {tpl}", markup=False, soft_wrap=True)
    table.add_row("records read", f"{c['records']:,}")
    table.add_row("packed", f"{c['packed']:,}" + (f" ({c['truncated']:,} truncated)" if c["truncated"] else ""))
    n_rejected = sum(c["rejected"].values())
    table.add_row("rejected", f"{n_rejected:,}")
    for reason, n in c["rejected"].items():
        table.add_row(f"  {reason}", f"{n:,}")
    for reason, n in c["dropped_turns"].items():
        table.add_row(f"turns dropped: {reason}", f"{n:,}")
    if c.get("duplicates"):
        how = " (rejected)" if "duplicate" in c["rejected"] else " (kept; documents.arrow: duplicate_of)"
        table.add_row("exact duplicates", f"{c['duplicates']:,}{how}")
    if "unsampled" in c:
        table.add_row("unsampled (--mix)", f"{c['unsampled']:,}")
    for src in (m.get("mix") or {}).get("inputs", ()):
        table.add_row(f"  mix {Path(src['path']).name} x{src['weight']:g}",
                      f"{src['documents']:,} docs, {src['token_share']:.1%} of tokens")
    table.add_row("tokens", f"{t['total']:,}")
    for name, n in t["loss"].items():
        share = n / t["total"] if t["total"] else 0.0
        table.add_row(f"  loss tokens {name}", f"{n:,} ({share:.1%})")
    table.add_row("rows", f"{p['rows']:,} x {m['seq_len']} (lower bound {p['lower_bound_rows']:,})")
    table.add_row("packing efficiency", f"{p['efficiency']:.4f}")
    table.add_row("shards", f"{len(m['shards'])}")
    if m.get("eval"):
        e = m["eval"]
        table.add_row("eval split", f"{e['documents']:,} documents, {e['packing']['rows']:,} rows, "
                      f"{e['tokens']['total']:,} tokens, {len(e['shards'])} shards")
    table.add_row("time", f"{m['build_seconds']:.2f} s")
    io.out.print(table)
    if n_rejected or c["truncated"]:
        io.out.print(f"rejected and truncated records, with the reasons: {_join(output, 'rejected.jsonl')}",
                     markup=False, soft_wrap=True)


@main.command("inspect")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (schemas/report.schema.json)")
@click.option(
    "--html", "html_file", type=click.Path(dir_okay=False), default=None,
    help="write a self-contained HTML report with plots and sample rows (instead of the text report; with --json, "
    "beside the JSON)",
)
@click.option(
    "--strategy", default="instruction_tuning", show_default=True,
    help="strategy whose loss tokens the HTML sample rows mark",
)
@_debug_option
def inspect_cmd(output, as_json, html_file, strategy) -> None:
    """Mask statistics of a build OUTPUT: lengths, ratios, loss tokens per strategy."""
    import json

    from .inspect.report import inspect, print_report, render_html
    from .output.layout import ShardError

    io = _io()
    if html_file and not Path(html_file).resolve().parent.is_dir():
        io.fail(f"--html {html_file}: the folder {Path(html_file).parent} does not exist")
    try:
        report = inspect(output)
    except (ShardError, FileNotFoundError, KeyError, OSError) as e:
        io.fail(str(e))
    if strategy not in report["strategies"]:
        io.fail(f"unknown strategy {strategy!r}; this output has {', '.join(report['strategies'])}")
    if as_json:
        io.out.file.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    elif not html_file:  # --html asked for a file: stdout stays quiet
        print_report(report, io.out)
    if html_file:
        try:
            Path(html_file).write_text(render_html(report, output, strategy=strategy), encoding="utf-8")
        except OSError as e:
            io.fail(f"--html {html_file}: cannot write it: {e.strerror or e}")
        io.say(f"wrote {html_file}")


@main.command("verify")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--no-hashes", is_flag=True, help="check sizes and invariants only, not sha256")
@_debug_option
def verify_cmd(output, no_hashes) -> None:
    """Check a build OUTPUT: shard sizes and hashes, roles, masks, documents once each."""
    from .inspect.verify import check_output

    io = _io()
    result = check_output(output, hashes=not no_hashes)
    for p in result.problems:
        io.err.print(f"problem: {p}", markup=False, soft_wrap=True)
    if result.problems:
        sys.exit(1)
    io.out.print(f"ok: {output}: {result.summary()}", markup=False, soft_wrap=True)


def _export_options(f: Any) -> Any:
    """Every ``packer export`` flag, made from :class:`~packer.options.ExportOptions`."""
    for o in reversed(export_options()):
        f = _build_option(o)(f)
    return f


@main.command("export")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("-o", "--file", "path", required=True, type=click.Path(dir_okay=False), metavar="FILE.npy",
              help="the file to write (NeMo: a .npy; its pack metadata goes beside it unless --metadata names one)")
@_export_options
@click.option("-q", "--quiet", is_flag=True, help="nothing on stdout; errors still on stderr")
@_debug_option
def export_cmd(output: str, path: str, quiet: bool, **settings: Any) -> None:
    """Write a build OUTPUT in another trainer's format: NeMo's packed SFT file (--to nemo)."""
    from .export import export
    from .output.layout import ShardError

    io = _io()
    ctx = click.get_current_context()
    try:
        with _LogLines(io):
            done = export(output, path, **{k: v for k, v in settings.items() if _given(ctx, k)})
    except ShardError as e:  # a missing or broken output, no eval split: one line, like inspect's
        io.fail(str(e))
    if not quiet:
        io.out.print(f"wrote {done['file']}: {done['split']} split, {done['rows']:,} rows, {done['documents']:,} "
                     f"documents, {done['tokens']:,} tokens, {done['loss_tokens']:,} with loss ({done['strategy']}, "
                     f"loss_mask {done['loss_mask']})\nwrote {done['metadata']} (NeMo pack metadata)\nNeMo: "
                     f"PackedSequenceSpecs(packed_sequence_size={done['pack_size']}, packed_train_data_path=..., "
                     "packed_metadata_path=...); see docs/export.md", markup=False, soft_wrap=True)


@main.command("show")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--row", default=0, show_default=True, type=int, help="row across all shards (negative: from the end)")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "eval"]),
              help="show a row of the held-out eval split (built with --eval-fraction/--eval-records)")
@click.option(
    "--strategy", default="instruction_tuning", show_default=True, help="strategy whose loss tokens are marked"
)
@click.option("--tokenizer", default=None, type=click.Path(), help="tokenizer to decode with [default: the manifest's]")
@_debug_option
def show_cmd(output, row, split, strategy, tokenizer) -> None:
    """The tokens of one packed row, coloured by role; loss tokens underlined."""
    from .inspect.show import show_row

    io = _io()
    try:
        show_row(output, row, strategy, tokenizer=tokenizer, console=io.out, split=split)
    except (FileNotFoundError, IndexError, ValueError, OSError) as e:
        io.fail(str(e))


if __name__ == "__main__":  # python -m packer.cli ... (it did nothing without this)
    main(prog_name="packer")
