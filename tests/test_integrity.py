"""Nothing half-written, nothing silently wrong: a build killed at any moment,
determinism across thread counts, `packer verify` on corrupt outputs, and a
property test of the role/mask invariants over random conversations."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packer.cli import main
from packer.inspect.verify import verify
from packer.output import roles as R
from packer.output.shards import strategy_masks
from packer.pipeline.outdir import PHASES
from packer.read.records import Conversation, Message, Source
from packer.tokens.templates import BUILTIN_TEMPLATES, ChatTemplate, Rendered
from packer.tokens.tokenize import Labeller

from .helpers import DEMO_TOKENIZER, demo_variants

BUILD = "from packer.cli import main; main()"


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    return demo_variants(tmp_path_factory.mktemp("big") / "big.jsonl", 80)


def run_build(inp: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", BUILD, "build", str(inp), "-o", str(out), "--tokenizer", str(DEMO_TOKENIZER),
           "--seq-len", "1024", "--shard-size", "1", "-q", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.arrow"))}


@pytest.fixture(scope="module")
def kill_input(tmp_path_factory) -> tuple[Path, dict[str, bytes], Path]:
    """Enough records for two shards (kills are timed by phase, so the build need not be long), the shards of
    its build, and an older output (other options) for the rebuilds to replace."""
    folder = tmp_path_factory.mktemp("kill")
    inp = demo_variants(folder / "kill.jsonl", 30)
    for out, extra in ((folder / "ref", ()), (folder / "older", ("--seq-len", "512"))):
        proc = run_build(inp, out, *extra)
        assert proc.wait() == 0, proc.stderr.read().decode()
    expected = shard_bytes(folder / "ref")
    assert len(expected) >= 2  # several shards, so kills land between them too
    return inp, expected, folder / "older"


@pytest.mark.slow
@pytest.mark.xdist_group("kill_input")  # both on one pytest-xdist worker: kill_input (two builds) is made once
@pytest.mark.parametrize("rebuild", [False, True])
def test_killed_build_leaves_the_old_output_or_the_new_and_reruns(kill_input, tmp_path, rebuild):
    """SIGKILL at each phase of a build (a first build, or a rebuild over an older output), then the same command."""
    inp, expected, older = kill_input
    # a first build has no half-done swap: it renames the staging folder in one step; before the swap every
    # phase leaves the same (nothing at the target), so its first, last and the swap are enough
    phases = PHASES if rebuild else ("tokens", "manifest", "swap")
    for phase in phases:
        out = tmp_path / f"kill-{phase}"
        if rebuild:
            shutil.copytree(older, out)
        old = shard_bytes(out) if rebuild else None
        proc = run_build(inp, out, *(["--overwrite"] if rebuild else []),
                         env={**os.environ, "PACKER_TEST_KILL_AT": phase})
        assert proc.wait() == -signal.SIGKILL, f"never got to {phase}"
        if (out / "manifest.json").exists():
            assert verify(out) == [], f"killed at {phase}: a manifest that points at a broken output"
            assert shard_bytes(out) in (old, expected), f"killed at {phase}: a mix of two outputs"
        else:
            assert not rebuild, f"killed at {phase}: the old output lost"
        # the same command again completes and gives the same bytes, and nothing is left beside the output
        again = run_build(inp, out, *(["--overwrite"] if rebuild else []))
        assert again.wait() == 0, again.stderr.read().decode()
        assert shard_bytes(out) == expected, f"killed at {phase}"
        assert verify(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"kill-{ph}" for ph in phases)


@pytest.mark.slow
def test_byte_identical_whatever_the_thread_count(big_input, tmp_path):
    outs = []
    for threads in ("1", "2"):
        env = {**os.environ, "RAYON_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads}
        out = tmp_path / f"t{threads}"
        proc = run_build(big_input, out, env=env)
        assert proc.wait() == 0, proc.stderr.read().decode()
        outs.append(shard_bytes(out))
    assert outs[0] == outs[1]


@pytest.fixture
def good_output(tmp_path, demo_output) -> Path:
    """A copy of the session's demo build, for a test to damage."""
    return shutil.copytree(demo_output, tmp_path / "o")


def test_verify_cli_ok(demo_output):
    res = CliRunner().invoke(main, ["verify", str(demo_output)])
    assert res.exit_code == 0 and "ok" in res.stdout


def test_verify_finds_a_flipped_byte(good_output):
    shard = good_output / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify(good_output)
    assert problems == ["shard-00001.arrow: sha256 differs from the manifest (corrupt)"]
    res = CliRunner().invoke(main, ["verify", str(good_output)])
    assert res.exit_code == 1 and "shard-00001.arrow: sha256 differs" in res.stderr


def test_verify_finds_truncated_and_missing_shards(good_output):
    shard = good_output / "shard-00000.arrow"
    shard.write_bytes(shard.read_bytes()[:-100])
    (good_output / "shard-00002.arrow").unlink()
    problems = verify(good_output)
    assert any(p.startswith("shard-00000.arrow:") and "truncated" in p for p in problems)
    assert "shard-00002.arrow: missing" in problems


def test_verify_finds_inconsistent_manifest(good_output):
    path = good_output / "manifest.json"
    m = json.loads(path.read_text())
    m["counts"]["packed"] += 1
    path.write_text(json.dumps(m))
    assert any("records" in p for p in verify(good_output))


def test_verify_no_manifest(tmp_path):
    assert "no manifest.json" in verify(tmp_path)[0]


# -- property test ------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda s: s.strip() and "<|" not in s
)


@st.composite
def conversations(draw) -> Conversation:  # type: ignore[no-untyped-def]
    msgs = []
    if draw(st.booleans()):
        msgs.append(Message("system", draw(TEXT)))
    for _ in range(draw(st.integers(1, 3))):
        msgs.append(Message("user", draw(TEXT), draw(st.one_of(st.just(""), TEXT))))
        msgs.append(Message("assistant", draw(TEXT)))
    return Conversation(Source(0, "random.jsonl", 0), "messages", tuple(msgs))


ROLE_SETS = st.lists(st.sampled_from(list(R.ROLES)), min_size=1, max_size=8, unique=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv=conversations(), template=st.sampled_from(sorted(BUILTIN_TEMPLATES)), extra=ROLE_SETS)
def test_roles_and_masks_invariants(demo_tok, conv, template, extra):
    r = ChatTemplate.named(template, demo_tok).render(conv)
    assert isinstance(r, Rendered), r
    b = Labeller(demo_tok)([r])  # the build's path: byte widths for this byte-level tokenizer
    # roles cover every token, with known codes
    assert b.roles.size and np.isin(b.roles, list(R.ROLES.values())).all()
    # the ids are the text, tokenized once (the demo tokenizer is byte-level: exact)
    assert demo_tok.tokenizer.decode(b.ids.tolist(), skip_special_tokens=False) == r.text
    strategies = {**R.BUILTIN_STRATEGIES, "random": tuple(extra)}
    masks = strategy_masks(b.roles, b.last, strategies)
    for name, roles in strategies.items():
        expected = np.isin(b.roles, R.role_codes(roles))
        if name in R.LAST_TURN_STRATEGIES:
            assert not (masks[name] & ~expected).any()
        else:
            assert (masks[name] == expected).all()
    it, im, full = masks["instruction_tuning"], masks["instruction_modelling"], masks["full"]
    assert not (it & ~im).any() and not (im & ~full).any() and full.all()
    assert not (masks["last_turn"] & ~it).any()
    # every assistant turn contributes response tokens; the final one is the last turn
    assert it.any() and masks["last_turn"].any()
