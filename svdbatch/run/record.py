"""What a run reports, free of Ray and torch: the summary line, the progress line and the job record, which this
module writes (``_job/runs/{run_id}.json``) and reads back for the report and plan (``read_records``)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from svdbatch import storage
from svdbatch.estimate.gpu_time import flop_record
from svdbatch.estimate.learned import TUNE, timing_records
from svdbatch.model.provenance import package_version
from svdbatch.run.metrics import gpu_seconds as held_gpu_seconds
from svdbatch.spec.config import JobSpec
from svdbatch.store.committer import Counts

RUNS = "_job/runs"  # one record per run of an output: {run_id}.json
RUN_RECORDS = f"{RUNS}/*.json"
TUNE_RUN_RECORDS = f"{TUNE}/*/*/{RUN_RECORDS}"  # those of svdbatch tune's runs, one output per setting


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
    gpu_seconds: float = 0.0  # model loads and generation, x compute.gpus_per_actor
    price_per_gpu_hour: float | None = None
    seconds_unit: str = field(default="GPU-s", compare=False)  # what rendered: ``seconds_unit``; not in the record

    @property
    def videos_per_minute(self) -> float:
        return self.rendered / self.wall_seconds * 60 if self.wall_seconds else 0.0

    @property
    def gpu_seconds_per_video(self) -> float:
        """Per generated video (ok or rejected: both took their GPU time)."""
        generated = self.rendered + self.rejected
        return self.gpu_seconds / generated if generated else 0.0

    @property
    def cost(self) -> float | None:
        return None if self.price_per_gpu_hour is None else self.gpu_seconds / 3600 * self.price_per_gpu_hour

    @property
    def cost_per_video(self) -> float | None:
        return None if self.price_per_gpu_hour is None else self.gpu_seconds_per_video / 3600 * self.price_per_gpu_hour

    def costs(self) -> dict[str, float | None]:
        """The derived figures the job record and the report carry next to the summary's fields."""
        return {
            "videos_per_minute": self.videos_per_minute,
            "gpu_seconds_per_video": self.gpu_seconds_per_video,
            "cost_per_video": self.cost_per_video,
            "cost": self.cost,
        }

    def line(self) -> str:
        return (
            f"svdbatch: {self.rendered} ok, {f'{self.rejected} rejected, ' if self.rejected else ''}"
            f"{self.failed} failed, {self.skipped} already done"
            f"{f' ({self.rerendered} re-rendered: changed or failed before)' if self.rerendered else ''}"
            f"{f', {self.removed} removed' if self.removed else ''}"
            f" in {self.wall_seconds:.1f}s ({self._rate()}) -> {self.output}"
        )

    def _rate(self) -> str:
        """A rate only when videos were rendered: a rerun with nothing to do is not '0.0 videos/min'."""
        if self.rendered:
            return f"{self.videos_per_minute:.1f} videos/min{self._spent()}"
        return "no video rendered" if self.failed or self.rejected else "nothing to render"

    def _spent(self) -> str:
        """Device-seconds per video when measured (GPU-s, or CPU-s when the run rendered on CPUs), and with a price
        the cost per video and of the run."""
        if not self.gpu_seconds:
            return ""
        spent = f", {self.gpu_seconds_per_video:.1f} {self.seconds_unit}/video"
        if self.price_per_gpu_hour is None:
            return spent
        return f"{spent}, {money(self.cost_per_video)}/video, {money(self.cost)} in all"


def seconds_unit(environments: list[dict[str, str]]) -> str:
    """What a run's device-seconds were, from the provenance of what rendered (``gpu_name`` is "cpu" on a CPU):
    GPU-s or CPU-s when every environment agrees, device-s when they are mixed or the record has none (formats.py)."""
    kinds = {"CPU" if environment.get("gpu_name") == "cpu" else "GPU" for environment in environments}
    return f"{kinds.pop()}-s" if len(kinds) == 1 else "device-s"


