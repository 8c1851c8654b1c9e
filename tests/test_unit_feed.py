"""The feed's stage wrapper, without Ray: a manifest file's whole block goes in, the stage sees bounded slices."""

from __future__ import annotations

import pyarrow as pa

from svdbatch.ray.dataset import InSlices


def test_in_slices_runs_the_stage_on_bounded_slices_in_order():
    seen = []

    def stage(batch: pa.Table) -> pa.Table:
        seen.append(batch.num_rows)
        return batch.append_column("twice", pa.array([2 * value for value in batch["n"].to_pylist()]))

    out = list(InSlices(stage, 4)(pa.table({"n": list(range(10))})))
    assert seen == [4, 4, 2]
    assert pa.concat_tables(out)["twice"].to_pylist() == [2 * value for value in range(10)]


def test_in_slices_gives_an_empty_batch_to_the_stage_once_for_its_schema():
    out = list(InSlices(lambda batch: batch.append_column("x", pa.array([], pa.int8())), 4)(pa.table({"n": []})))
    assert len(out) == 1 and out[0].column_names == ["n", "x"] and out[0].num_rows == 0
