"""The columns every stage passes along, and the metadata table they end in.

Rows stay Arrow-native from the manifest to the table: strings, numbers and bytes, never pickled objects. A work row
is a metadata row plus payload columns (the fitted image, the generated frames, the MP4 for shards) that the
last stage drops.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

METADATA_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("key", pa.string()),
        pa.field("variant", pa.int32()),
        pa.field("source_uri", pa.string()),
        pa.field("source_version", pa.string()),
        pa.field("source_sha256", pa.string()),
        pa.field("video_uri", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("num_frames", pa.int32()),
        pa.field("num_inference_steps", pa.int32()),
        pa.field("fps", pa.int32()),
        pa.field("motion_bucket_id", pa.int32()),
        pa.field("noise_aug_strength", pa.float64()),
        pa.field("min_guidance_scale", pa.float64()),
        pa.field("max_guidance_scale", pa.float64()),
        pa.field("decode_chunk_size", pa.int32()),
        pa.field("fit", pa.string()),
        pa.field("guidance_scale", pa.float64()),
        pa.field("shift", pa.float64()),
        pa.field("prompt", pa.string()),
        pa.field("negative_prompt", pa.string()),
        pa.field("model_source", pa.string()),
        pa.field("model_family", pa.string()),
        pa.field("model_identity", pa.string()),
        pa.field("model_dtype", pa.string()),
        pa.field("model_options", pa.string()),
        pa.field("video_codec", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("fingerprint", pa.string()),
        pa.field("rerender_reason", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("batch_items", pa.int32()),
        pa.field("device", pa.string()),
        pa.field("node_id", pa.string()),
        pa.field("gpu_id", pa.string()),
        pa.field("gpu_name", pa.string()),
        pa.field("cuda_version", pa.string()),
        pa.field("driver_version", pa.string()),
        pa.field("torch_version", pa.string()),
        pa.field("diffusers_version", pa.string()),
        pa.field("transformers_version", pa.string()),
        pa.field("nonfinite_frames", pa.int32()),
        pa.field("black_frames", pa.int32()),
        pa.field("constant_frames", pa.int32()),
        pa.field("motion_mean", pa.float64()),
        pa.field("first_frame_psnr", pa.float64()),
        pa.field("first_frame_ssim", pa.float64()),
        pa.field("shard", pa.string()),
        pa.field("load_seconds", pa.float64()),
        pa.field("generate_seconds", pa.float64()),
        pa.field("peak_gpu_bytes", pa.int64()),
        pa.field("encode_seconds", pa.float64()),
        pa.field("write_seconds", pa.float64()),
        pa.field("finished_at", pa.timestamp("ms", tz="UTC")),
    ]
)

# The fitted image and the frames; the MP4 bytes travel on only when shards are written after the writer stage.
PAYLOAD_FIELDS = [
    pa.field("image", pa.large_binary()),
    pa.field("frames", pa.large_binary()),
    pa.field("video", pa.large_binary()),
]
WORK_SCHEMA = pa.schema(list(METADATA_SCHEMA) + PAYLOAD_FIELDS)
# What the writer hands the shard stage: the row, its fitted image and its MP4.
SHARD_INPUT_SCHEMA = pa.schema(list(METADATA_SCHEMA) + [PAYLOAD_FIELDS[0], PAYLOAD_FIELDS[2]])

OK = "ok"
ERROR = "error"
REJECTED = "rejected"  # rendered, but a quality gate refused it: in the table, not in the shards
SKIPPED = "skipped"  # committed by an earlier run with the same fingerprint; never written to the table
REMOVED = "removed"  # its key left the manifest and a pruning run deleted its video
GENERATED = (OK, REJECTED)  # the model made a video (a rejected one took its GPU time too)

# SVD's render parameters, in the order the pipeline call and the docs list them; the prompted families' (Wan, LTX)
# are spec.render.PROMPTED_PARAMS, null in SVD's rows as SVD's own (SVD_PARAMS) are in theirs.
RENDER_COLUMNS = [
    "width",
    "height",
    "num_frames",
    "num_inference_steps",
    "fps",
    "motion_bucket_id",
    "noise_aug_strength",
    "min_guidance_scale",
    "max_guidance_scale",
    "decode_chunk_size",
    "fit",
]


def guided(row: dict[str, Any]) -> bool:
    """Whether classifier-free guidance is on (the pipeline runs both branches a step): SVD's max_guidance_scale, or
    Wan's and LTX's guidance_scale, above 1."""
    svd = row.get("max_guidance_scale")
    scale = svd if svd is not None else row.get("guidance_scale")
    return scale is not None and scale > 1


def blank_row() -> dict[str, Any]:
    return {name: None for name in WORK_SCHEMA.names}


def fail(row: dict[str, Any], message: str) -> dict[str, Any]:
    """Mark a row as a dead letter: it keeps flowing so it lands in the table, without its payload."""
    row.update(status=ERROR, error=message, video_uri=None, image=None, frames=None, video=None)
    return row


def generated(batch: pa.Table) -> pa.Table:
    """The rows whose video the model generated (``GENERATED``): the ones whose generation time counts."""
    return batch.filter(pc.is_in(batch["status"], pa.array(GENERATED)))


def to_rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def conform(table: pa.Table) -> pa.Table:
    """A stored table in today's metadata schema; columns added since it was written read as null
    (svdbatch/formats.py)."""
    missing = [field for field in METADATA_SCHEMA if field.name not in table.column_names]
    for field in missing:
        table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(METADATA_SCHEMA.names).cast(METADATA_SCHEMA)


def to_table(rows: list[dict[str, Any]], schema: pa.Schema = WORK_SCHEMA) -> pa.Table:
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)
