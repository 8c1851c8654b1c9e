"""The job's metrics as an operator's Prometheus sees them: the shared cluster's metrics endpoint scraped after the
session's ``observed_run`` (2 ok, 1 rejected, 1 failed), parsed with prometheus_client's parser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import run_total

DASHBOARD = Path(__file__).resolve().parents[1] / "cluster" / "grafana" / "svdbatch.json"


def test_svdbatch_metrics_equal_the_runs_counts(observed_run):
    samples, summary = observed_run.samples, observed_run.summary
    run = summary.run_id
    assert (summary.rendered, summary.rejected, summary.failed) == (2, 1, 1)
    videos = run_total(samples, "ray_svdbatch_videos_total", run, by="status")
    assert videos == {"ok": summary.rendered, "rejected": summary.rejected, "error": summary.failed}
    assert run_total(samples, "ray_svdbatch_errors_total", run, by="cause") == {"image": 1}
    assert run_total(samples, "ray_svdbatch_quality_rejections_total", run, by="gate") == {"min_first_frame_psnr": 1}
    assert run_total(samples, "ray_svdbatch_items_remaining", run) == 0
    for stage in ("load", "generate", "encode", "write"):  # one observation per generated video
        assert run_total(samples, f"ray_svdbatch_{stage}_seconds_count", run) == 3
    record = json.loads((observed_run.folder / "out" / "_job" / "summary.json").read_text())
    assert run_total(samples, "ray_svdbatch_model_load_seconds_count", run) == len(record["workers"]) == 1
    assert run_total(samples, "ray_svdbatch_actors_started_total", run, by="restarted") == {"false": 1}
    assert run_total(samples, "ray_svdbatch_gpu_seconds_total", run) == pytest.approx(summary.gpu_seconds, rel=1e-6)
    rows = pq.read_table(observed_run.folder / "out" / "metadata").to_pylist()
    nodes = {sample.labels["node_id"] for sample in samples["ray_svdbatch_generate_seconds_count"]}
    assert {row["node_id"] for row in rows if row["status"] == "ok"} <= nodes


def test_dashboard_names_only_metrics_the_exporter_emits(observed_run):
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    named = {name for query in queries for name in re.findall(r"\b(ray_[a-z_]+)\b", query)}
    assert {name.split("_")[1] for name in named} == {"svdbatch", "data"}  # ours and Ray Data's own
    assert named - set(observed_run.samples) == set()


def test_the_record_and_summary_carry_gpu_seconds_and_cost(observed_run):
    summary = observed_run.summary
    record = json.loads((observed_run.folder / "out" / "_job" / "summary.json").read_text())["summary"]
    assert summary.gpu_seconds > 0 and record["gpu_seconds_per_video"] == pytest.approx(summary.gpu_seconds / 3)
    assert record["cost"] == pytest.approx(summary.gpu_seconds / 3600 * 2.5)
    assert record["cost_per_video"] == pytest.approx(record["cost"] / 3)
    assert "CPU-s/video, $" in summary.line() and "seconds_unit" not in record  # the tiny model ran on a CPU
