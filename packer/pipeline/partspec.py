"""What the map stage works from and gives back, as plain values that pickle: :class:`MapSpec` (how to map),
:class:`Part` (what to read) and :class:`PartSummary` (what mapping it found).

:mod:`packer.pipeline.part` maps a part; a worker process gets a :class:`MapSpec` and a :class:`Part` and rebuilds
the tokenizer and template from the spec (:meth:`MapSpec.load`); :mod:`packer.pipeline.combine` joins the summaries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..output.doctable import NULL, Columns
from ..read.jsonvalues import WHOLE, Piece
from ..read.plan import Planned
from ..read.records import BuildError, Rejection
from ..tokens.loader import TokenizerInfo, load_tokenizer
from ..tokens.templates import ChatTemplate


def resolve_template(name: str, tok: TokenizerInfo, *, system: str = "merge", assemble: bool = True) -> ChatTemplate:
    """``auto``: the tokenizer's own chat template if it has one, else ``alpaca``."""
    if name == "auto":
        name = "tokenizer" if tok.chat_template else "alpaca"
    try:
        return ChatTemplate.named(name, tok, system=system, assemble=assemble)
    except ValueError as e:
        raise BuildError(str(e)) from None


@dataclass(frozen=True)
class MapSpec:
    """Everything mapping a part needs, as plain values (it pickles): a worker
    process rebuilds the tokenizer and template from it (:meth:`load`)."""

    tokenizer: str
    tokenizer_sha256: str
    tokenizer_loader: str = "file"
    template: str = "auto"
    system: str = "merge"
    blank_turns: str = "reject"
    #: an assistant turn opening a conversation: "drop" it (counted) or "keep" it (options.LEADING_ASSISTANT_POLICIES)
    leading_assistant: str = "drop"
    fmt: str | None = None
    #: the column map: (record format field, the input's column) pairs, sorted (see packer.read.formats.check_columns)
    columns: tuple[tuple[str, str], ...] = ()
    seq_len: int = 4096
    overlong: str = "drop"
    strict: bool = False
    dedupe: bool = False
    #: assemble records of shapes proven to only paste their contents without Jinja (checked on a sample);
    #: False after a :class:`~packer.tokens.templates.TemplateDrift`: every record rendered by Jinja
    assemble: bool = True
    batch_size: int = 512
    #: who encodes: "tokenizers", or "tiktoken" (packer.tokens.tiktoken_core, checked on a sample as it runs);
    #: "offsets": tokenizers, every token labelled from Encoding.offsets (after a TokenizerDrift of the walk of
    #: pieces, packer.tokens.spans)
    backend: str = "tokenizers"
    #: what the records are: "sft", "pairs" (preference pairs, packer.pipeline.pairs) or "kto" (labelled
    #: completions); and how a pair is laid out ("shared" or "separate": packer.options.PAIR_LAYOUTS)
    kind: str = "sft"
    pairs: str = "shared"

    def load(self) -> tuple[TokenizerInfo, ChatTemplate]:
        """The tokenizer (the same file the build checked: its sha256 must match) and the template."""
        tok = load_tokenizer(self.tokenizer, loader=self.tokenizer_loader)
        if tok.sha256 != self.tokenizer_sha256:
            raise BuildError(f"{self.tokenizer}: the tokenizer changed while the build ran")
        return tok, self.chat_template(tok)

    def chat_template(self, tok: TokenizerInfo) -> ChatTemplate:
        return resolve_template(self.template, tok, system=self.system, assemble=self.assemble)


@dataclass(frozen=True)
class Part:
    """What one part reads: every input in order (``input`` None: the single-process build, one part),
    or a piece of input ``input`` (:mod:`packer.read.plan`), whose record format is ``fmt`` where the piece
    may not start at the file's start. Its records get doc_ids from ``first_doc_id``; ``tag`` names its
    spill files; ``records``, ``nbytes``: its records as counted by the plan (-1: not counted) and bytes."""

    inputs: tuple[str, ...]
    input: int | None = None
    piece: Piece = WHOLE
    fmt: str | None = None
    first_doc_id: int = 0
    tag: int = 0
    records: int = -1
    nbytes: int = 0

    @property
    def paths(self) -> list[str]:
        """The files the part reads."""
        return list(self.inputs) if self.input is None else [self.inputs[self.input]]


