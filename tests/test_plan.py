"""``svdbatch plan``: the whole manifest checked and counted, through the same Ray join as a run, without a write."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from svdbatch.cli import main
from svdbatch.plan import seconds_per_video


def _job(tmp_path, rows: dict, **extra) -> str:
    pq.write_table(pa.table(rows), tmp_path / "m.parquet")
    spec = {"manifest": {"path": str(tmp_path / "m.parquet")}, "output": {"url": str(tmp_path / "out")}, **extra}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    return str(tmp_path / "job.yaml")


@pytest.mark.integration
def test_plan_reports_each_planted_problem_with_its_row(ray_cluster, tmp_path, capsys):
    job = _job(
        tmp_path,
        {
            "key": ["a", "b", None, "d", "d", "f"],
            "image": ["/i/a.png", "/i/b.png", "/i/c.png", "/i/d.png", "/i/d2.png", "http://x/f.png"],
            "fps": [7, -2, None, None, None, None],
        },
        seeds={"variants": 2},
    )
    assert main(["plan", job, "--gpus", "4"]) == 1
    out = capsys.readouterr().out
    assert "6 rows -> 7 items" in out  # a: 2 items; b, the null key, both d rows and f: one error item each
    assert "to render: 2 new" in out and "5 invalid" in out
    assert "  row 'b': column fps: -2 is not allowed" in out
    assert "  row with image '/i/c.png': column key is empty" in out
    assert out.count("  row 'd': key appears 2 times") == 2
    assert "  row 'f': image 'http://x/f.png': URI scheme 'http' is not allowed" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_plan_estimates_gpu_time_and_takes_a_measured_latency(ray_cluster, tmp_path, capsys):
    job = _job(tmp_path, {"key": [str(i) for i in range(100)], "image": [f"/i/{i}.png" for i in range(100)]})
    assert main(["plan", job, "--set", "model.source=stabilityai/stable-video-diffusion-img2vid-xt"]) == 0
    expected = 100 * seconds_per_video(
        {"width": 1024, "height": 576, "num_frames": 25, "num_inference_steps": 25}, "H100"
    )
    assert f"estimate: {expected / 3600:.1f} GPU-hours on H100" in capsys.readouterr().out
    assert main(["plan", job, "--seconds-per-video", "36", "--gpus", "2"]) == 0
    assert "estimate: 1.0 GPU-hours on H100; about 0.5 h wall on 2 GPU(s)" in capsys.readouterr().out


def test_svd_xt_latency_estimate_is_in_the_measured_range():
    seconds = seconds_per_video({"width": 1024, "height": 576, "num_frames": 25, "num_inference_steps": 25}, "A100")
    assert 30 < seconds < 90  # the public A100 demo takes about 60 s per video


def test_progress_line_shows_done_of_total_and_an_eta(capsys):
    from svdbatch.commit import Counts
    from svdbatch.pipeline import Progress

    progress = Progress(total=10, enabled=True, every_s=0)
    progress.update(Counts(rendered=3, failed=1))
    line = capsys.readouterr().err
    assert line.startswith("svdbatch: 4/10 items (1 failed),") and "ETA" in line
    Progress(total=10, enabled=False, every_s=0).update(Counts(rendered=3))
    assert capsys.readouterr().err == ""
