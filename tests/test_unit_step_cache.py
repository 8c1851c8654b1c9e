"""model.step_cache on the real tiny pipeline (called directly, no Ray) and its FLOPs on the full SVD-XT UNet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import TEST_RENDER

from svdbatch.demo import sample_image
from svdbatch.estimate.gpu_time import UNET_FLOP_CACHED_STEP, UNET_FLOP_PER_STEP, VAE_FLOP
from svdbatch.items.expand import expand_row
from svdbatch.model.loading import applied_options, build_tiny_pipeline, quiet_libraries
from svdbatch.model.step_cache import cached_steps
from svdbatch.render.generate import call_pipeline, to_uint8
from svdbatch.spec.config import StepCacheSpec
from svdbatch.spec.load import build_spec

PARAMS = dict(
    TEST_RENDER,
    num_inference_steps=3,
    motion_bucket_id=127,
    noise_aug_strength=0.02,
    min_guidance_scale=1.0,
    max_guidance_scale=3.0,
    decode_chunk_size=8,
)
ON = StepCacheSpec(enabled=True, interval=2)  # steps 0 and 2 in full, step 1 cached


@pytest.fixture(scope="module")
def pipe():
    quiet_libraries()
    torch.set_num_threads(1)
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render(pipe, indices: list[int], cache: StepCacheSpec | None = None) -> np.ndarray:
    images = [sample_image(index, PARAMS["width"], PARAMS["height"]) for index in indices]
    return to_uint8(call_pipeline(pipe, images, [100 + index for index in indices], PARAMS, "cpu", cache))


def test_schedule_runs_the_first_steps_then_every_interval():
    cache = StepCacheSpec(enabled=True, interval=3, first_full=2)
    assert [cache.is_full_step(step) for step in range(8)] == [True, True, False, True, False, False, True, False]
    assert StepCacheSpec().full_steps(25) == 25 and StepCacheSpec(enabled=True).full_steps(25) == 7


def test_a_cached_step_on_the_same_input_reproduces_the_full_step(pipe):
    """The shallow path is the UNet's own outermost level: fed the deep features of this very input, it must give
    the full step's output."""
    unet = pipe.unet
    generator = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(2, 8, unet.config.in_channels, 8, 8, generator=generator),
        torch.tensor(0.7),
        torch.randn(2, 1, unet.config.cross_attention_dim, generator=generator),
        torch.tensor([[6.0, 127.0, 0.02]] * 2),
    )
    with torch.inference_mode(), cached_steps(unet, ON):
        full = unet(*inputs, return_dict=False)[0]
        cached = unet(*inputs).sample
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)


def test_a_schedule_that_caches_nothing_is_bit_identical_to_off(pipe):
    off = _render(pipe, [0])
    assert np.array_equal(off, _render(pipe, [0], StepCacheSpec(enabled=True, interval=1)))
    assert np.array_equal(off, _render(pipe, [0], StepCacheSpec(enabled=True, first_full=3)))
    assert not np.array_equal(off, _render(pipe, [0], ON))  # the cached step really reuses features


def test_cache_on_is_deterministic_and_batches_like_single_calls(pipe):
    single = [_render(pipe, [index], ON)[0] for index in (0, 1)]
    assert np.array_equal(single[0], _render(pipe, [0], ON)[0])
    batched = _render(pipe, [0, 1], ON)
    for alone, together in zip(single, batched, strict=True):
        assert np.abs(alone.astype(int) - together.astype(int)).max() <= 1


def test_the_unet_is_restored_after_each_call_even_a_failing_one(pipe):
    with pytest.raises(RuntimeError), cached_steps(pipe.unet, ON):
        assert "forward" in pipe.unet.__dict__
        raise RuntimeError("the call failed")
    assert "forward" not in pipe.unet.__dict__
    with cached_steps(pipe.unet, ON):
        pass
    assert len(pipe.unet.up_blocks[-2]._forward_hooks) == 1  # registered once per UNet: a compiled graph stays valid


def test_fingerprint_and_model_options_name_the_cache():
    def spec(**cache):
        return build_spec({"manifest": {"path": "m"}, "output": {"url": "/o"}, "model": {"step_cache": cache}})

    def fingerprint(job):
        return expand_row({"key": "a", "image": "/a.png"}, job, "run", "/o")[0]["fingerprint"]

    prints = {fingerprint(spec(**cache)) for cache in ({}, {"enabled": True}, {"enabled": True, "interval": 2})}
    assert len(prints) == 3
    assert fingerprint(spec(interval=2)) == fingerprint(spec())  # settings of a disabled cache shape nothing
    options = json.loads(json.dumps(applied_options(spec(enabled=True).model, "cpu")))
    assert options["step_cache"] == {"enabled": True, "interval": 4, "first_full": 1}
    assert applied_options(spec().model, "cpu")["step_cache"] is None


def test_flop_counts_of_the_full_svd_xt_unet_match_the_plan_constants():
    from svdbatch.model.flops import unet_step_flops, vae_decode_flops

    full, cached = unet_step_flops(1024, 576, 25)
    assert abs(full / UNET_FLOP_PER_STEP - 1) < 0.01 and abs(cached / UNET_FLOP_CACHED_STEP - 1) < 0.01
    assert abs(vae_decode_flops(1024, 576, 25) / VAE_FLOP - 1) < 0.01
    default = StepCacheSpec(enabled=True)
    ratio = 25 * full / (default.full_steps(25) * full + (25 - default.full_steps(25)) * cached)
    assert ratio >= 1.6
