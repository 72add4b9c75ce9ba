"""Every option of a build, defined once: :class:`BuildOptions`.

The command line's ``packer build`` flags, the recipe file's keys, the keyword
arguments of :func:`packer.build` and the option table of the README are all
generated from the fields of :class:`BuildOptions`, so they cannot disagree::

    >>> from packer.options import BuildOptions
    >>> opts = BuildOptions(tokenizer="models/qwen", seq_len=2048, overlong="truncate")
    >>> opts.seq_len, opts.packing, opts.shard_bytes
    (2048, 'bfd', 268435456)
    >>> [o.flag for o in options()][:3]
    ['--tokenizer', '--tokenizer-loader', '--download']
    >>> BuildOptions(packing="best")
    Traceback (most recent call last):
    ...
    packer.options.OptionError: unknown --packing 'best'; choose bfd|ffd|nextfit

The field name is the recipe key and the ``build()`` keyword; the flag is the
field name with ``-`` for ``_``. Older names (``fmt``, ``strategies``,
``shard_bytes``, ``part_bytes``) are still accepted by ``build()`` and in recipes,
with a :class:`DeprecationWarning` (:data:`ALIASES`).

This module imports nothing heavy: the command line builds its options from it
before numpy, numba or the tokenizer stack are loaded (``packer --help`` starts
in a blink).
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .read.records import BuildError

if TYPE_CHECKING:
    from .pipeline.engine import Engine
    from .tokens.tokenize import TokenizerInfo

#: how a preference build lays out a pair (docs/preference.md)
PAIR_LAYOUTS: tuple[str, ...] = ("shared", "separate")
#: record formats of the inputs (see :mod:`packer.read.formats`)
FORMATS: tuple[str, ...] = ("alpaca", "sharegpt", "messages", "prompt_completion", "text", "preference",
                            "preference_implicit", "ranking", "ranking_messages", "kto", "kto_messages")
#: bin-packing algorithms (see :mod:`packer.pipeline.pack`)
ALGORITHMS: tuple[str, ...] = ("bfd", "ffd", "nextfit")
#: what happens to a record longer than ``seq_len``
OVERLONG_POLICIES: tuple[str, ...] = ("drop", "truncate", "split")
#: built-in chat templates; :data:`packer.tokens.templates.BUILTIN_TEMPLATES` holds their Jinja source
TEMPLATES: tuple[str, ...] = ("alpaca", "chatml", "llama3", "tulu", "mistral")
#: ``--template`` values: the tokenizer's own, the tokenizer's own else alpaca, or a built-in one
TEMPLATE_CHOICES: tuple[str, ...] = ("auto", "tokenizer", *TEMPLATES)
DEFAULT_SEQ_LEN = 4096
DEFAULT_SHARD_MIB = 256
DEFAULT_SHARD_BYTES = DEFAULT_SHARD_MIB * 2**20
#: a build warns when rejection or truncation removes more than this share of the records or tokens
WARN_LOST_SHARE = 0.05
#: the tokenizer a build uses when none is named: tiny (2,048 tokens, trained on the demo data), for trying
#: packer out, useless for training a model; it ships inside the package
DEMO_TOKENIZER = Path(__file__).resolve().with_name("demo_tokenizer")
#: how the tokenizer is loaded, so which tokenizer behaviour the ids follow: ``file`` runs tokenizer.json as it
#: is (what tokenizers-based engines and transformers 4 run); ``transformers`` asks the installed transformers
#: (5.x rebuilds SentencePiece-family tokenizers from their vocabulary and config)
LOADERS: tuple[str, ...] = ("file", "transformers")
#: a system message under a template that refuses one (Mistral's, Gemma's): merged into the first user turn
#: (its tokens keep the system role), dropped (counted), or the record rejected
SYSTEM_POLICIES: tuple[str, ...] = ("merge", "drop", "reject")
#: a blank turn inside a conversation: the record rejected, or the turn dropped with the turn that answers it
BLANK_TURN_POLICIES: tuple[str, ...] = ("reject", "drop")
#: an assistant turn that opens a conversation (before any user turn; after the system message, if any): dropped
#: and counted, or kept and trained where the template renders it
LEADING_ASSISTANT_POLICIES: tuple[str, ...] = ("drop", "keep")
#: what a build packs together: all documents of a split, or each part of the input alone
PACK_SCOPES: tuple[str, ...] = ("global", "part")
#: who encodes the text: the tiktoken core where the tokenizer qualifies, else tokenizers (auto); or either, forced
#: (tiktoken: an error where the tokenizer does not qualify); offsets: tokenizers, every token labelled from its
#: Encoding.offsets (the reference path the faster ones are checked against)
BACKENDS: tuple[str, ...] = ("auto", "tokenizers", "tiktoken", "offsets")
#: who runs a build's workers (see :mod:`packer.pipeline.engine`)
ENGINES: tuple[str, ...] = ("process", "ray")
#: a build's input is cut into parts of about this size when it runs on more than one worker
DEFAULT_PART_MIB = 64


class OptionError(BuildError, ValueError):
    """A build option with a wrong value, with a one-line message naming the option (``--seq-len``)."""


@dataclass(frozen=True)
class Option:
    """What the command line, the recipe reader and the docs need to know of one field of :class:`BuildOptions`.

    ``kind`` is the value's kind: ``str``, ``int``, ``float``, ``bool``, ``path`` (a local folder or file,
    relative to the recipe file in a recipe), ``strings`` (repeatable), ``columns`` (FIELD=COLUMN pairs) or
    ``weights`` (one number per input). ``where`` says which surfaces offer it: ``cli``, ``recipe``, ``python``.
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: the minimum excluded (a share above 0)
    open_minimum: bool = False
    metavar: str | None = None
    where: tuple[str, ...] = ("cli", "recipe", "python")
    #: the default as the help and README show it, where the value itself says too little (None)
    shown_default: str | None = None
    #: from Python, an object may stand in for the name or path (a TokenizerInfo, an Engine)
    objects: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, label: str | None = None) -> Any:
        """``value`` checked (kind, choices, range) and normalised (a list of strings to a tuple); an
        :class:`OptionError` names the option as ``label`` (a recipe key), else as its flag."""
        if value is None and self.default is None:
            return None
        if self.objects and not isinstance(value, str | os.PathLike):
            return value
        label = label or self.flag
        value = _check_kind(self, value, label)
        if self.choices is not None and value not in self.choices:
            raise OptionError(f"unknown {label} {value!r}; choose {'|'.join(self.choices)}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            low, high = self.minimum, self.maximum
            if low is not None and (value <= low if self.open_minimum else value < low):
                raise OptionError(f"{label} must be {'above' if self.open_minimum else 'at least'} {low:g}, "
                                  f"not {value!r}")
            if high is not None and value > high:
                raise OptionError(f"{label} must be at most {high:g}, not {value!r}")
        return value


_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "path": "a path", "strings": "a list of strings", "columns": "a table of FIELD = COLUMN strings",
               "weights": "a list of numbers >= 0"}


