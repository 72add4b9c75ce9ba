"""The walk of token pieces against ``Encoding.offsets`` on every whole data file, for every SentencePiece-style
real tokenizer (issue 28).

Each (tokenizer, data file) pair is built twice with the same options: ``tokenizer_backend="offsets"`` (every
token labelled from ``Encoding.offsets``, the reference) and the default (``tokenizers``, which labels these
tokenizers from the walk of :mod:`packer.tokens.spans`). A pair is identical when every file is (the manifest
without ``build_seconds`` and ``tokenizer.backend``) and the default build did not fall back to offsets (a
checked record whose spans differ makes it start over from offsets, which would give identical bytes for
another reason: such a pair is reported ``no (fell back)``). Prints a markdown table and exits 1 if any pair is
not identical, with the first documents that differ.

    python benchmarks/spans_matrix.py                                   # all of ../shared/data x 4 tokenizers
    python benchmarks/spans_matrix.py --tokenizer gemma-2 --file 'alpaca_*'

Options as in ``benchmarks/tiktoken_matrix.py`` (seq_len 4096, ``overlong="truncate"``, ``blank_turns="drop"``,
one worker); preference files (DPO pairs, KTO) are built as such. Timings are wall seconds of one ``packer.build``
call each, after a warm-up build per tokenizer and path (imports, numba caches, out of the table).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiktoken_matrix import data_files, matrix_args, run_matrix

#: tokenizer directory -> the template its builds use (Llama 2's and Gemma 2's tokenizer.json have none here)
TOKENIZERS = {
    "mistral-7b-instruct-v0.1": "tokenizer",
    "phi-3-mini-instruct": "tokenizer",
    "llama-2": "chatml",
    "gemma-2": "chatml",
}


def main() -> int:
    args = matrix_args(__doc__.split("\n\n")[0], list(TOKENIZERS))
    if not args.data.is_dir() or not args.tokenizers.is_dir():
        print(f"no data or tokenizers at {args.data} / {args.tokenizers}", file=sys.stderr)
        return 2
    # the default backend, tokenizers, labels these tokenizers from the walk
    return run_matrix(args, TOKENIZERS, data_files(args), ("offsets", "tokenizers"))


if __name__ == "__main__":
    sys.exit(main())
