"""Faults of the input files that used to lose records silently (issue 24): a JSON array with a broken
element read on at the next element packer can verify (packer/read/resync.py), never at a nested object; what
cannot be counted fails the build; the same records whatever the parts. Compressed inputs (gzip, bzip2,
zstd, lz4) are read, giving the outputs of the plain file."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from click.testing import CliRunner

from packer import BuildError, build
from packer.cli import main
from packer.read.formats import RecordReader, check_inputs
from packer.read.jsonstream import BadValue
from packer.read.jsonvalues import FileValues

from .helpers import DEMO_TOKENIZER, output_files


def rec(i: int) -> dict:
    return {"instruction": f"Say {i}.", "output": f"{i}"}


def r(i: int) -> str:
    return json.dumps(rec(i))


def values(path: Path) -> list:
    """The file's values, a BadValue as ``"!" + its detail``."""
    return [f"!{v.detail}" if isinstance(v, BadValue) else v for v in FileValues(str(path))]


def write(tmp_path: Path, text: str, name: str = "a.json") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


#: nested objects that look like records, inside a broken element
LOOKALIKE = f'{{"instruction": "x", "output": "y" "turns": [{r(90)}, {r(91)}], "more": [{r(92)}]}}'
#: name -> (file text, expected: a record's number, or words of a rejection's detail)
CASES = {
    "nested look-alikes are not records": (f"[{r(0)}, {LOOKALIKE}, {r(2)}]", [0, "skipped 1", 2]),
    # the break comes first inside the nested array: r(91) parses, follows a comma and starts no run from a '['
    # of whole values (rule 2), but the array goes on with ']' then '}' after it: nested
    "look-alikes after a break in their array": (
        f'[{r(0)}, {{"turns": [{{"x" 1}}, {r(91)}, {r(92)}], "n": 1}}, {r(2)}]', [0, "skipped 1", 2],
    ),
    "bad element near the end": (f'[{r(0)}, {r(1)}, {{"b" 2}}, {r(3)}]', [0, 1, "skipped 9 bytes; reading on", 3]),
    "bad last element": (f'[{r(0)}, {{"b" 2}}]', [0, "skipped 8 bytes; the array's last record"]),
    "two bad elements apart": (
        f'[{r(0)}, {{"b" 2}}, {r(2)}, {{"d" 4}}, {r(4)}]',
        [0, "line 1 column 49: Expecting ':' delimiter; skipped 9 bytes; reading on at line 1 column 53", 2,
         "line 1 column 100: Expecting ':' delimiter; skipped 9 bytes; reading on at line 1 column 104", 4],
    ),
    # two rejections: their brackets tell them apart
    "two bad elements side by side": (f'[{r(0)}, {{"b" 2}}, {{"c" 3}}, {r(3)}]', [0, "skipped 9", "skipped 9", 3]),
    "a string holding },{": (
        f'[{r(0)}, {{"note": "}},{{\\"instruction\\": \\"fake\\", \\"output\\": \\"f\\"}},{{", "b" 2}}, '
        f'{{"instruction": "}},{{", "output": "ok"}}]',
        [0, "skipped", {"instruction": "},{", "output": "ok"}],
    ),
    "truncated: the file ends inside a record": (
        f'[{r(0)}, {r(1)}, {{"instruction": "Name a', [0, 1, "the file ends inside this record (23 bytes"],
    ),
    "truncated after a bad element": (
        f'[{r(0)}, {{"b" 2}}, {r(2)}, {{"instruction": "cut', [0, "skipped", 2, "the file ends inside this record"],
    ),
    "a bad element, then one cut short": (
        f'[{r(0)}, {{"b" 2}}, {{"instruction": "x", "out',
        [0, "skipped 9 bytes; reading on at line 1 column 53",
         "line 1 column 74: Unterminated string starting at; the file ends inside this record (25 bytes"],
    ),
    "a record cut in the middle of a nested value, then records": (
        f'[{r(0)}, {{"conversations": [{{"from": "human", "value": "hi"}}, {{"from": "gp, {r(2)}, {r(3)}]',
        [0, "skipped", 2, 3],
    ),
    "cut inside a nested array: the rest is one value": (
        f'[{r(0)}, {{"b" 1, "list": [{r(90)}, {r(91)},', [0, "the file ends inside the last of them"],
    ),
    # the broken element may lack its closing brackets at the end: r(2) may be nested in it, so it is no record
    "missing closers at the end: ambiguous": (
        f'[{r(0)}, {{"bad": [{r(90)}, {r(91)}, {r(2)}]', [0, "the file ends inside this record"],
    ),
    "a missing comma": (f"[{r(0)} {r(1)}, {r(2)}]", [0, "expecting ',' or ']' after a record; skipped", 2]),
    "pretty-printed": (
        json.dumps([rec(0), rec(1), rec(2)], indent=2).replace('"output": "1"', '"output": 1 1'),
        [0, "line 8 column 17: Expecting ',' delimiter; skipped 56 bytes; reading on at line 10 column 3", 2],
    ),
}


