"""``svdbatch plan``: what a job would do, before any GPU is spent. No images, no model, nothing written.

Expands the whole manifest and joins it with the metadata table exactly as ``run`` does, in Ray (a local one unless
RAY_ADDRESS names a cluster): image versions are looked up in the tasks unless the manifest carries them, and the
model's identity comes from one listing. Reports why anything is rendered again, how many committed items left the
manifest (what ``--prune`` removes), the first bad rows, and estimates GPU time as a range from the FLOPs of each
video and the share of peak that published SVD-XT figures reach.

The estimate itself is estimate/gpu_time.py's, the report's shape estimate/plan_report.py's. Imports only the spec
module and those two at load (pyarrow, torch and Ray inside the functions): the CLI's help text reads this module's
defaults and stays instant.
"""

from __future__ import annotations

from svdbatch.estimate.gpu_time import (
    GPU_TFLOPS,
    estimate_basis,
    seconds_per_video,
    span,
    tiny_seconds,
    wall_seconds,
)
from svdbatch.estimate.plan_report import PlanReport
from svdbatch.spec.config import TINY_MODEL, TINY_MODELS, JobSpec

# What the estimate assumes when plan is not told (printed with it, and in `plan --help`).
DEFAULT_GPU = "H100"
DEFAULT_GPUS = 8


def make_plan(
    spec: JobSpec,
    gpu: str | None = None,
    measured_seconds: float | None = None,
    tflops: float | None = None,
    gpus: int | None = None,
    *,
    verbose: bool = False,
    progress: bool = False,
    cli: bool = False,
) -> PlanReport:
    """Raise ManifestError/ModelError/StorageError for job-level problems; count and list the rest.

    ``gpu`` names the GPU in the estimate; its peak comes from ``tflops`` or, when that is None, GPU_TFLOPS.
    ``gpu`` and ``gpus`` not given are DEFAULT_GPU and DEFAULT_GPUS, and the report says it assumed them.
    ``verbose``, ``progress`` and ``cli`` show Ray as ``run`` does (``ray.cluster.start_ray``).
    """
    from svdbatch.ray import driver
    from svdbatch.ray.cluster import start_ray

    info, identity, family = driver.preflight(spec, write=False)
    start_ray(verbose, progress, cli)
    report = driver.plan(spec, info, identity, family)
    return add_estimate(report, spec, identity, gpu, measured_seconds, tflops, gpus, family)


def add_estimate(
    report: PlanReport,
    spec: JobSpec,
    identity: str,
    gpu: str | None,
    measured_seconds: float | None,
    tflops: float | None,
    gpus: int | None,
    family: str = "svd",
) -> PlanReport:
    """The estimate and its basis for the counted ``report``. With nothing to render the basis still says what a
    video of the spec's own settings costs, from the output's measured timings when it has them. A Wan or LTX
    model's FLOPs are counted from its configs (``family_cost``)."""
    from svdbatch.model.families import family_params

    assumed = []
    if gpu is None:
        gpu = DEFAULT_GPU
        assumed.append(f"--gpu {DEFAULT_GPU}")
    if gpus is None:
        gpus = DEFAULT_GPUS
        assumed.append(f"--gpus {DEFAULT_GPUS}")
    tflops = tflops or GPU_TFLOPS[gpu]
    shapes = report.shapes or [{**family_params(spec.render.model_dump(), family), "items": 0}]
    learned = {} if measured_seconds else learned_seconds(spec, identity, gpu, shapes)
    cost = Cost(spec, family, tflops, measured_seconds)
    report.basis = cost.basis(shapes[0], gpu)
    if learned:
        report.basis = learned_basis(learned, shapes, report.basis)
    if not report.shapes:
        report.basis = report.basis.replace("basis: ", "basis (nothing to render; a video at the spec's settings): ", 1)
    per_video = [
        (learned[index].seconds,) * 2 if index in learned else cost.seconds(shape)
        for index, shape in enumerate(report.shapes)
    ]
    report.seconds = tuple(
        sum(one[end] * shape["items"] for one, shape in zip(per_video, report.shapes, strict=True)) for end in (0, 1)
    )
    if spec.model.source in TINY_MODELS and not measured_seconds:
        report.estimate = f"estimate: {span(*report.seconds)} of generation on CPU (--gpu and --gpus do not apply)"
        return report
    wall = [wall_seconds(report.shapes, [one[end] for one in per_video], gpus) for end in (0, 1)]
    report.estimate = (
        f"estimate: {span(*report.seconds)} of GPU time on {gpu}; about {span(*wall)} wall on {gpus} GPU(s)"
    )
    if assumed:
        report.assumed = f"assumed: {' '.join(assumed)} (not given: pass your cluster's)"
    return report


