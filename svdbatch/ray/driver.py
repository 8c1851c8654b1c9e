"""``svdbatch run`` and the Ray side of ``svdbatch plan``: everything that can fail for the whole job checked first
(``preflight``), then the run under the output's lease (lease.py): Ray started or joined, a prune, the resume
decision, the render (dataset.py's plan, iterated by watch.py's loop), every batch committed (committer.py) and counted
in the metrics as it streams back, and the touched buckets of {output}/metadata/ published at the end.

The driver holds no per-row state: what is done is decided by the join, the driver only counts. A stop signal
(stopping.py) halts Ray Data, commits and publishes what finished, and ends Ray. What a run reports lives in
record.py, the errors it raises in errors.py, what plan reports in plan_report.py.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

from svdbatch import storage
from svdbatch.errors import JobError, UserError, root_message
from svdbatch.estimate.plan_report import PlanReport
from svdbatch.items import manifest
from svdbatch.items.decide import TO_RENDER, Category
from svdbatch.items.metadata import SKIPPED
from svdbatch.model.families import spec_problems
from svdbatch.model.identity import model_family, model_identity
from svdbatch.ray import dataset, internals
from svdbatch.ray.cluster import prepare_pool, start_ray, start_workers
from svdbatch.ray.meter import RayMetrics
from svdbatch.ray.watch import watched
from svdbatch.render.feed import TALLY_COLUMNS, PruneRows, ResumeRows, RunContext, TallyItems, count_work
from svdbatch.run import metrics, record, stopping
from svdbatch.run.record import Progress, RunSummary
from svdbatch.run.watchdog import Watchdog
from svdbatch.spec.config import JobSpec
from svdbatch.store import commit, lease
from svdbatch.store.committer import Committer, TooManyErrors

MAX_PROBLEMS = 20


def preflight(spec: JobSpec, write: bool = True) -> tuple[manifest.ManifestInfo, str, str]:
    """Everything that can fail for the whole job is checked here, before any image is read or GPU is used, within
    ``storage.PREFLIGHT_S``: a store that does not answer is named in one line, not waited on.

    Returns the manifest's facts, the model's identity (``model.model_identity``, one listing of its files) and its
    family (``model.model_family``), whose render parameters the spec's must suit.
    ``write``: the output must be writable (run); else only reachable (plan writes nothing).
    """

    def checks() -> tuple[manifest.ManifestInfo, str, str]:
        info = manifest.inspect(spec)
        identity = model_identity(spec.model, spec.storage_options)
        family = model_family(spec.model, spec.storage_options)
        problems = spec_problems(spec, family)
        if problems:
            raise UserError(f"model.source {spec.model.source} is {family}: {'; '.join(problems)}")
        if write:
            storage.check_writable(spec.output.url, spec.storage_options)
        else:
            storage.check_readable(spec.output.url, spec.storage_options)
        return info, identity, family

    try:
        return storage.within(checks, spec.storage_options)
    except UserError as error:
        raise JobError(str(error)) from error


def plan(spec: JobSpec, info: manifest.ManifestInfo, identity: str, family: str = "svd") -> PlanReport:
    """Expand and decide the whole manifest as a run would (no images, no model): items per category and render
    shape, the first problems, and how many committed items left the manifest (what ``output.prune`` removes)."""
    committed = dataset.read_committed(spec)  # read once: the resume join and the prune anti-join see the same state
    removals = dataset.removals(spec, info, committed)
    items, _ = dataset.joined_items(spec, info, RunContext("plan", info.duplicate_keys, identity, family), committed)
    tallies = dataset.decided(items, TallyItems(spec, MAX_PROBLEMS).__call__).take_all()
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
    report.to_remove = dataset.row_count(removals)
    return report


def run(
    spec: JobSpec,
    *,
    verbose: bool = False,
    progress: bool = True,
    cli: bool = False,
    take_over: bool = False,
    lease_wait_s: float | None = None,
) -> RunSummary:
    """Run one job to completion and return its summary; raises JobError with one line on fatal problems.

    ``cli``: this process is the svdbatch command, so its stderr is the user's terminal or log and Ray's native
    notices are filtered out of it (``console.filter_native_notices``) unless ``verbose``.

    The run holds the output's lease (lease.py) from before Ray starts until it ends, however it ends. A holder
    elsewhere is waited for up to ``lease_wait_s`` (None: one TTL plus lease.WAIT_MARGIN_S); a live holder makes it
    refuse in one line, unless ``take_over``.
    """
    started = time.time()
    info, identity, family = preflight(spec)
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + uuid.uuid4().hex[:8]
    wait_s = spec.lease.ttl_s + lease.WAIT_MARGIN_S if lease_wait_s is None else lease_wait_s
    held = lease.acquire(spec.output.url, spec.storage_options, run_id, spec.lease.ttl_s, take_over, wait_s)
    held.keep()
    committer = Committer(spec.output.url, run_id, spec.storage_options, spec.failures.max_error_fraction)
    try:
        start_ray(verbose, progress, cli)
        # Rows a killed run committed (its orphan shards are removed here), or a table 1 (svdbatch/formats.py).
        commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)
        if spec.output.prune:
            _prune(spec, info, run_id, committer)
        context = RunContext(run_id, info.duplicate_keys, identity, family)
        items, expected = _to_render(spec, info, context, committer)
        meter = RayMetrics(spec, run_id)
        meter.record(metrics.skipped_observations(committer.counts.skipped, meter.node_id))
        try:
            worker_records = _render(spec, items, expected, committer, started, progress, meter) if expected else []
            committer.finish()
        except TooManyErrors as error:
            raise JobError(str(error)) from error
        held.check()  # publish only while this run still holds the output
        commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)
        return record.summarize(spec, run_id, committer.counts, started, worker_records, family)
    except stopping.Stopped as stop:
        raise stopping.Stopped(stop.signum, _stopped(spec, committer, held)) from None
    except BaseException as error:
        if held.lost is None or held.lost is error:
            raise
        # A lost lease stops the run by interrupting this thread (Lease.keep): the reason is the lost lease.
        raise held.lost from error
    finally:
        held.release()


def _stopped(spec: JobSpec, committer: Committer, held: lease.Lease) -> int:
    """After a stop signal: halt Ray Data, commit and publish what finished, and end Ray before the process exits
    (its threads print tracebacks when Ray goes away under them). Returns the videos this run committed."""
    import ray

    try:
        internals.halt_executions()
        committer.flush()
        held.check()
        commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)
    finally:
        ray.shutdown()
    return committer.counts.rendered


def _prune(spec: JobSpec, info: manifest.ManifestInfo, run_id: str, committer: Committer) -> None:
    """Delete the videos of items that left the manifest and commit their rows as ``removed``, then publish, so the
    resume join reads one row per item."""
    import ray

    removals = dataset.removals(spec, info, dataset.read_committed(spec))
    if not removals:
        return
    pruned = ray.data.from_arrow_refs(removals).map_batches(PruneRows(spec, run_id).__call__, batch_format="pyarrow")
    for batch in pruned.iter_batches(batch_format="pyarrow", batch_size=None):
        committer.add_removed(batch)
    commit.publish(spec.output.url, spec.storage_options, spec.output.shards.enabled)


def _to_render(spec: JobSpec, info: manifest.ManifestInfo, run: RunContext, committer: Committer):
    """The items to render (and error rows) and how many; the done ones are only counted."""
    committed = dataset.read_committed(spec)  # after a prune's publish: one row per item
    items, resumed = dataset.joined_items(spec, info, run, committed)
    if not resumed:
        return items, info.rows * spec.seeds.variants
    items = dataset.decided(items, ResumeRows(spec).__call__).materialize()
    tallies = dataset.tasks(items, count_work, batch_size=None).take_all()
    committer.counts.skipped = sum(tally["skipped"] for tally in tallies)
    return items.filter(expr=f"status != '{SKIPPED}'"), sum(tally["to_render"] for tally in tallies)


def _render(
    spec: JobSpec,
    items,
    expected: int,
    committer: Committer,
    started: float,
    progress: bool,
    meter: RayMetrics,
) -> list[dict[str, Any]]:
    """Images -> videos -> metadata rows (and shards), committed and counted in the metrics as they stream back,
    watched while they come.

    Returns what each generation actor reported when it was ready (the records of the job's ``Workers`` actor)."""
    import ray

    gpu, pool = prepare_pool(spec)
    workers_actor = start_workers()
    progress_line = Progress(expected, progress)
    gates = spec.quality.model_dump()
    meter.record([metrics.remaining_observation(expected, 0)])
    try:
        rows = dataset.video_rows(spec, items, gpu, pool, workers_actor, started, committer.run_id)
        watchdog = Watchdog(spec.compute, gpu, pool.initial, time.monotonic())
        with stopping.polled():
            batches = rows.iter_batches(batch_format="pyarrow", batch_size=None)
            for batch in watched(batches, watchdog, workers_actor, progress):
                committer.add(batch)
                progress_line.update(committer.counts)
                done = committer.counts.rendered + committer.counts.rejected + committer.counts.failed
                finished = metrics.finished_observations(batch, gates, meter.node_id)
                meter.record([*finished, metrics.remaining_observation(expected, done)])
        return ray.get(workers_actor.records.remote())
    except (JobError, TooManyErrors):
        raise
    except Exception as error:  # noqa: BLE001 - any failure that reaches here is fatal for the job
        committer.flush()
        raise JobError(root_message(error)) from error
    finally:
        # The finished plan holds this handle until Python's cycle collector frees it: the actor would outlive the run.
        ray.kill(workers_actor)
