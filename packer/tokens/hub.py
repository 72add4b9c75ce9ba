"""Tokenizers named by a Hugging Face Hub id (``ORG/NAME[@REVISION]``), found in the local Hub cache.

A name is a Hub id only where no local path of that name exists (a local folder ``Qwen/Qwen2.5`` wins). The
cache is the one ``huggingface_hub`` writes, read here from its documented layout, so the common path imports
nothing heavy::

    $HF_HUB_CACHE (else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub)
      models--ORG--NAME/refs/main            the commit hash "main" pointed at when it was downloaded
      models--ORG--NAME/snapshots/<hash>/    the files of that commit (symbolic links into blobs/)

``@REVISION`` is a branch or tag (a file under ``refs/``), a commit hash, or a unique prefix of one (7 or more
hex digits). Nothing is downloaded unless asked (:func:`locate` ``download=True``, :func:`fetch`; the build option
``download``); ``HF_HUB_OFFLINE=1`` forbids it. A download fetches only the tokenizer's files
(:func:`download_patterns`) with ``huggingface_hub.snapshot_download`` into the same cache.

    >>> parse_hub_id("Qwen/Qwen2.5-0.5B-Instruct@main")
    ('Qwen/Qwen2.5-0.5B-Instruct', 'main')
    >>> parse_hub_id("./models/qwen") is None, parse_hub_id("tokenizer.json") is None
    (True, True)
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..read.records import BuildError

_log = logging.getLogger("packer")

#: ORG/NAME as the Hub spells a repository: word characters, ``-`` and ``.``, each part starting and ending
#: with a letter, digit or ``_``; no ``--`` or ``..`` (huggingface_hub's validate_repo_id)
_REPO_ID = re.compile(r"(?:\w|\w[\w.-]*\w)/(?:\w|\w[\w.-]{0,94}\w)")
_HEX = re.compile(r"[0-9a-f]{7,40}")
#: what the ``file`` loader reads of a model repository, and what a download of its tokenizer fetches
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json")
#: what transformers may read besides (its tokenizer depends on them: packer.tokens.loader._HF_FILES)
TRANSFORMERS_FILES = ("added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt", "config.json")


@dataclass(frozen=True)
class HubTokenizer:
    """A Hub repository's tokenizer found in the cache: ``path`` is its snapshot folder (files of commit
    ``revision``); ``name`` the id as given (``ORG/NAME`` or ``ORG/NAME@REVISION``)."""

    name: str
    repo_id: str
    revision: str
    path: Path


def parse_hub_id(name: str | os.PathLike) -> tuple[str, str | None] | None:
    """(``ORG/NAME``, the ``@REVISION`` or None) where ``name`` has the shape of a Hub id, else None."""
    if not isinstance(name, str):
        return None
    repo_id, at, revision = name.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        return None
    if at and (not revision or revision.startswith("/") or ".." in revision.split("/")):
        return None
    return repo_id, revision or None


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline() -> str | None:
    """The variable of the environment that forbids the Hub (``HF_HUB_OFFLINE``, or transformers'
    ``TRANSFORMERS_OFFLINE``, set to 1, on, yes or true), or None."""
    return next((v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _is_true(os.environ.get(v))), None)


def cache_dir() -> Path:
    """The Hub cache folder, read from the environment now (huggingface_hub.constants reads it once, at import)."""
    def expand(p: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(p)))

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second: huggingface_hub's older name
        if os.environ.get(var):
            return expand(os.environ[var])
    if os.environ.get("HF_HOME"):
        return expand(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return expand(xdg) / "huggingface" / "hub"


def repo_folder(repo_id: str, cache: Path) -> Path:
    """The cache folder of model repository ``repo_id``."""
    return cache / ("models--" + repo_id.replace("/", "--"))


def _commit(repo: Path, revision: str) -> str | None:
    """The commit hash ``revision`` names in the cached repository ``repo`` (a ref, a hash, a unique prefix of
    one), or None where the cache has no snapshot of it; a BuildError for a prefix that names several."""
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        return commit if (repo / "snapshots" / commit).is_dir() else None
    if (repo / "snapshots" / revision).is_dir():
        return revision
    if not _HEX.fullmatch(revision) or not (repo / "snapshots").is_dir():
        return None
    found = sorted(p.name for p in (repo / "snapshots").iterdir() if p.name.startswith(revision))
    if len(found) > 1:
        raise BuildError(f"{repo.name}: revision {revision} is a prefix of several cached commits "
                         f"({', '.join(f[:12] for f in found)}); give more of the hash")
    return found[0] if found else None


def has_tokenizer(folder: Path, loader: str = "file") -> bool:
    """Whether ``folder`` holds what ``loader`` makes a tokenizer from (a symbolic link into a missing blob
    does not count)."""
    return (folder / "tokenizer.json").is_file() or (loader == "transformers" and
                                                     (folder / "tokenizer.model").is_file())


def in_cache(name: str, *, loader: str = "file", cache: Path | None = None) -> HubTokenizer | None:
    """The Hub id ``name``'s tokenizer in the cache (``cache``, else :func:`cache_dir`), or None where the cache
    has no snapshot of that revision (``main`` when none is given) with a tokenizer in it."""
    parsed = parse_hub_id(name)
    if parsed is None:
        return None
    repo_id, revision = parsed
    repo = repo_folder(repo_id, cache or cache_dir())
    commit = _commit(repo, revision or "main") if repo.is_dir() else None
    if commit is None or not has_tokenizer(repo / "snapshots" / commit, loader):
        return None
    return HubTokenizer(name, repo_id, commit, repo / "snapshots" / commit)


def download_patterns(loader: str = "file") -> list[str]:
    """The files a download fetches: the tokenizer's, and for the transformers loader what transformers reads."""
    return list(TOKENIZER_FILES) + (list(TRANSFORMERS_FILES) if loader == "transformers" else [])


