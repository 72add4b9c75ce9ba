"""The pages a newcomer reads (issue 26 item 4): README.md is a front page, BENCHMARKS.md today's figures, the
reference lives in docs/ (built by mkdocs; scripts/test.sh runs `mkdocs build --strict`). These tests keep the
front pages short, their links alive, every docs page in the site's nav and the option table complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .helpers import ROOT

DOCS = ROOT / "docs"

#: a markdown link's target: [text](target), without a title
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(page: Path) -> list[str]:
    """The targets of ``page``'s links that point into the repository (no URL, no bare anchor)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code blocks hold no links
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def _nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav lists (``- Title: page.md`` lines)."""
    return re.findall(r"^\s*- [^:\n]+:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)


@pytest.mark.parametrize(("name", "limit"), [("README.md", 20_000), ("BENCHMARKS.md", 15_000)])
def test_the_front_pages_stay_short(name, limit):
    # the reference goes to docs/, the history of figures to git: these two are read first, whole
    size = len((ROOT / name).read_text(encoding="utf-8"))
    assert size <= limit, f"{name} is {size:,} characters; at most {limit:,}: move reference text into docs/"


@pytest.mark.parametrize("page", ["README.md", "examples/README.md", *sorted(
    str(p.relative_to(ROOT)) for p in DOCS.glob("*.md"))])
def test_links_resolve(page):
    path = ROOT / page
    for target in _relative_links(path):
        file = target.split("#")[0]
        assert (path.parent / file).exists(), f"{page}: the link to {target} leads nowhere"


def test_the_readme_links_into_every_docs_page():
    linked = {(ROOT / t.split("#")[0]).resolve() for t in _relative_links(ROOT / "README.md")}
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert page.resolve() in linked, f"README.md does not link to docs/{page.name}"


def test_every_docs_page_is_in_the_nav():
    nav = _nav_pages()
    assert len(nav) == len(set(nav))
    assert set(nav) == {p.name for p in DOCS.glob("*.md")}, "mkdocs.yml's nav and the pages in docs/ differ"


def test_the_api_page_documents_the_public_names():
    text = (DOCS / "api.md").read_text()
    for name in ["packer.pipeline.build.build", "packer.pipeline.build.BuildEvents",
                 "packer.train.dataset.PackedDataset", "packer.train.collate.collate_4d",
                 "packer.train.collate.collate_flat",
                 "packer.train.collate.collate_padded", "packer.train.collate.collator_for",
                 "packer.tokens.loader.load_tokenizer", "packer.options.BuildOptions"]:
        assert f"::: {name}\n" in text, name


def test_the_readme_says_how_to_run_the_demo_and_the_tests():
    text = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    assert (ROOT / "scripts" / "demo.sh").is_file() and (ROOT / "scripts" / "test.sh").is_file()
    assert "mkdocs build --strict" in (ROOT / "scripts" / "test.sh").read_text()


def test_the_build_options_table_lists_every_option():
    from packer.cli import main

    text = (ROOT / "README.md").read_text()
    heading = "\n## Build options\n"
    section = text[text.index(heading) + len(heading):]
    section = section[: section.find("\n## ")] if "\n## " in section else section
    begin, end = "<!-- build-options:begin -->", "<!-- build-options:end -->"
    body = [line for line in section.splitlines() if line.strip()]
    assert begin in body and body[-1] == end, "the section ends with the marked table"
    table = body[body.index(begin) + 1:-1]
    assert table[0].startswith("| option | default | meaning |") and all(line.startswith("|") for line in table)
    for param in main.commands["build"].params:
        if param.name != "inputs":
            flag = max(param.opts, key=len)
            assert f"`{flag}" in "\n".join(table), f"packer build {flag} is not in README's Build options table"


def test_benchmarks_name_scripts_that_exist():
    text = (ROOT / "BENCHMARKS.md").read_text()
    scripts = set(re.findall(r"benchmarks/(\w+\.py)", text))
    assert scripts, "every figure names the command that reproduces it"
    for name in scripts:
        assert (ROOT / "benchmarks" / name).is_file(), name
