"""What svdbatch reads that earlier versions of it wrote, by format version: the one place that knows them.

**Oldest supported: an output of table 1 with rows of row 1** (the first outputs with fingerprints): a rerun over
it with the same spec renders nothing again, and its first publish turns it into today's layout
(tests/test_unit_formats.py builds one and checks both). Rows without a fingerprint (builds before resume existed)
are rendered again. Nothing writes an old format.

The metadata table (``{output}/metadata/``):

- table 1: one file, ``TABLE_1``, rewritten whole by every run. It is read as one more file of the table; the first
  publish splits it into the buckets, ``TABLE_1_SLICE_ROWS`` rows at a time (``table_1_slices``), then removes it.
  While split in half (a publish killed in between) an item can have a row in it and one in a bucket.
- table 2 (today): 256 bucket files (store/commit.py).

Rows:

- row 1: a fingerprint (``fingerprint_1``: the model's name, the render parameters, the seed, the encoding and the
  image URI) and no ``model_identity`` or ``source_version``. A committed row of this format (``rows_1``) is
  compared by that fingerprint and without identities, so an upgrade renders nothing again; its weights and image
  can no longer be checked, only rows written since are.
- row 2 (today): identities, and the fingerprint of items/fingerprint.py. A stored row lacks the columns added after
  it was written (quality, provenance, timings): they read as null (``items.metadata.conform``), which readers show
  as not measured.

Fingerprint 2 and the model identity stay stable as options and model families are added: an option shapes them
only where it is set away from its default (the step cache, the sampler, a separate UNet) and a family's own fields
only its items (an SVD item has none), so rows written before them stay done, and the default sampler leaves the
pipeline's own scheduler untouched.

JSON records -- the lease's (``_job/lease/``) and the run records (``_job/runs/``): a record lacks the fields added
after it was written and a newer one may hold fields this version does not know (``known_fields``). Lease record 1
has no ``boot_id``, ``pid_namespace`` or ``pid_started``: its holder cannot be checked from another process, so it
is waited for. Run records before the environments, device-seconds and cost were kept show none.

The job spec: a field that was renamed (``RENAMED``) is refused with its new name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

TABLE_1 = "metadata/metadata.parquet"
TABLE_1_SLICE_ROWS = 100_000  # rows of table 1 split at a time: the driver never holds the table (10M rows: 7.7 GB)
# The render parameters fingerprint 1 hashes, in its order: that format's own list, kept as it was whatever columns
# items.metadata.RENDER_COLUMNS gains.
ROW_1_PARAMS = ("width", "height", "num_frames", "num_inference_steps", "fps", "motion_bucket_id", "noise_aug_strength",
                "min_guidance_scale", "max_guidance_scale", "decode_chunk_size", "fit")
RENAMED = {"compute.num_actors": "compute.actors (a number, or {min, max, initial})"}


def table_1_slices(fs: Any, path: str) -> Iterator[Any]:
    """Table 1 at ``path`` (an fsspec filesystem's), ``TABLE_1_SLICE_ROWS`` rows at a time, as pyarrow Tables."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=TABLE_1_SLICE_ROWS):
            yield pa.Table.from_batches([batch])


def rows_1(fingerprint: Any, model_identity: Any, source_version: Any) -> Any:
    """Which committed rows are of row format 1 (a fingerprint, no identities), from their three columns (Arrow)."""
    import pyarrow.compute as pc

    identities = pc.and_(pc.is_null(model_identity), pc.is_null(source_version))
    return pc.and_(pc.is_valid(fingerprint), identities)


def fingerprint_1(item: dict[str, Any], spec: Any) -> str:
    """The fingerprint of row format 1 for an item (its seed, image URI and render parameters) of a JobSpec."""
    shaping = {
        "model": [spec.model.source, spec.model.variant, spec.model.dtype],
        "params": [item[name] for name in ROW_1_PARAMS],
        "seed": item["seed"],
        "video": spec.video.model_dump(mode="json"),
        "source": item["source_uri"],
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:32]


def known_fields(record: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A JSON record of any version, as the fields of ``names`` it holds: a field it predates is absent (the reader's
    default applies), a field newer than this version is left out."""
    return {name: record[name] for name in names if name in record}
