"""What a run reports, without Ray: the progress line and the summary line."""

from __future__ import annotations

from svdbatch.run.record import Progress, RunSummary
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
