"""The package's layering: no module of `gateway/` imports, directly or through others, a module
that imports it back. `TYPE_CHECKING` and function-level imports count too: a cycle hidden behind
one is still a cycle in the design."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The gateway modules `path` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "gateway")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "gateway":
                continue
            for alias in node.names:  # `from . import x` names a module when x is one
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in modules else source)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_gateway_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one():
    # The check above must be able to fail: a two-module and a three-module circle are found.
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(cycles(edges)) == [["a", "b"], ["c", "d", "e"]]


def test_relative_and_type_checking_imports_are_read(tmp_path):
    edges = graph()
    assert "gateway.routing.route" in edges["gateway.routing.table"]       # from .route import Route
    assert "gateway.upstream.target" in edges["gateway.routing.strategies"]  # from ..upstream.target import
    assert "gateway.cache.semantic" in edges["gateway.cache"]               # an import inside a function


def test_runtime_sits_above_routing_cache_and_upstream():
    edges = graph()
    below = [m for m in edges if m.startswith(("gateway.routing", "gateway.cache", "gateway.upstream"))]
    assert not [m for m in below if {"gateway.runtime", "gateway.proxy", "gateway.app"} & edges[m]]
    assert "gateway.proxy" not in edges["gateway.explain"]
