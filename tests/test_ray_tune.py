"""``svdbatch tune`` on 3 items x 3 settings (conftest.tune_run): its table, its files, and what plan learns."""

from __future__ import annotations

import json

from svdbatch.cli import main
from svdbatch.cli.tune import sample_keys


def test_tune_prints_one_line_per_setting_and_writes_table_page_and_previews(tune_run):
    lines = tune_run["out"].splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("setting "))) :]
    assert [line.split()[0] for line in table[1:4]] == [
        "reference",
        "render.num_inference_steps=1",
        "model.step_cache.enabled=true",
    ]
    assert all("n/a (CPU)" in line and "(ref)" in line for line in table[1:2])
    assert table[4] == f"page: {tune_run['tune'] / 'index.html'}"
    found = json.loads((tune_run["tune"] / "tune.json").read_text())
    assert [line["videos"] for line in found] == [3, 3, 3]
    assert all(line["seconds_per_video"] > 0 and line["peak_gpu_bytes"] is None for line in found)
    reference, fewer_steps, cached = found
    assert reference["psnr"] == 100 and reference["ssim"] == 1  # the reference against itself
    assert fewer_steps["pflop_per_video"] < cached["pflop_per_video"] < reference["pflop_per_video"]
    for other in (fewer_steps, cached):  # other frames, still close to the reference's
        assert 15 < other["psnr"] < 100 and 0 < other["ssim"] < 1
    assert len(list((tune_run["tune"] / "previews").glob("s*/*.mp4"))) == 9


def test_tune_samples_by_key_and_leaves_the_job_output_alone(tune_run):
    keys = [f"item-{index:03d}" for index in range(4)]
    assert sample_keys(keys, 3) == sample_keys(list(reversed(keys)), 3)
    import pyarrow.parquet as pq

    sampled = pq.read_table(tune_run["tune"] / "sample.parquet")["key"].to_pylist()
    assert sorted(sampled) == sorted(sample_keys(keys, 3))
    assert sorted(path.name for path in (tune_run["folder"] / "out").iterdir()) == ["_tune"]


def test_plan_uses_the_seconds_tune_measured_at_the_same_settings(tune_run, capsys):
    reference = json.loads((tune_run["tune"] / "tune.json").read_text())[0]
    assert main(["plan", str(tune_run["job"]), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"basis: measured at the same settings on cpu: {reference['seconds_per_video']:.3g} s per video" in out
    assert "(3 videos of svdbatch tune)" in out
