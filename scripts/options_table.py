"""Regenerate the option table in README.md from packer.options.BuildOptions (the single source) and the
command line's own flags (INPUTS aside: --recipe, -o, -q, --debug).

python scripts/options_table.py          # rewrites the table between the build-options markers
"""

from pathlib import Path

BEGIN, END = "<!-- build-options:begin -->", "<!-- build-options:end -->"
#: the flags of ``packer build`` that are not build settings (defined in packer.cli, not packer.options)
NOT_SETTINGS = ("recipe", "output", "quiet", "debug")


def table() -> str:
    from packer.cli import build_cmd
    from packer.options import markdown_rows

    rows = ["| option | default | meaning |", "|---|---|---|"]
    for p in build_cmd.params:
        if p.name in NOT_SETTINGS:
            flags = ", ".join(f"`{f}`" for f in p.opts[:-1]) + (", " if len(p.opts) > 1 else "")
            value = "" if p.is_flag else f" {p.metavar or 'DIR'}"
            default = "off" if p.is_flag else f"`{p.default}`" if isinstance(p.default, str) else ""
            rows.append(f"| {flags}`{p.opts[-1]}{value}` | {default} | {p.help} |")
    rows += markdown_rows()
    return "\n".join(rows) + "\n"


def with_table(text: str) -> str:
    """``text`` with the table between the markers replaced by the generated one."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


if __name__ == "__main__":
    readme = Path(__file__).resolve().parent.parent / "README.md"
    readme.write_text(with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {readme}")
