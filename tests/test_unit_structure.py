"""The code's shape, read with ast from svdbatch/ (nothing imported): imports flow one way (no circle, counting
imports inside functions), no function is over 60 lines, Ray is imported only inside svdbatch/ray/, and each module
there is under 250 lines and says what it owns."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "svdbatch"
RAY_PACKAGE = PACKAGE / "ray"
MAX_FUNCTION_LINES = 60
MAX_RAY_MODULE_LINES = 250


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(path: Path, name: str) -> set[str]:
    """Every module name an import statement in the file names, at any depth (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, function-level imports included."""
    modules = _modules()
    return {name: (_imported(path, name) & modules.keys()) - {name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_circle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_anywhere():
    graph = import_graph()
    assert "svdbatch.ray.driver" in graph["svdbatch.cli.plan"]  # function-level imports are seen
    assert cycles(graph) == []


def test_no_function_over_60_lines():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_only_the_ray_package_imports_ray():
    outside = {
        name: sorted(module for module in _imported(path, name) if module == "ray" or module.startswith("ray."))
        for name, path in _modules().items()
        if RAY_PACKAGE not in path.parents
    }
    assert {name: found for name, found in outside.items() if found} == {}


def test_ray_package_modules_are_small_and_say_what_they_own():
    modules = sorted(RAY_PACKAGE.glob("*.py"))
    assert {path.name for path in modules} >= {"driver.py", "dataset.py", "actors.py", "cluster.py", "internals.py"}
    for path in modules:
        assert len(path.read_text().splitlines()) < MAX_RAY_MODULE_LINES, path.name
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no module docstring"
