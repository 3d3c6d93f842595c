"""The code's layout rules, checked from the source with ``ast``: no import circle among the
package's modules (imports inside functions count: they only defer a circle to call time), no
module over 500 lines, no function over 100 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "napari_lggseg"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100


def _module_name(path: Path, root: Path) -> str:
    parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path = SRC) -> dict[str, Path]:
    """Module name -> file for every module of the package under ``root``."""
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _imported(node: ast.AST, name: str, is_package: bool) -> list[str]:
    """The modules an import statement names, absolute (outside the package too)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: from the importer's package, up level - 1
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    return [target] + [f"{target}.{a.name}" for a in node.names]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (module level or inside
    functions). Importing ``a.b.c`` also runs package ``a.b``: counted unless the importer
    lives inside ``a.b`` itself (then that package is already being imported)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, name, is_package):
                parts = target.split(".")
                for n in range(1, len(parts) + 1):
                    mod = ".".join(parts[:n])
                    inside = name == mod or name.startswith(mod + ".")
                    if mod in modules and not inside:
                        edges.add(mod)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in {group}")


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``'name (first line): N lines'`` for each function (methods, nested ones) over ``limit``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{node.name} (line {node.lineno}): {lines} lines")
    return found


def test_the_package_has_no_import_cycle():
    cycles = import_cycles(import_graph(package_modules()))
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_is_over_500_lines():
    too_long = {
        str(path.relative_to(SRC)): n
        for path in package_modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_no_function_is_over_100_lines():
    too_long = {
        str(path.relative_to(SRC)): found
        for path in package_modules().values()
        if (found := long_functions(path))
    }
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


@pytest.mark.parametrize(
    "files, cycle",
    [
        # a function-level import closes the circle as surely as a module-level one
        (
            {"a.py": "from . import b\n", "b.py": "def f():\n    from .a import x\n"},
            ["napari_lggseg.a", "napari_lggseg.b", "napari_lggseg.a"],
        ),
        (
            {
                "a.py": "import napari_lggseg.sub.c\n",
                "sub/__init__.py": "",
                "sub/c.py": "from ..a import y\n",
            },
            ["napari_lggseg.a", "napari_lggseg.sub.c", "napari_lggseg.a"],
        ),
        ({"a.py": "from . import b\n", "b.py": "import os\n"}, None),
        # a module inside a package importing its sibling: no circle through the package
        (
            {
                "__init__.py": "",
                "sub/__init__.py": "from . import c\n",
                "sub/c.py": "from . import d\n",
                "sub/d.py": "",
            },
            None,
        ),
    ],
)
def test_the_cycle_check_sees_circles(tmp_path, files, cycle):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    cycles = import_cycles(import_graph(package_modules(tmp_path)))
    assert cycles == ([cycle] if cycle else [])
