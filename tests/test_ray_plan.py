"""``svdbatch plan``: the whole manifest checked and counted, through the same Ray join as a run, without a write."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from svdbatch.cli import main
from svdbatch.estimate.gpu_time import (
    GPU_TFLOPS,
    REFERENCE,
    UNET_FLOP_CACHED_STEP,
    UNET_FLOP_PER_STEP,
    VAE_FLOP,
    duration,
    seconds_per_video,
    tiny_seconds,
)
from svdbatch.spec.config import StepCacheSpec


def _job(tmp_path, rows: dict, **extra) -> str:
    pq.write_table(pa.table(rows), tmp_path / "m.parquet")
    spec = {"manifest": {"path": str(tmp_path / "m.parquet")}, "output": {"url": str(tmp_path / "out")}, **extra}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    return str(tmp_path / "job.yaml")


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


def test_plan_estimates_gpu_time_as_a_range_and_takes_a_measured_latency(ray_cluster, tmp_path, capsys):
    job = _job(tmp_path, {"key": [str(i) for i in range(100)], "image": [f"/i/{i}.png" for i in range(100)]})
    assert main(["plan", job, "--set", "model.source=stabilityai/stable-video-diffusion-img2vid-xt"]) == 0
    fast, typical = seconds_per_video(REFERENCE, GPU_TFLOPS["H100"], StepCacheSpec())
    out = capsys.readouterr().out
    assert f"estimate: {duration(100 * fast)} to {duration(100 * typical)} of GPU time on H100" in out
    assert "25 of 25 UNet steps in full" in out and "TensorRT on an A100 SXM 32.2 s" in out
    assert "assumed: --gpu H100 --gpus 8 (not given: pass your cluster's)" in out
    assert main(["plan", job, "--seconds-per-video", "36", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "estimate: 1.0 h of GPU time on H100; about 30.0 min wall on 2 GPU(s)" in out
    assert "assumed: --gpu H100 (not given" in out


def test_plan_shows_small_jobs_in_minutes_or_seconds(ray_cluster, tmp_path, capsys):
    job = _job(tmp_path, {"key": ["a", "b"], "image": ["/i/a.png", "/i/b.png"]})
    assert main(["plan", job, "--set", "render.width=64", "--set", "render.height=64"]) == 0
    out = capsys.readouterr().out  # the tiny model on CPU, scaled to 64x64, 25 frames, 25 steps
    assert f"estimate: {duration(2 * tiny_seconds({**REFERENCE, 'width': 64, 'height': 64}))} of generation" in out
    assert "(--gpu and --gpus do not apply)" in out and "assumed" not in out
    assert main(["plan", job, "--seconds-per-video", "90", "--gpus", "1"]) == 0
    assert "estimate: 3.0 min of GPU time" in capsys.readouterr().out
    assert [duration(s) for s in (0.04, 59.9, 60, 3599, 3600, 10**6)] == [
        "0.0 s", "59.9 s", "1.0 min", "60.0 min", "1.0 h", "277.8 h"
    ]


def test_plan_takes_more_gpu_kinds_and_any_gpu_by_its_tflops(ray_cluster, tmp_path, capsys):
    job = _job(tmp_path, {"key": ["a"], "image": ["/i/a.png"]})
    svd = ["--set", "model.source=stabilityai/stable-video-diffusion-img2vid-xt"]
    assert {"L4", "A10G", "L40S", "H200", "A100-40", "A100-80", "V100", "T4", "RTX4090"} <= set(GPU_TFLOPS)
    for kind in ("L4", "RTX4090"):
        assert main(["plan", job, "--gpu", kind, *svd]) == 0
        assert f"of GPU time on {kind}" in capsys.readouterr().out
    assert main(["plan", job, "--gpu", "B1000", *svd]) == 2
    assert "--gpu B1000: unknown GPU kind" in capsys.readouterr().err
    assert main(["plan", job, "--gpu", "B1000", "--tflops", "2000", *svd]) == 0
    out = capsys.readouterr().out
    fast, typical = seconds_per_video(REFERENCE, 2000, StepCacheSpec())
    assert f"estimate: {duration(fast)} to {duration(typical)} of GPU time on B1000" in out
    assert "B1000's 2000 dense fp16 TFLOP/s" in out


def test_step_cache_lowers_the_estimate_by_its_unet_flops(ray_cluster, tmp_path, capsys):
    job = _job(tmp_path, {"key": ["a"], "image": ["/i/a.png"]})
    svd = ["--set", "model.source=stabilityai/stable-video-diffusion-img2vid-xt"]
    assert main(["plan", job, *svd, "--set", "model.step_cache.enabled=true"]) == 0
    assert "7 of 25 UNet steps in full" in capsys.readouterr().out
    off = seconds_per_video(REFERENCE, 312, StepCacheSpec())
    on = seconds_per_video(REFERENCE, 312, StepCacheSpec(enabled=True))
    expected = (UNET_FLOP_PER_STEP * 25 + VAE_FLOP) / (UNET_FLOP_PER_STEP * 7 + UNET_FLOP_CACHED_STEP * 18 + VAE_FLOP)
    assert abs(off[1] / on[1] - expected) < 1e-9 and on[0] < on[1]


def test_plan_names_each_reason_and_what_prune_would_remove(ray_cluster, tmp_path, capsys):
    import yaml

    from svdbatch.cli import main

    (tmp_path / "a.png").write_bytes(b"a")
    pq.write_table(pa.table({"key": ["a"], "image": [str(tmp_path / "a.png")]}), tmp_path / "m.parquet")
    spec = {"manifest": {"path": str(tmp_path / "m.parquet")}, "output": {"url": str(tmp_path / "out")}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    assert main(["plan", str(tmp_path / "job.yaml")]) == 0
    out = capsys.readouterr().out
    assert "to render: 1 new, 0 changed spec, 0 source changed, 0 model changed, 0 failed before" in out
    assert "to remove: 0 no longer in the manifest (kept: output.prune is off; run --prune to remove them)" in out
    assert main(["plan", str(tmp_path / "job.yaml"), "--prune"]) == 0
    assert "to remove: 0 no longer in the manifest\n" in capsys.readouterr().out


def test_guidance_off_halves_the_unet_flops_per_video(ray_cluster, tmp_path, capsys):
    """diffusers runs one UNet branch when max_guidance_scale <= 1: plan counts one."""
    job = _job(tmp_path, {"key": ["a"], "image": ["/i/a.png"]})
    svd = ["--set", "model.source=stabilityai/stable-video-diffusion-img2vid-xt"]
    unet = []
    for guidance in ([], ["--set", "render.max_guidance_scale=1"]):
        assert main(["plan", job, *svd, *guidance]) == 0
        out = capsys.readouterr().out
        unet.append(float(out.split("; UNet ")[1].split(" PFLOP")[0]))
    assert unet == [4.0, 2.0] and "1 branch a step: guidance off" in out


def test_plan_counts_an_ltx_video_from_the_models_own_configs(ray_cluster, tmp_path, capsys):
    """A folder holding LTX-Video 2B's full-size configs and no weights: plan counts a video on the meta device at
    the job's shape, and turns the count into GPU time. (Wan's count is the same code, 12 s a shape here.)"""
    import json

    from svdbatch.estimate.gpu_time import utilisation
    from svdbatch.model import ltx

    folder = tmp_path / "ltx-2b"
    for component, config in (("transformer", ltx.LTX_2B), ("vae", ltx.LTX_VAE)):
        (folder / component).mkdir(parents=True)
        (folder / component / "config.json").write_text(json.dumps({"_class_name": component, **config}))
    index = {"_class_name": ltx.PIPELINE, "transformer": ["diffusers", "x"], "vae": ["diffusers", "y"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    render = {"width": 704, "height": 512, "num_frames": 121, "num_inference_steps": 40, "fps": 24}
    job = _job(tmp_path, {"key": ["a", "b"], "image": ["/i/a.png", "/i/b.png"]}, model={"source": str(folder)})
    assert main(["plan", job, *(f"--set=render.{name}={value}" for name, value in render.items()), "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    counted = ltx.video_flops(ltx.LTX_2B, ltx.LTX_VAE, 704, 512, 121, 40, ltx.GUIDANCE_SCALE)
    assert (
        f"basis: {counted['total'] / 1e15:.2f} PFLOP per video at 704x512, 121 frames, 40 steps (2 branches a step: "
        f"guidance on; transformer step {counted['transformer_step'] / 1e12:.1f} TFLOP" in out
    )
    assert "counted on the meta device from model.source's transformer and VAE configs" in out
    fast, typical = (counted["total"] / (GPU_TFLOPS["H100"] * 1e12 * share) for share in utilisation())
    assert f"estimate: {duration(2 * fast)} to {duration(2 * typical)} of GPU time on H100" in out


def test_plan_of_a_tiny_ltx_job_estimates_its_cpu_seconds(ray_cluster, tmp_path, capsys):
    from svdbatch.estimate.family_cost import tiny_family_seconds

    job = _job(tmp_path, {"key": ["a"], "image": ["/i/a.png"]}, model={"source": "svdbatch:tiny-ltx"})
    render = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 4}
    assert main(["plan", job, *(f"--set=render.{name}={value}" for name, value in render.items())]) == 0
    out = capsys.readouterr().out
    assert f"estimate: {duration(tiny_family_seconds({**render, 'guidance_scale': 3.0}, 'ltx'))} of generation" in out
    assert "basis: the embedded tiny ltx model (random weights) took" in out
