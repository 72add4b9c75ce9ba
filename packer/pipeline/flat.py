"""The columnar path of the map stage (issue 28): plain Alpaca records a batch at a time.

Short records make a build's per-record Python its limit: a Conversation and two Messages made per record,
its digest, word counts, shape and render found one record at a time, its bookkeeping written a value at a
time. A run of plain Alpaca records (:class:`~packer.read.records.FlatRun`, read as columns by
:class:`~packer.read.formats.RecordReader` with ``flat=True``) is taken here as columns instead::

    FlatRun  instructions ["Add 2 and 3.", "Hi"]   inputs ["", ""]   outputs ["5", "Hello"]
    digests  blake2b of "user\\0Add 2 and 3.\\0\\0assistant\\05\\0\\0", ... (what part.digest hashes)
    words    count_words_each(instructions + inputs + outputs): prompt = instruction + input + 1, ...
    render   the shape's fixed text formatted with the columns (assembly.assemble_all), no Jinja
    columns  one Columns.extend for the run

and every record's rendered text joins the mapper's batch as one from :meth:`PartMapper.add_record` would.
What each record gets is the same bytes as on the record path (``benchmarks/identity.py``, and
``tests/test_flat.py`` compares the two record by record); a record the columnar path does not take (a control
token in its text, an output opening with ``<think>``, a shape Jinja renders, a text too long to tokenize whole)
goes through :meth:`PartMapper.add_record` in its place in the order. The records
:func:`~packer.tokens.assembly.checked` picks are rendered by Jinja as well, as on the record path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..read.formats import RecordReader
from ..read.records import BuildError, Conversation, FlatRun, Pair, Rejection
from ..tokens.assembly import TemplateDrift, checked_many
from ..tokens.templates import ChatTemplate, Rendered
from ..tokens.tokenize import char_codes
from ..tokens.words import count_words_each
from .partspec import MapSpec
from .spill import RejectionSpill

if TYPE_CHECKING:
    from .part import PartMapper

#: the text :func:`packer.pipeline.part.digest` hashes for a plain user + assistant conversation (every part
#: followed by a NUL): role, content, input of each message
_DIGESTED = "user\x00%s\x00%s\x00assistant\x00%s\x00\x00"
#: which column fills a slot of a FlatRun record's shape: (message, field) -> 0 instruction, 1 input, 2 output
_COLUMN = {(0, "content"): 0, (0, "input"): 1, (1, "content"): 2}


def flat_digests(instructions: list[str], inputs: list[str], outputs: list[str]) -> np.ndarray:
    """:func:`packer.pipeline.part.digest` of each plain user + assistant conversation, as its (hi, lo) int64 pair
    (the ``digest_hi``/``digest_lo`` columns): an (n, 2) array.

    >>> from packer.pipeline.part import digest
    >>> from packer.read.records import FlatRun
    >>> run = FlatRun("a.json", 0, 0, ["Add"], ["2 3"], ["5"])
    >>> flat_digests(run.instructions, run.inputs, run.outputs).tobytes() == digest(run.conversation(0))
    True
    """
    blake = hashlib.blake2b
    digests = b"".join([blake((_DIGESTED % t).encode("utf-8", "surrogatepass"), digest_size=16).digest()
                        for t in zip(instructions, inputs, outputs, strict=True)])
    return np.frombuffer(digests, "<i8").reshape(-1, 2)


def flat_words(instructions: list[str], inputs: list[str], outputs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`packer.pipeline.part.words`' prompt and response words of each plain user + assistant
    conversation (its turns are 2): the words of the instruction and input + 1, of the output + 1.

    >>> [w.tolist() for w in flat_words(["Add these", "Hi"], ["2 3", ""], ["5", "Hello there"])]
    [[5, 2], [2, 3]]
    """
    n = len(outputs)
    counts = count_words_each([*instructions, *inputs, *outputs])
    return counts[:n] + counts[n : 2 * n] + 1, counts[2 * n :] + 1


