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

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from ._version import __version__
from .options import (
    ALGORITHMS,
    BACKENDS,
    BLANK_TURN_POLICIES,
    DEFAULT_SEQ_LEN,
    DEFAULT_SHARD_BYTES,
    DEMO_TOKENIZER,
    ENGINES,
    FORMATS,
    LEADING_ASSISTANT_POLICIES,
    LOADERS,
    OVERLONG_POLICIES,
    PACK_SCOPES,
    SYSTEM_POLICIES,
    TEMPLATE_CHOICES,
)

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
            from .records import BuildError

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
@click.option(
    "--tokenizer", "tokenizer", type=click.Path(), default=None,
    help="model folder with tokenizer.json (+ tokenizer_config.json), or a tokenizer.json file "
    "[default: packer's tiny demo tokenizer, for trying packer only]",
)
@click.option(
    "--tokenizer-loader", default=None, type=click.Choice(LOADERS),
    help="which tokenizer behaviour the ids follow: file runs tokenizer.json as it is (tokenizers-based "
    "engines such as TGI, transformers 4); transformers asks the installed transformers (vLLM, SGLang, TRL; "
    "5.x differs for SentencePiece models such as Llama 2, Mistral, Phi-3). [default: file, with a warning "
    "where the two differ; choosing one silences it]",
)
@click.option(
    "--template", default="auto", show_default=True, type=click.Choice(TEMPLATE_CHOICES),
    help="auto: the tokenizer's chat_template if it has one, else alpaca",
)
@click.option(
    "--system", default="merge", show_default=True, type=click.Choice(SYSTEM_POLICIES),
    help="a system message under a template that refuses one (Mistral, Gemma): merge it into the first user "
    "turn (keeping the system role on its tokens), drop it, or reject the record; counted",
)
@click.option(
    "--blank-turns", default="reject", show_default=True, type=click.Choice(BLANK_TURN_POLICIES),
    help="a blank turn inside a conversation: reject the record, or drop the turn with the turn that answers "
    "it (counted in turns dropped)",
)
@click.option(
    "--leading-assistant", default="drop", show_default=True, type=click.Choice(LEADING_ASSISTANT_POLICIES),
    help="an assistant turn opening a conversation (before any user turn): drop it (counted in turns dropped), "
    "or keep and train it where the template renders it",
)
@click.option(
    "--format", "fmt", default=None, type=click.Choice(FORMATS), help="input format [default: detected per file]"
)
@click.option(
    "--columns", default=None, metavar="FIELD=COLUMN,...", callback=lambda ctx, param, value: _columns(value),
    help="read your column names as the formats' fields, e.g. instruction=question,output=answer or "
    "messages=conversation.turns,role=from,content=text (a dotted name is a path into nested objects)",
)
@click.option("--seq-len", default=DEFAULT_SEQ_LEN, show_default=True, type=click.IntRange(min=2))
@click.option(
    "--strategy", "strategies", multiple=True, metavar="NAME=ROLE,...",
    help="an extra masking strategy (repeatable), e.g. prompt_only=instruction,input",
)
@click.option(
    "--packing", default="bfd", show_default=True, type=click.Choice(ALGORITHMS),
    help="bfd: best-fit decreasing, ffd: first-fit decreasing, nextfit: keeps input order",
)
@click.option(
    "--overlong", default="drop", show_default=True, type=click.Choice(OVERLONG_POLICIES),
    help="records longer than --seq-len: drop them, or truncate (rejected if no response is left)",
)
@click.option(
    "--max-rejected", type=click.FloatRange(0, 1), default=None, metavar="FRACTION",
    help="fail, writing nothing, if more than this share of the records is rejected or truncated, or of "
    "their tokens cut [default: warn past 0.05]",
)
@click.option(
    "--shard-size", default=DEFAULT_SHARD_BYTES // 2**20, show_default=True, type=click.IntRange(min=1),
    help="approximate maximum shard size in MiB",
)
@click.option("--overwrite", is_flag=True, help="replace an earlier packer output in the output folder")
@click.option("--wait", is_flag=True,
              help="if another build is writing the output folder, wait for it to finish (then look again) "
              "instead of failing")
