"""The GPU time estimate of ``svdbatch plan``, without Ray."""

from __future__ import annotations

from svdbatch.estimate.gpu_time import (
    GPU_TFLOPS,
    REFERENCE,
    TINY_MEASURED,
    TINY_SECONDS,
    seconds_per_video,
    tiny_seconds,
)
from svdbatch.spec.config import StepCacheSpec


def test_estimate_range_spans_the_published_svd_xt_figures():
    a100 = seconds_per_video(REFERENCE, GPU_TFLOPS["A100"], StepCacheSpec())
    h100_pcie = seconds_per_video(REFERENCE, GPU_TFLOPS["H100-PCIe"], StepCacheSpec())
    assert a100[0] <= 32.2 < 60 <= a100[1] + 1e-6  # TensorRT on an A100 SXM, plain diffusers on an A100
    assert h100_pcie[0] < 22.6 < h100_pcie[1]  # TensorRT on an H100 PCIe


def test_tiny_model_estimate_scales_with_pixels_frames_and_steps():
    assert tiny_seconds(TINY_MEASURED) == TINY_SECONDS
    longer = {"width": 256, "height": 144, "num_frames": 14, "num_inference_steps": 2}
    assert 0.8 < tiny_seconds(longer) / 5.3 < 1.2  # measured: 5.3 s on the same 2-core box
    assert tiny_seconds({**TINY_MEASURED, "num_inference_steps": 6}) == 2 * TINY_SECONDS
