"""The only module that imports Ray: it turns the plain stages into one streaming Ray Data plan and runs it.

read_parquet(manifest) -> expand_rows -> left join with the committed rows by (key, variant) -> resume_rows
  -> repartition -> load_images (CPU tasks)
  -> VideoGenerator (actor pool, one pipeline per actor, one GPU each) -> write_videos (CPU tasks)
  [-> repartition into shard-sized blocks -> write_shards (CPU tasks), with output.shards]
  -> rows stream back to the driver -> commit files -> merged into the touched buckets of {output}/metadata/

The driver holds no per-row state: what is done is decided by the join, where the data is; the driver only counts.

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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from queue import Empty, Full, Queue
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow.fs import FSSpecHandler, PyFileSystem

from svdbatch import capacity, commit, faults, manifest, storage
from svdbatch.config import JobSpec
from svdbatch.console import filter_native_notices
from svdbatch.errors import JobError, UserError, root_message
from svdbatch.generate import DeviceLost, VideoGenerator
from svdbatch.metadata import REMOVED, SKIPPED, fail
from svdbatch.model import model_identity
from svdbatch.provenance import package_version
from svdbatch.shards import write_shards
from svdbatch.stages import (
    TALLY_COLUMNS,
    expand_rows,
    join_committed,
    load_images,
    manifest_keys,
    present_keys,
    prune_rows,
    resume_rows,
    tally_items,
    write_videos,
)
from svdbatch.watchdog import Watchdog

CPU_STAGE_CPUS = 0.25
JOIN_ROWS_PER_PARTITION = 500_000
BROADCAST_BYTES = 32 * 2**20  # committed Parquet up to this size is handed to every task instead of shuffled
EXPAND_BATCH_ROWS = 20_000  # a whole 200k-row manifest block expanded at once held ~2 GB per task
MAX_PROBLEMS = 20
WATCH_EVERY_S = 1.0


@dataclass(frozen=True)
class Plan:
    """What a run will do, counted before any image is read."""

    new: int = 0
    done: int = 0
    changed: int = 0
    source_changed: int = 0
    model_changed: int = 0
    retry: int = 0
    invalid: int = 0
    to_remove: int = 0

    @property
    def to_render(self) -> int:
        return self.new + self.changed + self.source_changed + self.model_changed + self.retry


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    output: str
    rendered: int
    failed: int
    skipped: int
    rerendered: int
    removed: int
    wall_seconds: float
    rejected: int = 0

    @property
    def videos_per_minute(self) -> float:
        return self.rendered / self.wall_seconds * 60 if self.wall_seconds else 0.0

    def line(self) -> str:
        return (
            f"svdbatch: {self.rendered} ok, {f'{self.rejected} rejected, ' if self.rejected else ''}"
            f"{self.failed} failed, {self.skipped} already done"
            f"{f' ({self.rerendered} re-rendered: changed or failed before)' if self.rerendered else ''}"
            f"{f', {self.removed} removed' if self.removed else ''}"
            f" in {self.wall_seconds:.1f}s ({self.videos_per_minute:.1f} videos/min) -> {self.output}"
        )


class Progress:
    """A status line every ``every_s`` seconds on stderr: items done of the expected total, failures, rate, ETA.

    On a terminal Ray Data draws live per-stage bars (rich) and keeps this line above them; in logs and CI there are
    no bars and the line is the whole progress report.
    """

    def __init__(self, total: int, enabled: bool, every_s: float = 10.0):
        self.total = total
        self.enabled = enabled
        self.every_s = every_s
        self.started = self.last = time.monotonic()

    def line(self, counts: commit.Counts, now: float) -> str:
        done = counts.rendered + counts.rejected + counts.failed
        rate = done / max(now - self.started, 1e-9)
        left = max(0, self.total - done)
        eta = f"{left / rate / 60:.1f} min" if rate else "unknown"
        return f"svdbatch: {done}/{self.total} items ({counts.failed} failed), {rate * 60:.1f}/min, ETA {eta}"

    def update(self, counts: commit.Counts) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every_s:
            return
        self.last = now
        print(self.line(counts, now), file=sys.stderr, flush=True)


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
        capacity.check_fits(spec.compute, shape, gpu, CPU_STAGE_CPUS)
    except capacity.CapacityError as error:
        raise JobError(str(error)) from error
    return gpu, capacity.pool_size(spec.compute, shape, gpu)


class Workers:
    """A Ray actor on the driver's node: generation actors report their load time here and count lost devices."""

    def __init__(self):
        self.loaded: list[dict[str, Any]] = []
        self.lost: Counter = Counter()

    def add(self, record: dict[str, Any]) -> None:
        self.loaded.append(record)

    def records(self) -> list[dict[str, Any]]:
        return self.loaded

    def lose(self, item_ids: list[str]) -> int:
        """Count one lost actor against each item; returns the most any of them has cost."""
        self.lost.update(item_ids)
        return max(self.lost[item] for item in item_ids)


