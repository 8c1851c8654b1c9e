"""What a batch of rows adds to the svdbatch_* metrics (metrics.py), without Ray."""

from __future__ import annotations

import pyarrow as pa

from svdbatch.items.metadata import METADATA_SCHEMA
from svdbatch.run import metrics


def _rows(*rows: dict) -> pa.Table:
    names = METADATA_SCHEMA.names
    return pa.Table.from_pylist([{name: row.get(name) for name in names} for row in rows], schema=METADATA_SCHEMA)


BATCH = _rows(
    {
        "status": "ok",
        "node_id": "n1",
        "load_seconds": 0.1,
        "generate_seconds": 2.0,
        "encode_seconds": 0.3,
        "write_seconds": 0.05,
    },
    {
        "status": "rejected",
        "node_id": "n1",
        "error": "rejected: first-frame PSNR 5.7 < quality.min_first_frame_psnr=8",
        "first_frame_psnr": 5.7,
        "motion_mean": 25.0,
        "load_seconds": 0.1,
        "generate_seconds": 2.0,
        "encode_seconds": 0.3,
        "write_seconds": 0.05,
    },
    {"status": "error", "node_id": "n2", "error": "image 'x.png' (key 'x'): not found", "load_seconds": 0.01},
    {"status": "error", "error": "row 'k': key appears 2 times in the manifest; keys must be unique"},
)


def _by(observations, metric: str, tag: str) -> dict:
    return {seen.tags[tag]: seen.value for seen in observations if seen.metric == metric}


def test_the_driver_counts_videos_by_status_and_node_errors_by_cause_and_rejections_by_gate():
    seen = metrics.finished_observations(BATCH, {"min_first_frame_psnr": 8.0}, "driver")
    videos = {(o.tags["status"], o.tags["node_id"]): o.value for o in seen if o.metric == "svdbatch_videos_total"}
    assert videos == {("ok", "n1"): 1, ("rejected", "n1"): 1, ("error", "n2"): 1, ("error", "driver"): 1}
    assert _by(seen, "svdbatch_errors_total", "cause") == {"image": 1, "manifest": 1}
    assert _by(seen, "svdbatch_quality_rejections_total", "gate") == {"min_first_frame_psnr": 1}


def test_the_actor_observes_each_generated_videos_seconds_and_its_gpu_seconds():
    seen = metrics.rendered_observations(BATCH, gpus_per_actor=0.5)
    for stage in metrics.STAGES:
        assert len([o for o in seen if o.metric == f"svdbatch_{stage}_seconds"]) == 2  # ok and rejected, not errors
    assert [o.value for o in seen if o.metric == "svdbatch_gpu_seconds_total"] == [2.0]


def test_an_actor_start_counts_its_load_as_gpu_seconds_and_says_whether_ray_restarted_it():
    seen = metrics.actor_start_observations(4.0, restarted=True, gpus_per_actor=2.0)
    assert {o.metric: o.value for o in seen}["svdbatch_gpu_seconds_total"] == 8.0
    assert _by(seen, "svdbatch_actors_started_total", "restarted") == {"true": 1}


def test_every_metric_is_named_svdbatch_and_tagged_by_job_run_and_node():
    for metric in metrics.METRICS:
        assert metric.name.startswith("svdbatch_") and metric.tags[:3] == ("job", "run_id", "node_id")
    assert metrics.error_cause(None) == "other" and metrics.error_cause("encode 'k' v0: boom") == "encode"
