"""Tokenizer loading: a ``tokenizer.json`` and what its ``tokenizer_config.json`` says.

Two loaders (:data:`packer.options.LOADERS`) decide which behaviour the ids follow:

- ``file``: ``tokenizer.json`` as it is (what ``tokenizers``-based engines and transformers 4.x run).
- ``transformers``: the installed transformers' ``AutoTokenizer``. transformers 5 builds
  SentencePiece-family tokenizers (Llama 2, Mistral, Phi-3) from their vocabulary and config instead of
  running ``tokenizer.json``, and differs from it at whitespace after special tokens. Its ``tokenizers``
  backend is what it encodes with (checked on probe texts at load), so the build calls that backend
  with the same fast batch calls.

:func:`loader_difference` says whether the other loader gives other ids on some texts.

Kept apart from :mod:`packer.tokens.tokenize` (the role-labelling kernels, which need
numba): ``packer show`` and ``packer inspect --html`` load a tokenizer only to
decode, and should not pay for compiling or loading those kernels.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from tokenizers import Tokenizer

from ..read.records import BuildError


@dataclass(frozen=True)
class TokenizerInfo:
    """A loaded tokenizer with what its ``tokenizer_config.json`` says.

    ``special_tokens`` are the added tokens flagged special (control tokens);
    message content must never produce one of them.
    """

    source: str
    tokenizer: Tokenizer
    sha256: str
    vocab_size: int
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    unk_token: str | None
    chat_template: str | None
    special_tokens: tuple[str, ...]
    #: whether the model expects a BOS at the start of a sequence
    add_bos: bool
    #: which behaviour the ids follow (see :data:`packer.options.LOADERS`)
    loader: str = "file"
    #: the transformers version that made the tokenizer (loader ``transformers``), else None
    transformers_version: str | None = None
    #: the file ``chat_template`` was read from (tokenizer_config.json or chat_template.jinja), named by its errors
    chat_template_file: str | None = None
    #: a tokenizer named by a Hugging Face Hub id (packer.tokens.hub): the id as given (``ORG/NAME@REVISION``),
    #: the repository and the commit whose cached snapshot ``source`` is; None for a local path
    hub_name: str | None = None
    repo_id: str | None = None
    revision: str | None = None

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.tokenizer.token_to_id(token)

    def special_map(self) -> dict[str, str]:
        """The special-token variables a chat template sees (as HF passes them)."""
        out = {}
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = getattr(self, name)
            out[name] = value if value is not None else ""
        return out


def _token_text(value: object) -> str | None:
    # tokenizer_config.json holds either a string or an AddedToken dict
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _chat_template(cfg: dict, directory: Path | None, config_dir: Path) -> tuple[str | None, str | None]:
    """The chat template and the file it is in."""
    tpl = cfg.get("chat_template")
    if isinstance(tpl, list):  # named templates: HF uses "default"
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default") or next(iter(named.values()), None)
    if isinstance(tpl, str) and tpl.strip():
        return tpl, str(config_dir / "tokenizer_config.json")
    if directory is not None and (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8"), str(directory / "chat_template.jinja")
    return None, None


def _split_path(path: str | os.PathLike) -> tuple[Path, Path, bool]:
    """(directory, tokenizer.json, whether ``path`` is a directory)."""
    p = Path(path)
    if p.is_dir():
        return p, p / "tokenizer.json", True
    return p.parent, p, False


def _read_config(directory: Path) -> dict:
    cfg_path = directory / "tokenizer_config.json"
    if not cfg_path.is_file():
        return {}
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BuildError(f"{cfg_path}: not valid JSON: {e}") from None
    return cfg if isinstance(cfg, dict) else {}


def _info(path: str | os.PathLike, tok: Tokenizer, sha256: str, cfg: dict, template_dir: Path | None, *,
          special: tuple[str, ...] | None = None, loader: str = "file",
          transformers_version: str | None = None) -> TokenizerInfo:
    """What both loaders read the same way from the config files, around the tokenizer they made."""
    if special is None:
        # from the loaded tokenizer, in id order: parsing the JSON again costs ~0.1 s for a large vocabulary
        added = sorted(tok.get_added_tokens_decoder().items())
        special = tuple(t.content for _, t in added if t.special)
    bos = _token_text(cfg.get("bos_token"))
    eos = _token_text(cfg.get("eos_token"))
    chat_template, chat_template_file = _chat_template(cfg, template_dir, _split_path(path)[0])
    if "add_bos_token" in cfg and cfg["add_bos_token"] is not None:
        add_bos = bool(cfg["add_bos_token"]) and bos is not None
    else:
        # no explicit setting: the model expects BOS if its post-processor adds one
        with_sp = tok.encode("a", add_special_tokens=True).ids
        add_bos = bos is not None and len(with_sp) > 1 and with_sp[0] == tok.token_to_id(bos)
    return TokenizerInfo(
        source=str(path),
        tokenizer=tok,
        sha256=sha256,
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        bos_token=bos,
        eos_token=eos,
        pad_token=_token_text(cfg.get("pad_token")),
        unk_token=_token_text(cfg.get("unk_token")),
        chat_template=chat_template,
        special_tokens=special,
        add_bos=add_bos,
        loader=loader,
        transformers_version=transformers_version,
        chat_template_file=chat_template_file,
    )


def load_tokenizer(path: str | os.PathLike, *, loader: str = "file", download: bool = False) -> TokenizerInfo:
    """Load a tokenizer from a directory (``tokenizer.json`` plus optional
    ``tokenizer_config.json`` / ``chat_template.jinja``) or a ``tokenizer.json``
    file, or a Hugging Face Hub id (``ORG/NAME[@REVISION]``) where no local path of that name exists: its
    snapshot in the local Hub cache (:mod:`packer.tokens.hub`). Nothing is fetched from the network unless
    ``download`` (then only the tokenizer's files of a Hub id missing from the cache).

    ``loader="file"`` runs ``tokenizer.json`` as it is; ``loader="transformers"`` gives the ids of
    the installed transformers' ``AutoTokenizer`` (see the module docstring). bos/eos/pad/unk, the
    chat template, ``add_bos`` and the special tokens are read the same way by both.

        >>> tok = load_tokenizer("Qwen/Qwen2.5-0.5B-Instruct")  # doctest: +SKIP
        >>> tok.repo_id, tok.revision[:7], tok.source  # doctest: +SKIP
        ('Qwen/Qwen2.5-0.5B-Instruct', '7ae5576', '/root/.cache/huggingface/hub/models--Qwen--.../snapshots/7ae55...')
    """
    if loader not in ("file", "transformers"):
        raise BuildError(f"unknown tokenizer loader {loader!r}; choose file|transformers")
    from .hub import locate  # light: the cache is read from its layout, huggingface_hub only to download

    hub = locate(path, download=download, loader=loader)
    if hub is None:
        return _load_local(path, loader)
    info = _load_local(hub.path, loader)
    return replace(info, hub_name=hub.name, repo_id=hub.repo_id, revision=hub.revision)


def _load_local(path: str | os.PathLike, loader: str) -> TokenizerInfo:
    """:func:`load_tokenizer` of a local folder or file."""
    if loader == "transformers":
        info = _load_transformers(path)
        assert info is not None
        return info
    directory, tj, is_dir = _split_path(path)
    if not tj.is_file():
        raise BuildError(f"{path}: no tokenizer.json found (give a model directory or a tokenizer.json file)")
    raw = tj.read_bytes()
    try:
        tok = Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as e:  # the library raises a bare Exception
        raise BuildError(f"{tj}: cannot load tokenizer: {e}") from None
    cfg = _read_config(directory)
    return _info(path, tok, hashlib.sha256(raw).hexdigest(), cfg, directory if is_dir else None)


def find_tokenizer(built: dict, output: str | os.PathLike) -> str | None:
    """Where the tokenizer a manifest's ``tokenizer`` section (``built``) names is now, for the tools that decode
    an output (``show``, ``inspect --html``) from any folder: its ``source`` as typed at the build (relative to
    the folder the build ran in), else the absolute path recorded then (``resolved``), else a relative source
    taken from the output folder or a folder above it (where the build ran, if the two moved together).
    The first that holds a tokenizer; None if none does. A tokenizer built from a Hub id (``repo_id``): the
    snapshot recorded, else the same commit in this machine's Hub cache."""
    source = built.get("source")
    if not source:
        return None
    if built.get("repo_id") and built.get("revision"):
        from .hub import in_cache

        resolved = built.get("resolved")
        if resolved and Path(resolved).is_dir() and (Path(resolved) / "tokenizer.json").is_file():
            return str(resolved)
        found = in_cache(f"{built['repo_id']}@{built['revision']}")
        return None if found is None else str(found.path)
    candidates = [Path(source)]
    if built.get("resolved"):
        candidates.append(Path(built["resolved"]))
    if not Path(source).is_absolute() and "://" not in str(output):
        out = Path(output).resolve()
        candidates += [folder / source for folder in (out, *out.parents)]
    for path in candidates:
        if (path / "tokenizer.json").is_file() if path.is_dir() else path.is_file():
            return str(path)
    return None


# ----------------------------------------------------------------------------------------------------------------
# the transformers loader

#: files of a model directory that transformers may read to make a tokenizer: their digests, with the
#: loader and transformers version, are the ``sha256`` of a tokenizer from the transformers loader
_HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
             "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt", "config.json")

