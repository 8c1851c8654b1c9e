"""The Ray Data plan of a job, built from the plain stages:

read_parquet(manifest) -> ExpandRows -> left join with the committed rows by (key, variant) -> ResumeRows
  -> repartition -> RayRenderer (actor pool: LoadImages, VideoGenerator on one GPU each, WriteVideos)
  [-> repartition into shard-sized blocks -> WriteShards (CPU tasks), with output.shards]

The feed (read, expand, the in-task join, the cut into one block per pipeline call) runs as one fused task per
manifest file, and waits while ``ROWS_AHEAD_PER_CALL`` rows per concurrent pipeline call are queued for the pool
(internals.limit_rows_ahead): a job's rows never pile up in the object store ahead of its GPUs, whatever its size.

What is done is decided by the join, where the data is: a large committed table is shuffle-joined by Ray, a small
one is read by one task into the object store and fetched from there by every task (zero-copy; it never passes
through the driver, nor inside each task's function). The items that left the manifest are an anti-join on the key,
the same way. Nothing here runs the plan: the driver (driver.py) iterates it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow.fs import FSSpecHandler, PyFileSystem

from svdbatch import storage
from svdbatch.items import manifest
from svdbatch.items.metadata import REMOVED
from svdbatch.ray import internals
from svdbatch.ray.cluster import CALLS_PER_ACTOR, CUT_CPUS, pool_strategy
from svdbatch.render.shards import WriteShards
from svdbatch.render.stages import ExpandRows, RunContext, join_committed, manifest_keys, present_keys
from svdbatch.run import capacity
from svdbatch.spec.config import JobSpec
from svdbatch.store import commit

CPU_STAGE_CPUS = 0.25
JOIN_ROWS_PER_PARTITION = 500_000
# Committed Parquet up to this size is handed to every task instead of shuffled: 1M items' state is about 77 MB on
# disk and 114 MB in memory, read by one task in 5 s, where each hash shuffle of the two sides took about 40 s.
BROADCAST_BYTES = 96 * 2**20
EXPAND_BATCH_ROWS = 20_000  # a whole 200k-row manifest block expanded at once held ~2 GB per task
# Ray Data fuses read -> expand -> join -> cut into one task only when every stage asks for the same CPUs, and the
# cut (a streaming repartition) asks for 1 CPU, which it offers no setting to change.
FEED_CPUS = CUT_CPUS
ROWS_AHEAD_PER_CALL = 2
MIN_ROWS_AHEAD = 16
UNBOUNDED_POOL_ACTORS = 64  # items queued for a pool the spec leaves unbounded, as for this many actors
# A stage's output is gathered into blocks of up to this many bytes before the cut: the items the feed task holds
# (Ray Data's default, 128 MiB, is about 230,000 items).
FEED_BLOCK_BYTES = 4 * 2**20
# The memory each bookkeeping task asks Ray for (a 64-CPU head runs as many as its memory holds, not 256 by CPU),
# measured, with a margin: 1M items' committed state (78 MB of Parquet) peaked at 570 MiB, a plan's tally of them
# at 820 MiB per worker (Ray Data's figure); a bucket file is 1/256 of the table (100M rows: ~150 MiB).
STATE_TABLE_MEMORY = FEED_MEMORY = 3 * 2**29
STATE_SLICE_MEMORY = BOOKKEEPING_MEMORY = 512 * 2**20


def _pyarrow_fs(url: str, options: dict[str, Any]):
    fs, _ = storage.filesystem(url, options)
    return PyFileSystem(FSSpecHandler(fs))


def read_manifest(spec: JobSpec, info: manifest.ManifestInfo, cpus: float = CPU_STAGE_CPUS, memory=BOOKKEEPING_MEMORY):
    """The manifest's Parquet files as a dataset, read by CPU tasks: only the columns a job reads
    (``manifest.used_columns``), so a wide catalog's other columns are never decoded."""
    import ray

    fs = _pyarrow_fs(spec.manifest.path, spec.storage_options)
    columns = manifest.used_columns(spec, info.schema, info.same_columns)
    return ray.data.read_parquet(info.files, filesystem=fs, columns=columns, num_cpus=cpus, memory=memory)


