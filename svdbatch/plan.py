"""``svdbatch plan``: what a job would do, before any GPU is spent. No Ray, no model, nothing written.

Reads the whole manifest on this machine (only its columns, in batches), expands every row exactly as the job
would (looking up each image's version in parallel unless the manifest carries it), reports each bad row with its
file and row number, reads the resume state from the output, counts what a pruning run would remove, and
estimates GPU time from per-video latency.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from svdbatch import commit, manifest, storage
from svdbatch.config import TINY_MODEL, JobSpec
from svdbatch.items import expand_row, plan_category
from svdbatch.metadata import OK
from svdbatch.model import model_identity
from svdbatch.stages import source_versions

# Dense bf16/fp16 matmul throughput (TFLOP/s) and the share of it a diffusers SVD call sustains. The utilisation is
# an assumption (60 s/video on an A100 is ~22%, a tuned H100 reaches ~35%); pass --seconds-per-video to use a
# measured latency instead.
GPU_TFLOPS = {"H100": 800.0, "H200": 800.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
UTILISATION = 0.3
# SVD-XT at 1024x576, 25 frames, counted with torch.utils.flop_counter: UNet per step (both CFG halves), VAE decode.
UNET_FLOP_PER_STEP = 160e12
VAE_FLOP = 0.17e15
REFERENCE_PIXELS_FRAMES = 1024 * 576 * 25
MAX_PROBLEMS = 20
TINY_SECONDS = 0.5  # the embedded tiny model at demo size on a 2-core CPU
BATCH_ROWS = 10_000  # manifest rows read, and image versions looked up in parallel, at once


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
    info = manifest.inspect(spec)
    identity = model_identity(spec.model, spec.storage_options)
    previous = commit.previous_state(spec.output.url, spec.storage_options)
    fs, _ = storage.filesystem(spec.manifest.path, spec.storage_options)
    report = PlanReport(files=len(info.files), rows=info.rows, prune=spec.output.prune)
    if previous:
        keys = manifest.read_keys(spec, info.files)
        report.to_remove = len(commit.to_remove(spec.output.url, keys, spec.storage_options))
    for name in info.files:
        with fs.open(name, "rb") as handle:
            row_number = 0
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS):
                rows = batch.to_pylist()
                identities = {"model": identity, "sources": source_versions(rows, spec)}
                for row in rows:
                    items = expand_row(row, spec, "plan", spec.output.url, previous, info.duplicate_keys, identities)
                    for item in items:
                        _count(report, item, f"{name} row {row_number}")
                        if item["status"] == OK:
                            tiny = spec.model.source == TINY_MODEL
                            estimate = TINY_SECONDS if tiny else seconds_per_video(item, gpu)
                            report.seconds += measured_seconds or estimate
                    row_number += 1
    return report


def _count(report: PlanReport, item: dict, where: str) -> None:
    report.items += 1
    category = plan_category(item)
    report.counts[category] += 1
    if category == "invalid" and len(report.problems) < MAX_PROBLEMS:
        report.problems.append(f"{where}: {item['error']}")
