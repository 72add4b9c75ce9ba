"""Nothing a user owns is ever lost, and every failure says what to do next.

The output folder: only packer's files are replaced, a failed or killed rebuild
leaves the old output byte for byte, nothing stray is left beside it. The
command line: one line and exit 1 for every user error (2 for usage), a pipe
that closes early does not stop a build, Ctrl-C and SIGTERM leave the output
as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from packer import build
from packer.cli import main
from packer.inspect.verify import verify
from packer.pipeline.build import BuildEvents
from packer.pipeline.outdir import INCOMPLETE_MARKER, is_packer_file
from packer.read.records import BuildError

from .helpers import CLI, DEMO_TOKENIZER, EXAMPLES, cli, demo_variants, output_files, tree

DEMO_INPUTS = [EXAMPLES / "alpaca_demo.json", EXAMPLES / "sharegpt_demo.json"]


def build_args(out: Path, *extra: str) -> list[str]:
    return [*map(str, DEMO_INPUTS), "-o", str(out), "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "512", "-q",
            *extra]


@pytest.fixture
def old_output(tmp_path, demo_output) -> Path:
    """A complete earlier build at tmp_path/out (the thing a failed rebuild must not destroy): a copy of
    the session's demo build."""
    return shutil.copytree(demo_output, tmp_path / "out")


def no_strays(parent: Path, *expected: str) -> None:
    assert sorted(p.name for p in parent.iterdir()) == sorted(expected), "a stray file or folder was left"


# -- 1. only packer's own files are ever deleted ------------------------------------------------


def test_overwrite_into_the_current_folder_holding_user_files_is_refused(tmp_path, monkeypatch):
    (tmp_path / "data.json").write_text((EXAMPLES / "alpaca_demo.json").read_text())
    (tmp_path / "train.py").write_text("print('mine')\n")
    before = tree(tmp_path)
    monkeypatch.chdir(tmp_path)  # in this process: the exit status and the message are the CLI's (no new process)
    res = CliRunner().invoke(main, ["build", "data.json", "-o", ".", "--overwrite", "--tokenizer", str(DEMO_TOKENIZER)])
    assert res.exit_code == 1
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error: .: holds the input data.json")
    assert tree(tmp_path) == before


def test_a_folder_below_the_target_is_never_removed(tmp_path):
    keep = tmp_path / "sandbox" / "sub" / "keep.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("mine")
    res = CliRunner().invoke(main, ["build", *build_args(tmp_path / "sandbox", "--overwrite")])
    assert res.exit_code == 1 and "holds folder 'sub', which packer did not write" in res.stderr
    assert keep.read_text() == "mine"


def test_a_user_file_beside_a_packer_output_survives_every_rebuild(old_output, demo_tok):
    notes = old_output / "NOTES.md"
    notes.write_text("my notes")
    before = tree(old_output)
    for overwrite in (False, True):
        with pytest.raises(BuildError, match=r"holds file 'NOTES\.md', which packer did not write"):
            build(DEMO_INPUTS, old_output, tokenizer=demo_tok, seq_len=256, overwrite=overwrite)
    assert tree(old_output) == before


def test_a_stray_marker_does_not_make_user_files_packers(tmp_path, demo_tok):
    out = tmp_path / "o"
    out.mkdir()
    (out / INCOMPLETE_MARKER).touch()
    (out / "shard-00000.arrow").write_bytes(b"a copy the user keeps")
    (out / "mine.txt").write_text("x")
    before = tree(out)
    with pytest.raises(BuildError, match=r"holds file 'mine\.txt'"):
        build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512)
    assert tree(out) == before


def test_packer_names_without_a_manifest_or_marker_are_the_users(tmp_path, demo_tok):
    out = tmp_path / "o"
    out.mkdir()
    (out / "shard-00000.arrow").write_bytes(b"not ours")
    with pytest.raises(BuildError, match=r"holds file 'shard-00000\.arrow', which packer did not write"):
        build(DEMO_INPUTS, out, tokenizer=demo_tok, seq_len=512, overwrite=True)
    assert (out / "shard-00000.arrow").read_bytes() == b"not ours"


