"""The only module that imports Ray: it turns the plain stages into one streaming Ray Data plan and runs it.

read_parquet(manifest) -> ExpandRows -> left join with the committed rows by (key, variant) -> ResumeRows
  -> repartition -> LoadImages (CPU tasks)
  -> VideoGenerator (actor pool, one pipeline per actor, one GPU each) -> WriteVideos (CPU tasks)
  [-> repartition into shard-sized blocks -> WriteShards (CPU tasks), with output.shards]
  -> rows stream back to the driver -> commit files -> merged into the touched buckets of {output}/metadata/

The stages (stages.py, shards.py, generate.py) know nothing of Ray; this module only builds the dataset and drives
it. The driver holds no per-row state: what is done is decided by the join, where the data is (a large table is
shuffle-joined by Ray; a small one is handed to every task); the driver only counts. What a run reports lives in
record.py, the errors it raises in errors.py.

The generation pool is sized and placed from what the cluster has and can get (capacity.py), watched while it runs
(watchdog.py), and heals: Ray restarts actors lost with their node or their CUDA context and retries their items.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from queue import Empty, Full, Queue
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow.fs import FSSpecHandler, PyFileSystem

from svdbatch import capacity, commit, faults, lease, manifest, metrics, record, stopping, storage
from svdbatch.config import JobSpec
from svdbatch.console import filter_native_notices
from svdbatch.errors import JobError, UserError, root_message
from svdbatch.generate import DeviceLost, VideoGenerator
from svdbatch.items import TO_RENDER, Category
from svdbatch.metadata import REMOVED, SKIPPED, fail
from svdbatch.model import model_identity
from svdbatch.plan_report import PlanReport
from svdbatch.record import Progress, RunSummary
from svdbatch.shards import WriteShards
from svdbatch.stages import (
    TALLY_COLUMNS,
    ExpandRows,
    PruneRows,
    RenderVideos,
    ResumeRows,
    RunContext,
    TallyItems,
    count_work,
    join_committed,
    manifest_keys,
    present_keys,
)
from svdbatch.watchdog import Watchdog
from svdbatch.workers import Workers

CPU_STAGE_CPUS = 0.25
# Ray Data (2.60) runs the streaming repartition that cuts one block per pipeline call as tasks of 1 CPU, and offers
# no setting for it: next to the actors, a node needs that CPU free or the job waits forever.
CUT_CPUS = 1.0
JOIN_ROWS_PER_PARTITION = 500_000
# Committed Parquet up to this size is handed to every task instead of shuffled: 1M items' state is about 77 MB on
# disk and 114 MB in memory, read on the driver in 5 s, where each hash shuffle of the two sides took about 40 s.
BROADCAST_BYTES = 96 * 2**20
EXPAND_BATCH_ROWS = 20_000  # a whole 200k-row manifest block expanded at once held ~2 GB per task
MAX_PROBLEMS = 20
CALLS_PER_ACTOR = 3  # one generating, one loading, one writing
WATCH_EVERY_S = 1.0
HALT_WAIT_S = 10.0  # after a stop request, the longest wait for rows Ray Data already had


def configure_progress(context: Any, progress: bool, verbose: bool) -> None:
    """Ray Data's live per-stage bars on a terminal only, and none of their notices.

    Ray's defaults draw nothing in a driver (its tqdm relays through the log monitor) and log the bars' state
    ("progress bars disabled", "logged because not a terminal") as warnings: noise for a batch job.
    """
    live = progress and sys.stderr.isatty()
    context.enable_progress_bars = live
    context.enable_operator_progress_bars = live
    context.enable_rich_progress_bars = True
    context.use_ray_tqdm = False
    context.verbose_stats_logs = verbose
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.INFO if verbose else logging.ERROR)


def init_ray(verbose: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``), or start a local one."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    level = logging.INFO if verbose else logging.WARNING
    # The local cluster only listens on loopback; its token-auth notice is noise for a batch job, verbose or not.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # Workers' own output (library chatter) reaches the terminal only with --verbose: their failures come back as
    # exceptions or error rows.
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=level, log_to_driver=verbose)
    else:
        # "local": a cluster of our own. Without it Ray joins whatever `ray start` cluster runs on this machine.
        ray.init(address="local", include_dashboard=False, logging_level=level, log_to_driver=verbose)


def start_ray(verbose: bool, progress: bool, cli: bool) -> None:
    """Ray as every command shows it (run, demo, plan): started or joined, its native notices filtered out of the
    command's stderr (``cli``, unless ``verbose``), Ray Data's bars on a terminal only and none of its INFO lines."""
    from ray.data import DataContext

    with stopping.ray_starting():
        init_ray(verbose)
    if cli and not verbose:
        filter_native_notices()
    configure_progress(DataContext.get_current(), progress, verbose)


def _pyarrow_fs(url: str, options: dict[str, Any]):
    fs, _ = storage.filesystem(url, options)
    return PyFileSystem(FSSpecHandler(fs))


def preflight(spec: JobSpec) -> tuple[manifest.ManifestInfo, str]:
    """Everything that can fail for the whole job is checked here, before any image is read or GPU is used.

    Returns the manifest's facts and the model's identity (``model.model_identity``, one listing of its files).
    """
    try:
        info = manifest.inspect(spec)
        identity = model_identity(spec.model, spec.storage_options)
        storage.check_writable(spec.output.url, spec.storage_options)
    except UserError as error:
        raise JobError(str(error)) from error
    return info, identity


def _read_manifest(spec: JobSpec, info: manifest.ManifestInfo):
    import ray

    fs = _pyarrow_fs(spec.manifest.path, spec.storage_options)
    return ray.data.read_parquet(info.files, filesystem=fs, num_cpus=CPU_STAGE_CPUS)


def _autoscaler_status() -> dict[str, Any]:
    """What Ray's v1 autoscaler publishes each update (its report and the pending resource demand); {} without one."""
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
    return json.loads(raw) if raw else {}


