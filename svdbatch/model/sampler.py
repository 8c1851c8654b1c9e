"""``model.scheduler``: which sampler turns the UNet's predictions into the next latents.

SVD's UNet is an EDM model (Karras et al. 2022, arXiv 2206.00364): it takes the noise level as ``0.25 * log(sigma)``,
its input scaled by ``1 / sqrt(sigma^2 + 1)``, and predicts ``v`` (denoised = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 +
1) * F). A sampler must speak that convention, which rules out most of diffusers' schedulers for SVD:

- ``euler``: the model folder's own EulerDiscreteScheduler (continuous timesteps, Karras sigmas). The default; with no
  settings given the pipeline's scheduler is left untouched, so frames are bit-identical to the pipeline's own.
- ``dpmpp-2m``: diffusers' EDMDPMSolverMultistepScheduler (DPM-Solver++, deterministic, one UNet call a step) with
  SVD's noise levels, sigma_data 1 and v-prediction.
- ``consistency``: written here. Consistency-distilled SVD UNets (AnimateLCM-SVD-xt, arXiv 2402.00769) are trained to
  map any point of the EDM trajectory straight to its end, and are sampled with the multistep consistency sampler
  (consistency models, arXiv 2303.01469, Algorithm 1; the same sampler in latent space is LCM, arXiv 2310.04378):
  denoise fully at each noise level of a short Karras schedule, then add fresh noise down to the next level.
  diffusers has no sampler for this: LCMScheduler and TCDScheduler work on DDPM's discrete alphas (integer timesteps
  SVD's UNet was not trained on), CMStochasticIterativeScheduler feeds ``1000 * 0.25 * log(sigma)`` and the positive
  output sign of the original consistency models, and EulerDiscrete with few steps follows the ODE instead of jumping
  to the denoised latent, so a distilled UNet's few steps land on blurred frames.

The consistency sampler draws its between-step noise from each item's own ``torch.Generator`` (the pipeline does
not pass generators to ``step``; ``item_noise`` hands them over for one call), so a video still depends only on its
own seed, whatever it is batched with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_edm_euler import EDMEulerSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from svdbatch.model import internals
from svdbatch.spec.config import SchedulerSpec

SVD_SIGMA_DATA = 1.0  # SVD's EDM preconditioning: c_skip = 1 / (sigma^2 + 1)


class ConsistencyMultistepScheduler(EDMEulerScheduler):
    """Multistep consistency sampling on an EDM/v-prediction model (arXiv 2303.01469 Algorithm 1).

    EDMEulerScheduler supplies the EDM plumbing (Karras sigmas, ``0.25 log sigma`` timesteps, input scaling);
    ``step`` is the consistency update, and the denoiser carries the consistency boundary condition.
    """

    noise_generators: list[torch.Generator] | None = None

    @property
    def init_noise_sigma(self) -> float:
        """The first noise level itself: consistency sampling starts from x_T ~ N(0, T^2)."""
        return float(self.config.sigma_max)

    def precondition_outputs(self, sample: torch.Tensor, model_output: torch.Tensor, sigma) -> torch.Tensor:
        """The consistency function f(x, sigma) = c_skip x + c_out F (arXiv 2303.01469, Appendix C): EDM's scalings
        shifted by sigma_min so that f(x, sigma_min) = x. The sign of c_out follows the model's prediction type."""
        data, floor = self.config.sigma_data, self.config.sigma_min
        c_skip = data**2 / ((sigma - floor) ** 2 + data**2)
        c_out = (sigma - floor) * data / (sigma**2 + data**2) ** 0.5
        sign = -1.0 if self.config.prediction_type == "v_prediction" else 1.0
        return c_skip * sample + sign * c_out * model_output

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True):
        """Jump to the denoised latent, then noise it to the next level: x = f(x, s_n) + sqrt(s_{n+1}^2 - eps^2) z."""
        if self.step_index is None:
            internals.init_step_index(self, timestep)
        sigma, following = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        denoised = self.precondition_outputs(sample.to(torch.float32), model_output.to(torch.float32), sigma)
        latents = denoised
        if following > 0:
            noise = randn_tensor(
                denoised.shape, generator=self.noise_generators, device=denoised.device, dtype=denoised.dtype
            )
            latents = denoised + (following**2 - self.config.sigma_min**2).clamp(min=0) ** 0.5 * noise
        internals.advance_step(self)
        latents, denoised = latents.to(model_output.dtype), denoised.to(model_output.dtype)
        if not return_dict:
            return latents, denoised
        return EDMEulerSchedulerOutput(prev_sample=latents, pred_original_sample=denoised)


def _edm_settings(own: Any) -> dict[str, Any]:
    """The model's own noise range and prediction type, as an EDM scheduler's settings."""
    return {
        "sigma_min": own.sigma_min,
        "sigma_max": own.sigma_max,
        "sigma_data": SVD_SIGMA_DATA,
        "prediction_type": own.prediction_type,
        "sigma_schedule": "karras",
    }


def build_scheduler(spec: SchedulerSpec, own):
    """The scheduler ``spec`` names, from the pipeline's own scheduler ``own`` (its noise range and prediction)."""
    if spec.name == "euler":
        return EulerDiscreteScheduler.from_config(own.config, **spec.config)
    settings = {**_edm_settings(own.config), **spec.config}
    if spec.name == "dpmpp-2m":
        return EDMDPMSolverMultistepScheduler(**settings, algorithm_type="dpmsolver++")
    return ConsistencyMultistepScheduler(**settings)


def use_sampler(pipe, spec: SchedulerSpec) -> None:
    """Swap the pipeline's scheduler for the one the spec names; the default leaves it untouched."""
    if not spec.is_default:
        pipe.scheduler = build_scheduler(spec, pipe.scheduler)


@contextlib.contextmanager
def item_noise(scheduler, generators: list[torch.Generator]) -> Iterator[None]:
    """For one pipeline call, a stochastic sampler draws its noise from the items' own generators."""
    if not isinstance(scheduler, ConsistencyMultistepScheduler):
        yield
        return
    scheduler.noise_generators = generators
    try:
        yield
    finally:
        scheduler.noise_generators = None
