"""The job spec: one pydantic model tree (load.py reads it from YAML with ``--set`` overrides, reference.py prints it).
Its ``model:`` section is model.py's, the render parameters, seeds and variants render.py's; every package imports
the spec's names from here.

Every model forbids unknown fields so a typo fails before any work instead of being silently ignored, and every
field carries a description because ``svdbatch`` prints this tree as its reference documentation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from svdbatch.errors import UserError
from svdbatch.spec.base import Strict, closest  # noqa: F401 - the spec's names, imported from here by every package
from svdbatch.spec.model import (  # noqa: F401
    SAMPLERS,
    TINY_MODEL,
    TINY_MODELS,
    ModelSpec,
    SchedulerSpec,
    StepCacheSpec,
)
from svdbatch.spec.render import (  # noqa: F401
    MAX_PROMPT_CHARS,
    MAX_VARIANTS,
    SEED_MASK,
    RenderParams,
    SeedSpec,
    unet_branches,
)


def lookup(tree: Any, field: str) -> Any:
    """A dotted field of a spec, or of the dict it is built from."""
    for part in field.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else getattr(tree, part)
    return tree


class SpecError(UserError, ValueError):
    """A job spec problem, phrased as one line that says what to fix."""


class ManifestSpec(Strict):
    path: str = Field(
        description="Parquet manifest: a file, a directory of files or a glob; fsspec URL or local path (a relative "
        "one resolves against the spec file's folder)."
    )
    key_column: str = Field(default="key", description="Column holding each row's unique, stable key.")
    image_column: str = Field(
        default="image",
        description="Column holding each row's image URI: an absolute path or URL (as `svdbatch manifest` writes); "
        "the manifest's URIs are data, not resolved against the spec's folder.",
    )
    prompt_column: str = Field(
        default="prompt",
        description="Optional column holding each row's prompt (Wan and LTX); where it is absent or null the row gets "
        "render.prompt (or seeds.prompt_sweep's entry).",
    )
    negative_prompt_column: str = Field(
        default="negative_prompt",
        description="Optional column holding each row's negative prompt (Wan and LTX); absent or null: "
        "render.negative_prompt.",
    )
    version_column: str = Field(
        default="image_version",
        description="Optional column naming the version of each row's image (ETag, version id, hash); where it is "
        "absent or null the image's version is looked up in the store.",
    )


class ShardSpec(Strict):
    enabled: bool = Field(
        default=False,
        description="Also write WebDataset tar shards of the ok videos ({key}.mp4, .json row, .jpg input) under "
        "shards/, with shards/index.json listing each shard's samples.",
    )
    samples_per_shard: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="At most this many samples a shard; rows are grouped in blocks of this size before a shard "
        "task writes them, so a block's MP4s are in memory together.",
    )
    max_shard_bytes: int = Field(
        default=256_000_000,
        ge=1,
        description="A shard is closed before its MP4s pass this many bytes (a larger single sample gets its own).",
    )


class OutputSpec(Strict):
    url: str = Field(
        description="Where videos (videos/) and the metadata table (metadata/) are written: fsspec URL or local path "
        "(a relative one resolves against the spec file's folder)."
    )
    prune: bool = Field(
        default=False,
        description="Delete the videos of keys no longer in the manifest and mark their rows 'removed' "
        "(`svdbatch run --prune`); off, they are kept.",
    )
    shards: ShardSpec = Field(default_factory=ShardSpec, description="WebDataset shards for training loaders.")


class VideoSpec(Strict):
    crf: int = Field(default=18, ge=0, le=51, description="H.264 constant rate factor; lower is better quality.")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"] = (
        Field(default="medium", description="x264 speed/size trade-off.")
    )
    pixel_format: Literal["yuv420p", "yuv444p"] = Field(
        default="yuv420p", description="yuv420p plays everywhere; yuv444p keeps full colour resolution."
    )
    lossless: bool = Field(
        default=False,
        description="Bit-exact RGB frames (libx264rgb, qp 0). Large files that most browsers cannot play; "
        "for datasets where every pixel matters.",
    )


class ActorRange(Strict):
    """An autoscaling actor pool: Ray Data adds actors while work queues up and removes idle ones."""

    min: int = Field(default=1, ge=1, description="Actors kept even when idle.")
    max: int | None = Field(
        default=None,
        ge=1,
        description="Most actors; default: one per gpus_per_actor of the GPUs the cluster has or its autoscaler can "
        "add (unbounded when the autoscaler's node types are unknown), or 1 on CPU.",
    )
    initial: int | None = Field(
        default=None,
        ge=1,
        description="Actors started at once; default: as many as the GPUs present now can hold, at least min.",
    )

    @model_validator(mode="after")
    def _order(self) -> ActorRange:
        top = self.max if self.max is not None else float("inf")
        if not self.min <= (self.initial or self.min) <= top or self.min > top:
            raise ValueError(f"need min <= initial <= max, got {self.min}, {self.initial}, {self.max}")
        return self


class ComputeSpec(Strict):
    actors: Annotated[int, Field(ge=1)] | ActorRange = Field(
        default_factory=ActorRange,
        description="Generation actors: a fixed number, or {min, max, initial} for a pool that grows with the "
        "queue (and makes the cluster autoscaler add GPU nodes) and shrinks when idle.",
    )
    batch_size: int = Field(default=1, ge=1, le=64, description="Items per pipeline call (same render params).")
    gpus_per_actor: float = Field(default=1.0, gt=0, le=8, description="GPUs each actor reserves (on GPU clusters).")
    cpus_per_actor: float = Field(
        default=1.0,
        gt=0,
        le=64,
        description="CPUs each generation actor reserves: it also loads its images and encodes and writes its "
        "videos (docs/operations.md: sizing).",
    )
    cpus_per_task: float = Field(
        default=1.0, gt=0, le=64, description="CPUs each CPU task beside the actors reserves (shard writing)."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, le=256, description="torch threads per actor on CPU; default round(cpus_per_actor)."
    )
    gpu_wait_s: float = Field(
        default=1800.0,
        gt=0,
        description="How long a GPU job waits for its first GPU actor (autoscaler adding nodes) before it fails.",
    )
    stall_report_s: float = Field(
        default=60.0, gt=0, description="Report what is pending on which resource when no item finished this long."
    )
    stall_timeout_s: float = Field(
        default=3600.0, gt=0, description="End the job when no item finished and no actor came up for this long."
    )
    price_per_gpu_hour: float | None = Field(
        default=None,
        ge=0,
        description="What one GPU-hour costs (any currency, shown as $): the run record, summary line and report then "
        "give the cost per video and per run from the GPU-seconds (model loads and generation x gpus_per_actor).",
    )


class ImageSpec(Strict):
    max_pixels: int = Field(
        default=64_000_000, ge=1, description="Images with more pixels are rejected before they are decoded."
    )
    allowed_schemes: list[str] | None = Field(
        default=None,
        description="URI schemes image URIs may use; default: those of the manifest and the output (so http(s), "
        "a server-side request forgery risk, is off unless listed).",
    )
    allowed_prefixes: list[str] = Field(
        default_factory=list, description="If set, every image URI must start with one of these prefixes."
    )


class FailureSpec(Strict):
    max_error_fraction: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Abort the job when more than this share of items has failed (checked from 20 items on).",
    )
    retry_errors: bool = Field(default=True, description="Render items that failed in earlier runs again.")


class QualitySpec(Strict):
    """Gates on the quality columns; a video that fails one is kept in the table as ``rejected``, not sharded."""

    max_nonfinite_frames: int | None = Field(
        default=None, ge=0, description="Reject above this many frames with NaN/inf in the generator's output."
    )
    max_black_frames: int | None = Field(default=None, ge=0, description="Reject above this many black frames.")
    max_constant_frames: int | None = Field(
        default=None, ge=0, description="Reject above this many single-colour frames."
    )
    min_motion: float | None = Field(
        default=None, ge=0, description="Reject below this mean absolute luma change between frames (0..255)."
    )
    min_first_frame_psnr: float | None = Field(
        default=None, ge=0, description="Reject below this PSNR (dB) of the first frame against the input image."
    )
    min_first_frame_ssim: float | None = Field(
        default=None, ge=-1, le=1, description="Reject below this SSIM of the first frame against the input image."
    )


class LeaseSpec(Strict):
    """One live run per output: a run holds a lease in {output}/_job/lease/ and renews it while it runs."""

    ttl_s: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="Seconds a run's lease lasts unless renewed (it is renewed every quarter of this): how long a "
        "run that died on another machine blocks the next one, which waits for it (`svdbatch run --lease-wait`).",
    )


class JobSpec(Strict):
    manifest: ManifestSpec = Field(description="Where the rows come from.")
    output: OutputSpec = Field(description="Where videos and metadata go.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Which pipeline, and how it runs.")
    render: RenderParams = Field(default_factory=RenderParams, description="Default render parameters.")
    seeds: SeedSpec = Field(default_factory=SeedSpec, description="Seed derivation and variants per image.")
    video: VideoSpec = Field(default_factory=VideoSpec, description="MP4 encoding.")
    compute: ComputeSpec = Field(default_factory=ComputeSpec, description="Actors, batching, resources.")
    images: ImageSpec = Field(default_factory=ImageSpec, description="Input image limits.")
    failures: FailureSpec = Field(default_factory=FailureSpec, description="Error budget and retries across runs.")
    quality: QualitySpec = Field(default_factory=QualitySpec, description="Optional quality gates (all off).")
    lease: LeaseSpec = Field(default_factory=LeaseSpec, description="The lease that keeps a second run off the output.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra fsspec options (endpoint, region, ...) for every URL of the job, plus svdbatch's own "
        "deadlines for every object-store call: connect_timeout_s (10), read_timeout_s (30) per request, and "
        "retry_budget_s (120) for one call with its retries.",
    )

    @field_validator("storage_options")
    @classmethod
    def _deadlines_are_positive(cls, options: dict[str, Any]) -> dict[str, Any]:
        from svdbatch.storage import DEADLINES  # fsspec: only once a spec names storage options

        for name in DEADLINES:
            value = options.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"storage_options.{name} must be a positive number of seconds, not {value!r}")
        return options
    # Path fields as the spec file wrote them, where resolving against its folder changed them: errors show both.
    _written: dict[str, str] = PrivateAttr(default_factory=dict)

    def shown(self, field: str) -> str:
        """A path field for an error line: ``as written (resolved: what it became)`` when it was resolved."""
        value = lookup(self, field)
        written = self._written.get(field)
        return f"{written} (resolved: {value})" if written and written != value else str(value)


