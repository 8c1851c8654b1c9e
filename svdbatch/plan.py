"""``svdbatch plan``: what a job would do, before any GPU is spent. No images, no model, nothing written.

Expands the whole manifest and joins it with the metadata table exactly as ``run`` does, in Ray (a local one unless
RAY_ADDRESS names a cluster): image versions are looked up in the tasks unless the manifest carries them, and the
model's identity comes from one listing. Reports why anything is rendered again, how many committed items left the
manifest (what ``--prune`` removes), the first bad rows, and estimates GPU time from per-video latency.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from svdbatch import manifest
from svdbatch.config import TINY_MODEL, JobSpec
from svdbatch.model import model_identity

# Dense bf16/fp16 matmul throughput (TFLOP/s) and the share of it a diffusers SVD call sustains. The utilisation is
# an assumption (60 s/video on an A100 is ~22%, a tuned H100 reaches ~35%); pass --seconds-per-video to use a
# measured latency instead.
GPU_TFLOPS = {"H100": 800.0, "H200": 800.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
UTILISATION = 0.3
# SVD-XT at 1024x576, 25 frames, counted with torch.utils.flop_counter: UNet per step (both CFG halves), VAE decode.
UNET_FLOP_PER_STEP = 160e12
VAE_FLOP = 0.17e15
REFERENCE_PIXELS_FRAMES = 1024 * 576 * 25
TINY_SECONDS = 0.5  # the embedded tiny model at demo size on a 2-core CPU


@dataclass
class PlanReport:
    files: int = 0
    rows: int = 0
    items: int = 0
    counts: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    to_remove: int = 0
    prune: bool = False

    def lines(self, gpus: int, gpu: str) -> list[str]:
        hours = self.seconds / 3600
        wall = hours / max(1, gpus)
        lines = [
            f"manifest: {self.files} file(s), {self.rows} rows -> {self.items} items",
            f"to render: {self.counts['new']} new, {self.counts['changed']} changed spec, "
            f"{self.counts['source_changed']} source changed, {self.counts['model_changed']} model changed, "
            f"{self.counts['retry']} failed before; {self.counts['done']} already done; "
            f"{self.counts['invalid']} invalid",
            f"to remove: {self.to_remove} no longer in the manifest"
            + ("" if self.prune else " (kept: output.prune is off; run --prune to remove them)"),
            f"estimate: {hours:.1f} GPU-hours on {gpu}; about {wall:.1f} h wall on {gpus} GPU(s)",
        ]
        if self.problems:
            lines.append(f"problems ({len(self.problems)} shown):")
            lines.extend(f"  {problem}" for problem in self.problems)
        return lines


def seconds_per_video(item: dict, gpu: str) -> float:
    """FLOP-based latency for the SVD architecture, scaled by pixels x frames and steps."""
    scale = item["width"] * item["height"] * item["num_frames"] / REFERENCE_PIXELS_FRAMES
    flop = UNET_FLOP_PER_STEP * item["num_inference_steps"] * scale + VAE_FLOP * scale
    return flop / (GPU_TFLOPS[gpu] * 1e12 * UTILISATION)


def make_plan(spec: JobSpec, gpu: str = "H100", measured_seconds: float | None = None) -> PlanReport:
    """Raise ManifestError/ModelError/StorageError for job-level problems; count and list the rest."""
    from svdbatch import pipeline

    info = manifest.inspect(spec)
    identity = model_identity(spec.model, spec.storage_options)
    pipeline.init_ray()
    counts, shapes, problems = pipeline.plan(spec, info, identity)
    report = PlanReport(
        files=len(info.files), rows=info.rows, problems=problems, to_remove=counts.to_remove, prune=spec.output.prune
    )
    categories = ("new", "done", "changed", "source_changed", "model_changed", "retry", "invalid")
    report.counts.update({name: getattr(counts, name) for name in categories})
    report.items = sum(report.counts.values())
    tiny = spec.model.source == TINY_MODEL
    for shape in shapes:
        estimate = TINY_SECONDS if tiny else seconds_per_video(shape, gpu)
        report.seconds += (measured_seconds or estimate) * shape["items"]
    return report