def _check_kind(o: Option, value: Any, label: str) -> Any:
    def wrong() -> OptionError:
        return OptionError(f"{label} must be {_KIND_NAMES[o.kind]}, not {value!r}")

    k = o.kind
    if k == "bool":
        if not isinstance(value, bool):
            raise wrong()
    elif k == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
    elif k == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise wrong()
    elif k == "str":
        if not isinstance(value, str):
            raise wrong()
    elif k == "path":
        if not isinstance(value, str | os.PathLike):
            raise wrong()
    elif k == "strings":
        if isinstance(value, str) or not all(isinstance(s, str) for s in value):
            raise wrong()
        value = tuple(value)
    elif k == "weights":
        if isinstance(value, str) or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in value):
            raise wrong()
        value = tuple(float(w) for w in value)
    return value


def _opt(default: Any, kind: str, help: str, **kw: Any) -> Any:
    """A :class:`BuildOptions` field with its :class:`Option` (the name is filled in by :func:`options`)."""
    return field(default=default, metadata={"option": {"kind": kind, "help": help, **kw}})


@dataclass(frozen=True)
class BuildOptions:
    """The settings of a build: one field per ``packer build`` flag and recipe key (:mod:`packer.options`).

    A value that is wrong for its option (an unknown choice, a number out of range, a wrong type) raises
    :class:`OptionError` when the object is made. ``dataclasses.replace(opts, seq_len=8192)`` gives a
    changed copy; :func:`packer.build` takes ``options=`` and keyword overrides of any field.
    """

    tokenizer: str | os.PathLike | TokenizerInfo | None = _opt(
        None, "path", "model folder with tokenizer.json (+ tokenizer_config.json), a tokenizer.json file, or a Hugging "
        "Face Hub id ORG/NAME[@REVISION] from the local Hub cache (HF_HOME, HF_HUB_CACHE) where no such path exists",
        shown_default="packer's tiny demo tokenizer, for trying packer only", objects=True)
    tokenizer_loader: str | None = _opt(
        None, "str", "which tokenizer behaviour the ids follow: file runs tokenizer.json as it is (tokenizers-based "
        "engines such as TGI, transformers 4); transformers asks the installed transformers (vLLM, SGLang, TRL; "
        "5.x differs for SentencePiece models such as Llama 2, Mistral, Phi-3)", choices=LOADERS,
        shown_default="file, with a warning where the two differ; choosing one silences it")
    download: bool = _opt(
        False, "bool", "download a Hub id's tokenizer files (tokenizer.json, tokenizer_config.json, ...) into the "
        "Hugging Face cache when it is not there; never otherwise, and never with HF_HUB_OFFLINE=1")
    template: str = _opt("auto", "str", "chat template; auto: the tokenizer's chat_template if it has one, else alpaca",
                         choices=TEMPLATE_CHOICES)
    system: str = _opt(
        "merge", "str", "a system message under a template that refuses one (Mistral, Gemma): merge it into the "
        "first user turn (keeping the system role on its tokens), drop it, or reject the record; counted",
        choices=SYSTEM_POLICIES)
    blank_turns: str = _opt(
        "reject", "str", "a blank turn inside a conversation: reject the record, or drop the turn with the turn that "
        "answers it (counted in turns dropped)", choices=BLANK_TURN_POLICIES)
    leading_assistant: str = _opt(
        "drop", "str", "an assistant turn opening a conversation (before any user turn): drop it (counted in turns "
        "dropped), or keep and train it where the template renders it", choices=LEADING_ASSISTANT_POLICIES)
    format: str | None = _opt(None, "str", "input format", choices=FORMATS, shown_default="detected per file")
    columns: Mapping[str, str] | Sequence[tuple[str, str]] | None = _opt(
        None, "columns", "read your column names as the formats' fields, e.g. instruction=question,output=answer or "
        "messages=conversation.turns,role=from,content=text (a dotted name is a path into nested objects)",
        metavar="FIELD=COLUMN,...")
    seq_len: int = _opt(DEFAULT_SEQ_LEN, "int", "tokens per packed row", minimum=2)
    strategy: tuple[str, ...] = _opt(
        (), "strings", "an extra masking strategy (repeatable), e.g. prompt_only=instruction,input",
        metavar="NAME=ROLE,...")
    packing: str = _opt("bfd", "str", "bfd: best-fit decreasing, ffd: first-fit decreasing, nextfit: keeps input order",
                        choices=ALGORITHMS)
    overlong: str = _opt(
        "drop", "str", "records longer than --seq-len: drop them, truncate them (rejected if no response is left), "
        "or split a conversation between its exchanges", choices=OVERLONG_POLICIES)
    pairs: str = _opt(
        "shared", "str", "preference pairs (DPO): shared stores each pair's common prefix once (the pair collator's "
        "attention mask); separate packs chosen and rejected whole as two documents of the same row, for attention "
        "kernels that cannot take that mask (flash varlen)", choices=PAIR_LAYOUTS)
    max_rejected: float | None = _opt(
        None, "float", "fail, writing nothing, if more than this share of the records is rejected or truncated, or "
        "of their tokens cut", minimum=0, maximum=1, metavar="FRACTION", shown_default="warn past 0.05")
    shard_size: float = _opt(DEFAULT_SHARD_MIB, "float", "approximate maximum shard size in MiB", minimum=0,
                             open_minimum=True, metavar="MiB")
    overwrite: bool = _opt(False, "bool", "replace an earlier packer output in the output folder")
    wait: bool = _opt(False, "bool", "if another build is writing the output folder, wait for it to finish (then "
                      "look again) instead of failing")
    strict: bool = _opt(False, "bool", "fail on the first rejected record")
    dedupe: bool = _opt(False, "bool", "reject exact duplicate conversations after the first (else: kept, counted)")
    eval_fraction: float | None = _opt(
        None, "float", "hold out this share (0 < F < 1) of the packable records as an eval split, chosen by record "
        "from --seed: PackedDataset(out, split='eval')", metavar="F")
    eval_records: int | None = _opt(None, "int", "hold out exactly N packable records as the eval split (instead of "
                                    "--eval-fraction)", metavar="N")
    seed: int = _opt(0, "int", "which records the eval split holds and a mixture (--mix) samples")
    mix: tuple[float, ...] | None = _opt(
        None, "weights", "weight the inputs: on the command line a flag, the INPUTS then PATH:WEIGHT (--mix "
        "a.jsonl:1.0 b.json:0.3); in a recipe or build() one weight per input, in order. Each record of an input is "
        "packed floor(WEIGHT) times, plus once with probability frac(WEIGHT) (by --seed)")
    workers: int = _opt(1, "int", "map the input and write the shards in N worker processes (all cores: --workers "
                        "$(nproc)); the output is the same, byte for byte, for any N", minimum=1, metavar="N")
    engine: str | Engine = _opt(
        "process", "str", "who runs the workers: processes on this machine, or a Ray cluster (pip install "
        "'packer[ray]'; RAY_ADDRESS names the cluster)", choices=ENGINES, objects=True)
    part_size: float | None = _opt(
        None, "float", "cut the input into parts of about this size in MiB, whatever --workers", minimum=0,
        open_minimum=True, metavar="MiB", shown_default=f"{DEFAULT_PART_MIB} with more than one worker or Ray, "
        "else one part")
    scratch: str | os.PathLike | None = _opt(
        None, "path", "local folder an output URI (-o s3://bucket/shards) is built in before it is uploaded, "
        "manifest last", metavar="DIR", shown_default="the system's temporary folder")
    pack_scope: str = _opt("global", "str", "global: pack all documents together; part: pack each part (--part-size) "
                           "alone, no row mixing parts (for inputs too large for one machine to pack)",
                           choices=PACK_SCOPES)
    tokenizer_backend: str = _opt(
        "auto", "str", "who encodes: auto = tiktoken for a byte-level BPE tokenizer it provably reproduces (Qwen, "
        "Llama 3, GPT-2; checked against tokenizers on a sample as the build runs), else the tokenizers library; "
        "tiktoken or tokenizers to force one; offsets = tokenizers with every token labelled from its offsets "
        "(the slower reference path)", choices=BACKENDS)
    batch_size: int = _opt(512, "int", "records tokenized at a time (memory, not output: the output is the same for "
                           "any batch size)", minimum=1, where=("python",))
    cuts: Mapping[int, tuple[int, ...]] | None = _opt(
        None, "cuts", "input index -> byte offsets to cut the input at, in place of --part-size (for tests)",
        where=("python",))

    def __post_init__(self) -> None:
        for o in options():
            if o.kind != "cuts":
                object.__setattr__(self, o.name, o.check(getattr(self, o.name)))

    @property
    def shard_bytes(self) -> int:
        """``shard_size`` in bytes."""
        return round(self.shard_size * 2**20)

    @property
    def part_bytes(self) -> int | None:
        """``part_size`` in bytes (None: not given)."""
        return None if self.part_size is None else max(1, round(self.part_size * 2**20))

    def with_overrides(self, overrides: Mapping[str, Any], where: str = "build()") -> BuildOptions:
        """A copy with ``overrides`` (field names, or the older names of :data:`ALIASES` with a
        DeprecationWarning); an unknown name is a TypeError naming the closest field."""
        return replace(self, **resolve_names(overrides, where)) if overrides else self


