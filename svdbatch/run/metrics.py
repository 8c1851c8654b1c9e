"""The job's live metrics, free of Ray: which ``svdbatch_*`` metrics exist and what a batch of rows adds to them.

ray/meter.py turns ``METRICS`` into ``ray.util.metrics`` objects (each node's Ray metrics agent exports them on its
Prometheus endpoint, as ``ray_svdbatch_*``) and records the observations computed here where the rows already are:
the generation actor (stage seconds, GPU-seconds, model load, actor starts) and the driver, which counts every
finished row anyway (videos by status, errors by cause, quality rejections by gate, items remaining). No row makes a
trip for metrics alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from svdbatch.items.metadata import ERROR, REJECTED, SKIPPED, generated
from svdbatch.render.quality import failed_gates

RUN_TAGS = ("job", "run_id", "node_id")  # job: the output URL, shared by every run of one job
SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)
STAGES = ("load", "generate", "encode", "write")
ERROR_CAUSES = {"row": "manifest", "image": "image", "generate": "generate", "encode": "encode", "write": "write"}


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter, gauge or histogram: the ray.util.metrics class
    description: str
    tags: tuple[str, ...] = RUN_TAGS
    boundaries: tuple[float, ...] = ()


METRICS = [
    Metric(
        "svdbatch_videos_total",
        "counter",
        "Items finished, by status: ok, error, rejected, skipped (done before).",
        RUN_TAGS + ("status",),
    ),
    Metric(
        "svdbatch_errors_total",
        "counter",
        "Failed items, by cause: manifest, image, generate, encode, write.",
        RUN_TAGS + ("cause",),
    ),
    Metric(
        "svdbatch_quality_rejections_total", "counter", "Videos a quality gate rejected, by gate.", RUN_TAGS + ("gate",)
    ),
    Metric("svdbatch_items_remaining", "gauge", "Items of this run not finished yet."),
    *(
        Metric(f"svdbatch_{stage}_seconds", "histogram", f"Seconds per video spent in {stage}.", boundaries=SECONDS)
        for stage in STAGES
    ),
    Metric(
        "svdbatch_model_load_seconds",
        "histogram",
        "Seconds a generation actor took to load its pipeline.",
        boundaries=SECONDS,
    ),
    Metric(
        "svdbatch_gpu_seconds_total",
        "counter",
        "GPU-seconds: model loads and each video's share of its pipeline call, times compute.gpus_per_actor.",
    ),
    Metric(
        "svdbatch_actors_started_total",
        "counter",
        "Generation actors started; restarted=true: Ray restarted one that died (lost device or node).",
        RUN_TAGS + ("restarted",),
    ),
]


@dataclass(frozen=True)
class Observation:
    metric: str
    value: float
    tags: dict[str, str]


def gpu_seconds(held_seconds: float, gpus_per_actor: float) -> float:
    """GPU-seconds of the time generation actors held their GPUs: loading the model, and each generated video's
    share of its pipeline call (``generated`` rows), times ``compute.gpus_per_actor``. The metric counts them in
    each actor, the run record (record.py) sums the same for the whole run."""
    return held_seconds * gpus_per_actor


def error_cause(error: str | None) -> str:
    """The stage an error row failed in, from the first word of its text (every error names its stage first)."""
    first = (error or "").split(" ", 1)[0]
    return ERROR_CAUSES.get(first, "other")


def finished_observations(batch: pa.Table, gates: dict[str, Any], driver_node: str) -> list[Observation]:
    """What the finished rows of one batch add on the driver: videos by status and node, errors by cause, rejections
    by gate. Rows without a node (skipped, or failed before reaching an actor) count on the driver's node."""
    rows = batch.select(["status", "node_id", "error"]).to_pylist()
    by_status = Counter((row["status"], row["node_id"] or driver_node) for row in rows)
    seen = [
        Observation("svdbatch_videos_total", n, {"status": s, "node_id": node}) for (s, node), n in by_status.items()
    ]
    causes = Counter(
        (error_cause(row["error"]), row["node_id"] or driver_node) for row in rows if row["status"] == ERROR
    )
    seen += [Observation("svdbatch_errors_total", n, {"cause": c, "node_id": node}) for (c, node), n in causes.items()]
    rejected = batch.filter(pc.equal(batch["status"], REJECTED)).to_pylist()
    gated = Counter((gate, row["node_id"] or driver_node) for row in rejected for gate in failed_gates(row, gates))
    seen += [
        Observation("svdbatch_quality_rejections_total", n, {"gate": g, "node_id": nd}) for (g, nd), n in gated.items()
    ]
    return seen


def skipped_observations(count: int, driver_node: str) -> list[Observation]:
    """Items the resume decision found done: counted on the driver, where the decision's tally arrives."""
    return [Observation("svdbatch_videos_total", count, {"status": SKIPPED, "node_id": driver_node})] if count else []


def remaining_observation(expected: int, done: int) -> Observation:
    return Observation("svdbatch_items_remaining", max(0, expected - done), {})


def rendered_observations(batch: pa.Table, gpus_per_actor: float) -> list[Observation]:
    """What one generation call's rows add on the actor: each generated video's stage seconds and GPU-seconds."""
    columns = generated(batch).select([f"{stage}_seconds" for stage in STAGES]).to_pydict()
    seen = [
        Observation(f"svdbatch_{stage}_seconds", value, {})
        for stage in STAGES
        for value in columns[f"{stage}_seconds"]
        if value is not None
    ]
    generating = sum(value for value in columns["generate_seconds"] if value is not None)
    return seen + [Observation("svdbatch_gpu_seconds_total", gpu_seconds(generating, gpus_per_actor), {})]


def actor_start_observations(load_seconds: float, restarted: bool, gpus_per_actor: float) -> list[Observation]:
    """A generation actor ready: its model load time (GPU-seconds too: the GPU is held while it loads) and a start."""
    return [
        Observation("svdbatch_model_load_seconds", load_seconds, {}),
        Observation("svdbatch_gpu_seconds_total", gpu_seconds(load_seconds, gpus_per_actor), {}),
        Observation("svdbatch_actors_started_total", 1, {"restarted": str(restarted).lower()}),
    ]