def cluster_shape() -> capacity.ClusterShape:
    """Alive nodes, and the node types the autoscaler can add: published by autoscaler v2 (KubeRay); v1 runs
    without publishing them (node_types None); neither runs on a fixed cluster (no node types)."""
    import ray
    import ray._private.state

    alive = [node for node in ray.nodes() if node["Alive"]]
    nodes = [dict(node["Resources"]) for node in alive]
    config = ray._private.state.state.get_cluster_config()
    if config is not None and config.node_group_configs:
        types = [
            capacity.NodeType(group.name, dict(group.resources), group.max_count)
            for group in config.node_group_configs
        ]
        return capacity.ClusterShape(nodes, types)
    # Without an autoscaling config the monitor still reports, with one read-only type per node: "node_<node id>".
    report = _autoscaler_status().get("autoscaler_report") or {}
    names = set(report.get("active_nodes") or {}) | set(report.get("pending_launches") or {})
    read_only = {f"node_{node['NodeID']}" for node in alive}
    return capacity.ClusterShape(nodes, None if names - read_only else [])


def prepare_pool(spec: JobSpec) -> tuple[bool, capacity.PoolSize]:
    """Whether the actors ask for GPUs, and the pool's size; a job that cannot run here fails now, in one line."""
    shape = cluster_shape()
    try:
        gpu = capacity.check_device(spec.model, shape)
        capacity.check_fits(spec.compute, shape, gpu, CUT_CPUS)
    except capacity.CapacityError as error:
        raise JobError(str(error)) from error
    return gpu, capacity.pool_size(spec.compute, shape, gpu)


def start_workers():
    """The job's Workers actor, on the driver's node (it lives as long as the driver's run)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(Workers).remote()


class RayMetrics:
    """The ``svdbatch_*`` metrics (metrics.METRICS) of one process, the driver or a generation actor, through
    ``ray.util.metrics``: the node's Ray metrics agent exports them on its Prometheus endpoint, with these tags."""

    def __init__(self, spec: JobSpec, run_id: str, node_id: str | None = None):
        import ray
        from ray.util import metrics as ray_metrics

        node_id = node_id or ray.get_runtime_context().get_node_id()
        kinds = {"counter": ray_metrics.Counter, "gauge": ray_metrics.Gauge, "histogram": ray_metrics.Histogram}
        self.node_id = node_id
        self.tags = {"job": spec.output.url, "run_id": run_id, "node_id": node_id}
        self.metrics = {}
        for metric in metrics.METRICS:
            options = {"boundaries": list(metric.boundaries)} if metric.boundaries else {}
            self.metrics[metric.name] = kinds[metric.kind](
                metric.name, description=metric.description, tag_keys=metric.tags, **options
            )

    def record(self, observations: list[metrics.Observation]) -> None:
        from ray.util import metrics as ray_metrics

        for seen in observations:
            metric, tags = self.metrics[seen.metric], {**self.tags, **seen.tags}
            if isinstance(metric, ray_metrics.Histogram):
                metric.observe(seen.value, tags)
            elif isinstance(metric, ray_metrics.Gauge):
                metric.set(seen.value, tags)
            elif seen.value > 0:  # a Ray counter refuses to add 0
                metric.inc(seen.value, tags)


