"""No import circle in server/ or client/, between modules or between packages (every import counted, those
inside functions too): each part can be read, and tested, from the bottom up."""
from __future__ import annotations

import ast
import pytest

from modelcheck import REPO


def imports(roots: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the modules of `roots` it imports."""
    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for root in roots for p in (REPO / root).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
        graph[module] = {m for m in found if m in files and m != module}
    return graph


def packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """package -> the packages it imports from (a package and the ones inside it are not told apart here)."""
    def package(module: str) -> str:
        return module if any(m.startswith(module + ".") for m in graph) else module.rpartition(".")[0]

    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        a = package(module)
        out.setdefault(a, set()).update(b for b in map(package, targets)
                                        if not (a == b or b.startswith(a + ".") or a.startswith(b + ".")))
    return out


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    return next((found for node in sorted(graph) if node not in state and (found := visit(node))), None)


@pytest.mark.parametrize("root", ["server", "client"])
def test_no_import_circle(root):
    graph = imports((root,))
    assert circle(graph) is None
    assert circle(packages(graph)) is None


def test_the_check_finds_a_circle():
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert circle(packages({"p.x": {"q.y"}, "q.y": {"p.z"}, "p.z": set()})) is not None
