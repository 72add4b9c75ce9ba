# ruff: noqa: F811  (test_s3's fixture s3, imported, is a parameter of the tests)
"""An object store that fails: each failed request is reported as a failed request, never as a missing or
foreign file, and no Arrow C++ "Error ignored" line reaches the user (issue 24).

The S3 server is test_s3's moto_server (127.0.0.1); a small proxy in this process, on 127.0.0.1 too, passes
every request on to it except those a test tells it to answer with HTTP 500. The proxy and the server are
stopped at the end of the module.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from packer import build
from packer.pipeline.build import BuildEvents
from packer.read.records import BuildError

from .helpers import DEMO_INPUTS, DEMO_TOKENIZER, ROOT
from .test_s3 import BUCKET, s3  # noqa: F401  (the moto_server fixture)

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'packer[test]')")
pafs = pytest.importorskip("pyarrow.fs")

_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an '
          b"internal error. Please try again.</Message></Error>")


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]
    #: (method, a piece of the path) answered with HTTP 500; the test sets them
    failing: ClassVar[list[tuple[str, str]]] = []
    failed: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        """The request's body as it came (the AWS SDK sends uploads chunked, with a trailer)."""
        if "chunked" not in (self.headers.get("Transfer-Encoding") or ""):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""
        raw = b""
        while True:
            line = self.rfile.readline()
            raw += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            raw += self.rfile.read(size + 2)
        while True:  # trailers, then the blank line
            line = self.rfile.readline()
            raw += line
            if line in (b"\r\n", b"\n", b""):
                return raw

    def _any(self) -> None:
        body = self._body()
        if any(m == self.command and piece in self.path for m, piece in self.failing):
            self.failed.append(f"{self.command} {self.path}")
            self.send_response(500)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(_ERROR) if self.command != "HEAD" else 0))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(_ERROR)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in self.headers.items():
            if k.lower() not in ("connection", "expect"):
                conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) if self.command != "HEAD" else r.getheader(
            "Content-Length", "0")))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any


@pytest.fixture(scope="module")
def proxy(s3):
    """The port of a proxy to the moto server that fails the requests ``_Proxy.failing`` names."""
    import os
    from urllib.parse import urlsplit

    up = urlsplit(os.environ["AWS_ENDPOINT_URL"])
    handler = type("Handler", (_Proxy,), {"upstream": (up.hostname, up.port), "failing": [], "failed": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _via(server, key: str) -> str:
    """The URI of ``key`` in the bucket, through the proxy."""
    return f"s3://{BUCKET}/{key}?endpoint_override=127.0.0.1:{server.server_address[1]}&scheme=http"


def _fail(server, *rules: tuple[str, str]) -> None:
    server.RequestHandlerClass.failing[:] = list(rules)
    server.RequestHandlerClass.failed.clear()


def test_the_proxy_passes_requests_on(proxy, demo_tok, tmp_path):
    _fail(proxy)
    out = _via(proxy, "through")
    m = build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512, scratch=tmp_path)
    assert build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512, scratch=tmp_path) == m  # nothing to do


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``packer ARGS`` in a process of its own (with this process's AWS_* settings), to see all it prints."""
    import os

    return subprocess.run([sys.executable, "-c", "from packer.cli import main; main()", *args], capture_output=True,
                          text=True, cwd=ROOT, env=os.environ.copy(), timeout=300)


def _listing(s3, key: str) -> dict[str, int]:
    return {i.base_name: i.size for i in s3.get_file_info(pafs.FileSelector(f"{BUCKET}/{key}"))}


@pytest.fixture
def old_remote(s3, proxy, demo_tok, tmp_path, request):
    """A complete output at a key of the test's own; its URI through the proxy."""
    import re

    key = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[-60:]
    _fail(proxy)
    build(DEMO_INPUTS[:1], _via(proxy, key), tokenizer=demo_tok, seq_len=512, scratch=tmp_path)
    return key


@pytest.mark.slow  # the AWS SDK retries the failed GET, with its back-off, before it gives up
def test_a_manifest_that_cannot_be_read_is_not_called_missing(s3, proxy, old_remote, demo_tok, tmp_path):
    before = _listing(s3, old_remote)
    _fail(proxy, ("GET", f"/{old_remote}/manifest.json"))
    with pytest.raises(BuildError) as e:
        build(DEMO_INPUTS, _via(proxy, old_remote), tokenizer=demo_tok, seq_len=512, overwrite=True, scratch=tmp_path)
    message = str(e.value)
    assert proxy.RequestHandlerClass.failed, "the proxy failed no request"
    assert "which packer did not write" not in message and "INTERNAL_FAILURE" in message, message
    assert "could not read manifest.json" in message, message
    assert _listing(s3, old_remote) == before


@pytest.mark.slow
@pytest.mark.parametrize(("method", "name", "says"), [
    ("PUT", "documents.arrow", "no manifest"),
    ("DELETE", ".packer-incomplete", "manifest.json is written"),
])
def test_a_failed_upload_says_which_request_failed_and_what_is_there(s3, proxy, old_remote, tmp_path, method, name,
                                                                      says):
    _fail(proxy, (method, f"/{old_remote}/{name}"))
    res = _cli("build", *map(str, DEMO_INPUTS), "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "512",
               "--overwrite", "-q", "--scratch", str(tmp_path), "-o", _via(proxy, old_remote))
    assert proxy.RequestHandlerClass.failed
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Error ignored" not in res.stderr, res.stderr
    assert "the upload failed" in lines[0] and "INTERNAL_FAILURE" in lines[0] and says in lines[0], lines[0]
    assert ("manifest.json" in _listing(s3, old_remote)) == (says != "no manifest")


@pytest.mark.slow
def test_verify_says_the_manifest_could_not_be_read(s3, proxy, old_remote):
    _fail(proxy, ("GET", f"/{old_remote}/manifest.json"))
    res = _cli("verify", _via(proxy, old_remote))
    assert proxy.RequestHandlerClass.failed
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Error ignored" not in res.stderr, res.stderr
    assert "INTERNAL_FAILURE" in lines[0] and "not a packer output" not in lines[0], lines[0]


def test_an_upload_refuses_an_output_another_build_wrote_meanwhile(s3, proxy, demo_tok, tmp_path):
    """Object storage has no lock: a build that finds, when it uploads, an output that was not there when it
    looked (another build into the same URI finished first) uploads nothing."""
    _fail(proxy)
    out = _via(proxy, "raced")

    def other_build() -> None:  # runs once this build has checked the target and started
        build(DEMO_INPUTS[:1], out, tokenizer=demo_tok, seq_len=512, scratch=tmp_path / "other")

    with pytest.raises(BuildError, match="another build wrote an output there while this one ran; nothing of this "
                       "build was uploaded"):
        build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512, scratch=tmp_path,
              events=BuildEvents(on_start=other_build))
    from packer.inspect.verify import check_output

    assert check_output(out).problems == []
    assert build(DEMO_INPUTS[:1], out, tokenizer=demo_tok, seq_len=512, scratch=tmp_path)  # the other's: up to date
