"""Tokenizers named by a Hugging Face Hub id (``--tokenizer ORG/NAME[@REVISION]``, :mod:`packer.tokens.hub`): found
in a Hub cache fabricated here the way huggingface_hub lays one out (blobs, snapshots of symbolic links, refs),
with HF_HUB_OFFLINE=1; the same shards and build key as the local path; a local path wins; one-line errors; a
download only with ``download`` (huggingface_hub's snapshot_download replaced by a copy: no network)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from packer import build
from packer.cli import main
from packer.read.records import BuildError
from packer.recipe import load_recipe
from packer.tokens.hub import cache_dir, download_patterns, in_cache, parse_hub_id
from packer.tokens.loader import find_tokenizer, load_tokenizer

from .helpers import DEMO_INPUTS, DEMO_TOKENIZER, ROOT, cli, output_files

REPO = "acme/tiny-chat"
MAIN = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
TAGGED = "0f9e8d7c6b5a49382716a5b4c3d2e1f009876543"
#: the environment of a build that reads the fabricated cache only (set per test: HF_HOME)
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": "", "HUGGINGFACE_HUB_CACHE": "", "TRANSFORMERS_OFFLINE": ""}


def demo_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in DEMO_TOKENIZER.iterdir() if p.is_file()}


def add_snapshot(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ()) -> Path:
    """Commit ``commit`` of ``repo_id`` in the Hub cache ``cache`` as huggingface_hub writes it: each file a blob
    named by its digest, the snapshot a folder of relative symbolic links to the blobs, each ref a file
    holding the commit hash."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        link = snapshot / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to(Path("..", "..", "blobs", blob))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """HF_HOME in tmp_path, offline, its cache holding REPO at MAIN (refs/main) and TAGGED (refs/v1), both the
    demo tokenizer's files; the current folder an empty one (no local path named like REPO)."""
    home = tmp_path / "hf"
    for key, value in {**OFFLINE, "HF_HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    add_snapshot(home / "hub", REPO, MAIN, demo_files(), refs=("main",))
    add_snapshot(home / "hub", REPO, TAGGED, demo_files(), refs=("v1",))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def shard_files(out: Path) -> dict[str, str]:
    return {k: v for k, v in output_files(out).items() if k != "manifest.json"}


def test_hub_ids_are_told_from_paths():
    assert parse_hub_id("Qwen/Qwen2.5-7B-Instruct") == ("Qwen/Qwen2.5-7B-Instruct", None)
    assert parse_hub_id("meta-llama/Llama-3.1-8B@refs/pr/12") == ("meta-llama/Llama-3.1-8B", "refs/pr/12")
    for path in ("tokenizer.json", "./models/qwen", "/abs/models", "a/b/c", "../x", "org/-x", "org--a/b",
                 "a/b@", "a/b@../../x", Path("acme/tiny")):
        assert parse_hub_id(path) is None, path


def test_the_cache_folder_is_read_from_the_environment_at_each_call(monkeypatch, tmp_path):
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", "~/hf")
    assert cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert cache_dir() == tmp_path / "hubcache"


def test_a_hub_id_builds_the_same_shards_as_the_local_path(hub, tmp_path):
    """The issue's check: a fresh process, HF_HUB_OFFLINE=1, the same shards, the same build key."""
    env = {**OFFLINE, "HF_HOME": str(hub)}
    common = [*map(str, DEMO_INPUTS), "--seq-len", "512", "-q"]
    local, by_id = tmp_path / "local", tmp_path / "by_id"
    res = cli("build", *common, "--tokenizer", str(DEMO_TOKENIZER), "-o", str(local), env=env)
    assert res.returncode == 0, res.stderr
    res = cli("build", *common, "--tokenizer", REPO, "-o", str(by_id), env=env, cwd=tmp_path / "work")
    assert res.returncode == 0, res.stderr
    assert shard_files(by_id) == shard_files(local) and len(shard_files(local)) >= 3
    a, b = (json.loads((o / "manifest.json").read_text()) for o in (local, by_id))
    assert b["build_key"] == a["build_key"]  # the files' content, not their name
    t = b["tokenizer"]
    assert (t["source"], t["repo_id"], t["revision"], t["sha256"]) == (REPO, REPO, MAIN, a["tokenizer"]["sha256"])
    assert t["resolved"] == str((hub / "hub" / "models--acme--tiny-chat" / "snapshots" / MAIN).resolve())
    assert "repo_id" not in a["tokenizer"] and "revision" not in a["tokenizer"]
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    jsonschema.validate(b, schema)
    with pytest.raises(jsonschema.ValidationError):  # a repo without its commit says too little
        jsonschema.validate({**b, "tokenizer": {k: v for k, v in t.items() if k != "revision"}}, schema)
    # the output of the local path is up to date for the Hub id: same key, nothing to do
    res = CliRunner().invoke(main, ["build", *common[:-1], "--tokenizer", REPO, "-o", str(local)])
    assert res.exit_code == 0 and "nothing to do" in res.stderr, res.output


@pytest.mark.parametrize("revision, commit", [("", MAIN), ("@main", MAIN), ("@v1", TAGGED), (f"@{TAGGED}", TAGGED),
                                              (f"@{TAGGED[:7]}", TAGGED)])
def test_a_revision_is_a_branch_a_tag_a_hash_or_a_prefix(hub, revision, commit):
    tok = load_tokenizer(REPO + revision)
    assert (tok.repo_id, tok.revision, tok.hub_name) == (REPO, commit, REPO + revision)
    assert Path(tok.source) == hub / "hub" / "models--acme--tiny-chat" / "snapshots" / commit
    assert tok.sha256 == load_tokenizer(DEMO_TOKENIZER).sha256


def test_a_build_at_a_revision_records_its_commit(hub, tmp_path):
    res = CliRunner().invoke(main, ["build", str(DEMO_INPUTS[0]), "-q", "--seq-len", "512", "--tokenizer",
                                    f"{REPO}@v1", "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    t = json.loads((tmp_path / "o" / "manifest.json").read_text())["tokenizer"]
    assert (t["source"], t["repo_id"], t["revision"]) == (f"{REPO}@v1", REPO, TAGGED)


@pytest.mark.parametrize("revision", [None, "main", "v1", TAGGED])
def test_the_fabricated_cache_reads_as_huggingface_hub_reads_it(hub, revision):
    """The cache made here is one huggingface_hub reads, and packer finds the file it finds."""
    hf = pytest.importorskip("huggingface_hub", reason="huggingface_hub not installed (pip install .[hf])")
    theirs = hf.try_to_load_from_cache(REPO, "tokenizer.json", cache_dir=str(hub / "hub"), revision=revision)
    ours = load_tokenizer(REPO + (f"@{revision}" if revision else ""))
    assert isinstance(theirs, str) and Path(theirs) == Path(ours.source) / "tokenizer.json"


def test_an_ambiguous_prefix_is_refused(hub):
    add_snapshot(hub / "hub", REPO, MAIN[:8] + "0" * 32, demo_files())
    with pytest.raises(BuildError, match="prefix of several cached commits"):
        load_tokenizer(f"{REPO}@{MAIN[:8]}")


def test_a_name_neither_path_nor_cached_is_one_line_saying_how_to_download_it(hub, tmp_path):
    res = cli("build", str(DEMO_INPUTS[0]), "--tokenizer", "acme/nope", "-o", str(tmp_path / "o"),
              env={**OFFLINE, "HF_HOME": str(hub)}, cwd=tmp_path / "work")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert "acme/nope: no such local path" in res.stderr and "not in the Hugging Face cache" in res.stderr
    assert str(hub / "hub") in res.stderr and "--download" in res.stderr
    assert "`hf download acme/nope tokenizer.json tokenizer_config.json`" in res.stderr
    assert not (tmp_path / "o").exists()


def test_a_revision_not_in_the_cache_is_named(hub):
    with pytest.raises(BuildError, match=r"acme/tiny-chat is in the Hugging Face cache .* but not at revision v2"
                                         r".*hf download acme/tiny-chat tokenizer.json tokenizer_config.json "
                                         r"--revision v2"):
        load_tokenizer(f"{REPO}@v2")


def test_a_snapshot_whose_blob_is_missing_is_not_in_the_cache(hub):
    repo = hub / "hub" / "models--acme--tiny-chat"
    target = (repo / "snapshots" / MAIN / "tokenizer.json").resolve()
    target.unlink()  # both commits share the blob: neither has a tokenizer.json now
    assert in_cache(REPO) is None
    with pytest.raises(BuildError, match="but not at revision main"):
        load_tokenizer(REPO)


def test_a_local_folder_named_like_a_hub_id_wins(hub, tmp_path):
    local = tmp_path / "work" / "acme" / "tiny-chat"
    local.mkdir(parents=True)
    # the same tokenizer written otherwise: another sha256, so which one was loaded shows
    (local / "tokenizer.json").write_text(json.dumps(json.loads((DEMO_TOKENIZER / "tokenizer.json").read_text())))
    tok = load_tokenizer(REPO)
    assert tok.source == REPO and tok.repo_id is None and tok.revision is None
    assert tok.sha256 == hashlib.sha256((local / "tokenizer.json").read_bytes()).hexdigest()
    assert tok.sha256 != load_tokenizer(f"{REPO}@main").sha256


def test_download_with_hf_hub_offline_is_an_error(hub, tmp_path, monkeypatch):
    res = CliRunner().invoke(main, ["build", str(DEMO_INPUTS[0]), "--tokenizer", "acme/nope", "--download",
                                    "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.output
    assert "--download, but HF_HUB_OFFLINE is set, which forbids downloading" in res.stderr
    with pytest.raises(BuildError, match="HF_HUB_OFFLINE is set"):  # the two contradict, whatever the cache holds
        load_tokenizer(REPO, download=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    with pytest.raises(BuildError, match="--download, but TRANSFORMERS_OFFLINE is set"):
        load_tokenizer("acme/nope", download=True)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    import packer.tokens.hub as hub_module

    def no_fetch(*args, **kw):  # type: ignore[no-untyped-def]
        raise AssertionError("fetched a tokenizer the cache holds")

    monkeypatch.setattr(hub_module, "fetch", no_fetch)
    assert load_tokenizer(REPO, download=True).revision == MAIN  # online, in the cache: nothing fetched


@pytest.fixture
def fake_hub(hub, monkeypatch) -> list[dict]:
    """Online, with huggingface_hub's snapshot_download replaced by a copy of the demo tokenizer (and a file no
    tokenizer needs) into the cache it is given, as a download would write it; the calls, as made."""
    hf = pytest.importorskip("huggingface_hub", reason="huggingface_hub not installed (pip install .[hf])")
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    calls: list[dict] = []
    remote = {**demo_files(), "model.safetensors": b"weights", "config.json": b"{}"}

    def snapshot_download(repo_id, *, revision=None, cache_dir=None, allow_patterns=None, **kw):  # type: ignore[no-untyped-def]
        calls.append({"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir,
                      "allow_patterns": allow_patterns, **kw})
        files = {n: d for n, d in remote.items() if any(fnmatch.fnmatch(n, p) for p in allow_patterns)}
        return str(add_snapshot(Path(cache_dir), repo_id, "c" * 40, files, refs=(revision or "main",)))

    monkeypatch.setattr(hf, "snapshot_download", snapshot_download)
    return calls


def test_download_fetches_only_the_tokenizer_files_once(fake_hub, hub, tmp_path):
    with pytest.raises(BuildError, match="not in the Hugging Face cache"):
        load_tokenizer("acme/new")  # not without download
    assert fake_hub == []
    m = build([DEMO_INPUTS[0]], tmp_path / "o", tokenizer="acme/new", download=True, seq_len=512)
    assert [(c["repo_id"], c["revision"], c["cache_dir"]) for c in fake_hub] == [("acme/new", None, str(hub / "hub"))]
    assert fake_hub[0]["allow_patterns"] == download_patterns("file")
    snapshot = hub / "hub" / "models--acme--new" / "snapshots" / ("c" * 40)
    assert sorted(p.name for p in snapshot.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    assert (m["tokenizer"]["repo_id"], m["tokenizer"]["revision"]) == ("acme/new", "c" * 40)
    build([DEMO_INPUTS[0]], tmp_path / "o2", tokenizer="acme/new", download=True, seq_len=512)
    assert len(fake_hub) == 1  # in the cache now: no second download
    assert shard_files(tmp_path / "o2") == shard_files(tmp_path / "o")


def test_download_for_the_transformers_loader_fetches_what_transformers_reads():
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"} \
        <= set(download_patterns("file"))
    assert {"tokenizer.model", "config.json", "added_tokens.json"} <= set(download_patterns("transformers"))
    assert "tokenizer.model" not in download_patterns("file")


def test_download_failures_are_one_line(fake_hub, monkeypatch):
    import huggingface_hub as hf

    def refused(*args, **kw):  # type: ignore[no-untyped-def]
        raise OSError("401 Client Error\nmore lines")

    monkeypatch.setattr(hf, "snapshot_download", refused)
    with pytest.raises(BuildError, match=r"^acme/gated: downloading from the Hugging Face Hub failed \(OSError: "
                                         r"401 Client Error\); .*HF_TOKEN") as e:
        load_tokenizer("acme/gated", download=True)
    assert "\n" not in str(e.value)


def test_download_without_huggingface_hub_says_what_to_install(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    with pytest.raises(BuildError, match="--download needs huggingface_hub: pip install huggingface_hub"):
        load_tokenizer("acme/new", download=True)


def test_a_recipe_keeps_a_hub_id_unless_a_folder_of_that_name_is_beside_it(tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    shutil.copy(DEMO_INPUTS[0], folder / "a.json")
    recipe = folder / "recipe.toml"
    recipe.write_text(f'tokenizer = "{REPO}@v1"\ndownload = true\n[[inputs]]\npath = "a.json"\n')
    kw = load_recipe(recipe)
    assert kw["tokenizer"] == f"{REPO}@v1" and kw["download"] is True
    recipe.write_text(f'tokenizer = "{REPO}"\n[[inputs]]\npath = "a.json"\n')
    (folder / REPO).mkdir(parents=True)
    assert load_recipe(recipe)["tokenizer"] == str(folder / REPO)


def test_show_finds_a_hub_tokenizer_by_its_commit(hub, tmp_path, monkeypatch):
    m = build([DEMO_INPUTS[0]], tmp_path / "o", tokenizer=f"{REPO}@v1", seq_len=512)
    snapshot = str(hub / "hub" / "models--acme--tiny-chat" / "snapshots" / TAGGED)
    assert find_tokenizer(m["tokenizer"], tmp_path / "o") == str(Path(snapshot).resolve())
    # elsewhere (the recorded snapshot gone): the same commit in this machine's cache, by the ref-less hash
    moved = {**m["tokenizer"], "resolved": str(tmp_path / "gone")}
    assert find_tokenizer(moved, tmp_path / "o") == snapshot
    res = CliRunner().invoke(main, ["show", str(tmp_path / "o"), "--row", "0"])
    assert res.exit_code == 0 and "showing token ids" not in res.output and "cannot load" not in res.output
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    assert find_tokenizer(moved, tmp_path / "o") is None


def test_reading_the_cache_imports_no_huggingface_hub(hub):
    """The common path reads the cache's layout itself: huggingface_hub (and what it imports) only to download."""
    import subprocess
    import sys

    code = ("import sys; from packer.tokens.loader import load_tokenizer; "
            f"tok = load_tokenizer({REPO!r}); assert tok.revision == {MAIN!r}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('huggingface_hub', 'transformers')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr + res.stdout
