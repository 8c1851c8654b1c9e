"""The only module that imports Ray: it turns the plain stages into one streaming Ray Data plan and runs it.

read_parquet(manifest) -> expand_rows -> left join with the committed rows by (key, variant) -> resume_rows
  -> repartition -> load_images (CPU tasks)
  -> VideoGenerator (actor pool, one pipeline per actor, one GPU each) -> write_videos (CPU tasks)
  -> rows stream back to the driver -> commit files -> merged into the touched buckets of {output}/metadata/

The driver holds no per-row state: what is done is decided by the join, where the data is; the driver only counts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from pyarrow.fs import FSSpecHandler, PyFileSystem

from svdbatch import commit, manifest, storage
from svdbatch.config import JobSpec
from svdbatch.generate import VideoGenerator
from svdbatch.metadata import SKIPPED
from svdbatch.model import ModelError, check_source
from svdbatch.stages import TALLY_COLUMNS, expand_rows, load_images, resume_rows, tally_items, write_videos

CPU_STAGE_CPUS = 0.25
JOIN_ROWS_PER_PARTITION = 500_000
EXPAND_BATCH_ROWS = 20_000  # a whole 200k-row manifest block expanded at once held ~2 GB per task
MAX_PROBLEMS = 20


class JobError(RuntimeError):
    """A fatal problem, already phrased as one line for the user."""


@dataclass(frozen=True)
class Plan:
    """What a run will do, counted before any image is read."""

    new: int = 0
    done: int = 0
    changed: int = 0
    retry: int = 0
    invalid: int = 0

    @property
    def to_render(self) -> int:
        return self.new + self.changed + self.retry


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    output: str
    rendered: int
    failed: int
    skipped: int
    rerendered: int
    wall_seconds: float

    @property
    def videos_per_minute(self) -> float:
        return self.rendered / self.wall_seconds * 60 if self.wall_seconds else 0.0

    def line(self) -> str:
        return (
            f"svdbatch: {self.rendered} ok, {self.failed} failed, {self.skipped} already done"
            f"{f' ({self.rerendered} re-rendered: changed or failed before)' if self.rerendered else ''}"
            f" in {self.wall_seconds:.1f}s ({self.videos_per_minute:.1f} videos/min) -> {self.output}"
        )


class Progress:
    """One line every few seconds on stderr: items done of the expected total, rate and ETA."""

    def __init__(self, total: int, enabled: bool, every_s: float = 10.0):
        self.total = total
        self.enabled = enabled
        self.every_s = every_s
        self.started = self.last = time.monotonic()

    def update(self, counts: commit.Counts) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every_s:
            return
        self.last = now
        done = counts.rendered + counts.failed
        rate = done / (now - self.started)
        left = max(0, self.total - done)
        eta = f"{left / rate / 60:.1f} min" if rate else "unknown"
        print(
            f"svdbatch: {done}/{self.total} items ({counts.failed} failed), {rate * 60:.1f}/min, ETA {eta}",
            file=sys.stderr,
            flush=True,
        )


def init_ray(verbose: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``), or start a local one."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    level = logging.INFO if verbose else logging.WARNING
    # The local cluster only listens on loopback; its token-auth notice is noise for a batch job.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        level if verbose else logging.ERROR
    )
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=level)
    else:
        ray.init(include_dashboard=False, logging_level=level)


def _pyarrow_fs(url: str, options: dict[str, Any]):
    fs, _ = storage.filesystem(url, options)
    return PyFileSystem(FSSpecHandler(fs))


def _actor_count(spec: JobSpec, cluster_gpus: float) -> int:
    if spec.compute.num_actors:
        return spec.compute.num_actors
    if cluster_gpus and spec.model.device != "cpu":
        return max(1, int(cluster_gpus // spec.compute.gpus_per_actor))
    return 1


def _root_message(error: BaseException) -> str:
    """The one line to show for a failure deep inside Ray: the innermost cause, without Ray's wrapping."""
    seen = error
    while True:
        cause = getattr(seen, "cause", None) or seen.__cause__
        if cause is None or cause is seen:
            break
        seen = cause
    if isinstance(seen, (ModelError, storage.StorageError, manifest.ManifestError)):
        return str(seen)
    lines = [line for line in str(seen).strip().splitlines() if line.strip()]
    return f"{type(seen).__name__}: {lines[0] if lines else 'no message'} (--verbose for the full trace)"


def preflight(spec: JobSpec) -> manifest.ManifestInfo:
    """Everything that can fail for the whole job is checked here, before any image is read or GPU is used."""
    try:
        info = manifest.inspect(spec)
        check_source(spec.model, spec.storage_options)
        storage.check_writable(spec.output.url, spec.storage_options)
    except (manifest.ManifestError, ModelError, storage.StorageError) as error:
        raise JobError(str(error)) from None
    return info


def _read_manifest(spec: JobSpec, info: manifest.ManifestInfo):
    import ray

    fs = _pyarrow_fs(spec.manifest.path, spec.storage_options)
    return ray.data.read_parquet(info.files, filesystem=fs, num_cpus=CPU_STAGE_CPUS)


