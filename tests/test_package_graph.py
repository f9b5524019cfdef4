"""The package import graph has no cycle: ``config`` is a leaf, every layer imports downwards."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sentinel"


def _group(module: str) -> str | None:
    """The first-level package or module of ``sentinel.a.b`` (``sentinel.a``)."""
    parts = module.split(".")
    if parts[0] != "sentinel" or len(parts) < 2:
        return None
    return parts[1].removesuffix(".py")


def _runtime_imports(tree: ast.Module) -> Iterator[str]:
    """Every module imported at run time: ``if TYPE_CHECKING:`` blocks aside."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node) if child is not node)
            for orelse in node.orelse:
                skipped.difference_update(id(child) for child in ast.walk(orelse))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def package_graph() -> dict[str, set[str]]:
    """Which first-level group of ``sentinel`` imports which others at run time."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        source = _group(".".join(relative.parts))
        if source is None or source == "__init__" or source == "__main__":
            continue
        edges = graph.setdefault(source, set())
        for module in _runtime_imports(ast.parse(path.read_text("utf-8"))):
            target = _group(module)
            if target is not None and target != source:
                edges.add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _shown(graph: dict[str, set[str]]) -> str:
    return "\n".join(
        f"  {node} -> {', '.join(sorted(graph[node])) or '-'}" for node in sorted(graph)
    )


def test_the_package_graph_has_no_cycle() -> None:
    """No first-level part of ``sentinel`` imports, through others, itself."""
    graph = package_graph()
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle {' -> '.join(cycle)}; the graph:\n{_shown(graph)}"


def test_config_is_a_leaf_everything_may_import() -> None:
    """``sentinel.config`` imports no other part of Sentinel."""
    assert package_graph()["config"] == set()


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The checker itself reports a planted cycle and accepts a tree."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