@click.option("--strict", is_flag=True, help="fail on the first rejected record")
@click.option(
    "--dedupe", is_flag=True, help="reject exact duplicate conversations after the first (else: kept, counted)"
)
@click.option(
    "--eval-fraction", type=float, default=None, metavar="F",
    help="hold out this share (0 < F < 1) of the packable records as an eval split, chosen by record from "
    "--seed: PackedDataset(out, split='eval')",
)
@click.option("--eval-records", type=int, default=None, metavar="N",
              help="hold out exactly N packable records as the eval split (instead of --eval-fraction)")
@click.option("--seed", type=int, default=0, show_default=True,
              help="which records the eval split holds and a mixture (--mix) samples")
@click.option("--mix", "mix", is_flag=True,
              help="the INPUTS are PATH:WEIGHT (--mix a.jsonl:1.0 b.json:0.3): each record of an input is packed "
              "floor(WEIGHT) times, plus once with probability frac(WEIGHT) (by --seed)")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="map the input and write the shards in N worker processes (all cores: --workers $(nproc)); the "
              "output is the same, byte for byte, for any N")
@click.option("--engine", default="process", show_default=True, type=click.Choice(ENGINES),
              help="who runs the workers: processes on this machine, or a Ray cluster (pip install 'packer[ray]'; "
              "RAY_ADDRESS names the cluster)")
@click.option("--part-size", default=None, type=click.IntRange(min=1), metavar="MiB",
              help="cut the input into parts of about this size, whatever --workers [default: 64 with more than one "
              "worker or Ray, else one part]")
@click.option("--scratch", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="local folder an output URI (-o s3://bucket/shards) is built in before it is uploaded, manifest "
              "last [default: the system's temporary folder]")
@click.option("--pack-scope", default="global", show_default=True, type=click.Choice(PACK_SCOPES),
              help="global: pack all documents together; part: pack each part (--part-size) alone, no row mixing "
              "parts (for inputs too large for one machine to pack)")
@click.option("--tokenizer-backend", default="auto", show_default=True, type=click.Choice(BACKENDS),
              help="who encodes: auto = tiktoken for a byte-level BPE tokenizer it provably reproduces (Qwen, "
              "Llama 3, GPT-2; checked against tokenizers on a sample as the build runs), else the tokenizers "
              "library; tiktoken or tokenizers to force one")
@click.option("-q", "--quiet", is_flag=True,
              help="nothing on stdout (no summary), no progress, no per-record messages; warnings and errors still "
              "on stderr, and the exit code says how it went")
