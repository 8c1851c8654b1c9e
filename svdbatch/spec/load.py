"""A job spec from a file or URL: YAML read (local, or fsspec for a URL), relative paths resolved against the
spec's own folder, ``--set section.field=value`` overrides merged, and pydantic's errors worded as one line that
says what to fix (with the nearest field for a typo).

A spec travels with its files: relative paths in it (manifest.path, output.url, and model.source / model.unet when
they name a local folder or file) resolve against the spec file's folder, or the folder of the URL it was read from,
never against the current directory. Image URIs inside the manifest are data and are not rewritten.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from svdbatch import formats
from svdbatch.errors import UserError
from svdbatch.spec.config import TINY_MODELS, JobSpec, SpecError, closest, lookup


def describe_error(error: ValidationError, prefix: str = "") -> str:
    """One line per the brief: the field, the bad value and what is allowed."""
    errors = error.errors()
    # A misspelt field also shows up as the real one missing: name the typo, it says what to fix.
    # For a union (compute.actors: number or range) report the branch that matches the input's kind.
    first = next((item for item in errors if item["type"] == "extra_forbidden"), None) or next(
        (item for item in errors if item["type"] not in ("int_type", "int_parsing", "model_type")), errors[0]
    )
    parts = [str(part) for part in first["loc"] if not str(part).startswith(("constrained-", "function-"))]
    where = ".".join(parts) or "spec"
    if prefix:
        where = f"{prefix}.{where}" if where != "spec" else prefix
    message = first["msg"]
    if first["type"] == "extra_forbidden" and where in formats.RENAMED:
        return f"{where}: renamed, use {formats.RENAMED[where]}"
    if first["type"] == "extra_forbidden":
        guess = nearest_field(parts)
        hint = f"did you mean {guess}? " if guess else "check the spelling; "
        return f"{where}: unknown field ({hint}'svdbatch spec' lists every field)"
    if first["type"] == "missing":
        return f"{where}: required field is missing"
    if first["type"] == "value_error" and isinstance(first.get("input"), dict):  # a whole section: say only why
        return f"{where}: {message.removeprefix('Value error, ')}"
    return f"{where}: {first.get('input')!r} is not allowed: {message.removeprefix('Value error, ')}"


def nearest_field(parts: list[str], root: type[BaseModel] = JobSpec) -> str | None:
    """The spec field whose name is closest to the unknown last part of ``parts``, as a dotted path, or None."""
    model = root
    for part in parts[:-1]:
        field = model.model_fields.get(part)
        kinds = (field.annotation, *get_args(field.annotation)) if field else ()
        models = [kind for kind in kinds if isinstance(kind, type) and issubclass(kind, BaseModel)]
        if not models:
            return None
        model = models[0]
    close = closest(parts[-1], list(model.model_fields))
    return ".".join([*parts[:-1], close]) if close else None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["render.fps=8", "seeds.variants=2"]`` into a nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            raise SpecError(f"--set {item!r}: expected section.field=value")
        node = tree
        parts = path.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"--set {item!r}: {part} is set twice")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = _merge(merged[name], value)
        else:
            merged[name] = value
    return merged


def build_spec(data: dict[str, Any], overrides: list[str] | None = None) -> JobSpec:
    data = _merge(data, parse_overrides(overrides or []))
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(describe_error(error)) from None


# Binary files a spec is mistaken for, by their first bytes: named so the error says what was passed.
MAGIC = {b"PAR1": "a Parquet file", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"PK\x03\x04": "a zip"}


LOCAL_PATHS = ("manifest.path", "output.url")  # always paths: a relative one is the spec folder's


MODEL_PATHS = ("model.source", "model.unet")  # a path or a hub id: resolved when it is clearly a path


def is_url(source: str) -> bool:
    """An fsspec URL other than file://, read through svdbatch.storage."""
    head, sep, _ = source.partition("://")
    return bool(sep) and head.lower() != "file"


def _relative(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "://" not in value and not value.startswith(("/", "~"))


def _join(folder: str, relative: str) -> str:
    if is_url(folder):
        head, _, path = folder.partition("://")
        return f"{head}://{posixpath.normpath(posixpath.join(path, relative))}"
    return os.path.normpath(os.path.join(folder, relative))


def spec_folder(source: str) -> str:
    """The folder relative paths of a spec resolve against: the spec file's (absolute), or its URL's."""
    if is_url(source):
        return source.rsplit("/", 1)[0]
    return str(Path(source.removeprefix("file://")).resolve().parent)


def resolve_paths(data: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec's relative paths joined to the folder of ``source`` (the spec's file or URL), and the fields it
    changed as they were written. model.source / model.unet are paths only when they start ./ or ../ or, for a
    local spec, exist beside it; otherwise they stay hub ids."""
    folder = spec_folder(source)
    resolved, written = dict(data), {}
    for field in (*LOCAL_PATHS, *MODEL_PATHS):
        section, name = field.split(".")
        values = resolved.get(section)
        value = values.get(name) if isinstance(values, dict) else None
        if not _relative(value) or value in TINY_MODELS:
            continue
        joined = _join(folder, value)
        clearly_path = value.startswith(("./", "../")) or (not is_url(folder) and os.path.exists(joined))
        if field in MODEL_PATHS and not clearly_path:
            continue
        resolved[section] = {**values, name: joined}
        written[field] = value
    return resolved, written


def _read(source: str, options: dict[str, Any]) -> bytes:
    """The spec file's bytes, local or from a URL (credentials from the environment, or ``--set
    storage_options.*``); any failure is one line naming it."""
    if not is_url(source):
        try:
            return Path(source.removeprefix("file://")).read_bytes()
        except OSError as error:
            raise SpecError(f"{source}: cannot read the job spec ({error.strerror})") from None
    from svdbatch import storage  # fsspec: only for a spec given as a URL

    try:
        return storage.read_bytes(source, options)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - missing, denied, unreachable: all the same line
        lines = str(error).strip().splitlines() or ["no message"]
        raise SpecError(f"{source}: cannot read the job spec ({type(error).__name__}: {lines[0]})") from None


def _parse(source: str, raw: bytes) -> dict[str, Any]:
    kind = next((name for magic, name in MAGIC.items() if raw.startswith(magic)), None)
    try:
        text = None if kind or b"\0" in raw[:4096] else raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:
        raise SpecError(
            f"{source} is not a job spec (YAML): it looks like {kind or 'a binary file'}; pass the spec, "
            "e.g. svdbatch run job.yaml"
        )
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise SpecError(f"{source}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise SpecError(
            f"{source} is not a job spec: it holds a {type(data).__name__}, and a job spec is a mapping of sections "
            "(manifest, output, ...); 'svdbatch spec' lists them"
        )
    return data


def load_spec(source: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read a YAML job spec from a local path or a URL; its relative paths resolve against its folder, ``--set``
    values (typed at the shell) are taken as given."""
    source = str(source)
    options = parse_overrides(overrides or []).get("storage_options") or {}
    data, written = resolve_paths(_parse(source, _read(source, options)), source)
    spec = build_spec(data, overrides)
    spec._written = {field: value for field, value in written.items() if lookup(spec, field) == lookup(data, field)}
    return spec