def money(amount: float) -> str:
    """Cents for sums of a dollar or more; three significant digits below (a tiny video costs $0.000412)."""
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.3g}"


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

    def line(self, counts: Counts, now: float) -> str:
        done = counts.rendered + counts.rejected + counts.failed
        rate = done / max(now - self.started, 1e-9)
        left = max(0, self.total - done)
        eta = f"{left / rate / 60:.1f} min" if rate else "unknown"
        return f"svdbatch: {done}/{self.total} items ({counts.failed} failed), {rate * 60:.1f}/min, ETA {eta}"

    def update(self, counts: Counts) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every_s:
            return
        self.last = now
        print(self.line(counts, now), file=sys.stderr, flush=True)


def summarize(
    spec: JobSpec, run_id: str, counts: Counts, started: float, workers: list[dict[str, Any]], family: str = "svd"
) -> RunSummary:
    """The run's summary, written with its job record (``write_job_record``) before it is returned."""
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
        gpu_seconds=gpu_seconds(spec, counts, workers),
        price_per_gpu_hour=spec.compute.price_per_gpu_hour,
        seconds_unit=seconds_unit(counts.environments),
    )
    record = job_record(spec, summary, started, counts.environments, workers, family)
    record["timings"] = timing_records(counts.timings)  # seconds per video by setting: what plan learns from
    write_job_record(spec, record)
    return summary


def gpu_seconds(spec: JobSpec, counts: Counts, workers: list[dict[str, Any]]) -> float:
    """The GPUs held while the actors loaded the model and generated, as metrics.py counts them in each actor."""
    loads = sum(worker["load_seconds"] for worker in workers)
    return held_gpu_seconds(loads + counts.generate_seconds, spec.compute.gpus_per_actor)


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
    family: str = "svd",
) -> dict[str, Any]:
    """What ran, with which versions, when, and what came of it; storage secrets are redacted.

    ``versions`` are the driver's; ``environments`` the distinct GPU/CUDA/driver/library sets that rendered;
    ``workers`` each generation actor's node, GPU, model load time and when it was ready (seconds after the start);
    ``flops`` what an SVD video at the spec's render defaults costs (one UNet branch a step when guidance is off;
    null for the other families, whose count ``svdbatch plan`` makes from the model's configs).
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
        "summary": {**asdict(summary, dict_factory=_recorded), **summary.costs()},
        "workers": workers or [],
        "model_copies": model_copies(workers or []),
        "flops": flop_record(spec) if family == "svd" else None,
    }


def _recorded(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    """A summary's fields as the record keeps them: the unit is not kept, readers name it from ``environments``."""
    return {name: value for name, value in fields if name != "seconds_unit"}


def write_job_record(spec: JobSpec, record: dict[str, Any]) -> None:
    """``_job/summary.json`` for the latest run, and ``_job/runs/{run_id}.json`` kept for every run."""
    data = json.dumps(record, indent=2).encode()
    storage.write_bytes(storage.join(spec.output.url, "_job", "summary.json"), data, spec.storage_options)
    storage.write_bytes(storage.join(spec.output.url, RUNS, f"{record['run_id']}.json"), data, spec.storage_options)


def read_records(output: str, options: dict[str, Any], pattern: str = RUN_RECORDS) -> list[dict[str, Any]]:
    """The run records under ``output`` that ``pattern`` names (every run's by default; ``TUNE_RUN_RECORDS``: tune's),
    in the order of their names (a run id starts with its start time)."""
    fs, root = storage.filesystem(output, options)
    fs.invalidate_cache(root)  # a listing this process cached (a run's own, an earlier read) would hide new records
    names = storage.retrying(lambda: fs.glob(f"{root.rstrip('/')}/{pattern}"), options)
    return [json.loads(storage.retrying(lambda name=name: fs.cat_file(name), options)) for name in sorted(names)]


def read_timings(output: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Every timing of the output's run records and of tune's, each with ``tune``: whether tune measured it (what
    plan learns from: ``learned.measured``)."""
    return [
        {**timing, "tune": pattern == TUNE_RUN_RECORDS}
        for pattern in (RUN_RECORDS, TUNE_RUN_RECORDS)
        for record in read_records(output, options, pattern)
        for timing in record.get("timings", [])
    ]
