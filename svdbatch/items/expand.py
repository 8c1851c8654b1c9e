"""Manifest rows -> items: each row's variants, with their seed, render parameters, video URI and fingerprint, or one
error row saying what is wrong with the row. What earlier runs committed is applied afterwards (``items.decide``).

``expand_batch`` (the feed's, column-wise) and ``expand_row`` (one row, as dicts) are both an ``Expansion``: one
loop applies the rules, each written once -- the seed and the video key in ``keys``, the parameters in ``params``,
the fingerprint in ``fingerprint`` -- so the two give the same items bit for bit.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from svdbatch import storage
from svdbatch.items.fingerprint import Fingerprint, image_json
from svdbatch.items.keys import item_seed, safe_key, video_path, videos_prefix
from svdbatch.items.metadata import OK, RENDER_COLUMNS, WORK_SCHEMA, blank_row, fail, to_table
from svdbatch.items.params import job_params, override_columns, row_params
from svdbatch.spec.config import JobSpec
from svdbatch.spec.render import PROMPTED_PARAMS

# The columns each item has its own value of; ``params`` points into the expansion's distinct render parameters.
ITEM_COLUMNS = ("key", "variant", "source_uri", "source_version", "video_uri", "seed", "fingerprint")


class ImagePolicy:
    """Which image URIs a job may read: an allow-list of schemes (default: the manifest's and the output's) and
    prefixes, never a guess."""

    def __init__(self, spec: JobSpec):
        listed = spec.images.allowed_schemes
        schemes = {storage.scheme(spec.manifest.path), storage.scheme(spec.output.url)}
        self.schemes = schemes if listed is None else {name.lower() for name in listed}
        self.prefixes = spec.images.allowed_prefixes
        self.column = spec.manifest.image_column

    def problem(self, source: Any) -> str | None:
        """Why a row's image may not be read (no URI, or one the job refuses), or None."""
        if not isinstance(source, str) or not source.strip():
            return f"column {self.column} is empty"
        scheme = storage.scheme(source)
        if scheme not in self.schemes:
            allowed = ", ".join(sorted(self.schemes))
            return f"image {source!r}: URI scheme {scheme!r} is not allowed (images.allowed_schemes: {allowed})"
        if self.prefixes and not any(source.startswith(prefix) for prefix in self.prefixes):
            return f"image {source!r}: URI is outside images.allowed_prefixes"
        if "\0" in source:
            return f"image {source!r}: URI contains a NUL byte"
        return None


