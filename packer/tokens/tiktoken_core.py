"""tiktoken as a second BPE core, for the byte-level BPE tokenizers it provably reproduces (issue 17).

tiktoken encodes byte-level BPE 2-6x faster than ``tokenizers`` (issue 17's figures). A ``tokenizer.json``
qualifies when the two are the same function of the text (:func:`qualify`; otherwise it says why not):

    model         BPE; no dropout, byte fallback, subword prefix or word suffix
    normalizer    none, or NFC (applied to the text before tiktoken sees it)
    pre-tokenizer one ``Split`` regex (Isolated, not inverted) then ``ByteLevel`` without prefix space and
                  without its own regex; or ``ByteLevel`` alone with the GPT-2 regex (``use_regex``)
    vocabulary    every token spelled in the GPT-2 byte-to-unicode alphabet; its id is tiktoken's rank
    merges        each merge's result in the vocabulary, their ids never decreasing along the merges list
                  (tiktoken merges the pair of lowest rank, ``tokenizers`` the earliest merge: the same order;
                  two merges making one token tie, and mark the tokenizer for verification)
    added tokens  no strip or normalization flags (special or not, tiktoken matches them as they are)

``ignore_merges: true`` (Llama 3) is what tiktoken does: a piece that is a whole token is taken as it is.
With ``false`` (GPT-2, Qwen) ``tokenizers`` merges a whole-token piece from its bytes; the two agree where the
merges make every token whole (:func:`unreachable_tokens`, proven for GPT-2, Qwen2.5 and Qwen3 in the tests),
which :attr:`Core.verify` flags as resting on the merges. Every build with the core checks records against
``tokenizers`` as it runs: the records :func:`packer.tokens.assembly.checked` picks by doc_id (the first 16, then
about one in 32; a split record's pieces too) are encoded by both on the tokenizer thread, and any difference
(:class:`TokenizerDrift`) sends the build back to ``tokenizers`` for every record. ``build`` takes the core by
default where a tokenizer qualifies (``tokenizer_backend="auto"``).

Speed: tiktoken's own ``encode_batch`` makes a Python call, and takes the GIL, per text; :meth:`Core.encode_flat`
joins a thread's texts with a special token none of them holds and makes one call, which returns a numpy
buffer (no list of ints per text): the build's main thread keeps the GIL for its own work.

    >>> core = qualify(json.load(open("qwen2.5-instruct/tokenizer.json")))   # doctest: +SKIP
    >>> core.encode_batch(["<|im_start|>user\\nHi<|im_end|>"])                 # doctest: +SKIP
    [[151644, 872, 198, 13048, 151645]]
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from itertools import repeat
from operator import add, itemgetter, methodcaller
from pathlib import Path
from typing import Any

import numpy as np

#: the pre-tokenizer regex ``ByteLevel(use_regex=True)`` applies (GPT-2's; tiktoken's r50k_base)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, reversed: the character byte-level BPE spells each byte with."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class TokenizerDrift(Exception):
    """A record checked against ``tokenizers`` (:func:`packer.tokens.assembly.checked` picks them by doc_id) got other
    ids from the tiktoken core: the build maps every part again with ``tokenizers`` (:func:`packer.build`)."""


def _joiners(special: dict[str, int]) -> list[tuple[str, int]]:
    """The special tokens that can join texts into one call: no other special token overlaps one of them
    (contains it, or starts with its end or ends with its start), so a match never spans a joint.

    A token's proper prefixes and suffixes are looked up in the sets of every token's suffixes and prefixes
    (Llama 3's 256 special tokens: milliseconds, where comparing every pair at every length took 0.5 s)."""
    # (with s == sep: no border, so no match of the joiner starts inside another)
    suffixes = {s[-k:] for s in special for k in range(1, len(s) + 1)}
    prefixes = {s[:k] for s in special for k in range(1, len(s) + 1)}
    out = []
    for sep, i in special.items():
        if (not any(sep[:k] in suffixes or sep[-k:] in prefixes for k in range(1, len(sep)))
                and not any(s != sep and sep in s for s in special)):
            out.append((sep, i))
    return out


@dataclass
class Core:
    """A qualified tokenizer as tiktoken: ``encode_batch`` gives the ids ``tokenizers`` gives (with
    ``add_special_tokens=False``); ``verify``: the equality rests on the merges reaching every token
    (``ignore_merges`` false), so a build checks a sample of records against ``tokenizers``."""

    encoding: Any
    nfc: bool
    verify: bool
    #: bytes of each token id (int64; -1 for an id the tokenizer does not have): byte-length labelling's table
    widths: np.ndarray
    #: special tokens that may join texts (:func:`_joiners`), with their ids
    joiners: list[tuple[str, int]] = field(default_factory=list)

    def encode_batch(self, texts: list[str], threads: int = 2) -> list[list[int]]:
        """The ids of each text (NFC applied first where the tokenizer normalizes)."""
        if self.nfc:
            texts = [unicodedata.normalize("NFC", t) for t in texts]
        ids, offsets = self.encode_flat(texts, threads)
        return [ids[a:b].tolist() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]

    def encode_flat(self, texts: list[str], threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """The batch's ids end to end (int32) and where each text's start (int64, ``len(texts) + 1``); the
        texts as the tokenizer sees them (NFC already where it normalizes).

        tiktoken finds special tokens first and encodes the text between two of them on its own, so texts
        joined by a special token that none of them holds encode as each text's ids with the joiner's id
        between: one call per thread instead of one per text (each call takes the GIL twice, which a build's
        main thread needs)::

            "Hi" + "<|endoftext|>" + "Yo!"  ->  [13048, 151643, 64725, 0]  ->  [13048] [64725, 0]
        """
        if not texts:
            return np.zeros(0, np.int32), np.zeros(1, np.int64)
        n = max(1, min(threads, len(texts)))
        # about equal characters per thread, texts kept in order
        sizes = np.fromiter(map(len, texts), np.int64, len(texts))
        cut = np.searchsorted(np.cumsum(sizes), np.arange(1, n) * (int(sizes.sum()) / n))
        groups = [texts[a:b] for a, b in zip([0, *cut.tolist()], [*cut.tolist(), len(texts)], strict=True) if b > a]
        if len(groups) == 1:
            parts = [self._encode_group(groups[0])]
        else:
            parts = list(_pool(threads).map(self._encode_group, groups))
        ids = np.concatenate([p[0] for p in parts])
        counts = np.concatenate([p[1] for p in parts])
        offsets = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        return ids, offsets

    def _encode_group(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids without the joiners, tokens per text) of consecutive texts."""
        for sep, sep_id in self.joiners:
            if not any(sep in t for t in texts):
                ids = self.encoding.encode_to_numpy(sep.join(texts), allowed_special="all").astype(np.int32)
                at = np.flatnonzero(ids == sep_id)
                if len(at) == len(texts) - 1:
                    bounds = np.concatenate([[-1], at, [len(ids)]])
                    return np.delete(ids, at), np.diff(bounds) - 1
        # every joiner occurs in some text (or none is safe): one call per text
        each = [self.encoding.encode_to_numpy(t, allowed_special="all").astype(np.int32) for t in texts]
        return (np.concatenate(each) if each else np.zeros(0, np.int32),
                np.fromiter(map(len, each), np.int64, len(each)))


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """One pool per process and width (the build calls encode_flat per batch: no thread start-up each time)."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="packer-tiktoken")
    return _POOLS[threads]


def _pattern(pre: dict | None) -> str:
    """The one regex of a qualifying pre-tokenizer; ValueError (the reason) otherwise."""
    if pre is None:
        raise ValueError("no pre-tokenizer")
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    if [s.get("type") for s in steps] == ["ByteLevel"]:
        s = steps[0]
        if s.get("add_prefix_space") or not s.get("use_regex", True):
            raise ValueError("ByteLevel with a prefix space, or without its regex")
        return GPT2_PATTERN
    if [s.get("type") for s in steps] != ["Split", "ByteLevel"]:
        raise ValueError(f"pre-tokenizer {[s.get('type') for s in steps]}, not Split + ByteLevel")
    split, level = steps
    if split.get("behavior") != "Isolated" or split.get("invert") or "Regex" not in split.get("pattern", {}):
        raise ValueError("the Split is not one isolated, non-inverted regex")
    if level.get("add_prefix_space") or level.get("use_regex", True):
        raise ValueError("ByteLevel adds a prefix space or a regex of its own after the Split")
    return split["pattern"]["Regex"]


def _merge_order(model: dict, vocab: dict[str, int]) -> bool | str:
    """Whether two merges make the same token (a tie), or why the merges are not in vocabulary-id order.

    Mapped in C over the whole list (Llama 3 has 280,000 merges: a Python loop takes half a second)."""
    merges = model.get("merges", [])
    if not merges:
        return False
    if isinstance(merges[0], str):  # legacy "a b" strings: split at the first space, as tokenizers does
        parts = list(map(methodcaller("partition", " "), merges))
        left, right = list(map(itemgetter(0), parts)), list(map(itemgetter(2), parts))
    else:
        left, right = list(map(itemgetter(0), merges)), list(map(itemgetter(1), merges))
    made = np.array(list(map(vocab.get, map(add, left, right), repeat(-1))), dtype=np.int64)
    known = (made >= 0) & np.fromiter(map(vocab.__contains__, left), bool, len(left)) & np.fromiter(
        map(vocab.__contains__, right), bool, len(right))
    if not known.all():
        k = int(np.flatnonzero(~known)[0])
        return f"merge {k} ({left[k]!r} {right[k]!r}) leaves the vocabulary"
    step = np.diff(made)
    if (step < 0).any():
        k = int(np.flatnonzero(step < 0)[0]) + 1
        return (f"merge {k} ({left[k]!r} {right[k]!r}) makes id {made[k]}, below the previous merge's {made[k - 1]}: "
                "merge order is not id order")
    # two merges that make the same token (Llama 3's runs of spaces) share tiktoken's rank: equal unless they
    # overlap in one piece, so such a tokenizer is verified on the records
    return bool((step == 0).any())


@dataclass(frozen=True)
class _Frame:
    """What a qualifying tokenizer gives tiktoken besides its ranks: cheap to read from the loaded tokenizer, so
    a kept core never holds it (:func:`_load`)."""

    pattern: str
    nfc: bool
    special: dict[str, int]
    ignore_merges: bool


def _frame(spec: dict) -> _Frame | str:
    """The frame of a tokenizer (``tokenizer.json`` parsed, or :func:`_frame_spec`'s part of it), or why it
    does not qualify: the model's type and flags, the normalizer, the pre-tokenizer and the added tokens."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"model {model.get('type')!r} is not BPE"
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback"):
        if model.get(key):
            return f"BPE with {key}"
    norm = spec.get("normalizer")
    if norm is not None and norm.get("type") != "NFC" and not (
            norm.get("type") == "Sequence" and [n.get("type") for n in norm.get("normalizers", [])] in ([], ["NFC"])):
        return f"normalizer {norm.get('type')!r} (only NFC is applied before tiktoken)"
    nfc = norm is not None and "NFC" in json.dumps(norm)
    try:
        pattern = _pattern(spec.get("pre_tokenizer"))
    except ValueError as e:
        return str(e)
    special = {}
    for t in spec.get("added_tokens", []):
        if t.get("lstrip") or t.get("rstrip") or (t.get("normalized") and not t.get("special")) or t.get(
                "single_word"):
            return f"added token {t['content']!r} strips, matches single words or is normalized"
        special[t["content"]] = t["id"]
    return _Frame(pattern, nfc, special, bool(model.get("ignore_merges", False)))


def _frame_spec(tokenizer: Any) -> dict:
    """The parts of a loaded ``tokenizers.Tokenizer``'s JSON that :func:`_frame` reads, without serialising its
    vocabulary and merges (``to_str`` takes 0.3-0.4 s for Qwen2.5 or Llama 3; this, well under a millisecond)."""
    model = tokenizer.model
    flags = ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback", "ignore_merges")
    parts = {name: getattr(tokenizer, name) for name in ("normalizer", "pre_tokenizer")}
    return {
        "model": {"type": type(model).__name__, **{k: getattr(model, k, None) for k in flags}},
        **{name: None if part is None else json.loads(part.__getstate__()) for name, part in parts.items()},
        "added_tokens": [{"id": i, "content": t.content, "lstrip": t.lstrip, "rstrip": t.rstrip,
                          "normalized": t.normalized, "special": t.special, "single_word": t.single_word}
                         for i, t in sorted(tokenizer.get_added_tokens_decoder().items())],
    }


def qualify(spec: dict) -> Core | str:
    """The tiktoken core of a ``tokenizer.json`` (parsed), or why it does not qualify (one line)."""
    try:
        import tiktoken  # noqa: F401  (only whether it is there)
    except ImportError:
        return "tiktoken is not installed"
    frame = _frame(spec)
    if isinstance(frame, str):
        return frame
    model = spec["model"]
    vocab: dict[str, int] = model.get("vocab") or {}
    # one translate per token (C speed): each alphabet character to the byte it spells, then latin-1 to bytes;
    # a character outside the alphabet would pass through unchanged, so the alphabet is checked first
    table = byte_decoder()
    outside = set("".join(vocab)).difference(table)
    if outside:
        return f"a vocabulary token holds {min(outside)!r}, outside the byte-level alphabet"
    spell = {ord(c): b for c, b in table.items()}
    ranks = {token.translate(spell).encode("latin-1"): i for token, i in vocab.items()}
    if len(ranks) != len(vocab) or len(set(ranks.values())) != len(ranks):
        return "two vocabulary tokens share bytes or an id"
    if any(bytes([b]) not in ranks for b in range(256)):
        return "a single byte has no token"
    why = _merge_order(model, vocab)
    if isinstance(why, str):
        return why
    taken = set(frame.special.values())
    ranks = {k: v for k, v in ranks.items() if v not in taken}
    try:
        return _core(ranks, frame, tied=why)
    except Exception as e:  # a regex its engine does not compile
        return f"tiktoken refuses the tokenizer: {e}"


def _core(ranks: dict[bytes, int], frame: _Frame, tied: bool) -> Core:
    """The core of a qualified tokenizer's ranks and frame (``tied``: two merges make one token)."""
    import tiktoken

    special = frame.special
    encoding = tiktoken.Encoding("packer", pat_str=frame.pattern, mergeable_ranks=ranks, special_tokens=special)
    size = max([*ranks.values(), *special.values()]) + 1
    widths = np.full(size, -1, dtype=np.int64)
    widths[np.fromiter(ranks.values(), np.int64, len(ranks))] = np.fromiter(map(len, ranks), np.int64, len(ranks))
    for content, i in special.items():
        widths[i] = len(content.encode("utf-8"))
    return Core(encoding, frame.nfc, verify=tied or not frame.ignore_merges, widths=widths,
                joiners=_joiners(special))


def unreachable_tokens(spec: dict) -> list[str]:
    """The vocabulary tokens (added ones aside) that ``tokenizers``' BPE, merging from bytes, does not make
    whole: with ``ignore_merges: false`` such a token, met as a whole piece, is split by ``tokenizers`` and
    taken whole by tiktoken. None for GPT-2, Qwen2.5 and Qwen3 (proven over their vocabularies in the tests,
    ~2 s each, so not on every build: the records the build checks guard the rest); 588 for Llama 3, which
    sets ``ignore_merges: true`` (the tiktoken semantics) for that reason."""
    from tokenizers import Tokenizer

    model = {**spec["model"], "ignore_merges": False}
    bare = Tokenizer.from_str(json.dumps({"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
                                          "normalizer": None, "pre_tokenizer": None, "post_processor": None,
                                          "decoder": None, "model": model}))
    added = {t["content"] for t in spec.get("added_tokens", [])}
    tokens = [t for t in model["vocab"] if t not in added]
    vocab = model["vocab"]
    return [t for t, e in zip(tokens, bare.encode_batch(tokens, add_special_tokens=False), strict=True)
            if e.ids != [vocab[t]]]


#: bump when :func:`qualify`'s rules or the cached fields change: older cache files are then not read (2: the
#: ranks and ``verify`` only, the rest read from the tokenizer)
_CACHE_VERSION = 2
_CORES: dict[tuple[str, str], Core | str] = {}


def cache_dir() -> Path:
    """Where qualified cores are kept between processes: ``$PACKER_CACHE_DIR``, else ``$XDG_CACHE_HOME/packer``,
    else ``~/.cache/packer``."""
    if os.environ.get("PACKER_CACHE_DIR"):
        return Path(os.environ["PACKER_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "packer"


def _cache_file(key: tuple[str, str]) -> Path:
    return cache_dir() / f"tiktoken-core-v{_CACHE_VERSION}-{key[1]}-{key[0][:40]}.npz"


def _save(path: Path, got: Core | str, ranks: dict[bytes, int] | None = None) -> None:
    """Keep a qualified core's ranks (or the reason a tokenizer does not qualify) for the next process; best
    effort: a folder that cannot be written only means qualifying again. Nothing else of the core is kept: the
    rest is read again from the tokenizer when the ranks are loaded (:func:`_load`)."""
    meta: dict[str, Any] = {"reason": got} if isinstance(got, str) else {"verify": got.verify}
    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    if ranks is not None:
        arrays["blob"] = np.frombuffer(b"".join(ranks), np.uint8)
        arrays["lengths"] = np.fromiter(map(len, ranks), np.int64, len(ranks))
        arrays["ids"] = np.fromiter(ranks.values(), np.int64, len(ranks))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)  # whole or not at all, for a process reading it at the same time
    except OSError:
        pass


@cache
def _byte_codepoints() -> np.ndarray:
    """uint32[256]: the code point of the character byte-level BPE spells each byte with."""
    out = np.zeros(256, np.uint32)
    for c, b in byte_decoder().items():
        out[b] = ord(c)
    return out


def _gather(starts: np.ndarray, lengths: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Positions of the runs ``[starts[k], starts[k] + lengths[k])`` for ``k`` in ``order``, end to end."""
    n = lengths[order]
    first = np.cumsum(n) - n
    return np.repeat(starts[order] - first, n) + np.arange(int(n.sum()), dtype=np.int64)


def _ranks_disagree(blob: bytes, lengths: np.ndarray, ids: np.ndarray, vocab: dict[str, int],
                    special: dict[str, int]) -> str | None:
    """Why a kept core's ranks are not the tokenizer's vocabulary as :func:`qualify` turns it into ranks (every
    token but the added ones, spelled in bytes, its id its rank), or None where they are exactly that.

    An array comparison, no Python call per token: both sides in id order, the kept bytes as the code points of
    the byte-level alphabet, the vocabulary's tokens as their code points (one join, one encode): ~40 ms for
    Qwen2.5 or Llama 3, besides ~0.1 s of ``get_vocab``. A kept core so loads in 0.32 / 0.44 s (Qwen2.5 / Llama 3)
    where it took 0.17 / 0.22 s unchecked; qualifying takes 1.0 / 1.8 s (2 shared, busy cores;
    ``benchmarks/bench_kept_core.py``)."""
    if len(lengths) != len(ids) or int(lengths.sum()) != len(blob) or (lengths <= 0).any():
        return "its arrays do not fit together"
    order = np.argsort(ids, kind="stable")
    core_ids, core_len = ids[order], lengths[order]
    core = _byte_codepoints()[np.frombuffer(blob, np.uint8)[_gather(np.cumsum(lengths) - lengths, lengths, order)]]
    keys = list(vocab)
    vocab_ids = np.fromiter(vocab.values(), np.int64, len(keys))
    key_len = np.fromiter(map(len, keys), np.int64, len(keys))
    chars = np.frombuffer("".join(keys).encode("utf-32-le", "surrogatepass"), np.uint32)
    kept = np.flatnonzero(~np.isin(vocab_ids, np.fromiter(special.values(), np.int64, len(special))))
    vorder = kept[np.argsort(vocab_ids[kept], kind="stable")]
    if not (np.array_equal(core_ids, vocab_ids[vorder]) and np.array_equal(core_len, key_len[vorder])):
        return (f"{len(ids):,} ranks there, {len(vorder):,} tokens in the vocabulary less the added ones"
                if len(ids) != len(vorder) else "its ranks are not the vocabulary's ids, or its tokens' lengths differ")
    theirs = chars[_gather(np.cumsum(key_len) - key_len, key_len, vorder)]
    if not np.array_equal(core, theirs):
        bad = np.add.reduceat((core != theirs).astype(np.int64), np.cumsum(core_len) - core_len) if len(core) else []
        k = int(np.flatnonzero(bad)[0])
        return f"id {int(core_ids[k])} is {keys[vorder[k]]!r} in the tokenizer, another token there"
    if (np.diff(core_ids) <= 0).any() or int((core_len == 1).sum()) != 256:
        return "two ranks share an id, or a single byte has no rank"
    return None


def _load(path: Path, tokenizer: Any) -> Core | str | None:
    """A kept core (no pickle: arrays and JSON only), checked against ``tokenizer`` (the loaded
    ``tokenizers.Tokenizer``); None where there is none, it does not read, or it disagrees with the tokenizer:
    qualify again.

    A checksum would catch a damaged file, not an edited one, so nothing that decides ids is taken on trust:
    the ranks must be the tokenizer's vocabulary (:func:`_ranks_disagree`); the pattern, the normalizer, the
    special tokens (and from them the joiners and the token widths) are read from the tokenizer itself
    (:func:`_frame_spec`), never from the file. What the file keeps beyond the ranks: that the merges are in id
    order (the core exists), and :attr:`Core.verify` (which no decision reads); checking the merges
    again costs what qualifying does (serialising them: 0.3-0.4 s), and the file is keyed by the tokenizer
    files' sha256. A kept reason (the tokenizer does not qualify) is taken as it is: it can only make a build
    use ``tokenizers``, never give other ids."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if "reason" in meta:
                return str(meta["reason"])
            blob, lengths, ids = z["blob"].tobytes(), z["lengths"], z["ids"]
    except Exception:  # missing, partial, from another version: qualify again
        return None
    frame = _frame(_frame_spec(tokenizer))
    why = frame if isinstance(frame, str) else _ranks_disagree(
        blob, lengths, ids, tokenizer.get_vocab(with_added_tokens=False), frame.special)
    if why is not None:
        logging.getLogger("packer").warning("%s: the kept tiktoken core disagrees with the tokenizer (%s); "
                                            "qualifying it again", path, why)
        return None
    ends = np.cumsum(lengths).tolist()
    ranks = {blob[a:b]: i for a, b, i in zip([0, *ends[:-1]], ends, ids.tolist(), strict=True)}
    try:
        assert isinstance(frame, _Frame)
        return _core(ranks, frame, tied=bool(meta.get("verify", True)))
    except Exception:  # tiktoken missing, or its regex engine refuses the pattern: qualify says which
        return None


def core_of(tok: Any) -> Core | str:
    """:func:`qualify` for a loaded tokenizer (:class:`packer.tokens.loader.TokenizerInfo`), kept per process and on
    disk (:func:`cache_dir`, keyed by the tokenizer's sha256 and loader): qualifying reads the whole vocabulary
    and merges (0.5-1.5 s for Qwen or Llama 3); loading a kept core checks its ranks against the tokenizer's
    vocabulary and reads the rest from the tokenizer (:func:`_load`), so a kept core that disagrees with the
    tokenizer (an edited file) is qualified again, never used. The build checks records against
    ``tokenizers`` either way."""
    key = (tok.sha256, tok.loader)  # the digest names the file(s) and the loader the tokenizer came from
    if key not in _CORES:
        if len(_CORES) >= 4:
            _CORES.clear()
        path = _cache_file(key)
        got = _load(path, tok.tokenizer)
        if got is None:
            # the running tokenizer's own JSON (a transformers-loaded one may differ from the file)
            spec = json.loads(tok.tokenizer.to_str())
            got = qualify(spec)
            if isinstance(got, str):
                if got != "tiktoken is not installed":  # that one may change without the tokenizer changing
                    _save(path, got)
            elif hasattr(got.encoding, "_mergeable_ranks"):  # what a kept core is made again from
                _save(path, got, got.encoding._mergeable_ranks)
        _CORES[key] = got
    return _CORES[key]


__all__ = ["GPT2_PATTERN", "Core", "TokenizerDrift", "byte_decoder", "cache_dir", "core_of", "qualify",
           "unreachable_tokens"]
