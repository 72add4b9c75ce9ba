"""``packer build`` as a Python API: records -> segments -> tokens -> rows -> shards.

    >>> from packer import build
    >>> manifest = build(["data.json"], "shards/", tokenizer="path/to/model", seq_len=4096)  # doctest: +SKIP
    >>> manifest["counts"]                                                                  # doctest: +SKIP
    {'records': 1000, 'packed': 997, 'truncated': 0, 'rejected': {'empty_output': 3}, ...}

Every input record ends up in the shards or in ``rejected.jsonl`` with its
reason: ``records == packed + sum(rejected.values())`` (``+ unsampled`` with a mixture, ``mix``).

Output is atomic and nothing of the user's is lost: the build writes into a
staging directory beside the target and swaps it in when the manifest is
written (:mod:`packer.pipeline.outdir`), so a failed or killed build leaves the target
as it was, and only packer's own files are ever replaced. Everything that can
be checked before writing (inputs, tokenizer, template, options, the target)
is checked first.

The build is three stages, each a module of its own that another executor can
call (:mod:`packer.pipeline.part` documents the data of each)::

    map     packer.pipeline.part.map_part(spec, part, workdir)  -> PartSummary    one per part of the input
    gather  packer.pipeline.combine.combine(summaries, ...)     -> Combined       duplicates, losses, packing
    write   packer.pipeline.write.write_output(...), then packer.pipeline.manifest         shards, documents, rejections

By default this function maps the input as one part in this process, with
the tokenizer encoding batch k+1 in a worker thread while this thread labels
batch k; with ``workers`` (or ``part_bytes``) the input is cut into parts fixed
by the input (:mod:`packer.read.plan`) and an engine (:mod:`packer.pipeline.engine`) maps
them and writes the shards. The output is the same for any parts, engine,
worker count and batch size. Memory does not grow with the input
beyond a few dozen bytes a record: tokens and rejection lines are spilled to
files in the staging folder as each batch is done, and shards are written a
record batch at a time from the spill.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..options import DEMO_TOKENIZER, BuildOptions
from ..output import roles as R
from ..output.layout import FORMAT_VERSION, file_sha256
from ..read.formats import check_columns, check_inputs
from ..read.inputs import expand_inputs
from ..read.plan import DEFAULT_PART_BYTES, plan_inputs
from ..read.records import KTO_FORMATS, PAIR_FORMATS, BuildError, Rejection
from ..tokens.loader import difference_note
from ..tokens.templates import ChatTemplate, TemplateDrift
from ..tokens.tiktoken_core import TokenizerDrift
from ..tokens.tokenize import TokenizerInfo, choose_backend, load_tokenizer
from .combine import EvalSplit, Mix, combine
from .engine import Engine, LocalEngine, make_engine
from .manifest import make_manifest, up_to_date, write_manifest
from .outdir import checkpoint, disk_full
from .part import MapSpec, Part, PartSummary, map_part, parts_of, resolve_template
from .publish import check_output_target, hold_output, make_staging
from .spill import remove_spill
from .write import write_output

_log = logging.getLogger("packer")


@dataclass
class BuildEvents:
    """Hooks the CLI uses for progress and messages; all optional."""

    on_records: Callable[[int, int], None] | None = None  # (records read, tokens so far)
    on_rejection: Callable[[Rejection], None] | None = None
    on_notice: Callable[[str], None] | None = None
    #: (phase, done, total): "planning" (cutting the input into parts, with workers) and "reading" in bytes of
    #: input, then "packing", then "writing" in documents
    on_progress: Callable[[str, int, int], None] | None = None
    #: every check passed and the build starts writing (its staging folder): a failure before is one error
    on_start: Callable[[], None] | None = None
    #: a note that needs no action (the CLI prints it on stderr, not with -q); warnings go to on_notice
    on_info: Callable[[str], None] | None = None

    def progress(self, phase: str, done: int, total: int) -> None:
        if self.on_progress:
            self.on_progress(phase, done, total)

    def notice(self, message: str) -> None:
        """A warning: to ``on_notice`` where set (the CLI's), else to the ``packer`` logger, so a build called
        from Python is never silent about what it dropped or fell back from."""
        if self.on_notice:
            self.on_notice(message)
        else:
            _log.warning(message)

    def info(self, message: str) -> None:
        if self.on_info:
            self.on_info(message)
        else:
            _log.info(message)


__all__ = ["BuildEvents", "BuildOptions", "build", "resolve_template"]


def build(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    options: BuildOptions | None = None,
    *,
    events: BuildEvents | None = None,
    **overrides: Any,
) -> dict:
    """Build packed shards from instruction data into the folder ``output``; return the manifest.

    The settings are ``options`` (a :class:`~packer.options.BuildOptions`), with any of its fields given as
    keywords beside it or in its place: ``build(["data.json"], "out", tokenizer="models/qwen", seq_len=2048)``.
    Each field is documented once, on :class:`~packer.options.BuildOptions` (``help(BuildOptions)``; the same
    names as the recipe keys and, with ``-`` for ``_``, the ``packer build`` flags). A wrong value raises
    :class:`~packer.options.OptionError` (a :class:`BuildError`) before anything is read. No tokenizer: packer's
    tiny demo tokenizer, for trying packer out only (a warning says so).

    ``output`` is replaced only if it is empty, a packer output built with the same key (then nothing is done)
    or, with ``overwrite``, any packer output; a folder holding anything else is refused. One build of an output
    at a time (``wait``: :mod:`packer.pipeline.publish`). ``events`` (:class:`BuildEvents`) receives progress,
    rejections and notices; without it, warnings go to the ``packer`` logger.
    """
    t0 = time.perf_counter()
    opts = (options or BuildOptions()).with_overrides(overrides)
    ev = events or BuildEvents()
    if not inputs:
        raise BuildError("no input files given")
    if opts.tokenizer is None:
        opts = replace(opts, tokenizer=DEMO_TOKENIZER)
        ev.notice("no tokenizer given: building with packer's tiny demo tokenizer (2,048 tokens), for trying packer "
                  "out; its shards are useless for training a model (tokenizer='path/to/model')")
    run = _prepare(inputs, opts, ev, t0)
    target = check_output_target(output, run.inputs)  # object storage: a URI's target (packer.pipeline.publish)
    # one build of a target at a time: the second fails naming the first, or waits for it (packer.pipeline.outdir)
    with hold_output(target, output, run.inputs, wait=opts.wait, on_wait=ev.notice) as target:
        tok = opts.tokenizer if isinstance(opts.tokenizer, TokenizerInfo) else \
            load_tokenizer(opts.tokenizer, loader=opts.tokenizer_loader or "file", download=opts.download)
        tpl = resolve_template(opts.template, tok, system=opts.system)
        key = _key(run, tok, tpl)
        if target.manifest is not None and not opts.overwrite:
            if up_to_date(target.path, target.manifest, key):
                ev.notice(f"{output}: already built from the same inputs and options; nothing to do")
                return target.manifest
            version = target.manifest.get("format", {}).get("version")
            if target.manifest.get("build_key") != key or version == FORMAT_VERSION:
                raise BuildError(f"{output}: holds an earlier packer output built from other inputs or options; "
                                 "add --overwrite to replace it, or write to another folder with -o")
            # the same build by an older packer: re-running the command is how its docs say to update it
            ev.notice(f"{output}: built from the same inputs and options in format version {version}; rebuilding it "
                      f"in version {FORMAT_VERSION}")
        return _run(replace(run, tok=tok, key=key), target, output, tpl)


@dataclass(frozen=True)
class _Build:
    """One build's checked settings and what they resolved to, handed from stage to stage."""

    opts: BuildOptions
    inputs: list[str]
    formats: list
    columns: tuple[tuple[str, str], ...]
    strategy_table: dict[str, tuple[str, ...]]
    eval_split: EvalSplit | None
    mix: Mix | None
    events: BuildEvents
    t0: float
    #: what the records are: "sft", "pairs" or "kto" (:func:`build_kind`)
    kind: str = "sft"
    tok: TokenizerInfo | None = None
    key: dict | None = None


def _prepare(inputs: Sequence[str | os.PathLike], opts: BuildOptions, ev: BuildEvents, t0: float) -> _Build:
    """Everything that can be checked before the tokenizer is loaded: the options that depend on each other,
    the strategies, the column map, the inputs (their files and formats)."""
    eval_split = None
    if opts.eval_fraction is not None or opts.eval_records is not None:
        eval_split = EvalSplit(opts.eval_fraction, opts.eval_records, opts.seed)
        eval_split.check()
    mixture = None
    if opts.mix is not None:
        mixture = Mix(tuple(opts.mix), opts.seed)
        mixture.check(len(inputs))
    try:
        strategy_table = R.strategy_table(opts.strategy)
    except ValueError as e:
        raise BuildError(str(e)) from None
    column_map = check_columns(opts.columns)
    if mixture is not None:  # a datasets save_to_disk folder: its data files, each with the folder's weight
        expanded = [expand_inputs([p]) for p in inputs]
        mixture = Mix(tuple(w for w, files in zip(mixture.weights, expanded, strict=True) for _ in files), opts.seed)
    paths = expand_inputs(inputs)  # a datasets save_to_disk folder: its data files
    formats = check_inputs(paths, opts.format, column_map)
    kind = build_kind([str(p) for p in paths], formats)
    if kind != "sft" and opts.overlong == "split":
        what = "preference pairs" if kind == "pairs" else "KTO records"
        raise BuildError(f"--overlong split: {paths[0]} holds {what}, which are not split between exchanges; use "
                         "--overlong drop or truncate")
    return _Build(opts, [str(p) for p in paths], formats, column_map, strategy_table, eval_split, mixture, ev, t0,
                  kind)


def build_kind(paths: Sequence[str], formats: Sequence[str]) -> str:
    """What a build's records are, from its inputs' formats: "pairs" (preference pairs, every format one of
    :data:`~packer.read.records.PAIR_FORMATS`), "kto" (labelled completions) or "sft"; a BuildError naming two
    inputs of different kinds, which one output cannot hold.

    >>> build_kind(["a.json", "b.jsonl"], ["ranking", "preference"])
    'pairs'
    """
    kinds = ["pairs" if f in PAIR_FORMATS else "kto" if f in KTO_FORMATS else "sft" for f in formats]
    for path, fmt, kind in zip(paths, formats, kinds, strict=True):
        if kind != kinds[0]:
            raise BuildError(f"{path}: {fmt} records ({kind}) and {paths[0]}: {formats[0]} records ({kinds[0]}) "
                             "cannot go into one output: build them apart")
    return kinds[0] if kinds else "sft"


def _key(run: _Build, tok: TokenizerInfo, tpl: ChatTemplate) -> dict:
    """The build key: what the output depends on (an output built with the same key is up to date)."""
    o = run.opts
    return {
        "inputs": [file_sha256(p) for p in run.inputs],
        "format": o.format,
        **({"columns": dict(run.columns)} if run.columns else {}),
        "tokenizer": tok.sha256,
        "tokenizer_loader": [tok.loader, tok.transformers_version],
        "template": tpl.sha256,
        "system": o.system,
        "blank_turns": o.blank_turns,
        # a later option: in the key only where it is not its default, so earlier builds keep their key
        **({"leading_assistant": o.leading_assistant} if o.leading_assistant != "drop" else {}),
        **({"kind": run.kind} if run.kind != "sft" else {}),
        **({"pairs": o.pairs} if run.kind == "pairs" else {}),
        "seq_len": o.seq_len,
        "strategies": {k: list(v) for k, v in run.strategy_table.items()},
        "packing": o.packing,
        "overlong": o.overlong,
        "dedupe": o.dedupe,
        "shard_bytes": o.shard_bytes,
        **({"eval": run.eval_split.key()} if run.eval_split is not None else {}),
        **({"mix": run.mix.key()} if run.mix is not None else {}),
        # packing each part alone makes the rows depend on the parts: their size is part of the key then
        **({"pack_scope": {"part_bytes": o.part_bytes or DEFAULT_PART_BYTES,
                           "cuts": {str(k): sorted(v) for k, v in o.cuts.items()} if o.cuts is not None else None}}
           if o.pack_scope == "part" else {}),
    }


def _spec(run: _Build) -> MapSpec:
    """What a worker needs to map a part: the options it takes, as plain values."""
    o, tok = run.opts, run.tok
    assert tok is not None
    return MapSpec(
        tokenizer=tok.source, tokenizer_sha256=tok.sha256, tokenizer_loader=tok.loader, template=o.template,
        system=o.system, blank_turns=o.blank_turns, leading_assistant=o.leading_assistant, fmt=o.format,
        columns=run.columns, seq_len=o.seq_len, overlong=o.overlong, strict=o.strict, dedupe=o.dedupe,
        batch_size=max(1, o.batch_size), backend=choose_backend(tok, o.tokenizer_backend), kind=run.kind,
        pairs=o.pairs,
    )


def _run(run: _Build, target: Any, output: str | os.PathLike, tpl: ChatTemplate) -> dict:
    """Map, gather and write into a staging folder, then swap it in; a failure discards the staging folder."""
    o, ev = run.opts, run.events
    spec = _spec(run)
    staging = make_staging(target, o.scratch)  # object storage: staged under scratch, uploaded by commit()
    if ev.on_start:
        ev.on_start()
    runner = make_engine(o.engine, o.workers) if isinstance(o.engine, str) else o.engine
    try:
        if isinstance(runner, LocalEngine) and o.part_bytes is None and o.cuts is None and o.pack_scope == "global":
            todo = [Part(tuple(run.inputs))]  # the whole input as one part: nothing to count first
        else:
            planned = plan_inputs(run.inputs, o.part_bytes or DEFAULT_PART_BYTES, cuts=o.cuts, scan=runner.map,
                                  on_progress=lambda done, total: ev.progress("planning", done, total))
            todo = parts_of(run.inputs, planned, run.formats)
        summaries, tpl, spec = _map(todo, spec, staging.path, run.tok, tpl, ev, runner)
        manifest = _gather_and_write(run, summaries, spec, staging.path, tpl, runner)
        staging.commit()
        return manifest
    except BaseException as e:
        full = disk_full(e, Path(staging.path), run.inputs, output, target.path)
        staging.discard()
        if full is not None:
            raise full from None
        raise
    finally:
        if isinstance(o.engine, str):  # an engine passed in is the caller's to close
            runner.close()


def _map(
    parts: Sequence[Part], spec: MapSpec, workdir: Path, tok: TokenizerInfo, tpl: ChatTemplate, ev: BuildEvents,
    runner: Engine,
) -> tuple[list[PartSummary], ChatTemplate, MapSpec]:
    """The map stage over ``parts``, and the template and spec that made it. A template found to assemble some
    record wrongly (:class:`TemplateDrift`), or the tiktoken core found to encode a checked record otherwise
    than ``tokenizers``, or the walk of pieces to span its tokens otherwise than ``Encoding.offsets``
    (:class:`TokenizerDrift`), is one decision for the whole build: every part is mapped again with every
    record rendered by Jinja, encoded by ``tokenizers``, or labelled from offsets."""
    while True:
        try:
            return _map_with(parts, spec, workdir, tok, tpl, ev, runner), tpl, spec
        except TemplateDrift as e:
            if not spec.assemble:
                raise
            ev.notice(f"{e}; building again with every record rendered by the template")
            spec = replace(spec, assemble=False)
            tpl = spec.chat_template(tok)
        except TokenizerDrift as e:
            # the tiktoken core's ids: tokenizers encodes; the walk of pieces' spans: offsets label
            after = {"tiktoken": "tokenizers", "tokenizers": "offsets"}.get(spec.backend)
            if after is None:
                raise
            ev.notice(f"{e}; building again with every record "
                      f"{'encoded by tokenizers' if after == 'tokenizers' else 'labelled from its offsets'}")
            spec = replace(spec, backend=after)
        remove_spill(workdir)


def _map_with(
    parts: Sequence[Part], spec: MapSpec, workdir: Path, tok: TokenizerInfo, tpl: ChatTemplate, ev: BuildEvents,
    runner: Engine,
) -> list[PartSummary]:
    if isinstance(runner, LocalEngine):  # here, with the build's tokenizer, template and events
        out: list[PartSummary] = []
        for p in parts:
            if p.first_doc_id < 0:  # after a part whose records were not counted
                p = replace(p, first_doc_id=out[-1].part.first_doc_id + len(out[-1]) if out else 0)
            out.append(map_part(spec, p, workdir, tok=tok, tpl=tpl, events=ev))
        return out
    # elsewhere: progress as parts finish; their first rejections said in input order once all are done
    total = sum(p.nbytes for p in parts)
    done = [0, 0, 0]  # bytes, records, tokens

    def on_done(i: int, s: PartSummary) -> None:
        done[0] += parts[i].nbytes
        done[1] += len(s)
        done[2] += s.spilled_tokens
        if ev.on_records:
            ev.on_records(done[1], done[2])
        ev.progress("reading", done[0], total)

    ev.progress("reading", 0, total)
    summaries = runner.map(map_part, [(spec, p, str(workdir)) for p in parts], on_done)
    if ev.on_rejection:
        for s in summaries:
            for rej in s.echo:
                ev.on_rejection(rej)
    return summaries


def _gather_and_write(
    run: _Build, summaries: Sequence[PartSummary], spec: MapSpec, workdir: Path, tpl: ChatTemplate, engine: Engine,
) -> dict:
    """The gather and write stages: combine the parts, pack, write every file, the manifest last."""
    o, events, tok = run.opts, run.events, run.tok
    assert tok is not None and run.key is not None
    c = combine(summaries, spec, workdir, packing=o.packing, pack_scope=o.pack_scope, max_rejected=o.max_rejected,
                eval_split=run.eval_split, mix=run.mix, events=events)
    if c.loader_difference:  # a warning where the loader was left to the default, else an info line
        chosen = o.tokenizer_loader is not None
        (events.info if chosen else events.notice)(difference_note(tok, c.loader_difference, chosen))
    if any(s.missing_end for s in summaries):
        events.notice(
            f"template {tpl.name!r} closes assistant turns with no special token of this tokenizer: "
            "the 'end' role is empty, so no strategy teaches the model to stop"
        )
    checkpoint("packed")
    written = write_output(workdir, c, run.strategy_table, shard_bytes=o.shard_bytes, events=events, engine=engine,
                           forced=any(s.forced_tokens for s in summaries),
                           rows="separate" if run.kind == "pairs" and o.pairs == "separate" else run.kind)
    manifest = make_manifest(workdir, c, written, tok=tok, tpl=tpl, key=run.key, inputs=run.inputs,
                             strategy_table=run.strategy_table, seq_len=spec.seq_len, packing=o.packing,
                             overlong=spec.overlong, seconds=time.perf_counter() - run.t0)
    if spec.backend != "tokenizers":  # tiktoken: which core made the ids; offsets: how labelled (absent: tokenizers)
        manifest["tokenizer"]["backend"] = spec.backend
    # the column map the inputs were read through, beside them ({} for none)
    at = list(manifest).index("inputs") + 1
    items = list(manifest.items())
    manifest = dict([*items[:at], ("columns", dict(spec.columns)), *items[at:]])
    if run.kind != "sft":  # what a row's documents are (docs/preference.md)
        manifest["kind"] = run.kind
        if run.kind == "pairs":
            manifest["pairs"] = o.pairs
    checkpoint("manifest")
    write_manifest(workdir, manifest)
    return manifest