class Expansion:
    """Manifest rows -> items, gathered as columns; ``table`` returns them as WORK_SCHEMA rows: the items of the
    valid rows in the order they were added, then one error row per row that failed.

    ``duplicates`` maps keys that appear more than once in the manifest to their count: all their rows fail, as no
    one of them is more right than the others. ``identities`` holds ``model`` (``model.model_identity``),
    ``sources`` (image URI -> ``storage.object_version``), used where the row has no ``manifest.version_column``,
    and ``family`` (``model.model_family``; default svd).
    """

    def __init__(self, spec: JobSpec, run_id: str, output_url: str, duplicates=None, identities=None):
        self.spec = spec
        self.videos = videos_prefix(output_url)
        self.duplicates = duplicates or {}
        self.looked_up = (identities or {}).get("sources") or {}
        weights = (identities or {}).get("model")
        self.family = (identities or {}).get("family") or "svd"
        self.constants = {"run_id": run_id, "model_source": spec.model.source, "model_identity": weights}
        self.constants["model_family"] = self.family
        self.params: list[dict[str, Any]] = []  # the distinct render parameters, each with its Fingerprint
        self.fingerprints: list[Fingerprint] = []
        self.job_plan: list[int] | None = None  # the job's variants (indexes into params), made at first use
        self.images = ImagePolicy(spec)
        self.image_problems: dict[Any, str | None] = {}  # an image's verdict, once (variants and rows share it)
        self.columns: dict[str, list] = {name: [] for name in (*ITEM_COLUMNS, "params")}
        self.appends = tuple(values.append for values in self.columns.values())
        self.failed: list[dict[str, Any]] = []

    def add(self, key: str | None, source: Any, listed: Any, overrides: dict[str, Any]) -> None:
        """One manifest row: its key as text, its image URI, the image version it lists (None: looked up in the
        store) and the ``params.override_columns`` it holds. A row fails whatever its parameters without a key, with a
        duplicate key, or without an image the job may read; else with parameters the spec would refuse."""
        version = self.looked_up.get(source) if listed is None else str(listed)
        if not key:
            problem = f"column {self.spec.manifest.key_column} is empty"
        elif key in self.duplicates:
            problem = f"key appears {self.duplicates[key]} times in the manifest; keys must be unique"
        else:
            if source not in self.image_problems:
                self.image_problems[source] = self.images.problem(source)
            problem = self.image_problems[source]
        if problem is None:
            try:
                plan, row_seed = self._plan(overrides)
            except ValueError as error:
                problem = str(error)
        if problem is not None:
            row = blank_row()
            row.update(self.constants, key=key, variant=0, source_uri=source, source_version=version)
            label = f"row {key!r}" if key else f"row with image {source!r}"
            self.failed.append(fail(row, f"{label}: {problem}"))
            return
        self._items(key, source, version, plan, row_seed)

    def _plan(self, overrides: dict[str, Any]) -> tuple[list[int], int | None]:
        """The row's variants as indexes into ``params``, and its own seed (None: derived)."""
        if overrides and any(value is not None for value in overrides.values()):
            params, seed = row_params(overrides, self.spec, self.family)
            return self._indexed(params), seed
        if self.job_plan is None:
            self.job_plan = self._indexed(job_params(self.spec, self.family))
        return self.job_plan, None

    def _indexed(self, variants: list[dict[str, Any]]) -> list[int]:
        """Each variant's parameters as an index into ``params`` (variants that share a dict share an index)."""
        made: dict[int, int] = {}
        for params in variants:
            if id(params) not in made:
                made[id(params)] = len(self.params)
                self.params.append(params)
                self.fingerprints.append(Fingerprint(self.spec, params, self.constants["model_identity"]))
        return [made[id(params)] for params in variants]

    def _items(self, key: str, source: str, version: str | None, plan: list[int], row_seed: int | None) -> None:
        safe, image = safe_key(key), image_json(source, version)  # once for all the row's variants
        base_seed, fingerprints, videos = self.spec.seeds.base_seed, self.fingerprints, self.videos
        keys, variants, sources, versions, uris, seeds, prints, chosen = self.appends
        for variant, index in enumerate(plan):
            seed = item_seed(base_seed, key, variant, row_seed)
            keys(key)
            variants(variant)
            sources(source)
            versions(version)
            uris(videos + video_path(safe, variant))
            seeds(seed)
            prints(fingerprints[index](seed, image))
            chosen(index)

    def table(self) -> pa.Table:
        count = len(self.columns["key"])
        arrays = {name: pa.array(self.columns[name], WORK_SCHEMA.field(name).type) for name in ITEM_COLUMNS}
        chosen = pa.array(self.columns["params"], pa.int32())
        for name in [*RENDER_COLUMNS, *PROMPTED_PARAMS]:  # a few distinct values, taken per item
            values = pa.array([params[name] for params in self.params], WORK_SCHEMA.field(name).type)
            arrays[name] = values.take(chosen)
        for name, value in {**self.constants, "status": OK}.items():
            arrays[name] = pa.array([value] * count, pa.string())
        fields = zip(WORK_SCHEMA.names, WORK_SCHEMA, strict=True)
        items = pa.table([arrays.get(name, pa.nulls(count, field.type)) for name, field in fields], schema=WORK_SCHEMA)
        return pa.concat_tables([items, to_table(self.failed)]) if self.failed else items


def expand_batch(
    batch: pa.Table,
    spec: JobSpec,
    run_id: str,
    output_url: str,
    duplicates: dict[str, int] | None = None,
    identities: dict[str, Any] | None = None,
) -> pa.Table:
    """Manifest rows -> items, as a WORK_SCHEMA table (``Expansion.table``). Only rows that set parameters of their
    own have them checked one by one; the others share the job's, checked once."""
    expansion = Expansion(spec, run_id, output_url, duplicates, identities)
    keys = batch[spec.manifest.key_column]
    if not pa.types.is_string(keys.type):
        keys = pc.cast(keys, pa.string())
    sources = batch[spec.manifest.image_column].to_pylist()
    version_column = spec.manifest.version_column
    listed = batch[version_column].to_pylist() if version_column in batch.column_names else [None] * batch.num_rows
    overrides = {  # the columns some row of this batch sets a value of its own in
        name: batch[name].to_pylist()
        for name in override_columns(spec, expansion.family)
        if name in batch.column_names and batch[name].null_count < batch.num_rows
    }
    own: dict[str, Any] = {}  # a row's own values: none where no row of the batch sets any
    for index, (key, source, version) in enumerate(zip(keys.to_pylist(), sources, listed, strict=True)):
        if overrides:
            own = {name: values[index] for name, values in overrides.items()}
        expansion.add(key, source, version, own)
    return expansion.table()


def expand_row(
    row: dict[str, Any],
    spec: JobSpec,
    run_id: str,
    output_url: str,
    duplicates: dict[str, int] | None = None,
    identities: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One manifest row -> its ``variants`` items, or one error row, as dicts: ``expand_batch`` of that row."""
    expansion = Expansion(spec, run_id, output_url, duplicates, identities)
    key = row.get(spec.manifest.key_column)
    overrides = {name: row[name] for name in override_columns(spec, expansion.family) if name in row}
    expansion.add(None if key is None else str(key), row.get(spec.manifest.image_column),
                  row.get(spec.manifest.version_column), overrides)
    return expansion.table().to_pylist()