@_debug_option
def build_cmd(inputs, recipe, output, tokenizer, tokenizer_loader, template, system, blank_turns, leading_assistant,
              fmt, columns, seq_len, strategies, packing, overlong, max_rejected, shard_size, overwrite, strict, dedupe,
              eval_fraction, eval_records, seed, mix, workers, engine, part_size, pack_scope, scratch,
              tokenizer_backend, quiet, wait) -> None:
    """Pack INPUTS (JSON, JSONL, Parquet, HF datasets; Alpaca, ShareGPT, messages, prompt/completion or text) into
    the folder OUTPUT."""
    io = _io()
    opts = dict(output=output, tokenizer=tokenizer, tokenizer_loader=tokenizer_loader, template=template,
                system=system, blank_turns=blank_turns, leading_assistant=leading_assistant, fmt=fmt,
                columns=columns, seq_len=seq_len,
                strategies=strategies, packing=packing, overlong=overlong, max_rejected=max_rejected,
                shard_bytes=shard_size * 2**20, overwrite=overwrite, strict=strict, dedupe=dedupe,
                eval_fraction=eval_fraction, eval_records=eval_records, seed=seed, mix=None, workers=workers,
                engine=engine, part_bytes=None if part_size is None else part_size * 2**20, pack_scope=pack_scope,
                scratch=scratch, tokenizer_backend=tokenizer_backend, wait=wait)
    if recipe is not None:
        inputs, opts = _with_recipe(io, recipe, inputs, mix, opts)
    elif not inputs:
        ctx = click.get_current_context()
        raise click.MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == "inputs"))
    elif mix:
        inputs, opts["mix"] = _mix_inputs(io, inputs)
    else:
        _no_weights(io, inputs)
    output, tokenizer, template = opts["output"], opts["tokenizer"], opts["template"]
    demo = tokenizer is None
    if demo:
        if not (DEMO_TOKENIZER / "tokenizer.json").is_file():
            io.fail(f"no --tokenizer given, and packer's demo tokenizer is missing from {DEMO_TOKENIZER} "
                    "(a broken install?); pass --tokenizer <model folder>")
        tokenizer = DEMO_TOKENIZER

    from .build import build

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
    # "as it was" only of a folder that was there (a URI is not looked at for this)
    as_it_was = f"; {output} is as it was before this build" if "://" in str(output) or os.path.lexists(output) else ""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with progress:
            manifest = build(list(inputs), events=events, **{**opts, "tokenizer": tokenizer})
    except KeyboardInterrupt as e:
        _stopped(e, f"nothing was written{as_it_was}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not quiet:  # -q: the exit code says it went well; the manifest says what was built
        _print_summary(io, manifest, output, template, demo=Path(tokenizer) == DEMO_TOKENIZER)


def _with_recipe(io: _IO, recipe: str, inputs: tuple[str, ...], mix: bool,
                 opts: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The inputs and build options of ``--recipe``: the recipe's, overridden by the options given on the command
    line beside it; INPUTS or --mix beside it, or a mistake in it, is one line (exit 2)."""
    from click.core import ParameterSource

    from .recipe import RecipeError, load_recipe

    if inputs or mix:
        io.fail(f"--recipe {recipe}: give the inputs (and their weights) in the recipe's [[inputs]] tables, "
                f"not as {'--mix' if mix else 'INPUTS'} beside it", 2)
    try:
        kwargs = load_recipe(recipe)
    except RecipeError as e:
        io.fail(str(e), 2)
    paths = tuple(kwargs.pop("inputs"))
    try:
        _inputs(paths)
    except click.BadParameter as e:
        io.fail(f"{recipe}: inputs: {e.message}", 2)
    ctx = click.get_current_context()
    given = {"shard_bytes" if name == "shard_size" else name for name in ctx.params
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    return paths, {**opts, **kwargs, **{k: v for k, v in opts.items() if k in given}}


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
    from .formats import parse_columns
    from .records import BuildError

    try:
        return parse_columns(value)
    except BuildError as e:
        raise click.BadParameter(str(e).removeprefix("--columns").lstrip(": "), param_hint="--columns") from None


def _progress(io: _IO, quiet: bool) -> tuple[Any, Any]:
    """A rich progress display (bars with percentage and ETA, per phase) and the build events that drive it."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from .build import BuildEvents

    progress = Progress(
        TextColumn("{task.description:<8}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"),
        console=io.err, transient=True, disable=quiet or not io.err.is_terminal,
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
    io.out.print(f"tokenizer: {tok['source']} ({tok['vocab_size']:,} tokens){note}", markup=False, soft_wrap=True)
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

    from .layout import ShardError
    from .report import inspect, print_report, render_html

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
    from .verify import check_output

    io = _io()
    result = check_output(output, hashes=not no_hashes)
    for p in result.problems:
        io.err.print(f"problem: {p}", markup=False, soft_wrap=True)
    if result.problems:
        sys.exit(1)
    io.out.print(f"ok: {output}: {result.summary()}", markup=False, soft_wrap=True)


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
    from .show import show_row

    io = _io()
    try:
        show_row(output, row, strategy, tokenizer=tokenizer, console=io.out, split=split)
    except (FileNotFoundError, IndexError, ValueError, OSError) as e:
        io.fail(str(e))