class InSlices:
    """A stage run on slices of ``rows`` rows of its batch, yielding each result: a whole manifest file's block goes
    in (so the read fuses with the stage; Ray Data fuses no read into a stage that sets a batch size) without
    expanding all of it at once."""

    def __init__(self, stage: Callable, rows: int):
        self.stage = stage
        self.rows = rows

    def __call__(self, batch: pa.Table):
        for start in range(0, max(batch.num_rows, 1), self.rows):  # an empty batch still gets the stage's schema
            yield self.stage(batch.slice(start, self.rows))


@dataclass(frozen=True)
class Committed:
    """What earlier runs committed, as the resume join's right side: a Ray dataset the items are shuffle-joined with,
    or, while the table is small, a reference to one Arrow table in the object store that every task joins with (no
    shuffle, no join actors to start)."""

    dataset: Any = None
    table: Any = None  # ray.ObjectRef of a pa.Table


class WithTable:
    """A stage called with a table from the object store after the batch: ``stage(batch, table, *args)``.

    Ray Data ships a stage's arguments inside its function, which every task unpickles (a 114 MB table: Ray Data
    warns, and every task copies it); a reference is fetched from the object store without a copy."""

    def __init__(self, stage: Callable, table_ref, *args):
        self.stage = stage
        self.table_ref = table_ref
        self.args = args

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        return self.stage(batch, ray.get(self.table_ref), *self.args)


def _live(state: pa.Table) -> pa.Table:
    """Committed items not removed already: what the prune anti-join looks for in the manifest."""
    return state.filter(pc.not_equal(state[f"{commit.COMMITTED}status"], REMOVED))


def _keys(table: pa.Table) -> pa.Array:
    return pc.unique(table["key"])


def _absent(live: pa.Table, *present: pa.Table) -> pa.Table:
    """The live committed rows whose key no manifest row holds."""
    found = pa.chunked_array([table["key"] for table in present], pa.string()).combine_chunks()
    return live.filter(pc.invert(pc.is_in(live["key"], value_set=found)))


def read_committed(spec: JobSpec) -> Committed | None:
    """The committed rows (key, variant, committed_*) of the latest row per item; None if there are none.

    After a completed publish every item has one row in its bucket file. Commit files not yet merged (a killed or a
    running job) and a half-split table from an earlier version can hold several rows per item: then the latest is
    picked by a group-by on (key, variant), in Ray, or in Arrow for a small table.
    """
    import ray

    options = spec.storage_options
    files = commit.state_files(spec.output.url, options)
    tables, pending = files.tables, files.pending
    if not tables and not pending:
        return None
    if files.bytes <= BROADCAST_BYTES:
        read = ray.remote(num_cpus=CPU_STAGE_CPUS, memory=STATE_TABLE_MEMORY)(commit.read_state)
        return Committed(table=read.remote(spec.output.url, files, options))
    fs = _pyarrow_fs(spec.output.url, options)
    slices = {"num_cpus": CPU_STAGE_CPUS, "memory": STATE_SLICE_MEMORY}
    names = tables + pending  # one task per file: a task holds one bucket (or commit) file, whatever the table's size
    columns = commit.STATE_COLUMNS
    state = ray.data.read_parquet(names, filesystem=fs, columns=columns, override_num_blocks=len(names), **slices)
    if commit.several_rows_per_item(spec.output.url, files, options):
        state = state.groupby(["key", "variant"]).map_groups(commit.latest, batch_format="pyarrow", **slices)
    return Committed(dataset=state.map_batches(commit.resume_state, batch_format="pyarrow", **slices))