#: older names -> (field, converter of the value): accepted with a DeprecationWarning
ALIASES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "fmt": ("format", lambda v: v),
    "strategies": ("strategy", lambda v: v),
    "shard_bytes": ("shard_size", lambda v: v / 2**20 if isinstance(v, int | float) else v),
    "part_bytes": ("part_size", lambda v: None if v is None else v / 2**20 if isinstance(v, int | float) else v),
}

def options() -> tuple[Option, ...]:
    """Every :class:`Option` of :class:`BuildOptions`, in the order ``packer build --help`` lists them."""
    return _options_of(BuildOptions)


@functools.cache
def _options_of(cls: type) -> tuple[Option, ...]:
    """The :class:`Option` of each field of the options dataclass ``cls`` (made with :func:`_opt`), in order."""
    return tuple(Option(name=f.name, default=None if f.default is MISSING else f.default, **f.metadata["option"])
                 for f in fields(cls))


def _field_docs() -> str:
    """The fields of :class:`BuildOptions`, one paragraph each, for its docstring (so ``help(BuildOptions)``)."""
    lines = ["", "Fields (each the recipe key of that name and, with ``-`` for ``_``, the ``packer build`` flag):", ""]
    for o in options():
        choices = f"; one of {', '.join(o.choices)}" if o.choices else ""
        python = " (Python only)" if "cli" not in o.where else ""
        lines.append(f"- ``{o.name}`` ({o.kind}, default {shown_default(o)}{choices}){python}: {o.help}")
    return "\n".join(lines)


