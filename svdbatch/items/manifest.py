"""Find the manifest's Parquet files and check their schema before any work starts; read them in parts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svdbatch import storage
from svdbatch.errors import UserError
from svdbatch.items.prompts import manifest_columns
from svdbatch.spec.config import JobSpec


class ManifestError(UserError, ValueError):
    """The manifest cannot be used: fatal for the job, phrased as one line."""


@dataclass(frozen=True)
class ManifestInfo:
    files: list[str]
    rows: int
    schema: pa.Schema
    duplicate_keys: dict[str, int]
    same_columns: bool = True  # every file has the columns of the first (``schema``)
    parts: list[tuple[str, int, int]] = field(default_factory=list)  # ``split``: (file, first row group, end)


# A part of the manifest is read and expanded by one task: consecutive row groups of one file, up to this many rows
# (a manifest of one large file is still read in parallel; one small file is one part).
PART_ROWS = 200_000
SLICE_ROWS = 20_000  # rows a part is read (and expanded) at a time: a whole 200k-row part at once held ~2 GB


def split(name: str, metadata: pq.FileMetaData) -> list[tuple[str, int, int]]:
    """A file's parts: runs of its row groups of up to PART_ROWS rows (a larger row group is a part alone)."""
    parts, first, rows = [], 0, 0
    for group in range(metadata.num_row_groups):
        if rows and rows + metadata.row_group(group).num_rows > PART_ROWS:
            parts.append((name, first, group))
            first, rows = group, 0
        rows += metadata.row_group(group).num_rows
    return [*parts, (name, first, metadata.num_row_groups)]


class ReadParts:
    """Manifest parts (a table of ``file``, ``first``, ``end``) -> their rows, SLICE_ROWS at a time, only the
    ``columns`` a job reads: a plain callable, so the read fuses with the stages after it into one task per part."""

    def __init__(self, spec: JobSpec, columns: list[str] | None):
        self.url = spec.manifest.path
        self.options = spec.storage_options
        self.columns = columns

    def __call__(self, parts: pa.Table) -> Iterator[pa.Table]:
        fs, _ = storage.filesystem(self.url, self.options)
        for part in parts.to_pylist():
            with storage.retrying(lambda part=part: fs.open(part["file"], "rb"), self.options) as handle:
                parquet = pq.ParquetFile(handle)
                groups = list(range(part["first"], part["end"]))
                for batch in parquet.iter_batches(SLICE_ROWS, row_groups=groups, columns=self.columns):
                    yield pa.Table.from_batches([batch])


def list_files(url: str, options: dict | None = None, shown: str | None = None) -> list[str]:
    """A file, every .parquet file under a directory, or a glob; as fsspec paths, sorted. Errors name ``shown``
    (the path as the spec wrote it and as resolved: ``JobSpec.shown``), else ``url``."""
    shown = shown or url
    fs, path = storage.filesystem(url, options)
    if any(char in path for char in "*?["):
        files = fs.glob(path)
    elif fs.isdir(path):
        files = [name for name in fs.find(path) if name.endswith(".parquet")]
    elif fs.exists(path):
        files = [path]
    else:
        raise ManifestError(f"manifest.path {shown}: not found")
    files = sorted(name for name in files if not fs.isdir(name))
    if not files:
        raise ManifestError(f"manifest.path {shown}: no Parquet files there")
    return files


def _check_schema(schema: pa.Schema, spec: JobSpec, where: str) -> None:
    for role, column in (("key", spec.manifest.key_column), ("image", spec.manifest.image_column)):
        if column not in schema.names:
            raise ManifestError(
                f"{where}: no {role} column {column!r} (columns: {', '.join(schema.names)}); set manifest.{role}_column"
            )
    key_type = schema.field(spec.manifest.key_column).type
    if not (pa.types.is_string(key_type) or pa.types.is_large_string(key_type) or pa.types.is_integer(key_type)):
        raise ManifestError(f"{where}: key column {spec.manifest.key_column!r} is {key_type}, expected string")
    image_type = schema.field(spec.manifest.image_column).type
    if not (pa.types.is_string(image_type) or pa.types.is_large_string(image_type)):
        raise ManifestError(
            f"{where}: image column {spec.manifest.image_column!r} is {image_type}, expected string URIs"
        )