#: short texts on which the backend must give what the transformers tokenizer gives (whitespace, digits,
#: non-ASCII, a leading space: where SentencePiece-family handling differs); special tokens are added
_PROBES = ("Hello world", " Hello", "\nHello", "Hello\n\n  there\t!", "  two  spaces ", "1234567 + 89",
           "naïve café 你好 🤖", "a\r\nb", "▁x", "")


def _transformers():  # type: ignore[no-untyped-def]
    try:
        import transformers
    except ImportError:
        raise BuildError("--tokenizer-loader transformers needs transformers: pip install 'packer[hf]'") from None
    return transformers


def _quiet_from_pretrained(transformers, directory: Path):  # type: ignore[no-untyped-def]
    """AutoTokenizer.from_pretrained, local files only, with transformers' log (legacy notices) silenced."""
    log = transformers.utils.logging
    level = log.get_verbosity()
    log.set_verbosity_error()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True,
                                                          trust_remote_code=False)
    finally:
        log.set_verbosity(level)


def _hf_special_of_file(tj: Path, raw: bytes) -> tuple[str, ...] | None:
    """The special added tokens of ``tokenizer.json``, in id order (its ``added_tokens`` only, parsed
    without the vocabulary); None if the section cannot be found."""
    text = raw.decode("utf-8", errors="replace")
    at = text.find('"added_tokens"')
    start = text.find("[", at) if at >= 0 else -1
    if start < 0:
        return None
    try:
        added, _ = json.JSONDecoder().raw_decode(text, start)
        return tuple(a["content"] for a in sorted(added, key=lambda a: a["id"]) if a.get("special"))
    except (ValueError, KeyError, TypeError):
        return None