def option(name: str) -> Option:
    return next(o for o in options() if o.name == name)


def resolve_names(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` keyed by field name: an older name is renamed (its value converted) with a DeprecationWarning;
    an unknown one is a TypeError that suggests the closest field."""
    names = {o.name for o in options()}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in ALIASES:
            new, convert = ALIASES[key]
            warnings.warn(f"{where}: {key!r} is deprecated; use {new!r}"
                          + (" (in MiB)" if key.endswith("_bytes") else ""), DeprecationWarning, stacklevel=4)
            key, value = new, convert(value)
        elif key not in names:
            raise _unknown(key, names, where)
        if key in out:
            raise TypeError(f"{where}: option {key!r} given twice (once by an older name)")
        out[key] = value
    return out


def _unknown(key: str, names: set[str], where: str) -> TypeError:
    """The error for an option ``key`` that is none of ``names``, suggesting the closest."""
    close = difflib.get_close_matches(key, sorted(names), n=1)
    return TypeError(f"{where}: unknown option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))


def cli_options() -> Iterator[Option]:
    """The options ``packer build`` offers as flags."""
    return (o for o in options() if "cli" in o.where)


def shown_default(o: Option) -> str:
    """The default as help and docs show it."""
    if o.shown_default is not None:
        return o.shown_default
    if o.kind in ("bool", "weights"):  # --mix: a flag on the command line
        return "off"
    if o.default in (None, ()):
        return "none"
    return f"{o.default:g}" if isinstance(o.default, float) else str(o.default)


def markdown_rows() -> list[str]:
    """The README's table rows of the ``packer build`` flags (``scripts/options_table.py`` writes the table; a test
    checks the README holds exactly it)."""
    rows = []
    for o in cli_options():
        value = "" if o.kind in ("bool", "weights") else " " + (o.metavar or ("/".join(o.choices) if o.choices else
                                                                               o.kind.upper()))
        default = shown_default(o)
        default = default if o.shown_default or default in ("off", "none") else f"`{default}`"
        rows.append(f"| `{o.flag}{value}` | {default} | {o.help.replace('|', '/')} |")
    return rows


BuildOptions.__doc__ = (BuildOptions.__doc__ or "").rstrip() + "\n" + _field_docs().replace("\n", "\n    ")


# -- packer export --------------------------------------------------------------------------------------------------

#: the formats ``packer export --to`` writes (see :mod:`packer.export`)
EXPORT_TARGETS: tuple[str, ...] = ("nemo",)
#: how the NeMo file's ``loss_mask`` lines up with the tokens: ``shifted``, entry j is the loss of the prediction
#: made at token j (of token j + 1), what NeMo 2.2 and later read; ``unshifted``, entry j is token j's own loss,
#: what NeMo 1.x up to 2.1 read
LOSS_MASK_CONVENTIONS: tuple[str, ...] = ("shifted", "unshifted")


def _xopt(default: Any, kind: str, help: str, **kw: Any) -> Any:
    """An :class:`ExportOptions` field: a ``packer export`` flag and a keyword of :func:`packer.export.export`."""
    return _opt(default, kind, help, where=("cli", "python"), **kw)


@dataclass(frozen=True)
class ExportOptions:
    """The settings of ``packer export`` (:func:`packer.export.export`): one field per flag, as
    :class:`BuildOptions` is for ``packer build``::

        >>> ExportOptions(strategy="instruction_modelling").split
        'train'
        >>> ExportOptions(loss_mask="rolled")
        Traceback (most recent call last):
        ...
        packer.options.OptionError: unknown --loss-mask 'rolled'; choose shifted|unshifted
    """

    to: str = _xopt("nemo", "str", "the format to write: nemo, NeMo's packed SFT file (np.save of a list of "
                   "{input_ids, loss_mask, seq_start_id}) and its pack metadata JSON", choices=EXPORT_TARGETS)
    strategy: str = _xopt("instruction_tuning", "str", "the masking strategy whose loss the file's loss_mask "
                         "carries (one of the output's strategies: packer inspect lists them)", metavar="NAME")
    split: str = _xopt("train", "str", "which split of the output to write: train, or the held-out eval split "
                      "(built with --eval-fraction or --eval-records)", choices=("train", "eval"))
    loss_mask: str = _xopt(
        "shifted", "str", "shifted: loss_mask[j] = 1 where the prediction made at token j (of token j+1) has loss, "
        "what NeMo 2.2 and later read; unshifted: loss_mask[j] = 1 where token j has loss, what NeMo 1.x up to 2.1 "
        "read", choices=LOSS_MASK_CONVENTIONS)
    metadata: str | os.PathLike | None = _xopt(
        None, "path", "where to write NeMo's pack metadata JSON (packed_metadata_path; needed for pad_cu_seqlens)",
        metavar="FILE.json", shown_default="beside the file, FILE_metadata.json")
    overwrite: bool = _xopt(False, "bool", "replace an existing file (only one of the kind export writes: a NumPy "
                           ".npy object array, a NeMo pack metadata list)")

    def __post_init__(self) -> None:
        for o in export_options():
            object.__setattr__(self, o.name, o.check(getattr(self, o.name)))

    def with_overrides(self, overrides: Mapping[str, Any], where: str = "export()") -> ExportOptions:
        """A copy with ``overrides``; an unknown name is a TypeError naming the closest field."""
        names = {o.name for o in export_options()}
        for key in overrides:
            if key not in names:
                raise _unknown(key, names, where)
        return replace(self, **overrides) if overrides else self


def export_options() -> tuple[Option, ...]:
    """Every :class:`Option` of :class:`ExportOptions`, in the order ``packer export --help`` lists them."""
    return _options_of(ExportOptions)


ExportOptions.__doc__ = (ExportOptions.__doc__ or "").rstrip() + "\n\n    Fields (each, with ``-`` for ``_``, the " \
    "``packer export`` flag):\n\n" + "\n".join(f"    - ``{o.name}`` (default {shown_default(o)}): {o.help}"
                                             for o in export_options())
