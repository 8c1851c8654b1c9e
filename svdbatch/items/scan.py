"""``svdbatch manifest``: a folder or object-store prefix of images -> a Parquet manifest ``run`` accepts.

It streams: files are listed with ``fs.walk`` and written in batches, so millions of images never sit in memory
at once. Keys are the paths relative to the source (unique, stable across reruns); ``image_version`` is each
image's ETag / version id (or size + mtime) from that same listing, so runs need not look it up; per-row
parameters come from constants (``--column fps=8``) and/or a CSV keyed by the same relative path.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any, get_args

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from svdbatch import storage
from svdbatch.spec.config import RenderParams

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
BATCH_ROWS = 50_000
VERSION = "image_version"  # the default manifest.version_column
SHOWN_KEYS = 10  # unmatched --params keys named in the error


def _images(source: str, options: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(key, uri, version) per image below source, in a stable order; the version comes from the listing itself."""
    fs, root = storage.filesystem(source, options)
    root = root.rstrip("/")
    if not storage.retrying(lambda: fs.exists(root)):
        raise ValueError(f"{source}: does not exist (no such folder or prefix)")
    for folder, _, files in fs.walk(root, detail=True):
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                path = f"{folder.rstrip('/')}/{name}"
                uri = fs.unstrip_protocol(path) if "://" in source else path
                yield path[len(root) + 1 :], uri, storage.object_version(files[name])


def parse_constants(pairs: list[str]) -> dict[str, Any]:
    constants = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--column {pair!r}: expected NAME=VALUE")
        constants[name] = yaml.safe_load(raw)
    return constants


def _kind(value: Any) -> str:
    """A value's kind as the error says it; integers and numbers mix in one column (it becomes float)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return "text" if isinstance(value, str) else type(value).__name__


def _spec_kinds() -> dict[str, str]:
    """What the run expects in the columns it reads from a row: the render parameters, seed and variants."""
    kinds = {"seed": "a number", "variants": "a number"}
    for name, field in RenderParams.model_fields.items():
        numeric = {field.annotation, *get_args(field.annotation)} & {int, float}  # guidance_scale: float | None
        kinds[name] = "a number" if numeric else "text"
    return kinds


def _value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def read_params(url: str, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A CSV whose ``key`` column holds relative paths; its other columns become per-row parameters. A value of the
    wrong kind (for a render parameter, what the spec expects; else the column's first value's) is one error
    naming the file, the line and the column."""
    text = storage.read_bytes(url, options).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames and "key" not in reader.fieldnames:
        raise ValueError(f"{url}: the CSV needs a 'key' column (the image's path relative to the source)")
    kinds, first = _spec_kinds(), {}
    params = {}
    for row in reader:
        values = {}
        for name, raw in row.items():
            if name == "key" or raw in ("", None):
                continue
            value = raw if kinds.get(name) == "text" else _value(raw)  # a prompt "yes" or "42" is text
            expected = kinds.get(name) or first.setdefault(name, (_kind(value), reader.line_num))[0]
            if _kind(value) != expected:
                since = f" (like line {first[name][1]})" if name in first else ""
                raise ValueError(f"{url} line {reader.line_num}, column {name}: {raw!r} is not {expected}{since}")
            values[name] = value
        params[row["key"]] = values
    return params


def _schema(constants: dict[str, Any], params: dict[str, dict[str, Any]]) -> pa.Schema:
    """Column types decided once, from every value given, so batches with gaps still share one schema."""
    fields = [pa.field("key", pa.string()), pa.field("image", pa.string()), pa.field(VERSION, pa.string())]
    names = dict.fromkeys([*constants, *sorted({name for values in params.values() for name in values})])
    for name in names:
        values = [values[name] for values in params.values() if name in values]
        if name in constants:
            values.append(constants[name])
        fields.append(pa.field(name, pa.array(values).type))
    return pa.schema(fields)


def build_manifest(
    source: str,
    destination: str,
    constants: dict[str, Any] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
) -> int:
    """Write the manifest (one atomic write) and return its row count."""
    options = options or {}
    constants = constants or {}
    params = params or {}
    schema = _schema(constants, params)
    buffer = io.BytesIO()
    count = 0
    seen: set[str] = set()
    with pq.ParquetWriter(buffer, schema) as writer:
        batch: list[dict[str, Any]] = []
        for key, uri, version in _images(source, options):
            seen.add(key)
            batch.append({"key": key, "image": uri, VERSION: version, **constants, **params.get(key, {})})
            if len(batch) >= BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count, batch = count + len(batch), []
        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        count += len(batch)
    unmatched = sorted(set(params) - seen)
    if unmatched:
        shown = ", ".join(unmatched[:SHOWN_KEYS]) + (", ..." if len(unmatched) > SHOWN_KEYS else "")
        raise ValueError(
            f"--params: {len(unmatched)} key(s) match no image under {source} (keys are image paths relative to "
            f"it): {shown}"
        )
    storage.write_bytes(destination, buffer.getvalue(), options)
    return count
