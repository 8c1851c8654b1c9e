"""The oldest format svdbatch reads (svdbatch/formats.py): an output of table 1 with rows of row 1 resumes without
rendering anything again, and its first publish turns it into today's table."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from svdbatch import formats
from svdbatch.items.decide import COMMITTED, decide
from svdbatch.items.expand import expand_row
from svdbatch.items.metadata import METADATA_SCHEMA, to_table
from svdbatch.spec.load import build_spec
from svdbatch.store import commit, state

# The columns of row format 1, as the first version with fingerprints wrote them: no identities, no quality,
# provenance or timing beyond these.
ROW_1_SCHEMA = pa.schema(
    [(name, METADATA_SCHEMA.field(name).type) for name in (
        "run_id", "key", "variant", "source_uri", "video_uri", "seed", *formats.ROW_1_PARAMS, "model_source",
        "model_dtype", "video_codec", "bytes", "sha256", "fingerprint", "rerender_reason", "status", "error",
        "batch_items", "device", "node_id", "gpu_id", "load_seconds", "generate_seconds", "encode_seconds",
        "write_seconds", "finished_at",
    )]
)


def _spec(**render):
    return build_spec({"manifest": {"path": "/m.parquet"}, "output": {"url": "/out"}, "seeds": {"base_seed": 7},
                       "render": {"width": 64, "height": 64, "num_frames": 8, **render}})


def _table_1(tmp_path, spec, keys):
    """A table 1 file whose rows are of row format 1: what that version committed for these keys."""
    rows = []
    for key in keys:
        item = expand_row({"key": key, "image": f"/i/{key}.png"}, spec, "old", spec.output.url)[0]
        row = {name: item.get(name) for name in ROW_1_SCHEMA.names}
        row.update(fingerprint=formats.fingerprint_1(item, spec), finished_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        rows.append(row)
    (tmp_path / "metadata").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=ROW_1_SCHEMA), tmp_path / formats.TABLE_1)


def _decided(tmp_path, spec, keys) -> list[tuple[str, str | None]]:
    """Items of these keys, joined with the committed state read from the output, then decided."""
    piece = state.read_piece(str(tmp_path), commit.state_files(str(tmp_path)), 0, 1)
    items = to_table([expand_row({"key": key, "image": f"/i/{key}.png"}, spec, "new", spec.output.url,
                                 identities={"model": "weights", "sources": {}})[0] for key in keys])
    joined = state.join(items, [piece])
    assert joined[COMMITTED + "fingerprint"].null_count == 0
    decided = decide(joined, spec).sort_by("key")
    return list(zip(decided["status"].to_pylist(), decided["rerender_reason"].to_pylist(), strict=True))


def test_the_oldest_supported_output_resumes_with_nothing_rendered_again_and_is_upgraded(tmp_path):
    spec, keys = _spec(), ["a", "b/c", "d"]
    _table_1(tmp_path, spec, keys)
    assert _decided(tmp_path, spec, keys) == [("skipped", None)] * 3
    assert _decided(tmp_path, _spec(fps=8), keys) == [("ok", "spec changed")] * 3  # a real change still shows

    commit.publish(str(tmp_path))
    assert not (tmp_path / formats.TABLE_1).exists()
    table = pq.read_table(tmp_path / "metadata")
    assert table.schema == METADATA_SCHEMA and sorted(table["key"].to_pylist()) == sorted(keys)
    assert table["model_identity"].null_count == 3 and table["motion_mean"].null_count == 3  # columns it predates
    assert _decided(tmp_path, spec, keys) == [("skipped", None)] * 3
