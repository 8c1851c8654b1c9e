"""The Ray Data plan of a job, built from the plain stages:

manifest parts -> ExpandRows -> left join with the committed rows by (key, variant) -> ResumeRows
  -> repartition -> RayRenderer (actor pool: LoadImages, VideoGenerator on one GPU each, WriteVideos)
  [-> repartition into shard-sized blocks -> WriteShards (CPU tasks), with output.shards]

The feed (read, expand, the in-task join, the cut into one block per pipeline call) runs as one fused task per
part of the manifest (``manifest.split``), and waits while ``ROWS_AHEAD_PER_CALL`` rows per concurrent pipeline call
are queued for the pool (internals.limit_rows_ahead): a job's rows never pile up in the object store ahead of its
GPUs, whatever its size.

What is done is decided by the join, where the data is: the committed state is read in pieces by a few tasks into
the object store (``store/state.py``: one piece per group of buckets, sorted by a hash of the item), and every feed
task looks each item up in its own piece, zero-copy; nothing is shuffled and nothing passes through the driver. The
items that left the manifest are found the same way: each manifest part's key hashes against each piece. Nothing
here runs the plan: the driver (driver.py) iterates it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from svdbatch.items import manifest
from svdbatch.ray import internals
from svdbatch.ray.actors import RayRenderer
from svdbatch.ray.cluster import CALLS_PER_ACTOR, CUT_CPUS, pool_strategy
from svdbatch.render.feed import ExpandRows, RunContext
from svdbatch.render.shards import WriteShards
from svdbatch.run import capacity
from svdbatch.spec.config import JobSpec
from svdbatch.store import commit, state

CPU_STAGE_CPUS = 0.25
# The committed-state tasks are CPU-bound and each takes a whole CPU: at a quarter CPU Ray runs four at once per core,
# each in a Python worker of its own that first imports pyarrow and polars (on 2 cores: 8 workers, ~10 CPU-s).
STATE_CPUS = 1
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
# measured, with a margin: a piece of committed state (state.PIECE_BYTES of Parquet, ~400k items) peaked at 400 MiB
# (337k items; the whole 1M-item state as one piece: 800 MiB), a plan's tally of 1M items at 820 MiB per worker (Ray
# Data's figure). A piece is one bucket at least: past ~8M items per bucket (2 billion rows) it outgrows this.
STATE_PIECE_MEMORY = 768 * 2**20
FEED_MEMORY = 3 * 2**29
KEY_HASH_BYTES = 24  # per manifest row, in the prune anti-join's merge: the hashes, their sorted copy, a margin
BOOKKEEPING_MEMORY = 512 * 2**20


def read_manifest(spec: JobSpec, info: manifest.ManifestInfo, cpus: float = CPU_STAGE_CPUS, memory=BOOKKEEPING_MEMORY):
    """The manifest's rows as a dataset, one task per part (``manifest.split``: up to PART_ROWS rows of one file),
    each reading its part a slice at a time and only the columns a job reads (``manifest.used_columns``).

    Not ``ray.data.read_parquet``: it packs files into read tasks by their bytes (a 1M-row manifest of five files
    was one task, on one CPU, though a manifest row costs far more to expand than to read), and lists and reads
    every footer again, on actors of its own, where ``manifest.inspect`` has read them already."""
    import ray

    columns = manifest.used_columns(spec, info.schema, info.same_columns)
    parts = [{"file": name, "first": first, "end": end} for name, first, end in info.parts]
    read = manifest.ReadParts(spec, columns).__call__
    return tasks(ray.data.from_items(parts, override_num_blocks=len(parts)), read, num_cpus=cpus, memory=memory)


@dataclass(frozen=True)
class Committed:
    """What earlier runs committed, as the resume join's right side: the pieces of ``state.read_piece``, each a
    ray.ObjectRef of one Arrow table in the object store."""

    pieces: list


class WithPieces:
    """A stage called with the committed pieces from the object store after the batch: ``stage(batch, pieces, *args)``.

    Ray Data ships a stage's arguments inside its function, which every task unpickles (a large table: Ray Data
    warns, and every task copies it); references are fetched from the object store without a copy."""

    def __init__(self, stage: Callable, pieces: list, *args):
        self.stage = stage
        self.pieces = pieces
        self.args = args

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        return self.stage(batch, ray.get(self.pieces), *self.args)


def read_committed(spec: JobSpec) -> Committed | None:
    """The committed state in pieces (``state.read_piece``), read by tasks in parallel; None if nothing is
    committed. Returns once every piece is read: the feed's first join needs them all anyway, and a dataset started
    while the readers hold every CPU makes Ray Data warn that "the Dataset job will hang" (10M rows on 2 CPUs)."""
    import ray

    options = spec.storage_options
    files = commit.state_files(spec.output.url, options)
    if not files.tables and not files.pending:
        return None
    pieces = state.piece_count(files)
    read = ray.remote(num_cpus=STATE_CPUS, memory=STATE_PIECE_MEMORY)(state.read_piece)
    refs = [read.remote(spec.output.url, files, piece, pieces, options) for piece in range(pieces)]
    ray.wait(refs, num_returns=len(refs), timeout=None, fetch_local=False)
    return Committed(refs)


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
    expand = ExpandRows(spec, run)
    # Without committed rows the feed fuses with the cut (video_rows), which takes no remote arguments: no memory.
    memory = None if committed is None else FEED_MEMORY
    feed = {"num_cpus": FEED_CPUS, "memory": memory}
    items = tasks(read_manifest(spec, info, FEED_CPUS, memory=memory), expand.__call__, batch_size=None, **feed)
    if committed is None:
        return items, False
    return tasks(items, WithPieces(state.join, committed.pieces).__call__, **feed), True


def removals(spec: JobSpec, info: manifest.ManifestInfo, committed: Committed | None) -> list:
    """Committed items (not removed already) whose key is not in the manifest, as ray.ObjectRefs of tables (one per
    piece): the key hashes of each manifest part, merged into one sorted column, then per piece a task keeping the
    live rows whose key is not there (``state.absent``). Plain tasks, submitted at once: a plan counts the items to
    render meanwhile."""
    import ray

    if committed is None:
        return []
    present = ray.remote(num_cpus=STATE_CPUS, memory=BOOKKEEPING_MEMORY)(state.present)
    # as many tasks as pieces: each reads only a key column, and a task more is a Python worker more (~250 MiB)
    groups = min(len(info.parts), len(committed.pieces))
    found = [present.remote(spec, info.parts[group::groups]) for group in range(groups)]
    # the merged hashes are 8 bytes per manifest row, sorted once (a copy) and searched by each piece's task
    hashes = ray.remote(num_cpus=STATE_CPUS, memory=BOOKKEEPING_MEMORY + KEY_HASH_BYTES * info.rows)
    keys = hashes(state.listed).remote(*found)
    absent = ray.remote(num_cpus=STATE_CPUS, memory=STATE_PIECE_MEMORY + KEY_HASH_BYTES * info.rows)(state.absent)
    return [absent.remote(piece, keys) for piece in committed.pieces]


def row_count(tables: list) -> int:
    """The rows of tables in the object store, counted where they are (none of them comes to the driver)."""
    import ray

    count = ray.remote(num_cpus=STATE_CPUS)(_num_rows)
    return sum(ray.get([count.remote(table) for table in tables]))


def _num_rows(table: pa.Table) -> int:
    return table.num_rows


def video_rows(spec: JobSpec, items, gpu: bool, pool: capacity.PoolSize, workers_actor, started: float, run_id: str):
    """The dataset of finished rows: each generation actor loads, generates and writes its items (RenderVideos).

    One block per pipeline call goes in, so every actor task is one batch and its rows reach the driver, to be
    committed, as soon as its videos are written; the blocks are cut as they stream (a streaming repartition), never
    all at once, and the feed waits while a few rows per call the pool can run are queued for it (a bound in rows:
    Ray Data's own bound is in bytes, and half-kilobyte rows would queue by the million).
    """
    compute = spec.compute
    items = items.repartition(target_num_rows_per_block=compute.batch_size)
    actors = pool.max if pool.max is not None else UNBOUNDED_POOL_ACTORS
    ahead = ROWS_AHEAD_PER_CALL * CALLS_PER_ACTOR * actors * compute.batch_size
    internals.limit_rows_ahead(items.context, RayRenderer.__name__, max(MIN_ROWS_AHEAD, ahead))
    items.context.target_max_block_size = FEED_BLOCK_BYTES  # this job's plan only: each read makes its own context
    rows = items.map_batches(
        RayRenderer,
        fn_constructor_args=(spec, workers_actor, started, run_id),
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
