"""Nothing a user loads can execute code: every torch.load passes weights_only=True, YAML is safe-loaded,
and no module of the project imports pickle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for pkg in ("ofa", "train", "search", "deploy", "benchmarks") for p in (ROOT / pkg).rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield owner, name, node


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_loading_never_unpickles(path):
    tree = ast.parse(path.read_text())
    for owner, name, node in _calls(tree):
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if owner == "torch" and name == "load":
            flags = {k.arg: k.value for k in node.keywords}
            assert "weights_only" in flags and getattr(flags["weights_only"], "value", None) is True, where
        if owner == "yaml":
            assert name not in ("load", "unsafe_load", "full_load"), f"{where}: use yaml.safe_load"
        assert not (owner == "pickle" and name in ("load", "loads")), where
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            assert "pickle" not in names, f"{path.relative_to(ROOT)}:{node.lineno} imports pickle"


def test_the_scan_sees_the_project():
    assert len(SOURCES) > 20 and any(p.name == "io.py" for p in SOURCES)