def _partitions(spec: JobSpec, info: manifest.ManifestInfo) -> int:
    return max(1, min(64, info.rows * spec.seeds.variants // JOIN_ROWS_PER_PARTITION))


def tasks(dataset, stage: Callable, **options):
    """``map_batches`` of a stage on Ray tasks, over pyarrow batches. A stage object goes in as its bound ``__call__``:
    Ray Data runs it as a plain function (a class would start an actor pool), shipped with its config to every task."""
    options.setdefault("num_cpus", CPU_STAGE_CPUS)
    options.setdefault("memory", BOOKKEEPING_MEMORY)
    return dataset.map_batches(stage, batch_format="pyarrow", **options)


def decided(items, stage: Callable):
    """``stage`` (ResumeRows, TallyItems) on the joined items, fused into the feed task where the join is (a small
    committed table): only the items left (or tallies) enter the object store."""
    return tasks(items, stage, num_cpus=FEED_CPUS, memory=FEED_MEMORY)


def joined_items(spec: JobSpec, info: manifest.ManifestInfo, run: RunContext, committed: Committed | None):
    """Expanded items joined with their committed rows: ``resume`` decides per item, in the tasks."""
    expand = InSlices(ExpandRows(spec, run), EXPAND_BATCH_ROWS)
    # Without committed rows the feed fuses with the cut (video_rows), which takes no remote arguments: no memory.
    memory = None if committed is None else FEED_MEMORY
    feed = {"num_cpus": FEED_CPUS, "memory": memory}
    items = tasks(read_manifest(spec, info, FEED_CPUS, memory=memory), expand.__call__, batch_size=None, **feed)
    if committed is None:
        return items, False
    if committed.table is not None:
        return tasks(items, WithTable(join_committed, committed.table).__call__, **feed), True
    joined = items.join(
        committed.dataset,
        join_type="left_outer",
        num_partitions=_partitions(spec, info),
        on=("key", "variant"),
        aggregator_ray_remote_args={"num_cpus": CPU_STAGE_CPUS},  # Ray adds the memory it estimates
    )
    return joined, True


def removals(spec: JobSpec, info: manifest.ManifestInfo, committed: Committed | None):
    """Committed items (not removed already) whose key is not in the manifest: an anti-join on the key, in Ray, or
    for a small table, the committed keys handed to every task, which reports the ones its manifest rows hold."""
    import ray

    if committed is None:
        return None
    key_column = spec.manifest.key_column
    if committed.table is not None:
        whole = ray.remote(num_cpus=CPU_STAGE_CPUS, memory=STATE_TABLE_MEMORY)
        live = whole(_live).remote(committed.table)
        keys = whole(_keys).remote(live)
        present = tasks(read_manifest(spec, info), WithTable(present_keys, keys, key_column).__call__)
        absent = whole(_absent).remote(live, *present.to_arrow_refs())
        return ray.data.from_arrow_refs([absent])
    keys = tasks(read_manifest(spec, info), manifest_keys, fn_args=(key_column,))
    return committed.dataset.filter(expr=f"{commit.COMMITTED}status != '{REMOVED}'").join(
        keys,
        join_type="left_anti",
        num_partitions=_partitions(spec, info),
        on=("key",),
        aggregator_ray_remote_args={"num_cpus": CPU_STAGE_CPUS},  # Ray adds the memory it estimates
    )


def video_rows(spec: JobSpec, items, gpu: bool, pool: capacity.PoolSize, workers, started: float, run_id: str):
    """The dataset of finished rows: each generation actor loads, generates and writes its items (RenderVideos).

    One block per pipeline call goes in, so every actor task is one batch and its rows reach the driver, to be
    committed, as soon as its videos are written; the blocks are cut as they stream (a streaming repartition), never
    all at once, and the feed waits while a few rows per call the pool can run are queued for it (a bound in rows:
    Ray Data's own bound is in bytes, and half-kilobyte rows would queue by the million).
    """
    from svdbatch.ray.actors import RayRenderer  # here, not at the top: the generation stage imports torch
    compute = spec.compute
    items = items.repartition(target_num_rows_per_block=compute.batch_size)
    actors = pool.max if pool.max is not None else UNBOUNDED_POOL_ACTORS
    ahead = ROWS_AHEAD_PER_CALL * CALLS_PER_ACTOR * actors * compute.batch_size
    internals.limit_rows_ahead(items.context, RayRenderer.__name__, max(MIN_ROWS_AHEAD, ahead))
    items.context.target_max_block_size = FEED_BLOCK_BYTES  # this job's plan only: each read makes its own context
    rows = items.map_batches(
        RayRenderer,
        fn_constructor_args=(spec, workers, started, run_id),
        batch_format="pyarrow",
        batch_size=compute.batch_size,
        compute=pool_strategy(pool),
        num_gpus=compute.gpus_per_actor if gpu else 0,
        num_cpus=compute.cpus_per_actor,
    )
    if spec.output.shards.enabled:
        rows = rows.repartition(target_num_rows_per_block=spec.output.shards.samples_per_shard)
        rows = tasks(rows, WriteShards(spec).__call__, batch_size=None, num_cpus=compute.cpus_per_task, memory=None)
    return rows