def start_workers():
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(Workers).remote()


class RayVideoGenerator(VideoGenerator):
    """VideoGenerator on a Ray actor: stamps node and GPU ids on rows, reports its load time, and exits on a lost
    device so Ray restarts it and retries its items on a fresh process."""

    def __init__(self, spec: dict[str, Any], workers, job_started: float):
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
        workers.add.remote(
            {
                "node_id": self.placement["node_id"],
                "gpu_id": self.placement["gpu_id"],
                "device": self.device,
                "load_seconds": round(ready - began, 3),
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


def pool_strategy(pool: capacity.PoolSize):
    from ray.data import ActorPoolStrategy

    if pool.min == pool.max:
        return ActorPoolStrategy(size=pool.min)
    return ActorPoolStrategy(min_size=pool.min, max_size=pool.max, initial_size=pool.initial)


def _pending() -> str:
    """Free resources, and the resource demand the autoscaler sees, for a watchdog line."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    parts = [f"{name} {free.get(name, 0):g}/{total.get(name, 0):g} free" for name in ("CPU", "GPU")]
    demand = _autoscaler_status().get("load_metrics_report", {}).get("resource_demand") or []
    if demand:
        parts.append("waiting: " + ", ".join(f"{count} x {bundle}" for bundle, count in demand))
    return ", ".join(parts)


def watched(batches: Iterator, watchdog: Watchdog, workers, progress: bool) -> Iterator:
    """Yield result batches as they come; in between, let the watchdog report, and end a job that waits too long.

    The batches are pulled on a thread so the driver keeps its voice while Ray Data has nothing to hand over. A job
    the watchdog ends leaves that thread waiting until the process exits (the CLI exits on the error line).
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
    try:
        while True:
            try:
                got = results.get(timeout=WATCH_EVERY_S)
            except Empty:
                up = len(ray.get(workers.records.remote()))
                verdict = watchdog.check(up, time.monotonic(), _pending)
                if verdict.fatal:
                    raise JobError(verdict.fatal) from None
                if verdict.line and (progress or not verdict.line.startswith("svdbatch: waiting")):
                    print(verdict.line, file=sys.stderr, flush=True)
                continue
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
    tables, pending = commit.table_files(spec.output.url, options), commit.pending_files(spec.output.url, options)
    if not tables and not pending:
        return None
    if commit.state_bytes(spec.output.url, options) <= BROADCAST_BYTES:
        return Committed(table=commit.read_state(spec.output.url, options))
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


def _items(spec: JobSpec, info: manifest.ManifestInfo, run_id: str, identity: str):
    """Expanded items joined with their committed rows: ``resume`` decides per item, in the tasks."""
    run = {"run_id": run_id, "duplicates": info.duplicate_keys, "model_identity": identity}
    items = _read_manifest(spec, info).map_batches(
        expand_rows,
        fn_args=(spec.model_dump(mode="json"), run),
        batch_format="pyarrow",
        batch_size=EXPAND_BATCH_ROWS,
        num_cpus=CPU_STAGE_CPUS,
    )
    committed = _committed(spec)
    if committed is None:
        return items, False
    if committed.table is not None:
        joined = items.map_batches(
            join_committed, fn_args=(committed.table,), batch_format="pyarrow", num_cpus=CPU_STAGE_CPUS
        )
        return joined, True
    joined = items.join(
        committed.dataset,
        join_type="left_outer",
        num_partitions=_partitions(spec, info),
        on=("key", "variant"),
        aggregator_ray_remote_args={"num_cpus": CPU_STAGE_CPUS},
    )
    return joined, True


def _removals(spec: JobSpec, info: manifest.ManifestInfo):
    """Committed items (not removed already) whose key is not in the manifest: an anti-join on the key, in Ray."""
    import ray

    committed = _committed(spec)
    if committed is None:
        return None
    if committed.table is not None:
        live = committed.table.filter(pc.not_equal(committed.table[f"{commit.COMMITTED}status"], REMOVED))
        keys = pc.unique(live["key"])
        present = _read_manifest(spec, info).map_batches(
            present_keys, fn_args=(spec.manifest.key_column, keys), batch_format="pyarrow", num_cpus=CPU_STAGE_CPUS
        )
        found = pa.concat_arrays([batch["key"].combine_chunks() for batch in present.iter_batches(
            batch_format="pyarrow", batch_size=None)] or [pa.array([], pa.string())])
        return ray.data.from_arrow(live.filter(pc.invert(pc.is_in(live["key"], value_set=found))))
    keys = _read_manifest(spec, info).map_batches(
        manifest_keys, fn_args=(spec.manifest.key_column,), batch_format="pyarrow", num_cpus=CPU_STAGE_CPUS
    )
    return committed.dataset.filter(expr=f"{commit.COMMITTED}status != '{REMOVED}'").join(
        keys,
        join_type="left_anti",
        num_partitions=_partitions(spec, info),
        on=("key",),
        aggregator_ray_remote_args={"num_cpus": CPU_STAGE_CPUS},
    )


def plan(
    spec: JobSpec, info: manifest.ManifestInfo, identity: str
) -> tuple[Plan, list[dict[str, Any]], list[str]]:
    """Expand and decide the whole manifest as a run would (no images, no model): counts, render shapes, problems,
    and how many committed items left the manifest (what ``output.prune`` removes).

    Returns the plan, the to-render counts per render shape (for a GPU estimate) and the first problems.
    """
    items, _ = _items(spec, info, "plan", identity)
    tallies = items.map_batches(
        tally_items,
        fn_args=(spec.model_dump(mode="json"), MAX_PROBLEMS),
        batch_format="pyarrow",
        num_cpus=CPU_STAGE_CPUS,
    ).take_all()
    counts: Counter = Counter()
    shapes: Counter = Counter()
    problems = []
    for tally in tallies:
        if tally["category"] is None:
            problems.append(tally["error"])
            continue
        counts[tally["category"]] += tally["items"]
        if tally["category"] not in ("done", "invalid"):
            shapes[tuple(tally[name] for name in TALLY_COLUMNS)] += tally["items"]
    shape_rows = [{**dict(zip(TALLY_COLUMNS, shape, strict=True)), "items": n} for shape, n in shapes.items()]
    removals = _removals(spec, info)
    to_remove = removals.count() if removals is not None else 0
    return Plan(**counts, to_remove=to_remove), shape_rows, problems[:MAX_PROBLEMS]


def run(spec: JobSpec, *, verbose: bool = False, progress: bool = True, cli: bool = False) -> RunSummary:
    """Run one job to completion and return its summary; raises JobError with one line on fatal problems.

    ``cli``: this process is the svdbatch command, so its stderr is the user's terminal or log and Ray's native
    notices are filtered out of it (``console.filter_native_notices``) unless ``verbose``.
    """
    import ray
    from ray.data import DataContext

    started = time.time()
    info, identity = preflight(spec)
    init_ray(verbose)
    if cli and not verbose:
        filter_native_notices()
    configure_progress(DataContext.get_current(), progress, verbose)

    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + uuid.uuid4().hex[:8]
    spec_dict = spec.model_dump(mode="json")
    committer = commit.Committer(spec.output.url, run_id, spec.storage_options, spec.failures.max_error_fraction)
    # Rows a killed run committed (its orphan shards are removed here), or an earlier layout.
    commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)
    removals = _removals(spec, info) if spec.output.prune else None
    if removals is not None:
        pruned = removals.map_batches(prune_rows, fn_args=(spec_dict, run_id), batch_format="pyarrow")
        for batch in pruned.iter_batches(batch_format="pyarrow", batch_size=None):
            committer.add_removed(batch)
        # So the resume join reads one row per item.
        commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)
    items, resumed = _items(spec, info, run_id, identity)
    expected = info.rows * spec.seeds.variants
    if resumed:
        items = items.map_batches(resume_rows, fn_args=(spec_dict,), batch_format="pyarrow", num_cpus=CPU_STAGE_CPUS)
        items = items.materialize()
        done = items.filter(expr=f"status == '{SKIPPED}'")
        committer.counts.skipped = done.sum("batch_items") or 0
        items = items.filter(expr=f"status != '{SKIPPED}'")
        expected = items.count()
        if expected == 0:
            return _finish(spec, run_id, committer, started)

    gpu, pool = prepare_pool(spec)
    workers = start_workers()
    rows = (
        items.repartition(target_num_rows_per_block=spec.compute.batch_size)
        .map_batches(
            load_images,
            fn_args=(spec_dict,),
            batch_format="pyarrow",
            batch_size=spec.compute.batch_size,
            num_cpus=spec.compute.cpus_per_task,
        )
        .map_batches(
            RayVideoGenerator,
            fn_constructor_args=(spec_dict, workers, started),
            batch_format="pyarrow",
            batch_size=spec.compute.batch_size,
            compute=pool_strategy(pool),
            num_gpus=spec.compute.gpus_per_actor if gpu else 0,
            num_cpus=spec.compute.cpus_per_actor,
        )
        .map_batches(
            write_videos,
            fn_args=(spec_dict,),
            batch_format="pyarrow",
            batch_size=1,
            num_cpus=spec.compute.cpus_per_task,
        )
    )
    if spec.output.shards.enabled:
        rows = rows.repartition(target_num_rows_per_block=spec.output.shards.samples_per_shard).map_batches(
            write_shards,
            fn_args=(spec_dict,),
            batch_format="pyarrow",
            batch_size=None,
            num_cpus=spec.compute.cpus_per_task,
        )
    progress_line = Progress(expected, progress)
    try:
        watchdog = Watchdog(spec.compute, gpu, pool.initial, time.monotonic())
        batches = rows.iter_batches(batch_format="pyarrow", batch_size=None)
        for batch in watched(batches, watchdog, workers, progress):
            committer.add(batch)
            progress_line.update(committer.counts)
        return _finish(spec, run_id, committer, started, ray.get(workers.records.remote()))
    except commit.TooManyErrors as error:
        raise JobError(str(error)) from error
    except JobError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure that reaches here is fatal for the job
        committer.flush()
        raise JobError(root_message(error)) from error


