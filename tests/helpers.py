"""Plain helpers and paths for the tests (fixtures live in conftest.py): the bundled demo
inputs and tokenizer, the real tokenizers and data in ../shared (tests that need them skip,
with the reason, where it is absent), and a reader that splits packed rows back into documents."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest

from packer.output.container import message_offsets, read_table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEMO_TOKENIZER = ROOT / "packer" / "demo_tokenizer"
DEMO_INPUTS = [EXAMPLES / "alpaca_demo.json", EXAMPLES / "sharegpt_demo.json"]
#: the options of the demo build made once per test run (conftest's ``demo_output``): 30 kB shards, several
DEMO_BUILD_OPTIONS = {"seq_len": 512, "shard_size": 30_000 / 2**20}
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_TOKENIZERS = SHARED / "tokenizers"


def need_shared() -> None:
    if not SHARED_DATA.is_dir() or not SHARED_TOKENIZERS.is_dir():
        pytest.skip(f"real data and tokenizers not found at {SHARED} (only in CI and developer checkouts)")


@functools.cache
def real_tokenizer(name: str):  # type: ignore[no-untyped-def]
    """``load_tokenizer(SHARED_TOKENIZERS / name)`` (the file loader), loaded once per test process and shared
    by the tests that only build with it or read it (loading one costs up to 1.5 s, Gemma-2's): never change it."""
    from packer.tokens.tokenize import load_tokenizer

    need_shared()
    return load_tokenizer(SHARED_TOKENIZERS / name)


@functools.cache
def hf_tokenizer(tok_dir: Path):  # type: ignore[no-untyped-def]
    """transformers' ``AutoTokenizer.from_pretrained(tok_dir)`` (local files), loaded once per test process and
    shared by the tests that compare with it (Gemma-2's costs ~4 s): never change it."""
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install .[hf])")
    return transformers.AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)


#: the real chat tokenizers of ../shared/tokenizers (each with a chat template) the suite runs on
CHAT_TOKENIZERS = [
    "qwen2.5-instruct", "qwen3", "llama-3-8b-instruct", "llama-3-8b-instruct-initial",
    "mistral-7b-instruct-v0.1", "phi-3-mini-instruct", "gemma-2",
]

#: what a test run on each real tokenizer leaves to the slow set (CI runs it, -m "not slow" does not): Gemma-2, the
#: slowest to load and build (a 256k-token SentencePiece vocabulary, no tiktoken core; transformers loads it in ~4 s),
#: and the two that share another's vocabulary and merges (Qwen3 Qwen2.5's, Llama 3's initial template Llama 3's)
SLOW_TOKENIZERS = ("gemma-2", "qwen3", "llama-3-8b-instruct-initial")


def tokenizer_params(names: list[str]) -> list:
    """``names`` as pytest parameters, those of :data:`SLOW_TOKENIZERS` marked slow: the inner loop runs a test
    on one tokenizer of each vocabulary, CI on every one."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TOKENIZERS else n for n in names]


def read_documents(out: Path) -> dict[int, dict[str, np.ndarray]]:
    """doc_id -> that document's slice of every per-token column of the shards."""
    manifest = json.loads((out / "manifest.json").read_text())
    docs: dict[int, dict[str, np.ndarray]] = {}
    for shard in manifest["shards"]:
        table = read_table(out / shard["file"])
        token_cols = [c for c in table.column_names if c not in ("seq_lens", "doc_ids")]
        for row in table.to_pylist():
            pos = 0
            for length, doc_id in zip(row["seq_lens"], row["doc_ids"], strict=True):
                assert doc_id not in docs, f"document {doc_id} packed twice"
                docs[doc_id] = {c: np.asarray(row[c][pos : pos + length]) for c in token_cols}
                pos += length
            assert pos == len(row["input_ids"]), "seq_lens do not sum to the row length"
    return docs


def _manifest_sha256(m: dict) -> str:
    """The digest :func:`output_files` gives a manifest: its JSON without build_seconds (a wall time)."""
    m = {k: v for k, v in m.items() if k != "build_seconds"}
    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()