def _not_found(name: str, repo_id: str, revision: str | None, cache: Path) -> BuildError:
    repo = repo_folder(repo_id, cache)
    where = (f"{repo_id} is in the Hugging Face cache ({cache}) but not at revision {revision or 'main'} with a "
             "tokenizer.json" if repo.is_dir() else f"{repo_id} is not in the Hugging Face cache ({cache})")
    fetch = f"hf download {repo_id} tokenizer.json tokenizer_config.json" + (f" --revision {revision}"
                                                                             if revision else "")
    return BuildError(f"{name}: no such local path, and {where}; download it with --download (recipe: download "
                      f"= true), or `{fetch}`")


def fetch(name: str, *, loader: str = "file", cache: Path | None = None) -> HubTokenizer:
    """Download the Hub id ``name``'s tokenizer files (:func:`download_patterns`) into the cache and return them;
    a one-line BuildError where the environment forbids it, huggingface_hub is missing or the Hub says no."""
    parsed = parse_hub_id(name)
    if parsed is None:
        raise BuildError(f"{name}: not a Hugging Face Hub id (ORG/NAME or ORG/NAME@REVISION)")
    repo_id, revision = parsed
    cache = cache or cache_dir()
    if offline():
        raise BuildError(f"{name}: --download, but {offline()} is set, which forbids downloading; unset it, or "
                         f"download it where the network is allowed (`hf download {repo_id} tokenizer.json "
                         "tokenizer_config.json`)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise BuildError(f"{name}: --download needs huggingface_hub: pip install huggingface_hub") from None
    _log.info("downloading %s's tokenizer files from the Hugging Face Hub into %s", name, cache)
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=str(cache),
                                   allow_patterns=download_patterns(loader))
    except Exception as e:  # RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, connection errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BuildError(f"{name}: downloading from the Hugging Face Hub failed ({type(e).__name__}: {first}); "
                         "a gated or private model needs a token (HF_TOKEN, or `hf auth login`)") from None
    path = Path(folder)
    if not has_tokenizer(path, loader):
        raise BuildError(f"{name}: the Hub repository has no tokenizer.json"
                         + ("" if loader == "transformers" else " (--tokenizer-loader transformers reads "
                            "tokenizer.model)"))
    return HubTokenizer(name, repo_id, path.name, path)


def locate(name: str | os.PathLike, *, download: bool = False, loader: str = "file") -> HubTokenizer | None:
    """Where the tokenizer ``name`` is: None where ``name`` is to be read as a local path (one of that name
    exists, or it is no Hub id), else the Hub id's tokenizer from the cache, downloaded first where it is not
    there and ``download`` allows it; a one-line BuildError saying how to get it where it is not.

    ``download=True`` with ``HF_HUB_OFFLINE`` set is refused even where the cache holds the tokenizer: the two
    contradict each other, and the build says so before anything is read from the network or not.
    """
    if os.path.lexists(name) or parse_hub_id(name) is None:
        return None  # a local path always wins
    name = str(name)
    if download and offline():
        raise BuildError(f"{name}: --download, but {offline()} is set, which forbids downloading; unset one of "
                         "the two")
    cache = cache_dir()
    found = in_cache(name, loader=loader, cache=cache)
    if found is not None:
        return found
    if download:
        return fetch(name, loader=loader, cache=cache)
    repo_id, revision = parse_hub_id(name) or (name, None)
    raise _not_found(name, repo_id, revision, cache)