def check(got: list, expected: list) -> None:
    assert len(got) == len(expected), got
    for g, e in zip(got, expected, strict=True):
        if isinstance(e, str):
            assert isinstance(g, str) and g.startswith("!line ") and e in g, (g, e)
        else:
            assert g == (rec(e) if isinstance(e, int) else e)


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_array_reads_on_at_a_verified_element(tmp_path, name):
    text, expected = CASES[name]
    check(values(write(tmp_path, text)), expected)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_windows_change_nothing(tmp_path, monkeypatch, chunk):
    """The same values and messages (line, column, bytes) however small the chunks the file is read in."""
    import packer.read.jsonvalues as jsonvalues

    paths = [write(tmp_path, text, f"{i}.json") for i, (text, _) in enumerate(CASES.values())]
    whole = [values(p) for p in paths]
    monkeypatch.setattr(jsonvalues, "_JSON_CHUNK", chunk)
    assert [values(p) for p in paths] == whole


UNKNOWN = {
    # {"c": 3} and {"d": 4} parse, but their run breaks at the missing comma and the brackets before them do not
    # balance: they may be values nested in the broken record
    "records between a stray quote and a missing comma": (
        f'[{r(0)}, {{"b": "it"s"}}, {{"c": 3}}, {{"d": 4}} {{"e": 5}}, {{"f": 6}}]'
    ),
    # a stray quote: the brackets after it tell nothing, and nothing after it parses as the array's next element
    "stray quote": f'[{r(0)}, {{"instruction": "it"s", "output": "x"}}, {{"b" 2}}]',
    "two broken at the end, one with a stray quote": f'[{r(0)}, {{"b" 2, "c": "it"s"}}, {{"b" 3}}]',
}


@pytest.mark.parametrize("name", sorted(UNKNOWN))
def test_records_that_cannot_be_counted_fail_the_build(tmp_path, demo_tok, name):
    path = write(tmp_path, UNKNOWN[name])
    message = rf"{path}: record 1 is not valid JSON \(line 1 column \d+: .*\), and .* unknown number of records"
    with pytest.raises(BuildError, match=message + ".*JSON Lines"):
        list(FileValues(str(path)))
    with pytest.raises(BuildError, match=message):
        build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=256)
    assert not (tmp_path / "o").exists()


def test_a_nested_run_is_checked_once(tmp_path, monkeypatch):
    """The candidates of one nested run share its verdict: the rest of the file is read again once for the run,
    not once per look-alike in it (which would be quadratic)."""
    import packer.read.resync as resync

    calls = []
    real = resync._goes_on
    monkeypatch.setattr(resync, "_goes_on", lambda win, offset: calls.append(offset) or real(win, offset))
    turns = ", ".join(r(100 + i) for i in range(300))
    path = write(tmp_path, f'[{r(0)}, {{"turns": [{{"x" 1}}, {turns}], "n": 1}}, {r(2)}, {r(3)}]')
    check(values(path), [0, "skipped", 2, 3])
    assert len(calls) == 2


