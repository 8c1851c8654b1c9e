"""The feed's stages over pyarrow Tables, ahead of the generation actors: manifest rows -> items (``ExpandRows``),
the items joined with what is committed -> those left to render and a count of the rest (``ResumeRows``) or a plan's
tallies (``TallyItems``); and the prune (``PruneRows``). Each receives the validated job spec once, in its
constructor, on the driver; calling it on a batch does the work, so a unit test calls it directly.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from svdbatch import storage
from svdbatch.items.decide import decide, plan_category
from svdbatch.items.expand import ImagePolicy, expand_batch
from svdbatch.items.keys import video_uri
from svdbatch.items.metadata import ERROR, METADATA_SCHEMA, REMOVED, SKIPPED, WORK_SCHEMA, to_table
from svdbatch.spec.config import JobSpec

DELETE_THREADS = 16


def source_versions(batch: pa.Table, spec: JobSpec) -> dict[str, str | None]:
    """The version of each allowed image these rows name, looked up in parallel (rows that carry one are not)."""
    uris = batch[spec.manifest.image_column].to_pylist()
    if spec.manifest.version_column in batch.column_names:
        listed = batch[spec.manifest.version_column].to_pylist()
        uris = [uri for uri, version in zip(uris, listed, strict=True) if version is None]
    unique = dict.fromkeys(uris)  # a URI is checked once, however many rows name it
    policy = ImagePolicy(spec)
    allowed = [uri for uri in unique if policy.problem(uri) is None]
    return storage.versions(allowed, spec.storage_options)


@dataclass(frozen=True)
class RunContext:
    """What the driver learnt before the run starts: its id, the keys on several manifest rows (with their count),
    the model's identity (``model.model_identity``) and family (``model.model_family``)."""

    run_id: str
    duplicates: dict[str, int] = field(default_factory=dict)
    model_identity: str | None = None
    family: str = "svd"


class ExpandRows:
    """Manifest rows -> work rows (and error rows), ``variants`` per row; what is done is decided later.

    Image versions are looked up here, in the tasks, unless the manifest carries them.
    """

    def __init__(self, spec: JobSpec, run: RunContext):
        self.spec = spec
        self.run = run

    def __call__(self, batch: pa.Table) -> pa.Table:
        sources = source_versions(batch, self.spec)
        identities = {"model": self.run.model_identity, "sources": sources, "family": self.run.family}
        return expand_batch(batch, self.spec, self.run.run_id, self.spec.output.url, self.run.duplicates, identities)


class ResumeRows:
    """Items joined with the metadata table -> the items to render (and error rows); done items are dropped.

    The done items of the batch are counted in one extra row, status ``skipped`` with ``batch_items`` = their
    number, so the driver learns how many were done without receiving them.
    """

    def __init__(self, spec: JobSpec):
        self.spec = spec

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _drop_done(decide(batch, self.spec))


def _drop_done(decided: pa.Table) -> pa.Table:
    kept = decided.filter(pc.not_equal(decided["status"], SKIPPED)).select(WORK_SCHEMA.names).cast(WORK_SCHEMA)
    done = decided.num_rows - kept.num_rows
    if not done:
        return kept
    tally = {name: pa.nulls(1, field.type) for name, field in zip(WORK_SCHEMA.names, WORK_SCHEMA, strict=True)}
    tally.update(status=pa.array([SKIPPED]), batch_items=pa.array([done], pa.int32()))
    return pa.concat_tables([kept, pa.table(tally, schema=WORK_SCHEMA)])


def count_work(items: pa.Table) -> pa.Table:
    """ResumeRows' output -> one row: the done items it counted, and the items (and error rows) left to render."""
    tallies = items.filter(pc.equal(items["status"], SKIPPED))
    skipped = pc.sum(tallies["batch_items"]).as_py() or 0
    return pa.table({"skipped": [skipped], "to_render": [items.num_rows - tallies.num_rows]})


TALLY_COLUMNS = ["width", "height", "num_frames", "num_inference_steps", "max_guidance_scale", "guidance_scale"]


class TallyItems:
    """The plan: items per category and render shape, and the first problems (error texts) of these items."""

    def __init__(self, spec: JobSpec, max_problems: int):
        self.spec = spec
        self.max_problems = max_problems

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _tally(decide(batch, self.spec), self.max_problems)


def _tally(decided: pa.Table, max_problems: int) -> pa.Table:
    keys = ["status", "rerender_reason", *TALLY_COLUMNS]
    grouped = decided.select(keys).group_by(keys).aggregate([([], "count_all")])
    categories = [plan_category(group) for group in grouped.select(["status", "rerender_reason"]).to_pylist()]
    counts = grouped.drop_columns(["status", "rerender_reason"]).append_column(
        "category", pa.array(categories, pa.string())
    )
    counts = counts.group_by(["category", *TALLY_COLUMNS]).aggregate([("count_all", "sum")])
    counts = counts.rename_columns({"count_all_sum": "items"})
    problems = decided.filter(pc.equal(decided["status"], ERROR)).slice(0, max_problems)["error"].cast(pa.string())
    return pa.concat_tables(
        [
            counts.append_column("error", pa.nulls(counts.num_rows, pa.string())),
            pa.table({"category": pa.nulls(len(problems), pa.string()), "error": problems}),
        ],
        promote_options="default",
    )


class PruneRows:
    """Committed items whose key left the manifest -> videos deleted (in parallel), rows marked ``removed``."""

    def __init__(self, spec: JobSpec, run_id: str):
        self.spec = spec
        self.run_id = run_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        spec = self.spec
        items = batch.select(["key", "variant"]).to_pylist()
        videos = [video_uri(spec.output.url, item["key"], item["variant"]) for item in items]
        with ThreadPoolExecutor(DELETE_THREADS) as pool:
            list(pool.map(lambda url: storage.delete(url, spec.storage_options), videos))
        now = dt.datetime.now(dt.timezone.utc)
        rows = [dict(item, run_id=self.run_id, status=REMOVED, finished_at=now) for item in items]
        return to_table(rows, METADATA_SCHEMA)
