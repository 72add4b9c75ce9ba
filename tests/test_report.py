"""`packer inspect`: report numbers on small hand-checked builds, the JSON
schema, the HTML file, and the paper's LIMA figures on the real data; the loss on
tool calls, reasoning and tool results per strategy and the untrained tokens, against
the shards, and an output of format version 1 (no trainable column, no such counts)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from packer import build
from packer.cli import main
from packer.inspect.report import ROLE_COLOURS, TOOL_ROLES, inspect, render_html
from packer.output import roles as R

from .helpers import ROOT, SHARED_DATA, SHARED_TOKENIZERS, as_version_1, need_shared, read_documents

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


# -- tool calls, reasoning, tool results; untrained messages (issue 15) -----------------------------

WEATHER_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
#: OpenAI messages: a call with reasoning, its result and the answer; a turn marked weight 0, then one trained
TOOL_RECORDS = [
    {"messages": [
        {"role": "system", "content": "use tools"},
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "reasoning_content": "I should call the tool",
         "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "content": "sunny 21C"},
        {"role": "assistant", "content": "It is sunny and 21C."},
    ]},
    {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "bad answer", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "good answer", "training": True},
    ]},
]


@pytest.fixture(scope="module")
def tools(tmp_path_factory, demo_tok) -> Path:
    d = tmp_path_factory.mktemp("report_tools")
    (d / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TOOL_RECORDS))
    build([d / "t.jsonl"], d / "out", tokenizer=demo_tok, seq_len=256, template="chatml",
          strategy=["calls_only=tool_call"])
    return d / "out"


#: a sample-row token of the HTML page marked untrained
UNTRAINED_SPAN = re.compile(r'<span class="r-[a-z_]+( loss)? untrained"')


def shard_counts(out: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """From the shards: per strategy, its loss tokens per role code; the untrained tokens per role code."""
    strategies = json.loads((out / "manifest.json").read_text())["strategies"]
    loss = {name: np.zeros(R.N_ROLES, np.int64) for name in strategies}
    untrained = np.zeros(R.N_ROLES, np.int64)
    for doc in read_documents(out).values():
        roles = doc["roles"].astype(np.int64)
        for name in strategies:
            loss[name] += np.bincount(roles[doc[f"mask_{name}"].astype(bool)], minlength=R.N_ROLES)
        untrained += np.bincount(roles[~doc["trainable"].astype(bool)], minlength=R.N_ROLES)
    return loss, untrained


def test_tool_role_loss_per_strategy_matches_the_shards(tools):
    r = inspect(tools)
    loss, _ = shard_counts(tools)
    assert all(r["tokens"]["tool_roles"][role] > 0 for role in TOOL_ROLES), "the record has every such role"
    assert r["tokens"]["tool_roles"] == {role: r["tokens"]["per_role"][role] for role in TOOL_ROLES}
    for name, s in r["strategies"].items():
        assert set(s["tool_roles"]) == set(TOOL_ROLES)
        for role in TOOL_ROLES:
            entry, truth = s["tool_roles"][role], int(loss[name][R.ROLES[role]])
            assert entry["loss_tokens"] == truth, (name, role)  # last_turn too: the manifest splits it by role
            assert entry["share"] == pytest.approx(truth / s["loss_tokens"], abs=1e-6)
    # what each strategy trains: tool results only under full, reasoning not under answer_only
    by = {name: {role: e["loss_tokens"] for role, e in s["tool_roles"].items()} for name, s in r["strategies"].items()}
    assert by["full"] == r["tokens"]["tool_roles"]
    assert by["instruction_tuning"]["tool"] == 0 and by["instruction_tuning"]["tool_call"] > 0
    assert by["answer_only"]["reasoning"] == 0 and by["answer_only"]["tool_call"] > 0
    assert by["calls_only"] == {"tool_call": r["tokens"]["tool_roles"]["tool_call"], "reasoning": 0, "tool": 0}
    assert r["strategies"]["calls_only"]["tool_roles"]["tool_call"]["share"] == 1.0
    # the final turn of the first record is a plain answer: last_turn puts no loss on the result
    assert by["last_turn"]["tool"] == 0 and by["last_turn"]["tool_call"] == int(loss["last_turn"][R.TOOL_CALL])


def test_untrained_tokens_match_the_shards(tools):
    r = inspect(tools)
    _, untrained = shard_counts(tools)
    t = r["tokens"]
    assert t["untrained"] == int(untrained.sum()) > 0
    assert t["untrained_per_role"] == {R.ROLE_NAMES[c]: int(n) for c, n in enumerate(untrained) if n}
    assert set(t["untrained_per_role"]) <= {"response", "end"}
    assert t["untrained_share"] == pytest.approx(t["untrained"] / t["total"], abs=1e-6)
    # a flagged strategy leaves them out, full keeps them
    per_role = t["per_role"]
    assert r["strategies"]["full"]["loss_tokens"] == t["total"]
    it = r["strategies"]["instruction_tuning"]
    assert it["loss_tokens"] == sum(per_role[k] for k in it["roles"]) - t["untrained"]


def test_tool_and_untrained_figures_in_json_text_and_html(tools, tmp_path):
    res = CliRunner().invoke(main, ["inspect", str(tools), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["strategies"]["answer_only"]["tool_roles"]["reasoning"] == {"loss_tokens": 0, "share": 0.0}
    res = CliRunner().invoke(main, ["inspect", str(tools), "--html", str(tmp_path / "r.html")], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert res.stdout == ""  # --html writes the page; the text report is `packer inspect` without it
    res = CliRunner().invoke(main, ["inspect", str(tools)], terminal_width=200)
    text = res.stdout
    assert "Tool calls, reasoning, tool results: loss tokens" in text
    r = inspect(tools)
    n = r["strategies"]["instruction_tuning"]["tool_roles"]["tool_call"]
    row = next(line for line in text.splitlines() if "│ instruction_tuning " in line and "(" in line)
    assert f"{n['loss_tokens']:,} ({n['share']:.1%})" in row
    assert re.search(rf"untrained: {r['tokens']['untrained']} tokens .* no loss under any strategy but full", text)
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Tool calls, reasoning, tool results</h2>" in page and "untrained:" in page
    assert all(f'class="r-{role}' in page for role in TOOL_ROLES) and UNTRAINED_SPAN.search(page)


def test_plain_output_has_no_tool_or_untrained_lines(small):
    r = inspect(small[0])
    assert r["tokens"]["tool_roles"] == {role: 0 for role in TOOL_ROLES}
    assert r["tokens"]["untrained"] == 0 and r["tokens"]["untrained_per_role"] == {}
    assert all(e == {"loss_tokens": 0, "share": 0.0} for s in r["strategies"].values()
               for e in s["tool_roles"].values())
    res = CliRunner().invoke(main, ["inspect", str(small[0])])
    assert "Tool calls, reasoning" not in res.stdout and "untrained" not in res.stdout


def test_version_1_output(small, tmp_path):
    out = as_version_1(small[0], tmp_path / "v1")
    r = inspect(out)
    jsonschema.validate(r, SCHEMA)
    assert r["tokens"]["untrained"] == 0 and r["tokens"]["untrained_per_role"] == {}
    assert r["tokens"]["tool_roles"] == {role: 0 for role in TOOL_ROLES}
    assert r["strategies"]["instruction_tuning"] == inspect(small[0])["strategies"]["instruction_tuning"]
    page = render_html(r, out)
    assert 'class="r-response loss"' in page and not UNTRAINED_SPAN.search(page)


def test_one_html_colour_per_role():
    assert list(ROLE_COLOURS) == list(R.ROLES)
    assert len(set(ROLE_COLOURS.values())) == len(R.ROLES)
