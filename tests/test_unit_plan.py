"""The GPU time estimate of ``svdbatch plan``, without Ray."""

from __future__ import annotations

from svdbatch.config import StepCacheSpec
from svdbatch.plan import GPU_TFLOPS, REFERENCE, seconds_per_video


def test_estimate_range_spans_the_published_svd_xt_figures():
    a100 = seconds_per_video(REFERENCE, GPU_TFLOPS["A100"], StepCacheSpec())
    h100_pcie = seconds_per_video(REFERENCE, GPU_TFLOPS["H100-PCIe"], StepCacheSpec())
    assert a100[0] <= 32.2 < 60 <= a100[1] + 1e-6  # TensorRT on an A100 SXM, plain diffusers on an A100
    assert h100_pcie[0] < 22.6 < h100_pcie[1]  # TensorRT on an H100 PCIe