def _transformers_version() -> str:
    """The installed transformers' version, read without importing it (BuildError where it is not installed)."""
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError("--tokenizer-loader transformers needs transformers: pip install 'packer[hf]'") from None


def _load_transformers(path: str | os.PathLike, *, kept_only: bool = False) -> TokenizerInfo | None:
    """The transformers loader: its backend from the kept copy (:func:`kept_backend`) where this transformers
    made one for these files, else from transformers itself (then kept); with ``kept_only``, None there."""
    directory, tj, is_dir = _split_path(path)
    if not is_dir and tj.name != "tokenizer.json":
        raise BuildError(f"{path}: the transformers loader needs a model directory (or its tokenizer.json)")
    if not directory.is_dir():
        raise BuildError(f"{path}: no such tokenizer directory")
    version = _transformers_version()
    sha, raw = _transformers_digest(directory, version)
    kept = kept_backend(sha)
    if kept is None and kept_only:
        return None
    backend, hf = (kept, None) if kept is not None else _hf_backend(directory)
    cfg = _read_config(directory)
    # special tokens as tokenizer.json flags them (transformers 5 also flags ones a tokenizer class names,
    # such as Gemma's <mask>): packer's control tokens are the same under both loaders
    special = _hf_special_of_file(tj, raw) if raw else None
    if special is not None:
        special = tuple(s for s in special if backend.token_to_id(s) is not None)
    info = _info(path, backend, sha, cfg, directory if is_dir else None, special=special,
                 loader="transformers", transformers_version=version)
    if hf is not None:
        _check_backend(hf, backend, info, directory, version)
        _keep_backend(sha, backend)
    return info


