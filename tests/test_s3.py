"""Object storage: a build from s3:// inputs to an s3:// output, against a local S3 server (moto).

The module starts ``moto_server`` on 127.0.0.1 (a free port) and points every S3 URI at it with
``AWS_ENDPOINT_URL``; it stops the server by its PID at the end. The demo data goes up as JSON
Lines, a JSON array and a Parquet file; the build from their URIs must be byte for byte the
build from the same files on local disk (the input paths aside), and read back by
PackedDataset, ``packer inspect`` and ``packer verify`` as a local output is.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from packer import build
from packer.read.records import BuildError

from .helpers import EXAMPLES, ROOT, output_files

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'packer[test]')")
pafs = pytest.importorskip("pyarrow.fs")

BUCKET = "packer-test"
OPTIONS = {"seq_len": 512, "part_size": 20_000 / 2**20, "shard_size": 30_000 / 2**20}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket, the AWS_* variables pointing at it; yields the
    bucket's filesystem."""
    from packer import fsio

    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer on port {port} within 60 s")
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
                mp.delenv(name, raising=False)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
            mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
            missing = str(tmp_path_factory.getbasetemp() / "no-aws-config")
            mp.setenv("AWS_CONFIG_FILE", missing)
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
            fsio._filesystem.cache_clear()  # filesystems made before read other settings
            fs, _ = pafs.FileSystem.from_uri(f"s3://{BUCKET}?allow_bucket_creation=true")
            fs.create_dir(BUCKET)
            yield fs
            fsio._filesystem.cache_clear()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _put(fs, key: str, data: bytes) -> str:
    with fs.open_output_stream(f"{BUCKET}/{key}") as f:
        f.write(data)
    return f"s3://{BUCKET}/{key}"


def _inputs(folder: Path) -> list[Path]:
    """The demo data as JSON Lines (Alpaca), a JSON array (ShareGPT) and Parquet (Alpaca, row groups of 20)."""
    alpaca = json.loads((EXAMPLES / "alpaca_demo.json").read_text())
    lines = folder / "alpaca.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in alpaca))
    array = folder / "sharegpt.json"
    array.write_bytes((EXAMPLES / "sharegpt_demo.json").read_bytes())
    parquet = folder / "alpaca.parquet"
    rows = [{**r, "instruction": r["instruction"] + " (again)"} for r in alpaca]
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=20)
    return [lines, array, parquet]


@pytest.fixture(scope="module")
def built(s3, tmp_path_factory, demo_tok):
    """(local output, s3 output URI, local inputs, input URIs): the same inputs built from disk and from S3."""
    folder = tmp_path_factory.mktemp("s3_inputs")
    local_inputs = _inputs(folder)
    uris = [_put(s3, f"in/{p.name}", p.read_bytes()) for p in local_inputs]
    local_out = folder / "out"
    build(local_inputs, local_out, tokenizer=demo_tok, **OPTIONS)
    # the two Alpaca files as a glob: expanded, sorted (alpaca.jsonl before alpaca.parquet)
    out = f"s3://{BUCKET}/out"
    scratch = tmp_path_factory.mktemp("scratch")
    build([f"s3://{BUCKET}/in/alpaca.jsonl", uris[1], uris[2]], out, tokenizer=demo_tok, scratch=scratch,
          **OPTIONS)
    assert list(scratch.iterdir()) == [], "the local staging folder is removed after the upload"
    return local_out, out, local_inputs, uris


def _download(s3, uri: str, dst: Path) -> Path:
    dst.mkdir()
    root = uri.removeprefix("s3://")
    for info in s3.get_file_info(pafs.FileSelector(root)):
        with s3.open_input_stream(info.path) as f:
            (dst / info.path.rsplit("/", 1)[1]).write_bytes(f.read())
    return dst


def _without_paths(manifest: dict) -> dict:
    """The manifest less what names the inputs' paths (documents.arrow holds them: its sha256) and the time."""
    m = json.loads(json.dumps(manifest))
    m.pop("build_seconds")
    m["documents"].pop("sha256")
    for entry in m["inputs"]:
        entry.pop("path")
    return m