def _footer(fs, name: str) -> pq.FileMetaData:
    with fs.open(name, "rb") as handle:
        return pq.ParquetFile(handle).metadata


def find_files(spec: JobSpec) -> list[str]:
    """The manifest's files; any failure to list them is one ManifestError line. Cheap, so the CLI checks it before
    it loads torch or starts Ray."""
    try:
        shown = spec.shown("manifest.path")
        return storage.retrying(
            lambda: list_files(spec.manifest.path, spec.storage_options, shown), spec.storage_options, spec.manifest.path
        )
    except (ManifestError, storage.StorageError):
        raise
    except Exception as error:  # noqa: BLE001 - credentials, network, permissions: all stop the job the same way
        raise ManifestError(
            storage.missing_credentials(spec.manifest.path, error)
            or f"manifest.path {spec.shown('manifest.path')}: cannot list ({type(error).__name__}: {error})"
        ) from error


def inspect(spec: JobSpec) -> ManifestInfo:
    """Check every file's footer (cheap: no row data is read) and count the rows."""
    options = spec.storage_options
    files = find_files(spec)
    fs, _ = storage.filesystem(spec.manifest.path, options)
    rows = 0
    schema = None
    same_columns = True
    parts = []
    for name in files:
        try:
            metadata = storage.retrying(lambda name=name: _footer(fs, name), options, spec.manifest.path)
        except storage.StoreUnreachable:
            raise
        except Exception as error:  # noqa: BLE001 - any unreadable file is the same fatal problem
            raise ManifestError(f"manifest file {name}: not a readable Parquet file ({error})") from error
        file_schema = metadata.schema.to_arrow_schema()
        _check_schema(file_schema, spec, f"manifest file {name}")
        schema = schema or file_schema
        same_columns = same_columns and set(file_schema.names) == set(schema.names)
        rows += metadata.num_rows
        parts += split(name, metadata)
    if rows == 0:
        raise ManifestError(f"manifest.path {spec.shown('manifest.path')}: the manifest has no rows")
    duplicates = _duplicate_keys(fs, files, spec)
    return ManifestInfo(files, rows, schema, duplicates, same_columns, parts)


def used_columns(spec: JobSpec, schema: pa.Schema, same_columns: bool = True) -> list[str] | None:
    """The manifest columns a job reads (key, image, version and the per-row overrides), in file order; None (all)
    when the files' columns differ, as a file may lack a column another one has."""
    if not same_columns:
        return None
    used = {spec.manifest.key_column, spec.manifest.image_column, spec.manifest.version_column, "seed", "variants"}
    used.update(manifest_columns(spec))
    return [name for name in schema.names if name in used]


def _duplicate_keys(fs, files: list[str], spec: JobSpec) -> dict[str, int]:
    """Keys on more than one row, in two passes over only the key column so memory is 8 bytes per row, not the
    keys: a 64-bit hash of every key finds the hashes seen more than once, then only the keys with those hashes are
    counted exactly (a hash collision costs a few extra keys counted, never a wrong answer)."""
    hashes = np.sort(np.concatenate([_hashes(keys) for keys in _key_batches(fs, files, spec)] or [np.empty(0)]))
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    del hashes
    if not len(repeated):
        return {}
    candidates = [
        keys.filter(pa.array(np.isin(_hashes(keys), repeated))) for keys in _key_batches(fs, files, spec)
    ]
    counts = pa.chunked_array(candidates, pa.string()).value_counts()
    repeated_keys = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    return dict(zip(repeated_keys.field("values").to_pylist(), repeated_keys.field("counts").to_pylist(), strict=True))


def _hashes(keys: pa.Array) -> np.ndarray:
    import polars as pl  # only where keys are read: the CLI's light commands do not pay for it

    return pl.from_arrow(keys).hash(seed=0).to_numpy()


def _key_batches(fs, files: list[str], spec: JobSpec) -> Iterator[pa.Array]:
    """The non-null keys of every file as strings, a row group at a time."""
    for name in files:
        with storage.retrying(lambda name=name: fs.open(name, "rb")) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(columns=[spec.manifest.key_column]):
                yield pc.cast(batch.column(0), pa.string()).drop_null()
