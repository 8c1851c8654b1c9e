"""What a run reports, without Ray: the progress line, the summary line and the run record read back."""

from __future__ import annotations

import time

from svdbatch.run.record import (
    TUNE_RUN_RECORDS,
    Progress,
    RunSummary,
    job_record,
    read_records,
    read_timings,
    seconds_unit,
    write_job_record,
)
from svdbatch.spec.load import build_spec
from svdbatch.store.committer import Counts


def test_progress_line_shows_done_of_total_and_an_eta(capsys):
    progress = Progress(total=10, enabled=True, every_s=0)
    progress.update(Counts(rendered=3, failed=1))
    line = capsys.readouterr().err
    assert line.startswith("svdbatch: 4/10 items (1 failed),") and "ETA" in line
    Progress(total=10, enabled=False, every_s=0).update(Counts(rendered=3))
    assert capsys.readouterr().err == ""


def test_summary_line_gives_a_rate_only_when_videos_were_rendered():
    def line(rendered: int, failed: int = 0) -> str:
        return RunSummary("r", "/out", rendered, failed, 12, 0, 0, wall_seconds=30.0).line()

    assert "(20.0 videos/min)" in line(10)
    assert line(0).endswith("in 30.0s (nothing to render) -> /out")
    assert "(no video rendered)" in line(0, failed=2)


def test_summary_line_gives_gpu_seconds_per_video_and_with_a_price_the_cost():
    spent = RunSummary("r", "/out", 3, 0, 0, 0, 0, wall_seconds=30.0, rejected=1, gpu_seconds=40.0)
    assert "(6.0 videos/min, 10.0 GPU-s/video) -> /out" in spent.line() and spent.cost is None
    priced = RunSummary(
        "r", "/out", 3, 0, 0, 0, 0, wall_seconds=30.0, rejected=1, gpu_seconds=7200.0, price_per_gpu_hour=2.5
    )
    assert priced.cost == 5.0 and priced.cost_per_video == 1.25
    assert "1800.0 GPU-s/video, $1.25/video, $5.00 in all)" in priced.line()


def test_summary_line_names_cpu_seconds_when_the_run_rendered_on_cpus():
    unit = seconds_unit([{"gpu_name": "cpu"}])  # what summarize passes for a run whose rows say they ran on a CPU
    spent = RunSummary("r", "/out", 3, 0, 0, 0, 0, wall_seconds=30.0, gpu_seconds=30.0, seconds_unit=unit)
    assert "10.0 CPU-s/video) -> /out" in spent.line() and "GPU-s" not in spent.line()


def test_the_record_keeps_the_summary_fields_without_the_unit(tmp_path):
    spec = build_spec({"manifest": {"path": "m.parquet"}, "output": {"url": str(tmp_path / "out")}})
    summary = RunSummary("r", spec.output.url, 3, 0, 0, 0, 0, wall_seconds=30.0, gpu_seconds=3.0, seconds_unit="CPU-s")
    written = job_record(spec, summary, time.time(), [{"gpu_name": "cpu"}])
    write_job_record(spec, written)
    [record] = read_records(spec.output.url, {})
    assert record["summary"]["gpu_seconds_per_video"] == 1.0 and "seconds_unit" not in record["summary"]
    assert read_records(spec.output.url, {}, TUNE_RUN_RECORDS) == [] and read_timings(spec.output.url, {}) == []