def _transformers_digest(directory: Path, version: str) -> tuple[str, bytes]:
    """The transformers loader's digest of ``directory`` (its files' sha256 and the transformers ``version``: what
    the ids depend on, the key of the kept backend), and tokenizer.json's bytes (empty where there is none)."""
    digest = hashlib.sha256(f"packer tokenizer loader transformers {version}\n".encode())
    raw = b""
    for name in _HF_FILES:
        f = directory / name
        if f.is_file():
            data = f.read_bytes()
            if name == "tokenizer.json":
                raw = data
            digest.update(f"{name} {hashlib.sha256(data).hexdigest()}\n".encode())
    return digest.hexdigest(), raw


def _hf_backend(directory: Path) -> tuple[Tokenizer, object]:
    """The transformers tokenizer of ``directory`` and its ``tokenizers`` backend, set as a call with
    ``add_special_tokens=False`` and no truncation or padding leaves it."""
    transformers = _transformers()
    version = transformers.__version__
    try:
        hf = _quiet_from_pretrained(transformers, directory)
    except Exception as e:  # OSError, ValueError, ImportError (sentencepiece, protobuf), a bare Exception ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BuildError(f"{directory}: transformers {version} cannot load this tokenizer: {first}") from None
    backend = getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise BuildError(f"{directory}: transformers {version} loads it as {type(hf).__name__}, which has no "
                         "tokenizers backend; packer cannot batch its ids (use --tokenizer-loader file)")
    backend.no_truncation()
    backend.no_padding()
    if hasattr(backend, "encode_special_tokens"):
        backend.encode_special_tokens = bool(getattr(hf, "split_special_tokens", False))
    return backend, hf


# -- the transformers backend, kept ---------------------------------------------------------------------------
# transformers 5 builds a SentencePiece-family tokenizer anew from its files; importing it (and torch, which it
# imports) costs a build 2.5-4 s and ~300 MB. What it builds is a ``tokenizers`` backend, kept here as JSON
# keyed by the files' sha256 and the transformers version (the loader's digest), once it passed _check_backend.

#: bump when what is kept changes
_KEPT_VERSION = 1


def _kept_file(sha: str) -> Path:
    from .tiktoken_core import cache_dir

    return cache_dir() / f"transformers-backend-v{_KEPT_VERSION}-{sha[:40]}.json"


def kept_backend(sha: str) -> Tokenizer | None:
    """The transformers backend kept for the loader digest ``sha``, or None (none kept, or unreadable)."""
    try:
        kept = json.loads(_kept_file(sha).read_text(encoding="utf-8"))
        backend = Tokenizer.from_str(kept["tokenizer"])
    except Exception:  # none kept, or a damaged file (made again)
        return None
    backend.no_truncation()
    backend.no_padding()
    if hasattr(backend, "encode_special_tokens"):
        backend.encode_special_tokens = bool(kept.get("encode_special_tokens", False))
    return backend