class RayVideoGenerator(VideoGenerator):
    """VideoGenerator on a Ray actor: stamps node and GPU ids on rows, reports its load time, and exits on a lost
    device so Ray restarts it and retries its items on a fresh process."""

    def __init__(self, spec: JobSpec, workers, job_started: float):
        import ray

        began = time.time()
        super().__init__(spec)
        self.workers = workers
        self.exit_before_next = False
        gpu_ids = ray.get_gpu_ids()
        self.placement.update(
            node_id=ray.get_runtime_context().get_node_id(),
            gpu_id=",".join(str(gpu) for gpu in gpu_ids) if gpu_ids else None,
        )
        ready = time.time()
        self.load_seconds = round(ready - began, 3)
        workers.add.remote(
            {
                "node_id": self.placement["node_id"],
                "gpu_id": self.placement["gpu_id"],
                "device": self.device,
                "load_seconds": self.load_seconds,
                "ready_after_seconds": round(ready - job_started, 3),
                "model_copy": self.model_copy,
            }
        )

    def __call__(self, batch):
        if self.exit_before_next:
            os._exit(1)
        return super().__call__(batch)

    def device_lost(self, lost: DeviceLost, unrendered: list[dict[str, Any]]) -> None:
        import ray

        lost_actors = ray.get(self.workers.lose.remote([f"{row['key']}#{row['variant']}" for row in unrendered]))
        where = f"node {self.placement['node_id']}, GPU {self.placement['gpu_id']}"
        print(f"svdbatch: {lost} ({where}); this actor exits and its items are retried", file=sys.stderr, flush=True)
        if lost_actors < faults.MAX_ACTORS_LOST:
            os._exit(1)
        for row in unrendered:
            fail(row, f"generate {row['key']!r} v{row['variant']}: {lost} (on {lost_actors} fresh actors)")
        self.exit_before_next = True


class RayRenderer(RenderVideos):
    """The actor class of the generation pool: RenderVideos around a RayVideoGenerator, recording the metrics of
    what it renders (stage seconds, GPU-seconds) and of its start in this process."""

    def __init__(self, spec: JobSpec, workers, job_started: float, run_id: str):
        import ray

        generator = RayVideoGenerator(spec, workers, job_started)
        super().__init__(spec, generator)
        self.gpus = spec.compute.gpus_per_actor
        self.meter = RayMetrics(spec, run_id, generator.placement["node_id"])
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.meter.record(metrics.actor_started(generator.load_seconds, restarted, self.gpus))

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = super().__call__(batch)
        self.meter.record(metrics.rendered(rows, self.gpus))
        return rows


def pool_strategy(pool: capacity.PoolSize):
    """The generation pool; each actor runs CALLS_PER_ACTOR calls at once on threads (RenderVideos): one generates,
    the others load or write, so the device does not wait for the CPU work around it."""
    from ray.data import ActorPoolStrategy

    if pool.min == pool.max:
        sizes = {"size": pool.min}
    else:
        sizes = {"min_size": pool.min, "max_size": pool.max, "initial_size": pool.initial}
    return ActorPoolStrategy(**sizes, max_concurrent_calls_per_actor=CALLS_PER_ACTOR, enable_true_multi_threading=True)


