"""packer: instruction-tuning data to sequence-packed, role-labelled Arrow shards.

from packer import build
build(["data.json"], "shards/", tokenizer="path/to/model", seq_len=4096)
"""

__version__ = "0.1.0"

from .build import build
from .records import BuildError
from .tokenize import load_tokenizer

__all__ = ["BuildError", "__version__", "build", "load_tokenizer"]