def learned_seconds(spec: JobSpec, identity: str, gpu: str, shapes: list[dict]) -> dict:
    """For each render shape (by index), the seconds per video that earlier runs of this output or ``svdbatch tune``
    measured at the same settings on this GPU kind (the CPU for the tiny model): ``learned.Measured``."""
    import json

    from svdbatch.estimate.learned import measured
    from svdbatch.items.metadata import guided
    from svdbatch.model.loading import applied_options, dtype_name, pick_dtype
    from svdbatch.render.feed import TALLY_COLUMNS
    from svdbatch.run.record import read_timings

    timings = read_timings(spec.output.url, spec.storage_options)
    if not timings:
        return {}
    device = "cpu" if spec.model.source in TINY_MODELS else "cuda"
    model = {
        "model_identity": identity,
        "model_dtype": dtype_name(pick_dtype(spec.model, device)),
        "model_options": json.dumps(applied_options(spec.model, device), sort_keys=True),
    }
    found = {}
    for index, shape in enumerate(shapes):
        item = {**spec.render.model_dump(), **shape}
        setting = {**model, **{name: item[name] for name in TALLY_COLUMNS}, "guidance": guided(item)}
        one = measured(timings, setting, None if device == "cpu" else gpu, GPU_TFLOPS)
        if one is not None:
            found[index] = one
    return found


def learned_basis(learned: dict, shapes: list[dict], estimated: str) -> str:
    """The basis line when measured figures replace the estimate (for some render shapes, or all)."""
    parts = []
    for index, found in learned.items():
        shape = shapes[index]
        parts.append(
            f"{found.seconds:.3g} s per video at {shape['width']}x{shape['height']}, {shape['num_frames']} frames, "
            f"{shape['num_inference_steps']} steps ({found.videos} videos of {found.sources})"
        )
    line = (
        f"basis: measured at the same settings on {next(iter(learned.values())).gpu_name}: {'; '.join(parts)}; "
        "warm: each run's slowest video left out"
    )
    if len(learned) < len(shapes):
        line += "; other settings: " + estimated.removeprefix("basis: ")
    return line


class Cost:
    """Seconds per video and the basis line: measured (``--seconds-per-video``), an embedded tiny model's CPU
    seconds, SVD-XT's FLOPs (gpu_time.py), or a Wan or LTX model's own count (family_cost.py)."""

    def __init__(self, spec: JobSpec, family: str, tflops: float, measured: float | None):
        from svdbatch.estimate.family_cost import FamilyCost

        self.spec, self.family, self.tflops, self.measured = spec, family, tflops, measured
        counted = not measured and family != "svd" and spec.model.source not in TINY_MODELS
        self.counted = FamilyCost(spec, family) if counted else None

    def seconds(self, shape: dict) -> tuple[float, float]:
        from svdbatch.estimate.family_cost import tiny_family_seconds

        if self.measured:
            return self.measured, self.measured
        if self.counted:
            return self.counted.seconds(shape, self.tflops)
        if self.spec.model.source == TINY_MODEL:
            return tiny_seconds(shape), tiny_seconds(shape)
        if self.spec.model.source in TINY_MODELS:
            return (tiny_family_seconds(shape, self.family),) * 2
        return seconds_per_video(shape, self.tflops, self.spec.model.step_cache)

    def basis(self, shape: dict, gpu: str) -> str:
        from svdbatch.estimate.family_cost import tiny_basis

        if self.counted:
            return self.counted.basis(shape, gpu, self.tflops)
        if self.spec.model.source in TINY_MODELS and self.family != "svd" and not self.measured:
            return tiny_basis(self.family)
        return estimate_basis(self.spec, gpu, self.tflops, self.measured)
