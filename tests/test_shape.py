"""The layout keeps its shape: small modules, and imports that flow one way.

No module of the packages is over 400 lines, and the saga modules form no import cycle,
counting the imports made inside functions (lazy ones) and those a package's
``__init__`` re-exports, not only the ones at the top of a file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("saga", "activities", "compensations")
MAX_LINES = 400


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` and its subpackages."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path) -> Iterator[str]:
    """Every module name ``module`` may import when it runs: at the top, inside functions,
    by name through ``importlib.import_module``, and, for a package's ``__init__``, the
    modules its re-export table names (``{"Ledger": "saga._ledger"}``). Imports under
    ``TYPE_CHECKING`` never run and are left out. ``from package import name`` yields
    both the package and ``package.name``."""
    init = path.name == "__init__.py"
    package = module if init else module.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value
        elif init and isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value  # a re-export table's module name; others match no module


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``tree``, without the bodies of ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for branch in node.orelse:
                yield branch
                yield from _runtime_nodes(branch)
            continue
        yield node
        yield from _runtime_nodes(node)


def import_graph(package: str = "saga") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` that importing it may run.

    Importing ``a.b.c`` from outside package ``a.b`` also runs ``a.b``'s ``__init__``, so
    that is an edge too; from inside it, the ``__init__`` is already running.
    """
    modules = _modules(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target in _imported(name, path):
            if target not in modules:
                continue
            parts = target.split(".")
            for depth in range(2, len(parts)):
                parent = ".".join(parts[:depth])
                if parent in modules and not (name + ".").startswith(parent + "."):
                    graph[name].add(parent)
            if target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_is_over_400_lines() -> None:
    long = {
        path.relative_to(ROOT).as_posix(): lines
        for package in PACKAGES
        for path in _modules(package).values()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_import_cycle_among_saga_modules() -> None:
    assert cycles(import_graph()) == []


def test_the_graph_sees_lazy_imports_and_reexports() -> None:
    """The guard above is only as good as its graph: a lazy import in a function, an
    import under TYPE_CHECKING and a package's re-export are all edges, and a cycle
    made of them is found."""
    graph = import_graph()
    # saga/__init__ re-exports through its table and loads on first use.
    assert {"saga._ledger", "saga._workflow", "saga._plan"} <= graph["saga"]
    # A type-only import never runs: _policy names _models' Plan only for mypy.
    assert "saga._models" not in graph["saga._policy"]
    # `saga dev` imports the dev stack inside the command.
    assert {"saga.dev", "saga.dev._devstack"} <= graph["saga.cli._serve"]
    # A module inside a package does not depend on its own package's __init__ ...
    assert "saga.web" not in graph["saga.web._service"]
    # ... but one outside does (its __init__ runs first).
    assert "saga.cli" in graph["saga.dev._demo"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
