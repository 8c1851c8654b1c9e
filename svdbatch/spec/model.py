"""The spec's ``model:`` section: which pipeline (an embedded tiny model, a hub id, a folder or a URL of one), its
dtype and device, a UNet over it, the sampler with its settings, and the step cache. config.py puts it in the job
spec."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from svdbatch.spec.base import Strict, closest

TINY_MODEL = "svdbatch:tiny"
# The embedded tiny models, one per family (SVD, Wan, LTX): built locally, never downloaded.
TINY_MODELS = (TINY_MODEL, "svdbatch:tiny-wan", "svdbatch:tiny-ltx")


class StepCacheSpec(Strict):
    """DeepCache-style reuse of the UNet's deep features between neighbouring denoising steps."""

    enabled: bool = Field(
        default=False,
        description="On cached steps only the UNet's outermost level runs; fewer FLOPs, slightly different frames.",
    )
    interval: int = Field(
        default=4, ge=1, le=1000, description="Run the whole UNet every this many steps (1: every step, no reuse)."
    )
    first_full: int = Field(
        default=1, ge=1, le=1000, description="The first steps always run the whole UNet (they set the layout)."
    )

    def is_full_step(self, step: int) -> bool:
        """Steps that run the whole UNet: every step when off, else the first ``first_full``, then every
        ``interval``-th."""
        return not self.enabled or step < self.first_full or step % self.interval == 0

    def full_steps(self, steps: int) -> int:
        return sum(self.is_full_step(step) for step in range(steps))


# The samplers ``model.scheduler.name`` picks from, and the settings each takes as ``model.scheduler.config``
# overrides: a value is a type, or the tuple of values allowed. Checked when the spec loads, before torch is imported
# (tests/test_unit_sampler.py checks every option is a constructor argument of the class svdbatch.model.sampler builds).
SIGMA_OPTIONS = {"sigma_min": float, "sigma_max": float, "final_sigmas_type": ("zero", "sigma_min")}
EDM_OPTIONS = {**SIGMA_OPTIONS, "sigma_data": float, "rho": float, "sigma_schedule": ("karras", "exponential")}
SAMPLERS: dict[str, dict[str, Any]] = {
    "euler": {**SIGMA_OPTIONS, "use_karras_sigmas": bool, "timestep_spacing": ("linspace", "leading", "trailing")},
    "dpmpp-2m": {**EDM_OPTIONS, "solver_order": (1, 2, 3), "solver_type": ("midpoint", "heun")},
    "consistency": {**EDM_OPTIONS, "prediction_type": ("v_prediction", "epsilon")},
}


def _option_error(name: str, key: str, value: Any) -> str | None:
    """Why ``key: value`` is not a setting of sampler ``name``, or None when it is."""
    options = SAMPLERS[name]
    if key not in options:
        guess = closest(key, list(options))
        hint = f"did you mean {guess}? " if guess else ""
        return f"config.{key}: not a setting of sampler {name} ({hint}settings: {', '.join(options)})"
    kind = options[key]
    if isinstance(kind, tuple):
        return None if value in kind else f"config.{key}: {value!r} is not one of {', '.join(map(str, kind))}"
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        return f"config.{key}: {value!r} is not a positive number"
    if kind is bool and not isinstance(value, bool):
        return f"config.{key}: {value!r} is not true or false"
    return None


class SchedulerSpec(Strict):
    """The sampler that turns the UNet's predictions into the next latents (svdbatch/model/sampler.py)."""

    name: str = Field(
        default="euler",
        description="'euler': the model's own EulerDiscreteScheduler (SVD's default, unchanged); 'dpmpp-2m': "
        "diffusers' EDM DPM-Solver++ (2nd order, one UNet call a step); 'consistency': svdbatch's multistep "
        "consistency sampler for consistency-distilled UNets (AnimateLCM-SVD: 2-8 steps, max_guidance_scale ~1).",
    )
    config: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="Settings over the sampler's defaults (the model's noise levels, SVD's v-prediction): "
        + "; ".join(f"{name}: {', '.join(options)}" for name, options in SAMPLERS.items())
        + ".",
    )

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name not in SAMPLERS:
            guess = closest(name, list(SAMPLERS))
            hint = f"did you mean {guess}? " if guess else ""
            raise ValueError(f"unknown sampler ({hint}choices: {', '.join(SAMPLERS)})")
        return name

    @model_validator(mode="after")
    def _known_options(self) -> SchedulerSpec:
        for key, value in self.config.items():
            problem = _option_error(self.name, key, value)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def is_default(self) -> bool:
        """The pipeline's own scheduler, untouched (svdbatch/formats.py: it shapes no fingerprint)."""
        return self.name == "euler" and not self.config


class ModelSpec(Strict):
    source: str = Field(
        default=TINY_MODEL,
        description=f"Hub id, local diffusers directory or fsspec URL of one; '{TINY_MODEL}' is the embedded tiny "
        "random-weight pipeline used for demos and tests. A relative folder (starting ./ or ../, or one that exists "
        "beside a local spec) resolves against the spec file's folder; any other org/name is a hub id.",
    )
    family: Literal["auto", "svd", "wan", "ltx"] = Field(
        default="auto",
        description="Which pipeline the model is: 'auto' reads the pipeline class from its model_index.json "
        "(StableVideoDiffusionPipeline: svd, WanImageToVideoPipeline: wan, LTXImageToVideoPipeline: ltx); name it "
        "where the driver cannot read that file (a hub id, offline and not cached, is taken as svd).",
    )
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto", description="Weight and compute dtype; 'auto' is fp16 on CUDA and fp32 on CPU."
    )
    variant: str | None = Field(default=None, description="Weight file variant to load, e.g. 'fp16' for SVD-XT.")
    unet: str | None = Field(
        default=None,
        description="UNet weights loaded over model.source's UNet (a fine-tune or a distilled UNet): a diffusers UNet "
        "folder or a single .safetensors file; local path, hub id (org/name, org/name/sub/folder or "
        "org/name/file.safetensors) or fsspec URL, copied once per node; a relative path resolves like model.source. "
        "Part of the model identity.",
    )
    scheduler: SchedulerSpec = Field(
        default_factory=SchedulerSpec, description="The sampler, by name, with settings (default: the model's own)."
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        default="auto",
        description="'auto': GPU actors when the cluster has GPUs or its autoscaler may add some, else CPU actors; "
        "'cuda' (like dtype fp16/bf16) waits for GPU workers and never falls back to the CPU.",
    )
    cpu_offload: bool = Field(default=False, description="diffusers model CPU offload: less GPU memory, slower.")
    compile_unet: bool = Field(default=False, description="torch.compile the UNet once per actor.")
    forward_chunking: bool = Field(default=False, description="UNet feed-forward chunking: less memory, slower.")
    channels_last: bool = Field(default=True, description="channels_last memory format for UNet and VAE on CUDA.")
    allow_tf32: bool = Field(default=True, description="Allow TF32 matmuls on Ampere and newer GPUs.")
    step_cache: StepCacheSpec = Field(
        default_factory=StepCacheSpec, description="Step caching for the UNet (off by default)."
    )
