"""`packer inspect`: report numbers on small hand-checked builds, the JSON
schema, the HTML file, and the paper's LIMA figures on the real data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from packer import build
from packer.cli import main
from packer.report import inspect, render_html

from .helpers import ROOT, SHARED_DATA, SHARED_TOKENIZERS, need_shared

SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())


@pytest.fixture(scope="module")
def small(tmp_path_factory, demo_tok) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("report")
    alpaca = d / "a.jsonl"
    alpaca.write_text(
        json.dumps({"instruction": "one two three", "output": "a b"}) + "\n"
        # words: prompt 1 + 2 (input) + 1 = 4, response 5 + 1 = 6
        + json.dumps({"instruction": "x", "input": "y z", "output": "p q r s t"}) + "\n"
        + json.dumps({"instruction": "no output", "output": ""}) + "\n"
    )
    chats = d / "m.jsonl"
    chats.write_text(
        json.dumps({"messages": [
            {"role": "system", "content": "be nice"},  # 2 + 1
            {"role": "user", "content": "hello there friend"},  # 3 + 1
            {"role": "assistant", "content": "ok"},  # 1 + 1
        ]}) + "\n"
    )
    out = d / "out"
    m = build([alpaca, chats], out, tokenizer=demo_tok, seq_len=256)
    return out, m


def test_hand_checked_word_figures(small):
    out, _ = small
    r = inspect(out)
    w = r["words"]
    # prompts 4, 4, 7; responses 3, 6, 2
    assert w["prompt"]["mean"] == 5.0 and w["prompt"]["median"] == 4.0
    assert w["response"]["mean"] == pytest.approx(11 / 3, abs=1e-4) and w["response"]["median"] == 3.0
    assert w["ratio_of_means"] == pytest.approx(15 / 11, abs=1e-4)
    assert w["ratio"]["mean"] == pytest.approx((4 / 3 + 4 / 6 + 7 / 2) / 3, abs=1e-4)
    assert w["ratio"]["median"] == pytest.approx(4 / 3, abs=1e-4)
    assert sum(w["ratio_histogram"]["counts"]) == 3


def test_records_and_counts_add_up(small):
    out, m = small
    r = inspect(out)
    assert r["records"]["read"] == 4 and r["records"]["packed"] == 3
    assert r["records"]["rejected"] == {"empty_output": 1} and r["records"]["rejected_file"].endswith("rejected.jsonl")
    per_role = r["tokens"]["per_role"]
    for name, s in r["strategies"].items():
        if name != "last_turn":
            assert s["loss_tokens"] == sum(per_role[role] for role in s["roles"])
        assert s["share"] == pytest.approx(s["loss_tokens"] / r["tokens"]["total"], abs=1e-6)
    # token lengths agree with the roles: prompt = system + instruction + input tokens
    prompt = per_role["system"] + per_role["instruction"] + per_role["input"]
    assert r["tokens"]["prompt"]["mean"] * 3 == pytest.approx(prompt, abs=1e-3)  # means are rounded to 4 places
    assert r["tokens"]["response"]["mean"] * 3 == pytest.approx(per_role["response"], abs=1e-3)
    assert r["packing"]["rows"] == m["packing"]["rows"] == 1
    assert r["packing"]["documents_per_row"]["mean"] == 3.0
    assert r["multi_turn"]["multi_turn_examples"] == 0 and r["multi_turn"]["last_turn_loss_share"] == 1.0


def test_recommendation_cites_both_factors_and_says_heuristic(small):
    r = inspect(small[0])
    rec = r["recommendation"]
    assert rec["strategy"] == "instruction_modelling" and rec["long_prompts"] and rec["small_dataset"]
    assert "heuristic" in rec["text"] and "ratio" in rec["text"] and "examples" in rec["text"]


def test_json_schema_and_cli(small):
    out, _ = small
    res = CliRunner().invoke(main, ["inspect", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    jsonschema.validate(report, SCHEMA)
    for unit in ("words", "tokens"):
        assert {"prompt", "response", "ratio_of_means"} <= set(report[unit])
    assert report["strategies"]["instruction_tuning"]["loss_tokens"] > 0


def test_cli_text_report(small):
    res = CliRunner().invoke(main, ["inspect", str(small[0])])
    assert res.exit_code == 0, res.output
    for text in ("Loss tokens per strategy", "ratio of means", "Recommendation", "LIMA", "efficiency"):
        assert text in res.stdout


def test_cli_inspect_errors(tmp_path, small):
    res = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert res.exit_code == 1 and "manifest.json" in res.stderr
    res = CliRunner().invoke(main, ["inspect", str(small[0]), "--strategy", "nope"])
    assert res.exit_code == 1 and "unknown strategy" in res.stderr


def test_html_is_self_contained(small, tmp_path):
    out, _ = small
    page = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["inspect", str(out), "--html", str(page), "--strategy", "instruction_modelling"])
    assert res.exit_code == 0, res.output
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") >= 4
    assert not re.search(r"https?:|src=|href=|@import|url\(", text), "no network references"
    assert 'class="r-response loss"' in text and "r-instruction" in text


def test_html_opens_in_a_headless_browser(small, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    page = tmp_path / "r.html"
    page.write_text(render_html(inspect(small[0]), small[0]))
    res = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "<h1>packer inspect</h1>" in res.stdout and "<svg" in res.stdout


def test_lima_figures_match_the_paper(tmp_path):
    """The paper's Table 5: LIMA 41.72 prompt and 442.75 output words, ratio 0.094."""
    need_shared()
    build([SHARED_DATA / "messages_lima.jsonl"], tmp_path / "o",
          tokenizer=SHARED_TOKENIZERS / "llama-3-8b-instruct", seq_len=4096)
    w = inspect(tmp_path / "o")["words"]
    assert round(w["prompt"]["mean"], 2) == 41.72
    assert round(w["response"]["mean"], 2) == 442.75
    assert round(w["ratio_of_means"], 3) == 0.094
