"""Imports flow one way: compensations -> activities -> saga. The engine imports no
system, in any form: what it needs from one comes through the catalog."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PACKAGES = ("activities", "compensations")


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an import statement names, anywhere in the tree (functions too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in _imported(ast.parse(path.read_text(), str(path))):
            if module.split(".")[0] in forbidden:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_the_engine_imports_no_system() -> None:
    assert _offending("saga", SYSTEM_PACKAGES) == []


def test_forward_modules_do_not_import_their_undo() -> None:
    assert _offending("activities", ("compensations",)) == []


def test_the_check_sees_imports_inside_functions() -> None:
    tree = ast.parse(
        "def f():\n    from activities.payments import key_of\n"
        "def g():\n    import compensations.tickets\n"
        "def h():\n    importlib.import_module('activities.inventory')\n"
    )
    assert [m for _, m in _imported(tree)] == [
        "activities.payments",
        "compensations.tickets",
        "activities.inventory",
    ]