def test_no_element_within_the_bound_fails(tmp_path, monkeypatch):
    import packer.read.jsonvalues as jsonvalues
    import packer.read.resync as resync

    path = write(tmp_path, f'[{r(0)}, {{"b" 2, "pad": "{"x" * 3000}"}}, {r(2)}]')
    monkeypatch.setattr(jsonvalues, "_JSON_CHUNK", 256)
    monkeypatch.setattr(resync, "MAX_SKIP_CHARS", 1000)
    with pytest.raises(BuildError, match=r"record 1 is not valid JSON .* no record of the array could be found after "
                       r"it within 1,000 characters"):
        values(path)
    monkeypatch.setattr(resync, "MAX_SKIP_CHARS", 10_000)
    check(values(path), [0, "skipped 3,020 bytes", 2])


def test_check_inputs_reads_past_a_broken_first_record(tmp_path):
    assert check_inputs([write(tmp_path, f'[{{"b" 2}}, {r(1)}]')]) == ["alpaca"]


@pytest.fixture(scope="module")
def broken_3000(tmp_path_factory) -> Path:
    """The issue's case: 3,000 records, a syntax error in element 1,500."""
    records = [json.dumps(rec(i)) for i in range(3000)]
    records[1500] = records[1500].replace('"output"', '"output" "oops"', 1)
    path = tmp_path_factory.mktemp("broken") / "broken.json"
    path.write_text("[\n" + ",\n".join(records) + "\n]\n")
    return path