def char_codes_of(rendered: list[Rendered]) -> list[np.ndarray]:
    """:func:`~packer.tokens.tokenize.char_codes` of each rendered record's segments, found once for the records
    that share their roles and flags (assembled records of a shape share its arrays, whichever path made them).

    >>> from packer.tokens.templates import Rendered
    >>> roles, last = np.array([1, 7], np.uint8), np.array([False, True])
    >>> a, b = char_codes_of([Rendered(t, np.array([1, 1]), roles, last) for t in ("ab", "xy")])
    >>> a is b, np.array_equal(a, char_codes(roles, last))
    (True, True)
    """
    found: dict[tuple[int, int], np.ndarray] = {}  # by the arrays' ids: they live as long as ``rendered``
    out = []
    for r in rendered:
        if r.seg_train is not None or r.seg_forced is not None:
            out.append(char_codes(r.seg_roles, r.seg_last, r.seg_train, r.seg_forced))
            continue
        key = (id(r.seg_roles), id(r.seg_last))
        codes = found.get(key)
        if codes is None:
            codes = found[key] = char_codes(r.seg_roles, r.seg_last)
        out.append(codes)
    return out


class FlatMapper:
    """The columnar path of one :class:`~packer.pipeline.part.PartMapper` (see the module's docstring): it
    writes the mapper's columns, rejections and batch as :meth:`PartMapper.add_record` would, record for
    record. :meth:`applies` says which builds may take it."""

    def __init__(self, mapper: PartMapper) -> None:
        from .part import _BATCH_CHARS, BOUNDED_ABOVE  # (part imports this module)

        self.m = mapper
        self.tpl: ChatTemplate = mapper.tpl
        self.batch_chars = _BATCH_CHARS
        #: a text of more characters may be too big to tokenize whole: the record path decides (part.at_least)
        self.max_chars = BOUNDED_ABOVE // 4
        #: per shape ((instruction, input) not empty): (fixed, slot columns, assembly), or None (Jinja renders it)
        self.shapes: dict[tuple[bool, bool], tuple | None] = {}

    @staticmethod
    def applies(spec: MapSpec, tpl: ChatTemplate) -> bool:
        """Whether a part of ``spec`` may take the columnar path: supervised records whose shapes are assembled
        (not ``--dedupe``, which looks each record up, nor ``--overlong split``, which keeps each record)."""
        return spec.kind == "sft" and not spec.dedupe and spec.overlong != "split" and tpl.assemble

    def records(self, reader: RecordReader) -> Iterator[Conversation | Pair | Rejection]:
        """The items of ``reader`` (made with ``flat=True``) but its runs of plain Alpaca records, which are added
        here (and counted in the mapper's ``input_records``): what the mapper adds one by one, in order."""
        m = self.m
        for item in reader:
            if isinstance(item, FlatRun):
                # the file being read: the part's one input, or the files read to their end so far
                m.input_records[len(reader.inputs) if m.part.input is None else m.part.input] += len(item)
                self.add(item, m.part.first_doc_id + item.doc_id)  # (the reader counts the part's records from 0)
            else:
                yield item

    def add(self, run: FlatRun, first: int) -> None:
        """Add the records of ``run``, the first of which has doc_id ``first``: the columnar ones a stretch at a
        time, the others through the record path in their place."""
        m = self.m
        if first != m.part.first_doc_id + len(m.docs):  # the reader's contract; guard it
            raise BuildError(f"{run.path}: record {run.index}: internal error: records out of order")
        keys = [(i != "", n != "") for i, n in zip(run.instructions, run.inputs, strict=True)]
        a = 0
        for k in [*self._odd(run, keys), len(run)]:
            if k > a:
                self._stretch(run, first, a, k, keys[a:k])
            if k < len(run):
                m.add_record(run.conversation(k, first + k), first + k)
            a = k + 1

    def _odd(self, run: FlatRun, keys: list[tuple[bool, bool]]) -> list[int]:
        """The records of ``run`` the columnar path leaves to the record path, in order: a control token in a
        text, an output opening with ``<think>`` (a reasoning shape), a shape Jinja renders, a blank value its
        assembly would trim, a text that may be too big to tokenize whole."""
        ins, inps, outs = run.instructions, run.inputs, run.outputs
        for key in set(keys).difference(self.shapes):
            self.shapes[key] = self._shape(run.conversation(keys.index(key)))
        shapes = [self.shapes[key] for key in keys]
        odd = {k for k, (shape, out) in enumerate(zip(shapes, outs, strict=True))
               if shape is None or out.startswith("<think>")}
        # one search for all: a text holding a control token leaves it in the join (a match across two texts
        # only costs the search of each)
        tpl = self.tpl
        if tpl.control_token_in("\x00".join([*ins, *inps, *outs])) is not None:
            odd.update(k for k, texts in enumerate(zip(ins, inps, outs, strict=True))
                       if any(map(tpl.control_token_in, texts)))
        if sum(map(len, ins)) + sum(map(len, inps)) + sum(map(len, outs)) > self.max_chars:
            odd.update(k for k in range(len(run)) if len(ins[k]) + len(inps[k]) + len(outs[k]) > self.max_chars)
        for k, shape in enumerate(shapes):  # a trimmed value all blank: Jinja's (the assembly cannot tell)
            if shape is not None and any(shape[2].transforms):
                values = (ins[k], inps[k], outs[k])
                if not shape[2].fits([values[c] for c in shape[1]]):
                    odd.add(k)
        return sorted(odd)

    def _shape(self, conv: Conversation) -> tuple | None:
        """(fixed, slot columns, assembly) of the shape of ``conv`` (a record of a FlatRun); None where that
        shape is rendered by Jinja."""
        got = self.tpl.assembly_of(conv)
        columns = None if got is None else [_COLUMN.get(s) for s in got[1]]
        return (got[0], columns, got[2]) if got is not None and columns and None not in columns else None

    def _stretch(self, run: FlatRun, first: int, a: int, b: int, keys: list[tuple[bool, bool]]) -> None:
        """Records ``a:b`` of ``run``, all columnar: their columns at once, then each rendered text to the batch."""
        m = self.m
        ins, inps, outs = run.instructions[a:b], run.inputs[a:b], run.outputs[a:b]
        f = m.files.get(run.path)
        if f is None:
            f = m.files[run.path] = len(m.file_paths)
            m.file_paths.append(run.path)
        digests = flat_digests(ins, inps, outs)
        prompt, response = flat_words(ins, inps, outs)
        m.docs.extend(record=np.arange(run.index + a, run.index + b, dtype=np.int64), file=f, has_digest=1,
                      digest_hi=digests[:, 0], digest_lo=digests[:, 1], prompt_words=prompt, response_words=response,
                      turns=2)
        rendered = self._render(run, first, a, (ins, inps, outs), keys)
        batch, limit, chars_limit = m.batch, m.spec.batch_size, self.batch_chars
        for k, r in enumerate(rendered):
            if isinstance(r, Rejection):
                m.reject(r, RejectionSpill.READ)
                continue
            batch.append((first + a + k, r))
            m.batch_chars += len(r.text)
            if len(batch) >= limit or m.batch_chars >= chars_limit:
                m.submit()
                batch = m.batch

    def _render(
        self, run: FlatRun, first: int, a: int, columns: tuple[list[str], list[str], list[str]],
        keys: list[tuple[bool, bool]],
    ) -> list[Rendered | Rejection]:
        """Records ``a:a + len(keys)`` of ``run`` (``columns`` hold them; doc_ids from ``first + a``) rendered, in
        order: each shape's records assembled at once; those :func:`checked` picks rendered by the template too
        (Jinja's render), which must give the same."""
        by_shape: dict[tuple[bool, bool], list[int]] = {}
        for k, key in enumerate(keys):
            by_shape.setdefault(key, []).append(k)
        out: list[Rendered | Rejection | None] = [None] * len(keys)
        picked = set(np.flatnonzero(checked_many(np.arange(first + a, first + a + len(keys)))).tolist())
        for key, ks in by_shape.items():
            fixed, slot_columns, asm = self.shapes[key]  # type: ignore[misc]
            texts, lengths = asm.assemble_all(fixed, [[columns[c][k] for k in ks] for c in slot_columns])
            roles, last = asm.seg_roles, asm.seg_last
            for k, text, row in zip(ks, texts, lengths, strict=True):
                out[k] = Rendered(text, row, roles, last)
            asm.unchecked += len(ks)
            for k in picked.intersection(ks):
                asm.unchecked -= 1
                out[k] = self._checked(run, first, a + k, out[k])  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    def _checked(self, run: FlatRun, first: int, k: int, assembled: Rendered) -> Rendered | Rejection:
        """Record ``k`` of ``run`` as the template renders it (Jinja, which checks its own assembly), which must
        be the batch's ``assembled`` (else :class:`TemplateDrift`: the build starts over with Jinja)."""
        r = self.tpl.render(run.conversation(k, first + k))
        if isinstance(r, Rendered) and (r.text != assembled.text or not np.array_equal(r.seg_lengths,
                                                                                        assembled.seg_lengths)):
            raise TemplateDrift(f"{run.path}: record {run.index + k}: template {self.tpl.name!r} renders this record "
                                "otherwise than its shape's records are assembled")
        return r
