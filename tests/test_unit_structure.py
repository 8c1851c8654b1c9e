"""The code's shape, read with ast from svdbatch/ (nothing imported): imports flow one way (no circle, counting
imports inside functions), packages import only the packages below them (LAYERS), no function is over 60 lines, no
module over 300, at most 8 modules at the top, Ray is imported only inside svdbatch/ray/, each module there is under
250 lines and says what it owns, and importing the driver loads no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "svdbatch"
RAY_PACKAGE = PACKAGE / "ray"
MAX_FUNCTION_LINES = 60
MAX_RAY_MODULE_LINES = 250
MAX_MODULE_LINES = 300
MAX_TOP_LEVEL_MODULES = 8
# The packages from the bottom up: each may import only the ones before it (and the foundation). The tree is the
# architecture: the spec, the model and the items at the bottom, the render stages over them, the output's record,
# the run's rules, the report, Ray's adapter, and the commands at the top.
LAYERS = ["spec", "model", "items", "estimate", "render", "store", "run", "report", "ray", "cli"]
# Top-level modules every package may import (and the storage package): they import only each other.
FOUNDATION = {"svdbatch", "svdbatch.errors", "svdbatch.formats", "storage"}
# The other top-level modules are entry points beside cli/: no package but cli/ imports them.
ENTRY_POINTS = {"svdbatch.__main__", "svdbatch.demo", "svdbatch.reference"}
# Modules still over MAX_MODULE_LINES, with their length when the limit came: each may shrink, none may grow, no other
# module may join them.
OVER_LIMIT: dict[str, int] = {}


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


def package_of(name: str) -> str:
    """The package a module belongs to (``svdbatch.model.cache`` -> ``model``), or the module itself at the top."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else name


def against_layers(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a package from one below it, or of an entry point (demo...) from a package other than cli."""
    wrong = []
    for name, imported in sorted(graph.items()):
        source = package_of(name)
        for other in sorted(imported):
            target = package_of(other)
            if source == target or target in FOUNDATION:
                continue
            if source in FOUNDATION:
                wrong.append(f"{name} -> {other}: the foundation imports only itself")
            elif source in LAYERS[:-1] and (target not in LAYERS or LAYERS.index(target) > LAYERS.index(source)):
                wrong.append(f"{name} -> {other}")
    return wrong


def test_layer_check_sees_an_import_upward():
    graph = {"svdbatch.spec.config": {"svdbatch.store.commit"}, "svdbatch.store.commit": {"svdbatch.spec.config"}}
    assert against_layers(graph) == ["svdbatch.spec.config -> svdbatch.store.commit"]
    assert against_layers({"svdbatch.storage": {"svdbatch.spec.config"}}) != []
    assert against_layers({"svdbatch.render.stages": {"svdbatch.demo"}}) == ["svdbatch.render.stages -> svdbatch.demo"]


def test_packages_import_only_the_packages_below_them():
    assert {package_of(name) for name in _modules()} - FOUNDATION - ENTRY_POINTS == set(LAYERS)
    assert against_layers(import_graph()) == []


def test_each_package_says_what_it_owns():
    for package in LAYERS:
        assert ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())), package


def test_at_most_8_modules_at_the_top_and_none_over_300_lines():
    assert len(list(PACKAGE.glob("*.py"))) <= MAX_TOP_LEVEL_MODULES
    lengths = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    over = {name: lines for name, lines in lengths.items() if lines > MAX_MODULE_LINES}
    assert {name: lines for name, lines in over.items() if lines > OVER_LIMIT.get(name, MAX_MODULE_LINES)} == {}


def test_importing_the_driver_loads_no_torch_or_diffusers():
    """``svdbatch run``'s process stays light: torch is loaded only where a pipeline runs (the generation actors)."""
    code = "import sys, svdbatch.ray.driver; print(sorted({'torch', 'diffusers', 'transformers'} & sys.modules.keys()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


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