@pytest.mark.parametrize("where", ["/", "~"])
def test_root_and_home_are_refused(where, demo_tok):
    with pytest.raises(BuildError, match="refusing to write the output into"):
        build(DEMO_INPUTS, Path(where).expanduser(), tokenizer=demo_tok, overwrite=True)


def test_output_that_is_a_file_is_refused(tmp_path, demo_tok):
    f = tmp_path / "o"
    f.write_text("a file")
    with pytest.raises(BuildError, match="exists and is not a directory"):
        build(DEMO_INPUTS, f, tokenizer=demo_tok)
    assert f.read_text() == "a file"


def test_overwrite_replaces_an_output_and_keeps_nothing_stale(old_output, tmp_path, demo_tok):
    m = build(DEMO_INPUTS[:1], old_output, tokenizer=demo_tok, seq_len=1024, overwrite=True)
    assert verify(old_output) == []
    names = {p.name for p in old_output.iterdir()}
    assert names == {"manifest.json", "documents.arrow", "rejected.jsonl", *(s["file"] for s in m["shards"])}
    no_strays(tmp_path, "out")


def test_the_current_folder_as_output_is_filled_in_place(tmp_path, monkeypatch):
    out = tmp_path / "here"
    out.mkdir()
    monkeypatch.chdir(out)
    for overwrite in ("", "--overwrite"):  # empty, then holding an earlier output
        res = CliRunner().invoke(main, ["build", *build_args(Path("."), *([overwrite] if overwrite else []))])
        assert res.exit_code == 0, res.output
        assert verify(out) == [] and not (out / INCOMPLETE_MARKER).exists()
        assert all(is_packer_file(p.name) for p in out.iterdir())
    no_strays(tmp_path, "here")


def test_packer_file_names():
    for name in ("manifest.json", "shard-00000.arrow", "shard-123456.arrow", "documents.arrow", "rejected.jsonl",
                 ".packer-incomplete", ".packer-spill-ids", "shard-00001.arrow.tmp", ".packer-staging-12"):
        assert is_packer_file(name), name
    for name in ("NOTES.md", "shard-1.arrow", "data.json", "manifest.json.bak", "train.py", "packer-spill"):
        assert not is_packer_file(name), name


# -- 2. a failed rebuild leaves the good build ----------------------------------------------------


def failing_rebuilds(tmp_path: Path) -> dict[str, list[str]]:
    csv = tmp_path / "a.csv"
    csv.write_text("instruction,input,output\nhi,,yo\n")
    unknown = tmp_path / "qa.jsonl"
    unknown.write_text('{"question": "a", "answer": "b"}\n')
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n')
    return {
        "unreadable input": [str(csv)],
        "unknown format": [str(unknown)],
        "seq-len 16": [*map(str, DEMO_INPUTS), "--seq-len", "16"],
        "strict": [str(jsonl), "--strict"],
        "max-rejected": [*map(str, DEMO_INPUTS), "--seq-len", "128", "--max-rejected", "0.01"],
        "missing tokenizer": [*map(str, DEMO_INPUTS), "--tokenizer", str(tmp_path / "no-model")],
    }


@pytest.mark.parametrize("kind", ["unreadable input", "unknown format", "seq-len 16", "strict", "max-rejected",
                                  "missing tokenizer"])
def test_a_failed_rebuild_leaves_the_old_output_byte_identical(old_output, tmp_path, kind):
    before = tree(old_output)
    args = failing_rebuilds(tmp_path)[kind]
    tok = [] if "--tokenizer" in args else ["--tokenizer", str(DEMO_TOKENIZER)]
    res = CliRunner().invoke(main, ["build", *args, *tok, "-o", str(old_output), "--overwrite", "-q"])
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert tree(old_output) == before and verify(old_output) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging folder was left"


