"""The shape of the code (issue 26): stages as sub-packages whose imports flow one way, and no module, function or
signature too big to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKER = Path(__file__).resolve().parent.parent / "packer"
STAGES = ("read", "tokens", "output", "pipeline", "train", "inspect", "export")
#: what each sub-package may import from the others (the top-level modules are open to all)
MAY_IMPORT = {
    "output": set(),
    "read": {"output"},
    "tokens": {"read", "output"},
    "pipeline": {"read", "tokens", "output"},
    "train": {"output"},
    "inspect": {"output", "tokens", "read"},
    "export": {"output", "train", "read"},  # train: its torch-free row reader (train.rows); read: BuildError
}


def modules() -> list[Path]:
    return sorted(PACKER.rglob("*.py"))


def imported_stages(path: Path) -> set[str]:
    """The sub-packages a module imports (relative or absolute, at the top or inside a function)."""
    stage = path.parent.name if path.parent != PACKER else None
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").startswith("packer."):
                parts = node.module.split(".")[1:]
            elif (node.level == 1 and stage is None) or node.level == 2:
                parts = (node.module or "").split(".") if node.module else [a.name for a in node.names]
            else:
                continue
            found |= {p for p in parts[:1] if p in STAGES}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("packer.")} & set(STAGES)
    return found - {stage}


def test_the_stages_are_sub_packages():
    assert all((PACKER / s / "__init__.py").is_file() for s in STAGES)
    top = {p.stem for p in PACKER.glob("*.py")}
    assert top <= {"__init__", "_version", "cli", "options", "recipe", "fsio", "jit"}, top


@pytest.mark.parametrize("stage", STAGES)
def test_imports_flow_one_way(stage):
    """The output format is read by training and inspection without the build; no stage imports a later one."""
    for path in sorted((PACKER / stage).glob("*.py")):
        wrong = imported_stages(path) - MAY_IMPORT[stage]
        assert not wrong, f"{path.relative_to(PACKER)} imports {sorted(wrong)}"


def test_no_module_function_or_signature_too_big():
    problems = []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 700:
            problems.append(f"{path.relative_to(PACKER)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []),
                      *([a.kwarg] if a.kwarg else [])]
            n = len([p for p in params if p.arg not in ("self", "cls")])
            lines = node.end_lineno - node.lineno + 1
            if lines > 80:
                problems.append(f"{path.relative_to(PACKER)}: {node.name} is {lines} lines")
            # a public class's __init__ may take its options one by one (PackedDataset)
            if n > 12 and node.name != "__init__":
                problems.append(f"{path.relative_to(PACKER)}: {node.name} takes {n} parameters")
    assert not problems, "\n".join(problems)