def _keep_backend(sha: str, backend: Tokenizer) -> None:
    """Keep a checked backend for the next process; best effort (a folder that cannot be written only means
    importing transformers again)."""
    path = _kept_file(sha)
    kept = {"tokenizer": backend.to_str(), "encode_special_tokens": bool(getattr(backend, "encode_special_tokens",
                                                                                   False))}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(kept), encoding="utf-8")
        os.replace(tmp, path)  # whole or not at all, for a process reading it at the same time
    except OSError:
        pass


def _check_backend(hf, backend: Tokenizer, info: TokenizerInfo, directory: Path, version: str) -> None:  # type: ignore[no-untyped-def]
    """Refuse a transformers tokenizer whose ids are not its backend's (Python code around the backend)."""
    specials = [t for t in (info.bos_token, info.eos_token, *info.special_tokens[:8]) if t]
    probes = list(_PROBES)
    for s in dict.fromkeys(specials):
        probes += [f"{s}\nHello", f"{s} Hello", f"Hi {s}\n\n x", f"{s}{s}"]
    want = hf(probes, add_special_tokens=False)["input_ids"]
    got = [e.ids for e in backend.encode_batch(probes, add_special_tokens=False)]
    for text, a, b in zip(probes, want, got, strict=True):
        if list(a) != b:
            raise BuildError(f"{directory}: transformers {version}'s {type(hf).__name__} does not encode "
                             f"{text!r} as its tokenizers backend does; packer cannot reproduce its ids in batch "
                             "(use --tokenizer-loader file)")


# ----------------------------------------------------------------------------------------------------------------
# whether the two loaders agree

def _label(tok: TokenizerInfo) -> str:
    return f"transformers {tok.transformers_version}" if tok.loader == "transformers" else "tokenizer.json"


def _other_loader(tok: TokenizerInfo) -> TokenizerInfo | None:
    """``tok``'s tokenizer from the other loader, or None where it cannot load (cached per process)."""
    directory, _, _ = _split_path(tok.source)
    stamp = []
    for name in _HF_FILES:  # a tokenizer edited on disk is loaded again
        try:
            st = (directory / name).stat()
            stamp.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            pass
    other = "file" if tok.loader == "transformers" else "transformers"
    return _load_other(os.path.abspath(tok.source), other, tuple(stamp))


#: what makes the kept transformers backend of a tokenizer in a process of its own, without torch
_KEEP_CHILD = """import sys
sys.modules["torch"] = None  # transformers builds a tokenizer without torch, 1.5 s and ~300 MB sooner
sys.path.insert(0, sys.argv[2])
from packer.tokens.loader import load_tokenizer
load_tokenizer(sys.argv[1], loader="transformers")
"""