def test_every_record_after_a_broken_element_is_read(tmp_path, demo_tok, broken_3000):
    m = build([broken_3000], tmp_path / "o", tokenizer=demo_tok, seq_len=256, max_rejected=0.01)
    c = m["counts"]
    assert (c["records"], c["packed"], c["rejected"]) == (3000, 2999, {"malformed_json": 1})
    (line,) = [json.loads(x) for x in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert line["record"] == 1500 and line["input"] == str(broken_3000)
    assert line["detail"] == ("line 1502 column 39: Expecting ':' delimiter; skipped 55 bytes; reading on at "
                              "line 1503 column 1")


def test_cli_quiet_build_of_a_broken_array(tmp_path, broken_3000):
    args = ["build", str(broken_3000), "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "256", "-q",
            "--max-rejected", "0.01", "-o", str(tmp_path / "o")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["counts"]["records"] == 3000
    bad = write(tmp_path, UNKNOWN["stray quote"])
    res = CliRunner().invoke(main, [*args[:1], str(bad), *args[2:-1], str(tmp_path / "bad")])
    assert res.exit_code != 0 and "unknown number of records" in res.output


@pytest.mark.parametrize("cuts", [[5_000, 40_000], [60_000], [1, 2, 3, 80_000, 150_000]])
def test_same_records_whatever_the_parts(tmp_path, demo_tok, broken_3000, cuts):
    """A broken array is one part of a parallel build: the outputs, rejection numbers included, are the bytes
    of the one-part build whatever the cuts and workers."""
    opts = {"tokenizer": demo_tok, "seq_len": 256}
    build([broken_3000], tmp_path / "one", **opts)
    build([broken_3000], tmp_path / "cut", cuts={0: cuts}, workers=2 if len(cuts) == 1 else 1, **opts)
    assert output_files(tmp_path / "cut") == output_files(tmp_path / "one")


# -- compressed inputs (issue 24, item 7) ---------------------------------------------------------------


def _arrow_compress(codec: str):  # type: ignore[no-untyped-def]
    def compress(data: bytes) -> bytes:
        out = pa.BufferOutputStream()
        with pa.CompressedOutputStream(out, codec) as s:
            s.write(data)
        return out.getvalue().to_pybytes()

    return compress


COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "zst": _arrow_compress("zstd"), "lz4": _arrow_compress("lz4")}


def _body(kind: str) -> bytes:
    """120 records with faults: a broken line (JSON Lines) or a broken element (an array: read on past it)."""
    recs = [json.dumps(rec(i) if i % 7 else {"instruction": "", "output": "x"}) for i in range(120)]
    recs[50] = '{"instruction": "broken" "output": "x"}'
    return ("\n".join(recs) + "\n" if kind == "jsonl" else "[\n" + ",\n".join(recs) + "\n]\n").encode()


def _rows(out: Path, name: str, path: Path, plain: Path) -> str:
    """documents.arrow or rejected.jsonl as text, the compressed input's path written as the plain one's."""
    if name == "documents.arrow":
        text = json.dumps(ipc.open_file(out / name).read_all().to_pylist(), sort_keys=True, default=str)
    else:
        text = (out / name).read_text()
    return text.replace(str(path), str(plain))


@pytest.mark.parametrize("kind", ["jsonl", "json"])
@pytest.mark.parametrize("ext", sorted(COMPRESS))
def test_compressed_input_builds_the_same_outputs(tmp_path, demo_tok, kind, ext):
    body = _body(kind)
    plain = write(tmp_path, body.decode(), f"data.{kind}")
    path = tmp_path / f"data.{kind}.{ext}"
    path.write_bytes(COMPRESS[ext](body))
    opts = {"tokenizer": demo_tok, "seq_len": 256, "shard_size": 20_000 / 2**20}
    a = build([plain], tmp_path / "plain", **opts)
    b = build([path], tmp_path / "packed", part_size=500 / 2**20, **opts)  # one part all the same
    assert b["inputs"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert a["counts"]["rejected"]["malformed_json"] == 1 and a["counts"]["records"] == 120
    for m in (a, b):
        for key in ("inputs", "documents", "build_key", "build_seconds"):
            m.pop(key)
    assert a == b
    files = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "packed").iterdir())
    for name in files:
        if name in ("documents.arrow", "rejected.jsonl"):
            assert _rows(tmp_path / "packed", name, path, plain) == _rows(tmp_path / "plain", name, plain, plain)
        elif name != "manifest.json":
            assert (tmp_path / "packed" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name


def test_compressed_file_under_a_plain_name_is_read(tmp_path, demo_tok, monkeypatch):
    """A gzip file named data.json is told by its first bytes: the outputs are the plain file's bytes but for
    the manifest's sha256 of the input (over the file's own bytes) and the build key."""
    for d, data in (("plain", _body("json")), ("gz", gzip.compress(_body("json")))):
        (tmp_path / d).mkdir()
        (tmp_path / d / "data.json").write_bytes(data)
        monkeypatch.chdir(tmp_path / d)
        build(["data.json"], "out", tokenizer=demo_tok, seq_len=256)
    plain, packed = output_files(tmp_path / "plain" / "out"), output_files(tmp_path / "gz" / "out")
    assert plain.pop("manifest.json") != packed.pop("manifest.json") and plain == packed
    assert check_inputs([tmp_path / "gz" / "data.json"]) == ["alpaca"]


def test_compressed_progress_counts_the_file_bytes(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    lines = (json.dumps({"instruction": os.urandom(24).hex(), "output": "x"}) for _ in range(30_000))
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    reader = RecordReader([path])
    seen = [reader.bytes_read for i, _ in enumerate(reader) if i % 5000 == 0]
    assert seen == sorted(seen) and 0 < seen[0] < seen[-1] < reader.total_bytes == path.stat().st_size
    assert reader.bytes_read == reader.total_bytes and reader.inputs[0].records == 30_000


@pytest.mark.parametrize(("data", "message"), [
    (lzma.compress(b"[]"), r"compressed input \(xz\), which packer does not read; decompress it first"),
    (b"PK\x03\x04" + b"\0" * 40, r"compressed input \(zip\), which packer does not read"),
    (gzip.compress(os.urandom(5000).hex().encode())[:3000], r"compressed input \(gzip\) that cannot be "
     r"decompressed: .*; is the file whole\?"),
    (gzip.compress(b"PAR1" + b"\0" * 40), r"compressed input \(gzip\) holding a Parquet or Arrow file"),
], ids=["xz", "zip", "gzip cut short", "gzip of Parquet"])
def test_compressed_input_that_cannot_be_read(tmp_path, demo_tok, data, message):
    path = tmp_path / "data.json"
    path.write_bytes(data)
    with pytest.raises(BuildError, match=f"^{path}: {message}"):
        build([path], tmp_path / "o", tokenizer=demo_tok)
    assert not (tmp_path / "o").exists()