def _finish(
    spec: JobSpec, run_id: str, committer: commit.Committer, started: float, workers: list | None = None
) -> RunSummary:
    committer.finish()
    commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)
    counts = committer.counts
    summary = RunSummary(
        run_id=run_id,
        output=spec.output.url,
        rendered=counts.rendered,
        failed=counts.failed,
        skipped=counts.skipped,
        rerendered=counts.rerendered,
        removed=counts.removed,
        wall_seconds=time.time() - started,
        rejected=counts.rejected,
    )
    write_job_record(spec, job_record(spec, summary, started, counts.environments, workers))
    return summary


def model_copies(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The copies of a remote model this run's actors loaded, one per node: files, bytes, seconds."""
    by_node = {worker["node_id"]: worker["model_copy"] for worker in workers if worker.get("model_copy")}
    return [{"node_id": node, **copy} for node, copy in sorted(by_node.items())]


def _versions() -> dict[str, str]:
    packages = ("svdbatch", "torch", "diffusers", "transformers", "ray", "pyarrow", "fsspec")
    return {name: package_version(name) for name in packages}


def job_record(
    spec: JobSpec,
    summary: RunSummary,
    started: float,
    environments: list[dict[str, str]],
    workers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What ran, with which versions, when, and what came of it; storage secrets are redacted.

    ``versions`` are the driver's; ``environments`` the distinct GPU/CUDA/driver/library sets that rendered;
    ``workers`` each generation actor's node, GPU, model load time and when it was ready (seconds after the start).
    """
    resolved = spec.model_dump(mode="json")
    resolved["storage_options"] = storage.redact(resolved["storage_options"])
    return {
        "run_id": summary.run_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
        "environments": environments,
        "spec": resolved,
        "summary": {**asdict(summary), "videos_per_minute": summary.videos_per_minute},
        "workers": workers or [],
        "model_copies": model_copies(workers or []),
    }


def write_job_record(spec: JobSpec, record: dict[str, Any]) -> None:
    """``_job/summary.json`` for the latest run, and ``_job/runs/{run_id}.json`` kept for every run."""
    data = json.dumps(record, indent=2).encode()
    storage.write_bytes(storage.join(spec.output.url, "_job", "summary.json"), data, spec.storage_options)
    storage.write_bytes(
        storage.join(spec.output.url, "_job", "runs", f"{record['run_id']}.json"), data, spec.storage_options
    )
