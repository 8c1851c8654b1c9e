"""The Python floor pyproject.toml declares is the one the code needs: every module parses with that version's
grammar, and no standard-library name newer than it is imported (a small vermin-like table of the names that
matter here). Checked with ast, nothing imported."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Standard-library names by the version that added them: the ones a codebase like this reaches for.
ADDED = {
    "enum.StrEnum": (3, 11),
    "tomllib": (3, 11),
    "typing.Self": (3, 11),
    "typing.assert_never": (3, 11),
    "asyncio.TaskGroup": (3, 11),
    "datetime.UTC": (3, 11),
    "itertools.batched": (3, 12),
    "typing.override": (3, 12),
    "warnings.deprecated": (3, 13),
    "copy.replace": (3, 13),
}


def declared_floor() -> tuple[int, int]:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    major, minor = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip()).groups()
    return int(major), int(minor)


def newer_than(floor: tuple[int, int], source: str) -> list[str]:
    """The names of ``ADDED`` that ``source`` imports and ``floor`` lacks."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [name for name in names if ADDED.get(name, (0, 0)) > floor]
    return found


def test_the_check_sees_a_name_newer_than_the_floor():
    assert newer_than((3, 10), "from enum import StrEnum\nimport tomllib") == ["enum.StrEnum", "tomllib"]
    assert newer_than((3, 11), "from enum import StrEnum\nfrom itertools import batched") == ["itertools.batched"]


def test_the_code_needs_no_python_newer_than_the_declared_floor():
    floor = declared_floor()
    for path in sorted([*(ROOT / "svdbatch").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        source = path.read_text()
        ast.parse(source, str(path), feature_version=floor)  # a newer grammar (e.g. 3.12's `type X = ...`) fails here
        assert newer_than(floor, source) == [], path


def test_the_declared_floor_is_the_oldest_the_code_runs_on():
    """Lowering requires-python below what the code imports fails the test above; this says the floor is tight."""
    floor = declared_floor()
    lower = (floor[0], floor[1] - 1)
    needs = [name for path in (ROOT / "svdbatch").rglob("*.py") for name in newer_than(lower, path.read_text())]
    assert needs, f"nothing needs Python {floor[0]}.{floor[1]}: requires-python could be lower"