def test_a_failed_first_build_leaves_no_folder(tmp_path):
    args = failing_rebuilds(tmp_path)["seq-len 16"]
    res = CliRunner().invoke(main, ["build", *args, "--tokenizer", str(DEMO_TOKENIZER), "-o", str(tmp_path / "new")])
    assert res.exit_code == 1
    assert not (tmp_path / "new").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def slow_input(tmp_path_factory) -> Path:
    """A build that runs for a few seconds."""
    return demo_variants(tmp_path_factory.mktemp("slow") / "slow.jsonl", 300)


def _default_sigint() -> None:
    # a test run in the background (nohup, `&`) starts with SIGINT ignored, and a child would inherit that
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "word", "workers"), [
    (signal.SIGINT, 130, "interrupted", 1), (signal.SIGTERM, 143, "terminated", 1),
    (signal.SIGINT, 130, "interrupted", 2), (signal.SIGTERM, 143, "terminated", 2)])
def test_ctrl_c_and_sigterm_leave_the_old_output(old_output, tmp_path, slow_input, sig, code, word, workers):
    before = tree(old_output)
    paused = tmp_path / "paused"
    # the build waits in its first batch of tokens (a checkpoint; with workers, in a worker) for the signal: no
    # race with a fast machine. The signal goes to the build alone, not to its workers (as `kill` does): the
    # build stops them
    env = {**os.environ, "PACKER_TEST_PAUSE_AT": "tokens", "PACKER_TEST_PAUSED": str(paused)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "build", str(slow_input), "-o", str(old_output),
                             "--overwrite", "--tokenizer", str(DEMO_TOKENIZER), "--seq-len", "512", "-q",
                             "--workers", str(workers), "--part-size", "1"],
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    while not paused.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the build never reached its first tokens"
        time.sleep(0.02)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.packer-staging-")]
    children = _children(proc.pid)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr.strip() == f"{word}: nothing was written; {old_output} is as it was before this build"
    assert tree(old_output) == before
    paused.unlink()  # the test's own
    no_strays(tmp_path, "out")
    time.sleep(0.5)
    alive = [c for c in children if Path(f"/proc/{c}").exists()
             and "spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
    assert not alive, "a worker of the build runs on"


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["swap", "swapped"])
def test_sigkill_during_the_swap_leaves_one_complete_output(old_output, tmp_path, phase):
    old = output_files(old_output)
    res = cli("build", *build_args(old_output, "--seq-len", "1024", "--overwrite"), env={"PACKER_TEST_KILL_AT": phase})
    assert res.returncode == -signal.SIGKILL
    assert verify(old_output) == []
    new_ref = tmp_path / "ref"
    assert cli("build", *build_args(new_ref, "--seq-len", "1024")).returncode == 0
    assert output_files(old_output) in (old, output_files(new_ref))
    # the next build clears what the killed one left beside the output, and completes
    res = cli("build", *build_args(old_output, "--seq-len", "1024", "--overwrite"))
    assert res.returncode == 0, res.stderr
    assert output_files(old_output) == output_files(new_ref)
    no_strays(tmp_path, "out", "ref")


