"""Regenerate the option table in README.md from packer.options.BuildOptions (the single source).

python scripts/options_table.py          # rewrites the table between the build-options markers
"""

from pathlib import Path

from packer.options import markdown_table

BEGIN, END = "<!-- build-options:begin -->", "<!-- build-options:end -->"


def with_table(text: str) -> str:
    """``text`` with the table between the markers replaced by the generated one."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{markdown_table()}{END}{tail}"


if __name__ == "__main__":
    readme = Path(__file__).resolve().parent.parent / "README.md"
    readme.write_text(with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {readme}")
