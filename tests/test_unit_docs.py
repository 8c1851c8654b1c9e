"""The docs stay true: the reference pages equal what the code generates, every `svdbatch ...` command line quoted in
the README and docs parses with today's CLI, every spec field they name exists, and every internal link resolves."""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from pathlib import Path

import pytest

from svdbatch import reference
from svdbatch.cli.parser import build_parser
from svdbatch.formats import RENAMED
from svdbatch.spec import reference as spec_reference
from svdbatch.spec.reference import spec_lines

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")])
SECTIONS = "manifest|output|model|render|seeds|video|compute|images|failures|quality|lease|storage_options"
FIELD = re.compile(rf"(?<![\w./{{$-])(?:{SECTIONS})(?:\.(?:[a-z_][a-z0-9_]*|\*))+")
FILE_ENDINGS = {"parquet", "yaml", "json", "py", "md", "html", "svg", "tar", "jpg", "png", "mp4", "csv"}
COMMAND_LINE = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*(?:\S*/)?svdbatch( [^|&;]*)")  # a prompt, env, a path
SUBMITTED = re.compile(r"(?:-- |python -m )svdbatch( [^|&;]*)")  # ray job submit ... -- svdbatch run ...
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _commands(text: str) -> list[tuple[str, bool]]:
    """Each `svdbatch ...` invocation, and whether it is a whole command line: from code blocks (continuation lines
    joined, comments and shell prompts dropped: whole) and from inline code spans (often a command's name alone)."""
    found = []
    for language, block in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if language not in ("", "bash", "sh", "console"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("  #")[0]
            for pattern in (COMMAND_LINE, SUBMITTED):
                found += [(match, True) for match in pattern.findall(command)]
    for span in re.findall(r"`([^`\n]+)`", text):
        found += [(match, False) for match in re.findall(r"^(?:\$ )?(?:\S*/)?svdbatch( [^|&;`]*)$", span)]
    return [(command.strip(), whole) for command, whole in found if command.strip()]


def _quoted_commands() -> list[tuple[str, str, bool]]:
    return [(page.relative_to(ROOT).as_posix(), *quoted) for page in PAGES for quoted in _commands(page.read_text())]


def _deepest(words: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser the words lead to: `model stage ...` -> stage's parser."""
    parser = build_parser()
    for word in words:
        subs = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
    return parser


def test_the_reference_pages_equal_what_the_code_generates():
    for name, text in reference.pages().items():
        page = ROOT / reference.PAGES_DIR / name
        assert page.read_text() == text, f"{page} differs from the code: run python -m svdbatch.reference"


def test_the_spec_reference_shows_nested_ranges_and_top_level_fields_at_the_margin():
    lines = spec_reference.reference()
    fps = "  render.fps = 7  # Frame rate: the MP4's, and a conditioning for SVD (as fps-1) and LTX (frame_rate)."
    assert fps in lines
    assert any(line.startswith("  compute.actors = {min: 1}  # Generation actors") for line in lines)
    assert any(line.startswith("    compute.actors.max = null  # Most actors") for line in lines)
    assert any(line.startswith("storage_options = {}  # Extra fsspec options") for line in lines)
    assert not any("ActorRange(" in line for line in lines)


def test_every_metadata_column_is_described():
    from svdbatch.items.metadata import METADATA_SCHEMA

    assert [name for name in METADATA_SCHEMA.names if name not in reference.COLUMNS] == []
    assert [name for name in reference.COLUMNS if name not in METADATA_SCHEMA.names] == []


def test_the_docs_quote_commands_in_many_places():
    quoted = _quoted_commands()
    assert len(quoted) > 40
    assert {line.split()[0] for _, line, _ in quoted} >= {"run", "plan", "tune", "manifest", "report", "demo", "spec"}


@pytest.mark.parametrize(("page", "line", "whole"), _quoted_commands())
def test_every_quoted_command_line_parses_with_todays_cli(page, line, whole):
    """`--help` appended must print the command's help and exit 0 (the command exists); every flag must be one the
    command has; a whole command line must parse as it stands."""
    words = shlex.split(line)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        path = words if whole else list(itertools.takewhile(lambda word: not word.startswith("-"), words))
        with pytest.raises(SystemExit) as helped:
            build_parser().parse_args([*path, "--help"])
        assert helped.value.code == 0 and "usage: svdbatch" in out.getvalue(), (page, line, err.getvalue())
        known = _deepest(words)._option_string_actions
        unknown = [word for word in words if word.startswith("-") and word.split("=")[0] not in known]
        assert unknown == [], f"{page}: svdbatch {line}: unknown flags"
        if whole:
            try:
                build_parser().parse_args(words)
            except SystemExit as exit:
                pytest.fail(f"{page}: svdbatch {line}: {err.getvalue().strip().splitlines()[-1:]} (exit {exit.code})")


def _spec_names() -> set[str]:
    return {line.name for line in spec_lines()}


def _named_fields() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FIELD.finditer(text):
            name, after = match.group(), text[match.end() : match.end() + 16]
            if after.startswith((": unknown field", ": renamed")):  # a quoted error about a wrong name
                continue
            if name.rsplit(".", 1)[-1] not in FILE_ENDINGS and not name.startswith("storage_options."):
                found.append((page.relative_to(ROOT).as_posix(), name))
    return found


def test_every_spec_field_the_docs_name_exists():
    known = _spec_names()
    sections = {name.split(".", 1)[0] for name in known}
    wrong = []
    for page, name in _named_fields():
        if name.endswith(".*"):
            ok = name[:-2] in known or name[:-2] in sections
        else:
            ok = name in known or (page == "CHANGELOG.md" and name in RENAMED)
        if not ok:
            wrong.append(f"{page}: {name}")
    assert wrong == []
    assert len(_named_fields()) > 50


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(heading) for heading in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_internal_link_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for groups in LINK.findall(text):
            target = groups[0] or groups[1]
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_link_check_sees_a_broken_anchor(tmp_path):
    page = tmp_path / "a.md"
    page.write_text("# Real heading\n")
    assert _anchors(page) == {"real-heading"}
    assert _slug("The lease: `--lease-wait`") == "the-lease---lease-wait"


def test_the_command_check_rejects_an_unknown_flag():
    assert _commands("```bash\nsvdbatch run job.yaml --bogus  # a comment\n```") == [("run job.yaml --bogus", True)]
    assert "--bogus" not in _deepest(["run", "job.yaml"])._option_string_actions
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(shlex.split("run job.yaml --bogus"))
    assert isinstance(build_parser(), argparse.ArgumentParser)


def test_the_readme_is_short_and_keeps_its_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    install = (
        'python3 -m venv .venv && .venv/bin/pip install "torch==2.13.0" -e ".[test]" -c constraints.txt '
        "&& .venv/bin/svdbatch demo"
    )
    assert install in text
    assert ".venv/bin/python -m pytest -q" in text
    assert ".venv/bin/python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def test_every_svdbatch_import_in_the_docs_python_resolves():
    """The docs' Python recipes name svdbatch's modules: a module that moved must move in the docs too."""
    import importlib.util

    imports = []
    for page in PAGES:
        for block in re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M):
            imports += re.findall(r"^from (svdbatch[\w.]*) import (\w+)", block, re.M)
    assert imports
    for module, name in imports:
        imported = importlib.import_module(module)
        submodule = hasattr(imported, "__path__") and importlib.util.find_spec(f"{module}.{name}")
        found = hasattr(imported, name) or submodule
        assert found, f"from {module} import {name}"
