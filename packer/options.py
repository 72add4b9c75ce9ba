"""The build's option values, in a module that imports nothing.

The command line offers these as choices before it imports numpy, numba or the
tokenizer stack (so ``packer --help`` starts in a blink); the modules that
implement each option take their names from here, so there is one list of each.
"""

from __future__ import annotations

from pathlib import Path

#: record formats of the inputs (see :mod:`packer.formats`)
FORMATS: tuple[str, ...] = ("alpaca", "sharegpt", "messages", "prompt_completion", "text")
#: bin-packing algorithms (see :mod:`packer.pack`)
ALGORITHMS: tuple[str, ...] = ("bfd", "ffd", "nextfit")
#: what happens to a record longer than ``seq_len``
OVERLONG_POLICIES: tuple[str, ...] = ("drop", "truncate", "split")
#: built-in chat templates; :data:`packer.templates.BUILTIN_TEMPLATES` holds their Jinja source
TEMPLATES: tuple[str, ...] = ("alpaca", "chatml", "llama3", "tulu", "mistral")
#: ``--template`` values: the tokenizer's own, the tokenizer's own else alpaca, or a built-in one
TEMPLATE_CHOICES: tuple[str, ...] = ("auto", "tokenizer", *TEMPLATES)
DEFAULT_SEQ_LEN = 4096
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
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
#: (tiktoken: an error where the tokenizer does not qualify)
BACKENDS: tuple[str, ...] = ("auto", "tokenizers", "tiktoken")
#: who runs a build's workers (see :mod:`packer.engine`)
ENGINES: tuple[str, ...] = ("process", "ray")