def test_s3_build_matches_local(s3, built, tmp_path):
    local_out, out, local_inputs, uris = built
    remote = _download(s3, out, tmp_path / "remote")
    names = sorted(p.name for p in remote.iterdir())
    assert names == sorted(p.name for p in local_out.iterdir())
    assert ".packer-incomplete" not in names
    local_files, remote_files = output_files(local_out), output_files(remote)
    shards = [n for n in names if n.startswith("shard-")]
    assert len(shards) > 1
    for name in shards:
        assert remote_files[name] == local_files[name], f"{name} differs"
    m_local = json.loads((local_out / "manifest.json").read_text())
    m_remote = json.loads((remote / "manifest.json").read_text())
    assert [i["path"] for i in m_remote["inputs"]] == uris  # the URIs as given
    assert _without_paths(m_remote) == _without_paths(m_local)
    docs_local = ipc.open_file(local_out / "documents.arrow").read_all()
    docs_remote = ipc.open_file(remote / "documents.arrow").read_all()
    to_uri = dict(zip(map(str, local_inputs), uris, strict=True))
    assert docs_remote.column_names == docs_local.column_names
    for name in docs_local.column_names:
        want = docs_local.column(name).to_pylist()
        if name == "input":
            want = [to_uri.get(p, p) for p in want]
        assert docs_remote.column(name).to_pylist() == want, name