def _pending() -> str:
    """Free resources, and the resource demand the autoscaler sees, for a watchdog line."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    parts = [f"{name} {free.get(name, 0):g}/{total.get(name, 0):g} free" for name in ("CPU", "GPU")]
    demand = _autoscaler_status().get("load_metrics_report", {}).get("resource_demand") or []
    if demand:
        parts.append("waiting: " + ", ".join(f"{count} x {bundle}" for bundle, count in demand))
    return ", ".join(parts)


def halt_streaming() -> None:
    """End Ray Data's running executions now, from this thread: their tasks and actors stop and their iterators end.

    Ray Data ends an execution only from the thread that iterates it (here the results thread, blocked until the
    next batch), and an execution still running at ``ray.shutdown`` prints tracebacks from its threads.
    """
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    for thread in threading.enumerate():
        if isinstance(thread, StreamingExecutor):
            thread.shutdown(force=True)


def watched(batches: Iterator, watchdog: Watchdog, workers, progress: bool) -> Iterator:
    """Yield result batches as they come; in between, let the watchdog report, and end a job that waits too long.

    The batches are pulled on a thread so the driver keeps its voice while Ray Data has nothing to hand over. A job
    the watchdog ends leaves that thread waiting until the process exits (the CLI exits on the error line). On a
    stop request (stopping.py) the stream is halted; the batches Ray Data still hands over are yielded, then
    ``Stopped`` is raised.
    """
    import ray

    results: Queue = Queue(maxsize=4)
    stop = threading.Event()
    end = object()

    def pump() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        results.put(batch, timeout=WATCH_EVERY_S)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            results.put(end)
        except BaseException as error:  # noqa: BLE001 - handed to the driver thread, which raises it
            results.put(error)

    threading.Thread(target=pump, name="svdbatch-results", daemon=True).start()
    halted = None  # when a stop request ended the stream; from then on only what Ray Data had already is yielded
    try:
        while True:
            if halted is None and stopping.requested():
                halt_streaming()
                halted = time.monotonic()
            try:
                got = results.get(timeout=WATCH_EVERY_S)
            except Empty:
                if halted is not None:
                    if time.monotonic() - halted >= HALT_WAIT_S:
                        raise stopping.Stopped(stopping.requested()) from None
                    continue
                up = len(ray.get(workers.records.remote()))
                verdict = watchdog.check(up, time.monotonic(), _pending)
                if verdict.fatal:
                    raise JobError(verdict.fatal) from None
                if verdict.line and (progress or not verdict.line.startswith("svdbatch: waiting")):
                    print(verdict.line, file=sys.stderr, flush=True)
                continue
            if halted is not None and (got is end or isinstance(got, BaseException)):
                raise stopping.Stopped(stopping.requested())
            if got is end:
                return
            if isinstance(got, BaseException):
                raise got
            watchdog.finished(got.num_rows, time.monotonic())
            yield got
    finally:
        stop.set()


@dataclass(frozen=True)
class Committed:
    """What earlier runs committed, as the resume join's right side: a Ray dataset the items are shuffle-joined with,
    or, while the table is small, one Arrow table every task joins with (no shuffle, no join actors to start)."""

    dataset: Any = None
    table: pa.Table | None = None


def _committed(spec: JobSpec) -> Committed | None:
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
        return Committed(table=commit.read_state(spec.output.url, files, options))
    fs = _pyarrow_fs(spec.output.url, options)
    state = ray.data.read_parquet(
        tables + pending, filesystem=fs, columns=commit.STATE_COLUMNS, num_cpus=CPU_STAGE_CPUS
    )
    legacy = storage.filesystem(storage.join(spec.output.url, commit.LEGACY_TABLE), options)[1]
    if pending or (legacy in tables and len(tables) > 1):
        state = state.groupby(["key", "variant"]).map_groups(
            commit.latest, batch_format="pyarrow", num_cpus=CPU_STAGE_CPUS
        )
    return Committed(dataset=state.map_batches(commit.resume_state, batch_format="pyarrow", num_cpus=CPU_STAGE_CPUS))


def _partitions(spec: JobSpec, info: manifest.ManifestInfo) -> int:
    return max(1, min(64, info.rows * spec.seeds.variants // JOIN_ROWS_PER_PARTITION))


def _tasks(dataset, stage: Callable, **options):
    """``map_batches`` of a stage on Ray tasks, over pyarrow batches. A stage object goes in as its bound
    ``__call__``: Ray Data runs a bound method as a plain function (a class would start an actor pool) and ships it,
    with the config the stage received once, to every task."""
    options.setdefault("num_cpus", CPU_STAGE_CPUS)
    return dataset.map_batches(stage, batch_format="pyarrow", **options)


def _items(spec: JobSpec, info: manifest.ManifestInfo, run: RunContext, committed: Committed | None):
    """Expanded items joined with their committed rows: ``resume`` decides per item, in the tasks."""
    items = _tasks(_read_manifest(spec, info), ExpandRows(spec, run).__call__, batch_size=EXPAND_BATCH_ROWS)
    if committed is None:
        return items, False
    if committed.table is not None:
        return _tasks(items, join_committed, fn_args=(committed.table,)), True
    joined = items.join(
        committed.dataset,
        join_type="left_outer",
        num_partitions=_partitions(spec, info),
        on=("key", "variant"),
        aggregator_ray_remote_args={"num_cpus": CPU_STAGE_CPUS},
    )
    return joined, True


def _removals(spec: JobSpec, info: manifest.ManifestInfo, committed: Committed | None):
    """Committed items (not removed already) whose key is not in the manifest: an anti-join on the key, in Ray, or
    for a small table, the committed keys handed to every task, which reports the ones its manifest rows hold."""
    import ray

    if committed is None:
        return None
    key_column = spec.manifest.key_column
    if committed.table is not None:
        live = committed.table.filter(pc.not_equal(committed.table[f"{commit.COMMITTED}status"], REMOVED))
        present = _tasks(_read_manifest(spec, info), present_keys, fn_args=(key_column, pc.unique(live["key"])))
        found = [batch["key"] for batch in present.iter_batches(batch_format="pyarrow", batch_size=None)]
        found = pa.chunked_array(found, pa.string()).combine_chunks()
        return ray.data.from_arrow(live.filter(pc.invert(pc.is_in(live["key"], value_set=found))))
    keys = _tasks(_read_manifest(spec, info), manifest_keys, fn_args=(key_column,))
    return committed.dataset.filter(expr=f"{commit.COMMITTED}status != '{REMOVED}'").join(
        keys,
        join_type="left_anti",
        num_partitions=_partitions(spec, info),
        on=("key",),
        aggregator_ray_remote_args={"num_cpus": CPU_STAGE_CPUS},
    )


def plan(spec: JobSpec, info: manifest.ManifestInfo, identity: str) -> PlanReport:
    """Expand and decide the whole manifest as a run would (no images, no model): items per category and render
    shape, the first problems, and how many committed items left the manifest (what ``output.prune`` removes)."""
    committed = _committed(spec)  # read once: the resume join and the prune anti-join see the same state
    items, _ = _items(spec, info, RunContext("plan", info.duplicate_keys, identity), committed)
    tallies = _tasks(items, TallyItems(spec, MAX_PROBLEMS).__call__).take_all()
    report = PlanReport(files=len(info.files), rows=info.rows, prune=spec.output.prune)
    shapes: Counter = Counter()
    for tally in tallies:
        if tally["category"] is None:
            report.problems.append(tally["error"])
            continue
        category = Category(tally["category"])
        report.counts[category] += tally["items"]
        if category in TO_RENDER:
            shapes[tuple(tally[name] for name in TALLY_COLUMNS)] += tally["items"]
    report.shapes = [{**dict(zip(TALLY_COLUMNS, shape, strict=True)), "items": n} for shape, n in shapes.items()]
    del report.problems[MAX_PROBLEMS:]
    removals = _removals(spec, info, committed)
    report.to_remove = removals.count() if removals is not None else 0
    return report


def run(
    spec: JobSpec, *, verbose: bool = False, progress: bool = True, cli: bool = False, take_over: bool = False
) -> RunSummary:
    """Run one job to completion and return its summary; raises JobError with one line on fatal problems.

    ``cli``: this process is the svdbatch command, so its stderr is the user's terminal or log and Ray's native
    notices are filtered out of it (``console.filter_native_notices``) unless ``verbose``.

    The run holds the output's lease (lease.py) from before Ray starts until it ends, however it ends; another live
    holder makes it refuse in one line, unless ``take_over``.
    """
    started = time.time()
    info, identity = preflight(spec)
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + uuid.uuid4().hex[:8]
    held = lease.acquire(spec.output.url, spec.storage_options, run_id, spec.lease.ttl_s, take_over)
    held.keep()
    committer = commit.Committer(spec.output.url, run_id, spec.storage_options, spec.failures.max_error_fraction)
    try:
        start_ray(verbose, progress, cli)
        # Rows a killed run committed (its orphan shards are removed here), or an earlier layout.
        commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)
        if spec.output.prune:
            _prune(spec, info, run_id, committer)
        items, expected = _to_render(spec, info, RunContext(run_id, info.duplicate_keys, identity), committer)
        meter = RayMetrics(spec, run_id)
        meter.record(metrics.skipped(committer.counts.skipped, meter.node_id))
        try:
            workers = _render(spec, items, expected, committer, started, progress, meter) if expected else []
            committer.finish()
        except commit.TooManyErrors as error:
            raise JobError(str(error)) from error
        held.check()  # publish only while this run still holds the output
        commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)
        return record.summarize(spec, run_id, committer.counts, started, workers)
    except stopping.Stopped as stop:
        raise stopping.Stopped(stop.signum, _stopped(spec, committer, held)) from None
    except BaseException as error:
        if held.lost is None or held.lost is error:
            raise
        # A lost lease stops the run by interrupting this thread (Lease.keep): the reason is the lost lease.
        raise held.lost from error
    finally:
        held.release()


def _stopped(spec: JobSpec, committer: commit.Committer, held: lease.Lease) -> int:
    """After a stop signal: halt Ray Data, commit and publish what finished, and end Ray before the process exits
    (its threads print tracebacks when Ray goes away under them). Returns the videos this run committed."""
    import ray

    try:
        halt_streaming()
        committer.flush()
        held.check()
        commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)
    finally:
        ray.shutdown()
    return committer.counts.rendered


def _prune(spec: JobSpec, info: manifest.ManifestInfo, run_id: str, committer: commit.Committer) -> None:
    """Delete the videos of items that left the manifest and commit their rows as ``removed``, then publish, so the
    resume join reads one row per item."""
    removals = _removals(spec, info, _committed(spec))
    if removals is None:
        return
    pruned = removals.map_batches(PruneRows(spec, run_id).__call__, batch_format="pyarrow")
    for batch in pruned.iter_batches(batch_format="pyarrow", batch_size=None):
        committer.add_removed(batch)
    commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)


def _to_render(spec: JobSpec, info: manifest.ManifestInfo, run: RunContext, committer: commit.Committer):
    """The items to render (and error rows) and how many; the done ones are only counted."""
    items, resumed = _items(spec, info, run, _committed(spec))  # after a prune's publish: one row per item
    if not resumed:
        return items, info.rows * spec.seeds.variants
    items = _tasks(items, ResumeRows(spec).__call__).materialize()
    tallies = _tasks(items, count_work, batch_size=None).take_all()
    committer.counts.skipped = sum(tally["skipped"] for tally in tallies)
    return items.filter(expr=f"status != '{SKIPPED}'"), sum(tally["to_render"] for tally in tallies)


def _render(
    spec: JobSpec,
    items,
    expected: int,
    committer: commit.Committer,
    started: float,
    progress: bool,
    meter: RayMetrics,
) -> list[dict[str, Any]]:
    """Images -> videos -> metadata rows (and shards), committed and counted in the metrics as they stream back,
    watched while they come.

    Returns what each generation actor reported when it was ready (``Workers``)."""
    import ray

    gpu, pool = prepare_pool(spec)
    workers = start_workers()
    progress_line = Progress(expected, progress)
    gates = spec.quality.model_dump()
    meter.record([metrics.remaining(expected, 0)])
    try:
        rows = _video_rows(spec, items, gpu, pool, workers, started, committer.run_id)
        watchdog = Watchdog(spec.compute, gpu, pool.initial, time.monotonic())
        with stopping.polled():
            batches = rows.iter_batches(batch_format="pyarrow", batch_size=None)
            for batch in watched(batches, watchdog, workers, progress):
                committer.add(batch)
                progress_line.update(committer.counts)
                done = committer.counts.rendered + committer.counts.rejected + committer.counts.failed
                meter.record([*metrics.finished(batch, gates, meter.node_id), metrics.remaining(expected, done)])
        return ray.get(workers.records.remote())
    except (JobError, commit.TooManyErrors):
        raise
    except Exception as error:  # noqa: BLE001 - any failure that reaches here is fatal for the job
        committer.flush()
        raise JobError(root_message(error)) from error
    finally:
        # The finished plan holds this handle until Python's cycle collector frees it: the actor would outlive the run.
        ray.kill(workers)


def _video_rows(spec: JobSpec, items, gpu: bool, pool: capacity.PoolSize, workers, started: float, run_id: str):
    """The dataset of finished rows: each generation actor loads, generates and writes its items (RenderVideos).

    One block per pipeline call goes in, so every actor task is one batch and its rows reach the driver, to be
    committed, as soon as its videos are written; the blocks are cut as they stream (a streaming repartition), never
    all at once, and only the rows of items in flight exist at any time.
    """
    compute = spec.compute
    items = items.repartition(target_num_rows_per_block=compute.batch_size)
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
        rows = _tasks(rows, WriteShards(spec).__call__, batch_size=None, num_cpus=compute.cpus_per_task)
    return rows
