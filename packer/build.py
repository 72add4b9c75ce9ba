"""``packer build`` as a Python API: records -> segments -> tokens -> rows -> shards.

    >>> from packer import build
    >>> manifest = build(["data.json"], "shards/", tokenizer="path/to/model", seq_len=4096)  # doctest: +SKIP
    >>> manifest["counts"]                                                                  # doctest: +SKIP
    {'records': 1000, 'packed': 997, 'truncated': 0, 'rejected': {'empty_output': 3}, ...}

Every input record ends up in the shards or in ``rejected.jsonl`` with its
reason: ``records == packed + sum(rejected.values())`` (``+ unsampled`` with a mixture, ``mix``).

Output is atomic and nothing of the user's is lost: the build writes into a
staging directory beside the target and swaps it in when the manifest is
written (:mod:`packer.outdir`), so a failed or killed build leaves the target
as it was, and only packer's own files are ever replaced. Everything that can
be checked before writing (inputs, tokenizer, template, options, the target)
is checked first.

The build is three stages, each a module of its own that another executor can
call (:mod:`packer.part` documents the data of each)::

    map     packer.part.map_part(spec, part, workdir)  -> PartSummary    one per part of the input
    gather  packer.combine.combine(summaries, ...)     -> Combined       duplicates, losses, packing
    write   packer.write.write_output(...), then packer.manifest         shards, documents, rejections

By default this function maps the input as one part in this process, with
the tokenizer encoding batch k+1 in a worker thread while this thread labels
batch k; with ``workers`` (or ``part_bytes``) the input is cut into parts fixed
by the input (:mod:`packer.plan`) and an engine (:mod:`packer.engine`) maps
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import roles as R
from .combine import EvalSplit, Mix, combine
from .engine import ENGINES, Engine, LocalEngine, make_engine
from .formats import check_columns, check_inputs
from .inputs import expand_inputs
from .layout import file_sha256
from .loader import difference_note
from .manifest import make_manifest, up_to_date, write_manifest
from .options import (
    ALGORITHMS,
    BACKENDS,
    BLANK_TURN_POLICIES,
    DEFAULT_SHARD_BYTES,
    LEADING_ASSISTANT_POLICIES,
    LOADERS,
    OVERLONG_POLICIES,
    PACK_SCOPES,
    SYSTEM_POLICIES,
    TEMPLATE_CHOICES,
)
from .outdir import checkpoint, disk_full
from .part import MapSpec, Part, PartSummary, map_part, parts_of, resolve_template
from .plan import DEFAULT_PART_BYTES, plan_inputs
from .publish import check_output_target, hold_output, make_staging
from .records import BuildError, Rejection
from .spill import remove_spill
from .templates import ChatTemplate, TemplateDrift
from .tiktoken_core import TokenizerDrift
from .tokenize import TokenizerInfo, choose_backend, load_tokenizer
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


__all__ = ["BuildEvents", "build", "resolve_template"]


def build(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | TokenizerInfo,
    template: str = "auto",
    fmt: str | None = None,
    columns: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    seq_len: int = 4096,
    strategies: Sequence[str] = (),
    packing: str = "bfd",
    overlong: str = "drop",
    overwrite: bool = False,
    strict: bool = False,
    dedupe: bool = False,
    max_rejected: float | None = None,
    tokenizer_loader: str | None = None,
    system: str = "merge",
    blank_turns: str = "reject",
    leading_assistant: str = "drop",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    batch_size: int = 512,
    workers: int = 1,
    engine: str | Engine = "process",
    part_bytes: int | None = None,
    scratch: str | os.PathLike | None = None,
    cuts: Mapping[int, Sequence[int]] | None = None,
    pack_scope: str = "global",
    tokenizer_backend: str = "auto",
    eval_fraction: float | None = None,
    eval_records: int | None = None,
    seed: int = 0,
    mix: Sequence[float] | None = None,
    wait: bool = False,
    events: BuildEvents | None = None,
) -> dict:
    """Build packed shards from instruction data; return the manifest.

    ``columns`` maps the fields of the record formats onto your column names
    (``{"instruction": "question", "output": "answer"}``; ``role`` / ``content``
    for a conversation's turns; a dotted name is a path into nested objects):
    every input is read through it, a record missing a mapped column is
    rejected (``missing_field``). ``strategies`` adds user strategies (``"name=role,role"``) to the
    built-in ones. ``overlong``: a document longer than ``seq_len`` is
    dropped (``drop``) or cut to ``seq_len`` tokens (``truncate``; a cut
    document left with no response token is rejected as ``overlong_no_loss``).
    Exact duplicate conversations are kept and counted (``counts.duplicates``);
    with ``dedupe`` every copy after the first is rejected as ``duplicate``.
    ``leading_assistant``: an assistant turn opening a conversation (before any user turn) is dropped and
    counted (``"drop"``), or kept and trained where the template renders it (``"keep"``); a conversation of
    system and assistant messages only packs either way, its system message the prompt.
    ``max_rejected``: fail, writing nothing, when more than this share of
    the records is rejected or truncated, or of their tokens is cut (without
    it the build warns past :data:`~packer.options.WARN_LOST_SHARE`).
    ``workers``: map the input's parts (and write the shards) in this many worker
    processes; ``engine="ray"`` runs them on a Ray cluster instead (or pass an
    :class:`~packer.engine.Engine` of your own; :mod:`packer.engine`).
    The input is cut into parts of about ``part_bytes`` (default
    :data:`~packer.plan.DEFAULT_PART_BYTES` when there is more than one worker, else one
    part) or at the byte offsets ``cuts`` (input index -> offsets; for tests),
    whatever the number of workers (:mod:`packer.plan`): the output is the same, byte
    for byte, for any parts, workers and engine. ``pack_scope="part"``: pack each
    part's documents alone (no row mixes parts; for inputs too large for one driver
    to pack): the rows then depend on ``part_bytes``, never on the workers.
    ``tokenizer_backend``: ``"auto"`` encodes with the tiktoken core where the tokenizer
    qualifies (:mod:`packer.tiktoken_core`: byte-level BPE it provably reproduces, 2-6x
    faster), else with ``tokenizers``; ``"tiktoken"`` forces the core (a BuildError where
    the tokenizer does not qualify), ``"tokenizers"`` the library. The core's builds check
    a sample of records against ``tokenizers`` as they run (any difference: the build
    starts over with ``tokenizers``); the ids are the same either way, the manifest says
    ``tokenizer.backend`` where the core made them.
    ``tokenizer_loader``: ``"file"`` (the default) or ``"transformers"`` (:mod:`packer.loader`); where the
    two give other ids for the build's first records, a build that left it to the default warns, saying
    which to choose, and one that chose says so in an info line (``events.on_info``).
    ``scratch``: the local folder an output URI (``s3://...``) is staged in (spill files, shards) before it
    is uploaded, manifest last (:mod:`packer.publish`); default ``tempfile.gettempdir()``. A local output is
    staged beside itself. Inputs may be URIs too (``s3://bucket/data/*.jsonl``; :mod:`packer.fsio`).
    ``eval_fraction`` (in (0, 1)) or ``eval_records`` (N): hold out that share
    of the packable records (by a hash of ``(seed, doc_id)``, so within
    sampling error) or exactly N of them as an ``eval`` split, packed into
    shards of its own (:mod:`packer.combine`; ``PackedDataset(out, split="eval")``).
    ``mix``: one weight ``w >= 0`` per input, in order: each record of that input is packed ``floor(w)``
    times, plus once more with probability ``frac(w)`` (by a hash of ``(seed, doc_id)``); a record used 0
    times is ``unsampled`` (:class:`packer.combine.Mix`; the manifest's ``mix``).
    ``output`` is replaced only if it is empty, a packer output built with
    the same key (then nothing is done) or, with ``overwrite``, any packer
    output; a folder holding anything else is refused.
    One build of an output at a time: while another process builds it, the build fails at once naming that
    process, or with ``wait`` waits for it to finish and then looks at the output again (a local output; on
    object storage no lock exists: :mod:`packer.publish`).
    """
    t0 = time.perf_counter()
    ev = events or BuildEvents()
    loader_chosen = tokenizer_loader is not None  # else the default, and a difference between loaders warns
    tokenizer_loader = tokenizer_loader or "file"
    # everything that can fail is checked before anything is written
    if not inputs:
        raise BuildError("no input files given")
    if seq_len < 2:
        raise BuildError(f"--seq-len must be at least 2, not {seq_len}")
    if packing not in ALGORITHMS:
        raise BuildError(f"unknown packing {packing!r}; choose {'|'.join(ALGORITHMS)}")
    if overlong not in OVERLONG_POLICIES:
        raise BuildError(f"unknown overlong policy {overlong!r}; choose {'|'.join(OVERLONG_POLICIES)}")
    if template not in TEMPLATE_CHOICES:
        raise BuildError(f"unknown template {template!r}; choose {'|'.join(TEMPLATE_CHOICES)}")
    for name, value, choices in (("--tokenizer-loader", tokenizer_loader, LOADERS), ("--system", system,
                                 SYSTEM_POLICIES), ("--blank-turns", blank_turns, BLANK_TURN_POLICIES),
                                ("--leading-assistant", leading_assistant, LEADING_ASSISTANT_POLICIES)):
        if value not in choices:
            raise BuildError(f"unknown {name} {value!r}; choose {'|'.join(choices)}")
    if workers < 1:
        raise BuildError(f"--workers must be at least 1, not {workers}")
    if isinstance(engine, str) and engine not in ENGINES:
        raise BuildError(f"unknown engine {engine!r}; choose {'|'.join(ENGINES)}")
    if tokenizer_backend not in BACKENDS:
        raise BuildError(f"unknown --tokenizer-backend {tokenizer_backend!r}; choose {'|'.join(BACKENDS)}")
    if pack_scope not in PACK_SCOPES:
        raise BuildError(f"unknown --pack-scope {pack_scope!r}; choose {'|'.join(PACK_SCOPES)}")
    if part_bytes is not None and part_bytes < 1:
        raise BuildError(f"--part-size must be at least 1 byte, not {part_bytes}")
    if max_rejected is not None and not 0 <= max_rejected <= 1:
        raise BuildError(f"--max-rejected is a fraction from 0 to 1, not {max_rejected}")
    eval_split = None
    if eval_fraction is not None or eval_records is not None:
        eval_split = EvalSplit(eval_fraction, eval_records, seed)
        eval_split.check()
    mixture = None
    if mix is not None:
        mixture = Mix(tuple(mix), seed)
        mixture.check(len(inputs))
    try:
        strategy_table = R.strategy_table(strategies)
    except ValueError as e:
        raise BuildError(str(e)) from None
    column_map = check_columns(columns)
    if mixture is not None:  # a datasets save_to_disk folder: its data files, each with the folder's weight
        expanded = [expand_inputs([p]) for p in inputs]
        mixture = Mix(tuple(w for w, files in zip(mixture.weights, expanded, strict=True) for _ in files), seed)
    inputs = expand_inputs(inputs)  # a datasets save_to_disk folder: its data files
    formats = check_inputs(inputs, fmt, column_map)
    target = check_output_target(output, inputs)  # object storage: a URI's target (packer.publish)
    # one build of a target at a time: the second fails naming the first, or waits for it (packer.outdir)
    with hold_output(target, output, inputs, wait=wait, on_wait=ev.notice) as target:
        tok = tokenizer if isinstance(tokenizer, TokenizerInfo) else load_tokenizer(tokenizer, loader=tokenizer_loader)
        tpl = resolve_template(template, tok, system=system)
        backend = choose_backend(tok, tokenizer_backend)
        key = {
            "inputs": [file_sha256(p) for p in inputs],
            "format": fmt,
            **({"columns": dict(column_map)} if column_map else {}),
            "tokenizer": tok.sha256,
            "tokenizer_loader": [tok.loader, tok.transformers_version],
            "template": tpl.sha256,
            "system": system,
            "blank_turns": blank_turns,
            # a later option: in the key only where it is not its default, so earlier builds keep their key
            **({"leading_assistant": leading_assistant} if leading_assistant != "drop" else {}),
            "seq_len": seq_len,
            "strategies": {k: list(v) for k, v in strategy_table.items()},
            "packing": packing,
            "overlong": overlong,
            "dedupe": dedupe,
            "shard_bytes": shard_bytes,
            **({"eval": eval_split.key()} if eval_split is not None else {}),
            **({"mix": mixture.key()} if mixture is not None else {}),
            # packing each part alone makes the rows depend on the parts: their size is part of the key then
            **({"pack_scope": {"part_bytes": part_bytes or DEFAULT_PART_BYTES,
                               "cuts": {str(k): sorted(v) for k, v in cuts.items()} if cuts is not None else None}}
               if pack_scope == "part" else {}),
        }
        if target.manifest is not None and not overwrite:
            if up_to_date(target.path, target.manifest, key):
                ev.notice(f"{output}: already built from the same inputs and options; nothing to do")
                return target.manifest
            raise BuildError(f"{output}: holds an earlier packer output built from other inputs or options; "
                             "add --overwrite to replace it, or write to another folder with -o")

        spec = MapSpec(
            tokenizer=tok.source, tokenizer_sha256=tok.sha256, tokenizer_loader=tok.loader, template=template,
            system=system, blank_turns=blank_turns, leading_assistant=leading_assistant, fmt=fmt, columns=column_map,
            seq_len=seq_len, overlong=overlong, strict=strict, dedupe=dedupe, batch_size=max(1, batch_size),
            backend=backend,
        )
        names = [str(p) for p in inputs]
        staging = make_staging(target, scratch)  # object storage: staged under scratch, uploaded by commit()
        if ev.on_start:
            ev.on_start()
        runner = make_engine(engine, workers) if isinstance(engine, str) else engine
        try:
            if isinstance(runner, LocalEngine) and part_bytes is None and cuts is None and pack_scope == "global":
                todo = [Part(tuple(names))]  # the whole input as one part: nothing to count first
            else:
                planned = plan_inputs(names, part_bytes or DEFAULT_PART_BYTES, cuts=cuts, scan=runner.map,
                                      on_progress=lambda done, total: ev.progress("planning", done, total))
                todo = parts_of(names, planned, formats)
            summaries, tpl, spec = _map(todo, spec, staging.path, tok, tpl, ev, runner)
            manifest = _gather_and_write(summaries, spec, staging.path, tok=tok, tpl=tpl, key=key, inputs=names,
                                         strategy_table=strategy_table, packing=packing, max_rejected=max_rejected,
                                         eval_split=eval_split, mix=mixture, shard_bytes=shard_bytes, events=ev, t0=t0,
                                         engine=runner, pack_scope=pack_scope,
                                         loader_chosen=loader_chosen)
            staging.commit()
            return manifest
        except BaseException as e:
            full = disk_full(e, Path(staging.path), names, output, target.path)
            staging.discard()
            if full is not None:
                raise full from None
            raise
        finally:
            if isinstance(engine, str):  # an engine passed in is the caller's to close
                runner.close()


def _map(
    parts: Sequence[Part], spec: MapSpec, workdir: Path, tok: TokenizerInfo, tpl: ChatTemplate, ev: BuildEvents,
    runner: Engine,
) -> tuple[list[PartSummary], ChatTemplate, MapSpec]:
    """The map stage over ``parts``, and the template and spec that made it. A template found to assemble some
    record wrongly (:class:`TemplateDrift`), or the tiktoken core found to encode a checked record otherwise
    than ``tokenizers`` (:class:`TokenizerDrift`), is one decision for the whole build: every part is mapped
    again with every record rendered by Jinja, or encoded by ``tokenizers``."""
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
            if spec.backend == "tokenizers":
                raise
            ev.notice(f"{e}; building again with every record encoded by tokenizers")
            spec = replace(spec, backend="tokenizers")
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
    summaries: Sequence[PartSummary], spec: MapSpec, workdir: Path, *, tok: TokenizerInfo, tpl: ChatTemplate,
    key: dict, inputs: list[str], strategy_table: dict[str, tuple[str, ...]], packing: str,
    max_rejected: float | None, eval_split: EvalSplit | None, shard_bytes: int, events: BuildEvents, t0: float,
    mix: Mix | None = None, engine: Engine | None = None, pack_scope: str = "global", loader_chosen: bool = False,
) -> dict:
    """The gather and write stages: combine the parts, pack, write every file, the manifest last."""
    c = combine(summaries, spec, workdir, packing=packing, pack_scope=pack_scope, max_rejected=max_rejected,
                eval_split=eval_split, mix=mix, events=events)
    if c.loader_difference:  # a warning where the loader was left to the default, else an info line
        (events.info if loader_chosen else events.notice)(difference_note(tok, c.loader_difference, loader_chosen))
    if any(s.missing_end for s in summaries):
        events.notice(
            f"template {tpl.name!r} closes assistant turns with no special token of this tokenizer: "
            "the 'end' role is empty, so no strategy teaches the model to stop"
        )
    checkpoint("packed")
    written = write_output(workdir, c, strategy_table, shard_bytes=shard_bytes, events=events, engine=engine,
                           forced=any(s.forced_tokens for s in summaries))
    manifest = make_manifest(workdir, c, written, tok=tok, tpl=tpl, key=key, inputs=inputs,
                             strategy_table=strategy_table, seq_len=spec.seq_len, packing=packing,
                             overlong=spec.overlong, seconds=time.perf_counter() - t0)
    if spec.backend != "tokenizers":  # which core made the ids (absent: tokenizers)
        manifest["tokenizer"]["backend"] = spec.backend
    # the column map the inputs were read through, beside them ({} for none)
    at = list(manifest).index("inputs") + 1
    items = list(manifest.items())
    manifest = dict([*items[:at], ("columns", dict(spec.columns)), *items[at:]])
    checkpoint("manifest")
    write_manifest(workdir, manifest)
    return manifest
