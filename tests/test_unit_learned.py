"""What plan learns from earlier runs and tune (learned.py), and its wall time; no Ray."""

from __future__ import annotations

import json

import pytest

from svdbatch.cli.plan import learned_basis, learned_seconds
from svdbatch.estimate.gpu_time import GPU_TFLOPS, wall_seconds
from svdbatch.estimate.learned import add_timing, gpu_kind, same_gpu, timing_records, warm_seconds
from svdbatch.model.loading import applied_options
from svdbatch.spec.load import build_spec

SVD = "stabilityai/stable-video-diffusion-img2vid-xt"
SHAPE = {"width": 1024, "height": 576, "num_frames": 25, "num_inference_steps": 25, "max_guidance_scale": 3.0}


def test_wall_time_is_whole_rounds_of_one_video_per_gpu():
    one = {**SHAPE, "items": 1}
    assert wall_seconds([one], [14.0], 8) == 14.0  # 1 video on 8 GPUs: one video's time, not 1/8 of it
    assert wall_seconds([{**SHAPE, "items": 9}], [14.0], 8) == 28.0
    assert wall_seconds([{**SHAPE, "items": 16}, one], [14.0, 2.0], 8) == 30.0


def test_gpu_names_match_the_most_specific_kind():
    kinds = list(GPU_TFLOPS)
    assert gpu_kind("NVIDIA H100 80GB HBM3", kinds) == "H100"
    assert gpu_kind("NVIDIA H100 PCIe", kinds) == "H100-PCIe"
    assert gpu_kind("NVIDIA A100-SXM4-80GB", kinds) == "A100-80"
    assert same_gpu("H100", "NVIDIA H100 80GB HBM3", GPU_TFLOPS)
    assert not same_gpu("H100", "NVIDIA H100 PCIe", GPU_TFLOPS)  # another peak: not the same GPU
    assert not same_gpu("H100", "NVIDIA H200", GPU_TFLOPS)
    assert same_gpu("A100", "NVIDIA A100-SXM4-80GB", GPU_TFLOPS)  # the same peak
    assert same_gpu("MI300X", "AMD Instinct MI300X", GPU_TFLOPS)  # --gpu MI300X --tflops ...


def _record(folder, spec, gpu_name: str, seconds: list[float], **render) -> None:
    timings: dict = {}
    for value in seconds:
        row = {
            **SHAPE,
            **render,
            "gpu_name": gpu_name,
            "model_identity": "svd-xt@abc",
            "model_dtype": "fp16",
            "model_options": json.dumps(applied_options(spec.model, "cuda"), sort_keys=True),
            "generate_seconds": value,
        }
        add_timing(timings, row)
    folder.mkdir(parents=True)
    (folder / "r.json").write_text(json.dumps({"timings": timing_records(timings)}))


def test_plan_learns_seconds_per_video_from_earlier_runs_and_tune(tmp_path):
    spec = build_spec({"manifest": {"path": "m.parquet"}, "output": {"url": str(tmp_path)}, "model": {"source": SVD}})
    _record(tmp_path / "_job" / "runs", spec, "NVIDIA H100 80GB HBM3", [90.0, 12.0, 14.0])  # first call: compile
    _record(tmp_path / "_tune" / "t1" / "s0" / "_job" / "runs", spec, "NVIDIA H100 80GB HBM3", [20.0, 10.0])
    _record(tmp_path / "_tune" / "t1" / "s1" / "_job" / "runs", spec, "NVIDIA H100 PCIe", [1.0, 1.0])
    _record(
        tmp_path / "_tune" / "t1" / "s2" / "_job" / "runs",
        spec,
        "NVIDIA H100 80GB HBM3",
        [2.0, 2.0],
        num_inference_steps=4,
    )
    shapes = [{**SHAPE, "items": 10}, {**SHAPE, "num_inference_steps": 50, "items": 1}]
    learned = learned_seconds(spec, "svd-xt@abc", "H100", shapes)
    assert list(learned) == [0] and learned[0].seconds == pytest.approx(12.0)  # (12 + 14 + 10) / 3
    assert learned[0].videos == 5 and learned[0].sources == "earlier runs and svdbatch tune"
    basis = learned_basis(learned, shapes, "basis: 4.17 PFLOP per video ...")
    assert basis.startswith("basis: measured at the same settings on NVIDIA H100 80GB HBM3: 12 s per video at ")
    assert basis.endswith("; other settings: 4.17 PFLOP per video ...")  # the 50-step shape is estimated
    assert learned_seconds(spec, "svd-xt@abc", "A100", shapes) == {}  # nothing measured on an A100
    assert learned_seconds(spec, "fine-tune@def", "H100", shapes) == {}  # other weights
    cached = spec.model_copy(update={"model": spec.model.model_copy(update={"compile_unet": True})})
    assert learned_seconds(cached, "svd-xt@abc", "H100", shapes) == {}  # other options
    assert warm_seconds([3.0]) == 3.0 and warm_seconds([9.0, 1.0, 2.0]) == 1.5


def test_plan_with_nothing_to_render_bases_on_this_output_measured_timings(tmp_path):
    """The tiny model's output measured 0.5 s per video; a plan with nothing left says so, not the built-in 4.04 s."""
    from svdbatch.cli.plan import add_estimate
    from svdbatch.estimate.plan_report import PlanReport
    from svdbatch.model.loading import dtype_name, pick_dtype
    from svdbatch.spec.config import TINY_MODEL

    render = {"width": 64, "height": 64, "num_frames": 8, "num_inference_steps": 2, "max_guidance_scale": 3.0}
    spec = build_spec({"manifest": {"path": "m"}, "output": {"url": str(tmp_path)}, "render": render})
    row = {
        **render,
        "gpu_name": "cpu",
        "model_identity": TINY_MODEL,
        "model_dtype": dtype_name(pick_dtype(spec.model, "cpu")),
        "model_options": json.dumps(applied_options(spec.model, "cpu"), sort_keys=True),
    }
    timings: dict = {}
    for seconds in (3.0, 0.5, 0.5):
        add_timing(timings, {**row, "generate_seconds": seconds})
    (tmp_path / "_job" / "runs").mkdir(parents=True)
    (tmp_path / "_job" / "runs" / "r.json").write_text(json.dumps({"timings": timing_records(timings)}))
    report = add_estimate(PlanReport(), spec, TINY_MODEL, None, None, None, None)
    assert report.basis.startswith(
        "basis (nothing to render; a video at the spec's settings): measured at the same settings on cpu: 0.5 s per "
        "video at 64x64, 8 frames, 2 steps (3 videos of earlier runs)"
    )
    assert "4.04" not in report.basis and report.seconds == (0.0, 0.0)
    other = add_estimate(PlanReport(), spec, "another-model@1", None, None, None, None)  # nothing measured for it
    assert other.basis.startswith("basis (nothing to render; a video at the spec's settings): the embedded tiny")