@pytest.mark.slow
def test_sigkill_between_the_two_renames_of_a_swap_without_exchange_gives_the_old_output_back(old_output, tmp_path):
    # where the system cannot swap two folders in one step (not Linux), the old output is renamed aside first
    old = output_files(old_output)
    no_exchange = "import packer.pipeline.outdir as o; o._exchange = lambda a, b: False; " + CLI
    args = build_args(old_output, "--seq-len", "1024", "--overwrite")
    res = subprocess.run([sys.executable, "-c", no_exchange, "build", *args], capture_output=True, text=True,
                         env={**os.environ, "PACKER_TEST_KILL_AT": "swapped"}, check=False)
    assert res.returncode == -signal.SIGKILL and not old_output.exists()
    # the next build puts the old output back first, then replaces it as asked
    res = subprocess.run([sys.executable, "-c", no_exchange, "build", *args, "--seq-len", "256"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert verify(old_output) == [] and output_files(old_output) != old
    no_strays(tmp_path, "out")


@pytest.mark.slow
def test_sigkill_in_place_leaves_no_manifest_and_the_next_build_completes(tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    assert cli("build", *build_args(Path(".")), cwd=here).returncode == 0
    res = cli("build", *build_args(Path("."), "--seq-len", "1024", "--overwrite"), cwd=here,
              env={"PACKER_TEST_KILL_AT": "swapped"})
    assert res.returncode == -signal.SIGKILL
    assert not (here / "manifest.json").exists() and (here / INCOMPLETE_MARKER).exists()
    assert cli("build", *build_args(Path("."), "--seq-len", "1024"), cwd=here).returncode == 0
    assert verify(here) == [] and not (here / INCOMPLETE_MARKER).exists()


# -- 3. piping ---------------------------------------------------------------------------------------


def test_a_closed_pipe_does_not_stop_the_build(tmp_path):
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE, as after `| head` has exited
    out = tmp_path / "o"
    args = [sys.executable, "-c", CLI, "build", *build_args(out)[:-1]]  # not -q: rejections and the summary
    proc = subprocess.run(args, stdout=write, stderr=write, check=False)
    os.close(write)
    assert proc.returncode == 0
    assert verify(out) == []


def test_head_of_the_output_gives_a_complete_build(tmp_path):
    out = tmp_path / "o"
    cmd = " ".join([f"'{sys.executable}'", "-c", f'"{CLI}"', "build", *build_args(out)[:-1]])
    res = subprocess.run(["bash", "-c", f"{cmd} 2>&1 | head -2; exit ${{PIPESTATUS[0]}}"], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(res.stdout.splitlines()) == 2
    assert verify(out) == []


# -- 4. one line for every failure, and what to do next ------------------------------------------------


def cli_errors(tmp_path: Path, output: Path) -> dict[str, list[str]]:
    no_tpl = tmp_path / "no-template"
    no_tpl.mkdir()
    (no_tpl / "tokenizer.json").write_bytes((DEMO_TOKENIZER / "tokenizer.json").read_bytes())
    tok = ["--tokenizer", str(DEMO_TOKENIZER)]
    demo = str(DEMO_INPUTS[0])
    return {
        "missing input": ["build", str(tmp_path / "nope.json"), *tok, "-o", str(tmp_path / "x")],
        "missing tokenizer": ["build", demo, "--tokenizer", str(tmp_path / "nope"), "-o", str(tmp_path / "x")],
        "template without chat_template": [
            "build", demo, "--tokenizer", str(no_tpl), "--template", "tokenizer", "-o", str(tmp_path / "x")
        ],
        "output where nothing can be written": ["build", demo, *tok, "-o", "/proc/packer-out"],
        "inspect a non-output": ["inspect", str(tmp_path)],
        "inspect html into a missing folder": ["inspect", str(output), "--html", "/nope/dir/r.html"],
        "inspect unknown strategy": ["inspect", str(output), "--strategy", "nonsense"],
        "show a non-output": ["show", str(tmp_path)],
        "show a row out of range": ["show", str(output), "--row", "100000"],
        "verify a non-output": ["verify", str(tmp_path / "nothing")],
    }


@pytest.mark.parametrize("case", ["missing input", "missing tokenizer", "template without chat_template",
                                  "output where nothing can be written", "inspect a non-output",
                                  "inspect html into a missing folder", "inspect unknown strategy",
                                  "show a non-output", "show a row out of range", "verify a non-output"])
def test_every_cli_error_is_one_line_and_exit_1(demo_output, tmp_path, case):
    res = CliRunner().invoke(main, cli_errors(tmp_path, demo_output)[case])
    assert res.exit_code == 1, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.stderr
    assert lines[0].startswith(("error: ", "problem: ")), lines


def test_usage_errors_exit_2(tmp_path):
    demo = str(DEMO_INPUTS[0])
    for args in (["build"], ["build", demo, "--format", "csv"], ["build", demo, "--max-rejected", "2"], ["nonsense"],
                 ["build", str(tmp_path)], ["build", demo, "-o", demo]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and "Error: " in res.stderr, args


def test_a_bug_is_one_line_and_debug_shows_the_traceback(demo_output, monkeypatch):
    import packer.inspect.report

    def broken(out):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(packer.inspect.report, "inspect", broken)
    res = CliRunner().invoke(main, ["inspect", str(demo_output)])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert "unexpected ZeroDivisionError: division by zero (a bug in packer: run again with --debug" in res.stderr
    for args, env in ((["--debug", "inspect", str(demo_output)], {}), (["inspect", str(demo_output), "--debug"], {}),
                      (["inspect", str(demo_output)], {"PACKER_DEBUG": "1"})):
        monkeypatch.delenv("PACKER_DEBUG", raising=False)
        res = CliRunner().invoke(main, args, env=env)
        assert isinstance(res.exception, ZeroDivisionError), args


def test_overlong_records_get_the_way_out(tmp_path, demo_tok):
    notices: list[str] = []
    with pytest.raises(BuildError) as e:
        build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, seq_len=16)
    assert "no record could be packed (191 read; overlong:" in str(e.value)
    assert "raise --seq-len, or --overlong truncate keeps their first 16 tokens" in str(e.value)
    build(DEMO_INPUTS, tmp_path / "t", tokenizer=demo_tok, seq_len=16, overlong="truncate",
          events=BuildEvents(on_notice=notices.append))
    assert [n for n in notices if "records have no response in their first 16 tokens, so truncating them leaves "
            "nothing to learn: raise --seq-len" in n]
    notices.clear()
    m = build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, seq_len=256,
              events=BuildEvents(on_notice=notices.append))
    n = m["counts"]["rejected"]["overlong"]
    assert n and f"{n:,} records are longer than --seq-len 256 (the longest has" in notices[0]


def test_heavy_truncation_warns_and_max_rejected_fails(tmp_path, demo_tok):
    notices: list[str] = []
    m = build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, seq_len=64, overlong="truncate",
              events=BuildEvents(on_notice=notices.append))
    warning = [n for n in notices if "truncated" in n]
    assert len(warning) == 1 and f"and {m['counts']['truncated']:,} truncated" in warning[0]
    assert "--max-rejected FRACTION fails such a build" in warning[0]
    with pytest.raises(BuildError, match=r"more than --max-rejected 0\.2; nothing was written"):
        build(DEMO_INPUTS, tmp_path / "p", tokenizer=demo_tok, seq_len=64, overlong="truncate", max_rejected=0.2)
    assert not (tmp_path / "p").exists()
    # under the limit: no failure, and no warning under the default threshold either
    notices.clear()
    build(DEMO_INPUTS, tmp_path / "q", tokenizer=demo_tok, seq_len=1024, max_rejected=0.9,
          events=BuildEvents(on_notice=notices.append))
    assert not [n for n in notices if "max-rejected" in n]


def test_the_rejection_echo_does_not_promise_a_file_of_a_failed_build(tmp_path):
    res = CliRunner().invoke(main, ["build", *map(str, DEMO_INPUTS), "--tokenizer", str(DEMO_TOKENIZER),
                                    "--seq-len", "16", "-o", str(tmp_path / "m4")])
    assert res.exit_code == 1
    assert "once the build completes" in res.stderr and "more rejections are listed in" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: no record could be packed")


# -- 5. the default tokenizer, and what the summary says --------------------------------------------


def test_no_tokenizer_warns_loudly_and_the_summary_names_tokenizer_and_template(tmp_path):
    res = CliRunner().invoke(main, ["build", *map(str, DEMO_INPUTS), "-o", str(tmp_path / "o"), "--seq-len", "512"],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "useless for training a model" in res.stderr and "--tokenizer <model folder>" in res.stderr
    assert f"{DEMO_TOKENIZER} (2,048 tokens)" in res.stdout and "the demo tokenizer, not for training" in res.stdout
    assert "tokenizer (auto: the tokenizer's own chat_template)" in res.stdout


def test_the_summary_says_why_the_template_fell_back_to_alpaca(tmp_path):
    no_tpl = tmp_path / "gpt2-like"
    no_tpl.mkdir()
    (no_tpl / "tokenizer.json").write_bytes((DEMO_TOKENIZER / "tokenizer.json").read_bytes())
    res = CliRunner().invoke(main, ["build", *map(str, DEMO_INPUTS), "--tokenizer", str(no_tpl), "-o",
                                    str(tmp_path / "o"), "--seq-len", "512"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "alpaca (auto: the tokenizer has no chat_template" in res.stdout
    assert f"{no_tpl} (2,048 tokens)" in res.stdout and "not for training" not in res.stdout


@pytest.mark.slow
def test_a_wheel_install_builds_with_its_own_demo_tokenizer(tmp_path):
    """`pip install packer` (not editable), then `packer build data.json`: the demo tokenizer is package data."""
    root = Path(__file__).resolve().parents[1]
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(root)], check=True, capture_output=True)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    *map(str, wheels.glob("packer-*.whl"))], check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.json").write_text((EXAMPLES / "alpaca_demo.json").read_text())
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import packer.options as o; print(o.DEMO_TOKENIZER)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(site / "packer" / "demo_tokenizer"), "not the installed wheel"
    res = subprocess.run([sys.executable, "-c", CLI, "build", "data.json", "-o", "out", "--seq-len", "512"], cwd=work,
                         env=env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "demo tokenizer" in res.stderr and verify(work / "out") == []


# -- 6. progress and listings -----------------------------------------------------------------------


def test_progress_phases_run_to_their_totals(tmp_path, demo_tok):
    seen: dict[str, list[tuple[int, int]]] = {}
    m = build(DEMO_INPUTS, tmp_path / "o", tokenizer=demo_tok, seq_len=512, batch_size=16,
              events=BuildEvents(on_progress=lambda ph, d, t: seen.setdefault(ph, []).append((d, t))))
    assert list(seen) == ["reading", "packing", "writing"]
    size = sum(p.stat().st_size for p in DEMO_INPUTS)
    for phase, steps in seen.items():
        done = [d for d, _ in steps]
        assert done == sorted(done), phase
        assert steps[-1][0] == steps[-1][1], phase
    assert seen["reading"][-1] == (size, size) and len(seen["reading"]) > 3
    assert seen["writing"][-1][0] == m["counts"]["packed"]


def test_verify_says_what_it_checked(demo_output):
    res = CliRunner().invoke(main, ["verify", str(demo_output)])
    m = json.loads((demo_output / "manifest.json").read_text())
    assert res.exit_code == 0
    assert f"ok: {demo_output}: {len(m['shards'])} shards, {m['packing']['rows']:,} rows, " in res.stdout
    assert f"{m['counts']['packed']:,} documents" in res.stdout and "sha256" in res.stdout


def test_help_shows_each_command_line_in_full():
    res = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert "..." not in res.stdout.split("Commands:")[1]
    for cmd in main.commands.values():
        assert cmd.help.splitlines()[0] in res.stdout


def test_duplicates_name_their_first_copy(tmp_path, demo_tok):
    import pyarrow.ipc as ipc

    records = json.loads(DEMO_INPUTS[0].read_text())[:5]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*records, records[3], records[1], records[3]]))
    m = build([path], tmp_path / "o", tokenizer=demo_tok, seq_len=512)
    assert m["counts"]["duplicates"] == 3
    docs = ipc.open_file(tmp_path / "o" / "documents.arrow").read_all()
    assert docs.column("duplicate_of").to_pylist() == [None] * 5 + [3, 1, 3]
