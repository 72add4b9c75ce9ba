"""Train the small byte-level BPE demo tokenizer that ships in ``packer/demo_tokenizer`` (package data).

The tokenizer is trained on the text of ``alpaca_demo.json`` and
``sharegpt_demo.json`` plus a few extra sentences below. It is only meant to
let packer's examples and tests run without downloading a model; it is not a
good tokenizer for anything else.

    python examples/make_demo_tokenizer.py                # writes packer/demo_tokenizer/
    python examples/make_demo_tokenizer.py --out DIR

Only the ``tokenizers`` library is needed. The output is deterministic: the
training data is read in a fixed order and BPE breaks ties between equally
frequent pairs in a fixed way.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
DATA_FILES = ("alpaca_demo.json", "sharegpt_demo.json")
VOCAB_SIZE = 2048
#: in this order, so that they get ids 0, 1 and 2
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: words the templates and examples use that the data files may not contain often
EXTRA_TEXT = (
    "system",
    "user",
    "assistant",
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.",
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.",
    "### Instruction:\n",
    "### Input:\n",
    "### Response:\n",
    "You are a helpful assistant.",
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14 -1 50%",
)


#: JSON keys whose values are labels, not text a model reads
LABEL_KEYS = frozenset({"id", "from"})


def texts_of(value: object) -> Iterator[str]:
    """The content strings of a JSON value, in document order: every string
    except keys and the values of :data:`LABEL_KEYS`."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from texts_of(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in LABEL_KEYS:
                yield from texts_of(item)


def training_texts(data_dir: Path = HERE) -> list[str]:
    texts: list[str] = []
    for name in DATA_FILES:
        data = json.loads((data_dir / name).read_text(encoding="utf-8"))
        texts.extend(t for t in texts_of(data) if t)
    texts.extend(EXTRA_TEXT)
    return texts


def build_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets cover the whole token, leading space included,
    # so that text[start:end] is exactly the token's text
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    for i, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != i:
            raise RuntimeError(f"special token {token!r} got id {tok.token_to_id(token)}, expected {i}")
    return tok


def tokenizer_config() -> dict[str, object]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "chat_template": CHAT_TEMPLATE,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=HERE.parent / "packer" / "demo_tokenizer",
        help="output folder (default: %(default)s)",
    )
    parser.add_argument("--data-dir", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    tok = build_tokenizer(training_texts(args.data_dir))
    args.out.mkdir(parents=True, exist_ok=True)
    # tokenizers writes its own compact JSON; pretty-print it with a stable layout instead
    data = json.loads(tok.to_str())
    (args.out / "tokenizer.json").write_text(
        json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    (args.out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    print(f"wrote {args.out}/tokenizer.json (vocab size {tok.get_vocab_size()}) and tokenizer_config.json")


if __name__ == "__main__":
    main()