def output_files(out: Path) -> dict[str, str]:
    """file name -> sha256 of every file of an output (the manifest without its build_seconds)."""
    files = {}
    for p in sorted(out.iterdir()):
        if p.name == "manifest.json":
            files[p.name] = _manifest_sha256(json.loads(p.read_bytes()))
        else:
            files[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def outputs_less_backend(out: Path) -> dict[str, str]:
    """:func:`output_files` with the manifest's ``tokenizer.backend`` left out of its digest, and that backend
    under the key ``"backend"`` (``"tokenizers"`` where the manifest has none): a tiktoken build and a
    tokenizers build of the same inputs give the same dict but for ``"backend"`` (issue 17). The output
    is only read, never changed."""
    files = output_files(out)
    m = json.loads((out / "manifest.json").read_text())
    backend = m["tokenizer"].pop("backend", "tokenizers")
    files["manifest.json"] = _manifest_sha256(m)
    files["backend"] = backend
    return files


def demo_variants(path: Path, copies: int) -> Path:
    """The demo Alpaca records ``copies`` times over, each copy's instructions changed: a build of some seconds."""
    records = json.loads((EXAMPLES / "alpaca_demo.json").read_text())
    with open(path, "w") as f:
        for k in range(copies):
            for r in records:
                f.write(json.dumps({**r, "instruction": f"{r['instruction']} (variant {k})"}) + "\n")
    return path


def as_version_1(src: Path, dst: Path) -> Path:
    """A copy of output ``src`` as packer wrote it before format version 2 (issue 15): shards without the
    ``trainable`` column and the ``answer_only`` mask, a manifest without the untrained counts or the roles
    tool_call, reasoning and tool (``src`` must have none of them), sizes and sha256 of the new files."""
    import shutil


    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    new_roles = ("tool_call", "reasoning", "tool")
    assert all(m["tokens"]["per_role"][k] == 0 for k in new_roles) and not m["tokens"].get("untrained")
    m["format"]["version"] = 1
    m["strategies"].pop("answer_only", None)
    m["roles"] = {k: v for k, v in m["roles"].items() if k not in new_roles}
    for tokens in (m["tokens"], *([m["eval"]["tokens"]] if m.get("eval") else [])):
        for k in ("untrained", "untrained_per_role"):
            tokens.pop(k, None)
        tokens["per_role"] = {k: v for k, v in tokens["per_role"].items() if k not in new_roles}
        tokens["loss"].pop("answer_only", None)
    for shard in m["shards"] + (m.get("eval") or {}).get("shards", []):
        path = dst / shard["file"]
        table = read_table(path).drop_columns(["trainable", "mask_answer_only"])
        write_file_shard(path, table, 1, shard)
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


def write_file_shard(path: Path, table, version: int, shard: dict | None = None) -> None:  # type: ignore[no-untyped-def]
    """Write ``table`` at ``path`` as the Arrow IPC file shard of format ``version`` (1-4) it was before version 5,
    a record batch per chunk, and make ``shard`` (its manifest entry) say so: its bytes and sha256, no batch
    index."""
    import pyarrow as pa

    table = table.replace_schema_metadata({**table.schema.metadata, b"version": str(version).encode()})
    tmp = path.with_name(path.name + ".tmp")  # not over the file: ``table`` may be a memory map of it
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)
    if shard is not None:
        shard.pop("batch_offsets", None)
        shard.pop("batch_rows", None)
        shard["bytes"] = path.stat().st_size
        shard["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()


def write_stream_shard(path: Path, table, shard: dict | None = None, max_chunksize: int | None = None) -> None:  # type: ignore[no-untyped-def]
    """Write ``table`` at ``path`` as a stream shard (format version 5), in record batches of at most
    ``max_chunksize`` rows, and make ``shard`` (its manifest entry) say so: bytes, sha256, batch index."""
    import pyarrow as pa

    tmp = path.with_name(path.name + ".tmp")  # not over the file: ``table`` may be a memory map of it
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max_chunksize)
    os.replace(tmp, path)
    if shard is not None:
        with pa.memory_map(str(path)) as source:
            shard["batch_offsets"], shard["batch_rows"] = message_offsets(source)[:2]
        shard["bytes"] = path.stat().st_size
        shard["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()


def as_ipc_files(src: Path, dst: Path) -> Path:
    """A copy of output ``src`` as packer wrote it before format version 5: its shards Arrow IPC files (the same
    record batches), the manifest's format version 2, 3 or 4 as the columns say (4: a preference output, 3: a
    ``forced`` column), no batch index."""
    import shutil

    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    shards = m["shards"] + (m.get("eval") or {}).get("shards", [])
    forced = any("forced" in read_table(dst / s["file"]).column_names for s in shards)
    version = 4 if m.get("kind", "sft") != "sft" else 3 if forced else 2
    m["format"]["version"] = version
    for shard in shards:
        write_file_shard(dst / shard["file"], read_table(dst / shard["file"]), version, shard)
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


#: the CLI as a fresh process runs it (``python -c CLI build ...``), named packer in its messages
CLI = "import sys; from packer.cli import main; sys.argv[0] = 'packer'; main()"


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, check=False, **kw)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def shard_rows(out: Path) -> list[dict]:
    """Every packed row of an output's train shards, in order, as dicts of its columns."""
    m = json.loads((out / "manifest.json").read_text())
    rows = []
    for shard in m["shards"]:
        rows += read_table(out / shard["file"]).to_pylist()
    return rows


def training_env() -> dict[str, str]:
    """The environment of a subprocess that trains: under pytest-xdist, one torch thread (OMP_NUM_THREADS=1), so
    that the workers beside it keep their cores (see conftest.py)."""
    env = dict(os.environ)
    if env.get("PYTEST_XDIST_WORKER"):
        env.setdefault("OMP_NUM_THREADS", "1")
    return env
