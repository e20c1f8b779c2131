"""kite_sim's modules import each other one way: no cycles, the server on top."""

from __future__ import annotations

import ast
from pathlib import Path

import kite_sim

PACKAGE = Path(kite_sim.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """kite_sim modules ``path`` imports anywhere (also inside functions and TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("kite_sim")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_cycle_finder_reports_a_cycle() -> None:
    # Given a graph with a -> b -> a, Then the finder names it (so the next test can fail)
    assert _cycle({"a": {"b"}, "b": {"a"}, "c": set()}) == ["a", "b", "a"]


def test_kite_sim_has_no_import_cycle() -> None:
    # Given every kite_sim module's imports, When searched for a cycle, Then there is none
    assert _cycle(_graph()) is None


def test_only_the_cli_imports_the_server() -> None:
    # Given the server assembles the app from the routes
    importers = {name for name, deps in _graph().items() if "kite_sim.server" in deps}
    # Then nothing below it (app, routes, cores) reaches back up
    assert importers == {"kite_sim.__main__"}