def test_packed_dataset_reads_s3(built):
    pytest.importorskip("torch")
    from packer import PackedDataset

    local_out, out, _, _ = built
    local_items = list(PackedDataset(local_out, shuffle=False, verify=True))
    remote_items = list(PackedDataset(out, shuffle=False, verify=True))
    assert len(remote_items) == len(local_items) > 0
    for a, b in zip(local_items, remote_items, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``packer ARGS`` in a process of its own (with this process's AWS_* settings)."""
    return subprocess.run([sys.executable, "-c", "from packer.cli import main; main()", *args], capture_output=True,
                          text=True, cwd=ROOT, env=os.environ.copy(), timeout=300)


def test_inspect_and_verify_s3(built):
    from packer.inspect.report import inspect
    from packer.inspect.verify import check_output

    local_out, out, _, _ = built
    assert check_output(out).problems == []
    ran = _cli("verify", out)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(f"ok: {out}: ")
    assert ran.stdout.split(": ", 2)[2] == f"{check_output(local_out).summary()}\n"
    ran = _cli("inspect", "--json", out)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    expected = inspect(local_out)
    assert report["output"] == out
    assert report["records"].pop("rejected_file") == f"{out}/rejected.jsonl"
    expected["records"].pop("rejected_file")
    assert {k: v for k, v in report.items() if k != "output"} == {k: v for k, v in expected.items() if k != "output"}


def test_rebuild_is_nothing_to_do(s3, built, demo_tok):
    _, out, _, uris = built
    root = out.removeprefix("s3://")
    before = {i.path: i.mtime for i in s3.get_file_info(pafs.FileSelector(root))}
    notices: list[str] = []
    from packer.pipeline.build import BuildEvents

    build([f"s3://{BUCKET}/in/alpaca.jsonl", uris[1], uris[2]], out, tokenizer=demo_tok,
          events=BuildEvents(on_notice=notices.append), **OPTIONS)
    assert any("nothing to do" in n for n in notices), notices
    assert {i.path: i.mtime for i in s3.get_file_info(pafs.FileSelector(root))} == before
    # other options: refused without --overwrite, replaced with it
    with pytest.raises(BuildError, match="--overwrite"):
        build(uris[:1], out, tokenizer=demo_tok, seq_len=256)


def test_overwrite_replaces_packer_output(s3, demo_tok, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    lines = _inputs(folder)[0]
    uri = _put(s3, "over/in.jsonl", lines.read_bytes())
    out = f"s3://{BUCKET}/over/out"
    build([uri], out, tokenizer=demo_tok, seq_len=512, shard_size=10_000 / 2**20)
    many = sorted(i.base_name for i in s3.get_file_info(pafs.FileSelector(f"{BUCKET}/over/out")))
    build([uri], out, tokenizer=demo_tok, seq_len=512, overwrite=True)  # one shard now: the others go
    few = sorted(i.base_name for i in s3.get_file_info(pafs.FileSelector(f"{BUCKET}/over/out")))
    assert len([n for n in many if n.startswith("shard-")]) > 1
    assert few == ["documents.arrow", "manifest.json", "rejected.jsonl", "shard-00000.arrow"]
    from packer.inspect.verify import check_output

    assert check_output(out).problems == []


def test_foreign_object_is_refused(s3, demo_tok, built):
    _, _, _, uris = built
    _put(s3, "mine/notes.txt", b"not packer's")
    with pytest.raises(BuildError, match=r"notes\.txt.*packer did not write"):
        build(uris[:1], f"s3://{BUCKET}/mine", tokenizer=demo_tok, seq_len=512)
    assert [i.base_name for i in s3.get_file_info(pafs.FileSelector(f"{BUCKET}/mine"))] == ["notes.txt"]
    # an input inside the output folder, a missing input, a missing bucket: refused before anything is built
    with pytest.raises(BuildError, match="holds the input"):
        build(uris[:1], f"s3://{BUCKET}/in", tokenizer=demo_tok, seq_len=512)
    with pytest.raises(BuildError, match="no such file"):
        build([f"s3://{BUCKET}/in/nope.jsonl"], f"s3://{BUCKET}/x", tokenizer=demo_tok, seq_len=512)
    with pytest.raises(BuildError, match="no file matches"):
        build([f"s3://{BUCKET}/in/*.csv"], f"s3://{BUCKET}/x", tokenizer=demo_tok, seq_len=512)
    with pytest.raises(BuildError, match="bucket 'no-such-bucket' does not exist"):
        build(uris[:1], "s3://no-such-bucket/out", tokenizer=demo_tok, seq_len=512)


def test_uri_inputs_read_like_local_files(s3, built):
    """The reader and the planner give the same values and pieces for a URI as for its local file."""
    from packer.read.formats import check_inputs
    from packer.read.jsonvalues import FileValues
    from packer.read.plan import scan_file

    _, _, local_inputs, uris = built
    assert check_inputs(uris) == check_inputs(local_inputs)
    for path, uri in zip(local_inputs, uris, strict=True):
        a, b = FileValues(str(path)), FileValues(uri)
        assert list(a) == list(b)
        assert a.sha256 == b.sha256 and a.consumed.n == b.consumed.n
        assert scan_file(uri, 20_000) == scan_file(str(path), 20_000)


def test_glob_expands_sorted(built):
    from packer.read.inputs import expand_inputs

    _, _, _, uris = built
    assert expand_inputs([f"s3://{BUCKET}/in/alpaca.*", "local.json"]) == [uris[0], uris[2], "local.json"]
    assert expand_inputs([f"s3://{BUCKET}/*/sharegpt.json"]) == [uris[1]]


def test_save_to_disk_folder_uri(s3):
    """An HF save_to_disk folder given as a URI stands for its data files, in state.json's order."""
    from packer.read.inputs import expand_inputs

    files = ["data-00001-of-00002.arrow", "data-00000-of-00002.arrow"]
    _put(s3, "hf/state.json", json.dumps({"_data_files": [{"filename": f} for f in files]}).encode())
    for f in files:
        _put(s3, f"hf/{f}", b"")
    assert expand_inputs([f"s3://{BUCKET}/hf"]) == [f"s3://{BUCKET}/hf/{f}" for f in files]



def test_upload_cut_short_is_cleared(s3, demo_tok, built, monkeypatch):
    """An upload stopped after the files, before the manifest: no manifest, the marker; the next build clears it."""
    import packer.pipeline.publish

    _, _, _, uris = built
    out = f"s3://{BUCKET}/cut"

    def stop(phase: str) -> None:
        if phase == "swapped":
            raise RuntimeError("cut short")

    with monkeypatch.context() as mp:
        mp.setattr(packer.pipeline.publish, "checkpoint", stop)
        with pytest.raises(RuntimeError, match="cut short"):
            build(uris[:1], out, tokenizer=demo_tok, seq_len=512)
    names = [i.base_name for i in s3.get_file_info(pafs.FileSelector(f"{BUCKET}/cut"))]
    assert ".packer-incomplete" in names and "manifest.json" not in names and "shard-00000.arrow" in names
    build(uris[:1], out, tokenizer=demo_tok, seq_len=512)  # a dead build's files: no --overwrite needed
    names = [i.base_name for i in s3.get_file_info(pafs.FileSelector(f"{BUCKET}/cut"))]
    assert ".packer-incomplete" not in names and "manifest.json" in names
    from packer.inspect.verify import check_output

    assert check_output(out).problems == []