def _keep_in_child(source: str) -> bool:
    """Make ``source``'s kept transformers backend (:func:`kept_backend`) in a child process, so that this
    process never imports transformers and torch for a comparison; whether the child succeeded."""
    root = str(Path(__file__).resolve().parents[2])
    try:
        done = subprocess.run([sys.executable, "-c", _KEEP_CHILD, source, root], capture_output=True, timeout=600,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@functools.lru_cache(maxsize=4)
def _load_other(source: str, loader: str, stamp: tuple) -> TokenizerInfo | None:
    try:
        if loader == "transformers" and "transformers" not in sys.modules:
            # the kept backend, loaded once (a SentencePiece one takes ~0.4 s): the look for it is the load
            kept = _load_transformers(source, kept_only=True)
            if kept is not None:
                return kept
            _keep_in_child(source)  # then loaded from what the child kept; where it failed, here (as before)
        return load_tokenizer(source, loader=loader)
    except Exception:  # BuildError, a broken file: no comparison
        return None


def _encode_ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    fast = getattr(tok, "encode_batch_fast", None) or tok.encode_batch  # offsets are not needed
    return [e.ids for e in fast(texts, add_special_tokens=False)]


def _tokens(tok: Tokenizer, ids: list[int]) -> str:
    return ", ".join(repr(tok.id_to_token(i)) for i in ids)


def loaders_may_differ(tok: TokenizerInfo, byte_level: bool) -> bool:
    """Whether :func:`loader_difference` can find anything, decided without importing transformers.

    Not without transformers; not under transformers 4, which runs tokenizer.json as it is; not for a
    byte-level BPE tokenizer (``byte_level``), whose tokenizer.json transformers 5 runs as it is too
    (Qwen2.5, Qwen3, both Llama 3 and GPT-2 agree on every text tested). transformers 5 rebuilds the
    SentencePiece family (Llama 2, Mistral, Phi-3 differ), so those are compared.
    """
    if byte_level or importlib.util.find_spec("transformers") is None:
        return False
    try:
        major = int(importlib.metadata.version("transformers").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return True
    return major >= 5 or tok.loader == "transformers"


#: what each loader's ids match
LOADER_STACKS = {
    "file": "tokenizer.json as it is (what runs it with the tokenizers library: TGI, tokenizers-based engines, "
            "transformers 4)",
    "transformers": "the installed transformers' AutoTokenizer (what vLLM, SGLang and TRL give on this "
                    "transformers)",
}


def difference_note(tok: TokenizerInfo, difference: str, chosen: bool) -> str:
    """What a build says when the two loaders give other ids (``difference``, from :func:`loader_difference`):
    where the user ``chosen`` a loader, one line of information; else a warning that says which loader matches
    which serving stack, and that choosing one (which silences it) is what to do."""
    if chosen:
        return (f"--tokenizer-loader {tok.loader}: the ids follow {LOADER_STACKS[tok.loader]}; the other loader "
                f"gives other ids ({difference})")
    other = "transformers" if tok.loader == "file" else "file"
    return (f"the other tokenizer loader gives other ids: {difference}. These shards follow --tokenizer-loader "
            f"{tok.loader}, {LOADER_STACKS[tok.loader]}; --tokenizer-loader {other} follows {LOADER_STACKS[other]}. "
            "Train and serve with the same: choose the one your stack runs (--tokenizer-loader file|transformers), "
            "which also silences this warning")


def loader_difference(tok: TokenizerInfo, texts: list[str]) -> str | None:
    """One line saying how the other loader's ids differ from ``tok``'s on ``texts``, or None.

    None when the ids are equal, when transformers is not installed, or when the other loader cannot
    load this tokenizer; never raises. Else, e.g. ``3 of 64 texts tokenize differently, e.g. text 0
    at token 5: tokenizer.json: '<|user|>', '▁Hello' | transformers 5.24.0: '<|user|>', 'Hello'``
    (``tok``'s loader first; two tokens before the first difference and three from it).
    The other loader is loaded once per process (transformers' import is the cost, ~2-5 s).
    """
    try:
        if not texts or importlib.util.find_spec("transformers") is None:
            return None
        other = _other_loader(tok)
        if other is None:
            return None
        ours, theirs = _encode_ids(tok.tokenizer, texts), _encode_ids(other.tokenizer, texts)
        differ = [k for k, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
        if not differ:
            return None
        k = differ[0]
        a, b = ours[k], theirs[k]
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        lo = max(0, at - 2)
        return (f"{len(differ)} of {len(texts)} texts tokenize differently, e.g. text {k} at token {at}: "
                f"{_label(tok)}: {_tokens(tok.tokenizer, a[lo : at + 3])} | "
                f"{_label(other)}: {_tokens(other.tokenizer, b[lo : at + 3])}")
    except Exception:  # a notice must never break a build
        return None
