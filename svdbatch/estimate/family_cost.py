"""What a Wan or LTX video costs, for ``svdbatch plan``: the model's own transformer and VAE configs (else the family's
reference full-size configuration) counted on the meta device at each render shape to plan, and GPU seconds at the
share of peak that SVD-XT's published figures reach (none are published for these families yet). The embedded tiny
models are estimated from their measured CPU seconds instead. torch is imported only to count.
"""

from __future__ import annotations

from typing import Any

from svdbatch.estimate.gpu_time import tiny_seconds, utilisation
from svdbatch.model.families import BY_NAME
from svdbatch.model.identity import model_config
from svdbatch.spec.config import JobSpec

SHAPE = ("width", "height", "num_frames", "num_inference_steps", "guidance_scale")


class FamilyCost:
    """The FLOPs and seconds of one job's videos, a count per render shape (``SHAPE``)."""

    def __init__(self, spec: JobSpec, name: str):
        self.family = BY_NAME[name]
        self.counted_from, self.transformer, self.vae = _configs(spec, self.family)
        self.counts: dict[tuple, dict[str, float]] = {}

    def flops(self, shape: dict[str, Any]) -> dict[str, float]:
        """``video_flops`` of the family at the shape: transformer step, steps, VAE decode and total."""
        key = tuple(shape[name] for name in SHAPE)
        if key not in self.counts:
            self.counts[key] = self.family.video_flops(self.transformer, self.vae, *key)
        return self.counts[key]

    def seconds(self, shape: dict[str, Any], tflops: float) -> tuple[float, float]:
        """(optimistic, typical) GPU seconds of one video on a GPU of ``tflops`` peak dense TFLOP/s."""
        total = self.flops(shape)["total"]
        return tuple(total / (tflops * 1e12 * share) for share in utilisation())

    def basis(self, shape: dict[str, Any], gpu: str, tflops: float) -> str:
        counted = self.flops(shape)
        branches = "2 branches a step: guidance on" if shape["guidance_scale"] > 1 else "1 branch a step: guidance off"
        fast, typical = utilisation()
        return (
            f"basis: {counted['total'] / 1e15:.2f} PFLOP per video at {shape['width']}x{shape['height']}, "
            f"{shape['num_frames']} frames, {shape['num_inference_steps']} steps ({branches}; transformer step "
            f"{counted['transformer_step'] / 1e12:.1f} TFLOP, VAE decode {counted['vae_decode'] / 1e12:.1f} TFLOP), "
            f"counted on the meta device from {self.counted_from}, at {fast:.0%} (optimistic) to {typical:.0%} "
            f"(typical) of {gpu}'s {tflops:g} dense fp16 TFLOP/s: the shares SVD-XT's published figures reach"
        )


def _configs(spec: JobSpec, family) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(what is counted, transformer config, VAE config): the model's own, else the family's first full-size one."""
    options = spec.storage_options
    transformer = model_config(spec.model, options, "transformer/config.json")
    vae = model_config(spec.model, options, "vae/config.json")
    if transformer is None or vae is None:
        name, full = next(iter(family.FULL_SIZE.items()))
        return f"{name}'s configuration (model.source's could not be read)", full["transformer"], full["vae"]
    return "model.source's transformer and VAE configs", transformer, vae


def tiny_family_seconds(shape: dict[str, Any], name: str) -> float:
    """Seconds of one video of family ``name``'s embedded tiny model on a 2-core CPU: the measured one, scaled."""
    family = BY_NAME[name]
    return tiny_seconds(shape, family.TINY_MEASURED, family.TINY_SECONDS)


def tiny_basis(name: str) -> str:
    family = BY_NAME[name]
    measured = family.TINY_MEASURED
    return (
        f"basis: the embedded tiny {name} model (random weights) took {family.TINY_SECONDS:g} s per video on a 2-core "
        f"CPU at {measured['width']}x{measured['height']}, {measured['num_frames']} frames, "
        f"{measured['num_inference_steps']} steps; scaled by pixels x frames x steps"
    )


def pflop_per_video(spec: JobSpec, rows: list[dict[str, Any]]) -> list[float]:
    """Each rendered row's PFLOP at its own size, frames, steps and guidance: SVD-XT's count for SVD rows, the
    family's full-size count (``FamilyCost``) for Wan and LTX rows."""
    from svdbatch.estimate.gpu_time import video_flop

    costs: dict[str, FamilyCost] = {}
    found = []
    for row in rows:
        family = row["model_family"] or "svd"
        if family == "svd":
            found.append(video_flop(row, spec.model.step_cache) / 1e15)
        else:
            cost = costs.setdefault(family, FamilyCost(spec, family))
            found.append(cost.flops(row)["total"] / 1e15)
    return found