def _committed(spec: JobSpec):
    """The committed rows as the join's right side (key, variant, committed_*), read by Ray; None if there are none.

    After a completed publish every item has one row in its bucket file. Commit files not yet merged (a killed or a
    running job) and a half-split table from an earlier version can hold several rows per item: then the latest is
    picked by a group-by on (key, variant), also in Ray.
    """
    import ray

    options = spec.storage_options
    tables, pending = commit.table_files(spec.output.url, options), commit.pending_files(spec.output.url, options)
    if not tables and not pending:
        return None
    fs = _pyarrow_fs(spec.output.url, options)
    state = ray.data.read_parquet(
        tables + pending, filesystem=fs, columns=commit.STATE_COLUMNS, num_cpus=CPU_STAGE_CPUS
    )
    legacy = storage.filesystem(storage.join(spec.output.url, commit.LEGACY_TABLE), options)[1]
    if pending or (legacy in tables and len(tables) > 1):
        state = state.groupby(["key", "variant"]).map_groups(
            commit.latest, batch_format="pyarrow", num_cpus=CPU_STAGE_CPUS
        )
    return state.map_batches(commit.resume_state, batch_format="pyarrow", num_cpus=CPU_STAGE_CPUS)


def _items(spec: JobSpec, info: manifest.ManifestInfo, run_id: str):
    """Expanded items joined with their committed rows: ``resume`` decides per item, in the tasks."""
    run = {"run_id": run_id, "duplicates": info.duplicate_keys}
    items = _read_manifest(spec, info).map_batches(
        expand_rows,
        fn_args=(spec.model_dump(mode="json"), run),
        batch_format="pyarrow",
        batch_size=EXPAND_BATCH_ROWS,
        num_cpus=CPU_STAGE_CPUS,
    )
    state = _committed(spec)
    if state is None:
        return items, False
    partitions = max(1, min(64, info.rows * spec.seeds.variants // JOIN_ROWS_PER_PARTITION))
    joined = items.join(
        state,
        join_type="left_outer",
        num_partitions=partitions,
        on=("key", "variant"),
        aggregator_ray_remote_args={"num_cpus": CPU_STAGE_CPUS},
    )
    return joined, True


def plan(spec: JobSpec, info: manifest.ManifestInfo) -> tuple[Plan, list[dict[str, Any]], list[str]]:
    """Expand and decide the whole manifest as a run would (no images, no model): counts, render shapes, problems.

    Returns the plan, the to-render counts per render shape (for a GPU estimate) and the first problems.
    """
    items, _ = _items(spec, info, "plan")
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
    return Plan(**counts), shape_rows, problems[:MAX_PROBLEMS]


def run(spec: JobSpec, *, verbose: bool = False, progress: bool = True) -> RunSummary:
    """Run one job to completion and return its summary; raises JobError with one line on fatal problems."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    started = time.time()
    info = preflight(spec)
    init_ray(verbose)
    context = DataContext.get_current()
    context.enable_progress_bars = progress
    context.enable_operator_progress_bars = progress
    context.verbose_stats_logs = verbose
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.WARNING)

    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + uuid.uuid4().hex[:8]
    spec_dict = spec.model_dump(mode="json")
    committer = commit.Committer(spec.output.url, run_id, spec.storage_options, spec.failures.max_error_fraction)
    commit.publish(spec.output.url, spec.storage_options)  # rows a killed run committed, or an earlier layout
    items, resumed = _items(spec, info, run_id)
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

    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    use_gpus = cluster_gpus > 0 and spec.model.device != "cpu"
    actors = _actor_count(spec, cluster_gpus)

    class RayVideoGenerator(VideoGenerator):
        def __init__(self, spec: dict[str, Any]):
            super().__init__(spec)
            gpu_ids = ray.get_gpu_ids()
            self.placement.update(
                node_id=ray.get_runtime_context().get_node_id(),
                gpu_id=",".join(str(gpu) for gpu in gpu_ids) if gpu_ids else None,
            )

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
            fn_constructor_args=(spec_dict,),
            batch_format="pyarrow",
            batch_size=spec.compute.batch_size,
            compute=ActorPoolStrategy(size=actors),
            num_gpus=spec.compute.gpus_per_actor if use_gpus else 0,
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
    progress_line = Progress(expected, progress)
    try:
        for batch in rows.iter_batches(batch_format="pyarrow", batch_size=None):
            committer.add(batch)
            progress_line.update(committer.counts)
        return _finish(spec, run_id, committer, started)
    except commit.TooManyErrors as error:
        raise JobError(str(error)) from None
    except JobError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure that reaches here is fatal for the job
        committer.flush()
        raise JobError(_root_message(error)) from None


def _finish(spec: JobSpec, run_id: str, committer: commit.Committer, started: float) -> RunSummary:
    committer.finish()
    commit.publish(spec.output.url, spec.storage_options)
    counts = committer.counts
    summary = RunSummary(
        run_id=run_id,
        output=spec.output.url,
        rendered=counts.rendered,
        failed=counts.failed,
        skipped=counts.skipped,
        rerendered=counts.rerendered,
        wall_seconds=time.time() - started,
    )
    write_job_record(spec, summary, started)
    return summary


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("svdbatch", "torch", "diffusers", "transformers", "ray", "pyarrow", "fsspec"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def job_record(spec: JobSpec, summary: RunSummary, started: float) -> dict[str, Any]:
    """What ran, with which versions, when, and what came of it; storage secrets are redacted."""
    resolved = spec.model_dump(mode="json")
    resolved["storage_options"] = storage.redact(resolved["storage_options"])
    return {
        "run_id": summary.run_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
        "spec": resolved,
        "summary": {**asdict(summary), "videos_per_minute": summary.videos_per_minute},
    }


def write_job_record(spec: JobSpec, summary: RunSummary, started: float) -> None:
    """``_job/summary.json`` for the latest run, and ``_job/runs/{run_id}.json`` kept for every run."""
    data = json.dumps(job_record(spec, summary, started), indent=2).encode()
    storage.write_bytes(storage.join(spec.output.url, "_job", "summary.json"), data, spec.storage_options)
    storage.write_bytes(
        storage.join(spec.output.url, "_job", "runs", f"{summary.run_id}.json"), data, spec.storage_options
    )
