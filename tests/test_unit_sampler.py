"""model.scheduler and guidance-free sampling on the real tiny pipeline, through ``call_pipeline`` (no Ray)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from helpers import TEST_RENDER

from svdbatch.demo import sample_image
from svdbatch.estimate.gpu_time import REFERENCE, unet_flop
from svdbatch.items.expand import expand_row
from svdbatch.model import internals
from svdbatch.model.flops import unet_video_flops
from svdbatch.model.loading import applied_options, load_pipeline, resolve_source
from svdbatch.model.sampler import build_scheduler, use_sampler
from svdbatch.render.generate import call_pipeline, to_uint8
from svdbatch.spec.config import SAMPLERS, ModelSpec, RenderParams, SchedulerSpec, SpecError, StepCacheSpec
from svdbatch.spec.load import build_spec

PARAMS = {**RenderParams().model_dump(), **TEST_RENDER, "num_inference_steps": 3}  # what an item gives the call
CONSISTENCY = SchedulerSpec(name="consistency")


@pytest.fixture(scope="module")
def pipe():
    """The tiny pipeline as an actor loads it."""
    torch.set_num_threads(1)
    model = ModelSpec(device="cpu")
    return load_pipeline(model, "cpu", resolve_source(model))


@pytest.fixture
def sampler(pipe):
    """Set the pipeline's sampler for one test, then give the model's own back."""
    own = pipe.scheduler

    def use(spec: SchedulerSpec):
        pipe.scheduler = own
        use_sampler(pipe, spec)

    yield use
    pipe.scheduler = own


def _render(pipe, indices: list[int], **params) -> np.ndarray:
    images = [sample_image(index, PARAMS["width"], PARAMS["height"]) for index in indices]
    seeds = [100 + index for index in indices]
    return to_uint8(call_pipeline(pipe, images, seeds, {**PARAMS, **params}, "cpu"))


def _spec(**scheduler):
    return build_spec({"manifest": {"path": "m"}, "output": {"url": "/o"}, "model": {"scheduler": scheduler}})


def test_every_sampler_setting_is_a_setting_of_the_scheduler_built(pipe):
    for name, options in SAMPLERS.items():
        built = build_scheduler(SchedulerSpec(name=name), pipe.scheduler)
        assert set(options) <= set(inspect.signature(type(built).__init__).parameters), name


def test_a_misspelt_sampler_or_setting_fails_in_one_line_naming_the_choices():
    with pytest.raises(SpecError) as error:
        _spec(name="consistncy")
    assert str(error.value) == (
        "model.scheduler.name: 'consistncy' is not allowed: unknown sampler (did you mean consistency? "
        "choices: euler, dpmpp-2m, consistency)"
    )
    with pytest.raises(
        SpecError,
        match=r"^model.scheduler: config.sigma_mx: not a setting of sampler consistency "
        r"\(did you mean sigma_max\? settings: sigma_min, sigma_max",
    ):
        _spec(name="consistency", config={"sigma_mx": 80})
    with pytest.raises(SpecError, match=r"config.solver_order: 5 is not one of 1, 2, 3$"):
        _spec(name="dpmpp-2m", config={"solver_order": 5})
    assert "\n" not in str(error.value)


def test_the_default_leaves_the_models_own_scheduler_and_its_frames_untouched(pipe, sampler):
    own = pipe.scheduler
    sampler(SchedulerSpec())
    assert pipe.scheduler is own
    default = _render(pipe, [0])
    sampler(SchedulerSpec(config={"use_karras_sigmas": True}))  # rebuilt from the model's config, same value
    assert pipe.scheduler is not own and np.array_equal(default, _render(pipe, [0]))


def test_the_consistency_sampler_is_deterministic_and_batches_like_single_calls(pipe, sampler):
    sampler(SchedulerSpec())
    euler = _render(pipe, [0])
    sampler(CONSISTENCY)
    single = [_render(pipe, [index])[0] for index in (0, 1)]
    assert np.array_equal(single[0], _render(pipe, [0])[0])  # same seed, same frames
    assert not np.array_equal(single[0], euler[0])  # the sampler really changed
    for alone, together in zip(single, _render(pipe, [0, 1]), strict=True):
        assert np.abs(alone.astype(int) - together.astype(int)).max() <= 1  # noise from each item's own generator


def test_consistency_sampler_starts_at_sigma_max_and_lands_on_the_denoised_latent(pipe):
    scheduler = build_scheduler(CONSISTENCY, pipe.scheduler)
    scheduler.set_timesteps(4)
    assert scheduler.init_noise_sigma == pytest.approx(700.0) and float(scheduler.sigmas[-1]) == 0.0
    torch.testing.assert_close(scheduler.timesteps, 0.25 * torch.log(scheduler.sigmas[:-1]))
    sample, output = torch.randn(1, 2, 4, 8, 8), torch.randn(1, 2, 4, 8, 8)
    internals.init_step_index(scheduler, scheduler.timesteps[3])  # the last step adds no noise: f(x, sigma)
    sigma = scheduler.sigmas[3]
    expected = sample / ((sigma - 0.002) ** 2 + 1) - (sigma - 0.002) / (sigma**2 + 1) ** 0.5 * output
    torch.testing.assert_close(scheduler.step(output, scheduler.timesteps[3], sample).prev_sample, expected)


def test_fingerprint_and_model_options_name_a_sampler_other_than_the_default():
    def fingerprint(job):
        return expand_row({"key": "a", "image": "/a.png"}, job, "run", "/o")[0]["fingerprint"]

    default = build_spec({"manifest": {"path": "m"}, "output": {"url": "/o"}})
    assert fingerprint(_spec()) == fingerprint(default)  # outputs rendered before the option stay done
    assert len({fingerprint(_spec(name=name)) for name in SAMPLERS}) == 3
    assert applied_options(_spec(name="consistency").model, "cpu")["scheduler"]["name"] == "consistency"


def test_guidance_off_makes_exactly_half_the_unet_calls(pipe, sampler):
    """diffusers runs the unconditional half only when max_guidance_scale > 1: count the UNet rows it evaluates."""
    sampler(SchedulerSpec())
    rows: list[int] = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    try:
        _render(pipe, [0, 1])
        guided = sum(rows)
        rows.clear()
        _render(pipe, [0, 1], min_guidance_scale=1.0, max_guidance_scale=1.0)
    finally:
        hook.remove()
    assert guided == 2 * 2 * PARAMS["num_inference_steps"] and sum(rows) * 2 == guided


def test_flops_count_one_unet_branch_when_guidance_is_off(pipe):
    off = {**REFERENCE, "max_guidance_scale": 1.0}
    assert unet_flop(off, StepCacheSpec()) * 2 == pytest.approx(unet_flop(REFERENCE, StepCacheSpec()))
    config = {key: value for key, value in pipe.unet.config.items() if not key.startswith("_")}
    counted = [unet_video_flops(64, 64, 8, 2, scale, StepCacheSpec(), config) for scale in (3.0, 1.0)]
    assert counted[0] == 2 * counted[1]