def parts_of(inputs: Sequence[str], planned: Sequence[Planned], formats: Sequence[str | None]) -> list[Part]:
    """The parts of a plan (:func:`packer.read.plan.plan_inputs`), tagged in input order, each with its first doc_id
    (-1 after a piece whose records were not counted: the build sets it when the parts before are mapped).

        >>> from packer.read.plan import Planned
        >>> pieces = [Planned(0, Piece("lines", 0, 9), 3, 9), Planned(0, Piece("lines", 9, 20), 2, 11)]
        >>> ps = parts_of(["a.jsonl"], pieces, ["messages"])
        >>> [(p.tag, p.first_doc_id, p.fmt, p.records) for p in ps]
        [(0, 0, 'messages', 3), (1, 3, 'messages', 2)]
    """
    out = []
    at = 0
    for tag, pl in enumerate(planned):
        out.append(Part(tuple(inputs), pl.input, pl.piece, None if pl.piece.kind == "file" else formats[pl.input],
                        at, tag, pl.records, pl.nbytes))
        at = at + pl.records if at >= 0 and pl.records >= 0 else -1
    return out


@dataclass
class PartSummary:
    """What mapping a part found: one row of :attr:`docs` per record (row ``i`` is doc_id
    ``first_doc_id + i``; NULL where documents.arrow has a null) and the part's spill."""

    part: Part
    #: input path per ``docs.file`` code
    files: list[str]
    #: per input (by its place in ``part.inputs``): records of it in this part, and its record format where
    #: the part read it to its end (else None)
    input_records: list[int]
    formats: list[str | None]
    docs: Columns
    #: content turns dropped by a documented policy, per record that had any: doc_id -> reason -> count
    dropped_turns: dict[int, dict[str, int]]
    #: tokens in the part's spill (the ``spilled`` documents' ``tokens``, in doc_id order)
    spilled_tokens: int
    #: tokens of every document in the part's spill, in spill order (a record split by ``--overlong split``
    #: spills ``pieces`` documents, adjacent)
    spilled_lens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: lines in the part's rejection spill
    rejection_lines: int = 0
    loader_difference: str | None = None
    #: the template closed an assistant turn of a shape this part met with no special token
    missing_end: bool = False
    seconds: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)
    #: the part's first rejections (:data:`packer.pipeline.part.ECHOED`), where it had no events to tell them to
    echo: list[Rejection] = field(default_factory=list)
    #: spilled tokens of non-assistant messages marked ``"training": true`` (the shards then have a ``forced``
    #: column: format version 3)
    forced_tokens: int = 0

    def __len__(self) -> int:
        return len(self.docs)


def new_columns() -> Columns:
    """The per-record columns of a part (see :class:`PartSummary`)."""
    return Columns(
        file=(np.int32, 0), record=(np.int64, 0), status=(np.uint8, 0),
        turns=(np.int32, NULL), prompt_words=(np.int32, NULL), response_words=(np.int32, NULL),
        tokens=(np.int32, NULL), prompt_tokens=(np.int32, NULL), response_tokens=(np.int32, NULL),
        encoded=(np.int32, NULL), spilled=(np.uint8, 0), pieces=(np.int32, 0), system=(np.uint8, 0),
        absorbed=(np.int32, 0), label=(np.int8, NULL),
        shared_tokens=(np.int32, NULL), chosen_tokens=(np.int32, NULL), rejected_tokens=(np.int32, NULL),
        has_digest=(np.uint8, 0), digest_hi=(np.int64, 0), digest_lo=(np.int64, 0),
    )

__all__ = ["MapSpec", "Part", "PartSummary", "new_columns", "parts_of", "resolve_template"]
