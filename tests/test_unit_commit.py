"""The metadata table: bucketed, merged per touched bucket, one current row per item, upgraded from one file."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pyarrow.parquet as pq

from svdbatch import formats
from svdbatch.items.keys import item_id
from svdbatch.items.metadata import METADATA_SCHEMA
from svdbatch.store import commit


def _rows(keys: list[str | None], run_id: str, minute: int, status: str = "ok", fingerprint: str = "f") -> pa.Table:
    when = dt.datetime(2026, 1, 1, 0, minute, tzinfo=dt.timezone.utc)
    rows = [
        {"run_id": run_id, "key": key, "variant": 0, "source_uri": f"/i/{key}.png", "status": status,
         "fingerprint": fingerprint, "finished_at": when}
        for key in keys
    ]
    return pa.Table.from_pylist([{name: row.get(name) for name in METADATA_SCHEMA.names} for row in rows],
                                schema=METADATA_SCHEMA)


def _commit_file(output, table: pa.Table, name: str) -> None:
    (output / commit.COMMITS).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, output / commit.COMMITS / name)


def test_item_ids_match_the_python_identity():
    table = _rows(["a", "b/c", None], "r", 0)
    assert commit.item_ids(table).to_pylist() == [item_id("a", 0), item_id("b/c", 0), None]


def test_latest_keeps_the_newest_row_per_item_and_keyless_rows_per_run():
    table = pa.concat_tables(
        [_rows(["a", "b"], "r1", 1, "error"), _rows(["a"], "r2", 2), _rows([None], "r1", 1, "error"),
         _rows([None], "r2", 2, "error"), _rows(["c"], "r2", 3, "skipped")]
    )
    latest = commit.latest(table).to_pylist()
    assert sorted((row["key"], row["run_id"], row["status"]) for row in latest if row["key"]) == [
        ("a", "r2", "ok"), ("b", "r1", "error")]
    assert sorted(row["run_id"] for row in latest if row["key"] is None) == ["r1", "r2"]


def test_publish_rewrites_only_the_buckets_a_run_touched(tmp_path):
    keys = [f"k{i}" for i in range(600)]
    _commit_file(tmp_path, _rows(keys, "r1", 1), "r1-000000.parquet")
    assert commit.publish(str(tmp_path)) == len({commit.bucket_of(key) for key in keys})
    assert not list((tmp_path / commit.COMMITS).iterdir())
    files = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "metadata").iterdir()}

    _commit_file(tmp_path, _rows(["k1", "new"], "r2", 2, fingerprint="g"), "r2-000000.parquet")
    assert commit.publish(str(tmp_path)) == len({commit.bucket_of("k1"), commit.bucket_of("new")})
    touched = {os.path.basename(commit.bucket_path("", commit.bucket_of(key))) for key in ("k1", "new")}
    after = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "metadata").iterdir()}
    assert {name for name in after if files.get(name) != after[name]} == touched
    table = pq.read_table(tmp_path / "metadata")
    assert table.num_rows == 601 and len(set(commit.item_ids(table).to_pylist())) == 601
    assert {row["key"]: row["fingerprint"] for row in table.to_pylist()}["k1"] == "g"
    assert commit.publish(str(tmp_path)) == 0


def test_a_single_file_table_of_an_earlier_version_is_split_into_buckets(tmp_path):
    (tmp_path / "metadata").mkdir()
    pq.write_table(_rows(["a", "b", "c"], "old", 1), tmp_path / formats.TABLE_1)
    _commit_file(tmp_path, _rows(["c", "d"], "killed", 2, fingerprint="g"), "killed-000000.parquet")
    commit.publish(str(tmp_path))
    assert not (tmp_path / formats.TABLE_1).exists()
    assert all(path.name.startswith("bucket-") for path in (tmp_path / "metadata").iterdir())
    rows = {row["key"]: row for row in pq.read_table(tmp_path / "metadata").to_pylist()}
    assert sorted(rows) == ["a", "b", "c", "d"] and rows["c"]["run_id"] == "killed" and rows["a"]["run_id"] == "old"


def test_rows_of_the_version_before_identities_are_done_when_their_old_fingerprint_matches():
    """An upgrade renders nothing again: rows of row format 1 (svdbatch/formats.py) hold this fingerprint (printed
    by the version that wrote them, for the same spec and row) and no model or source identity."""
    from svdbatch.items.decide import COMMITTED
    from svdbatch.items.expand import expand_row
    from svdbatch.items.metadata import SKIPPED, to_table
    from svdbatch.render.feed import ResumeRows, count_work
    from svdbatch.spec.load import build_spec

    spec = build_spec(
        {
            "manifest": {"path": "/m.parquet"},
            "output": {"url": "/out"},
            "seeds": {"base_seed": 7},
            "render": {"width": 64, "height": 64, "num_frames": 8},
        }
    )
    item = expand_row({"key": "sku-1", "image": "/i/sku-1.png"}, spec, "r", "/out")[0]
    assert item["seed"] == 1824723774632765782

    def decided(old_fingerprint: str) -> pa.Table:
        batch = to_table([item])
        for name, value in {"fingerprint": old_fingerprint, "status": "ok"}.items():
            batch = batch.append_column(COMMITTED + name, pa.array([value], pa.string()))
        for name in ("source_version", "model_identity"):
            batch = batch.append_column(COMMITTED + name, pa.nulls(1, pa.string()))
        return ResumeRows(spec)(batch)

    done = decided("9d74e2a2fd3aab93fa411404dafd5c0c")
    assert done["status"].to_pylist() == [SKIPPED] and done["batch_items"].to_pylist() == [1]
    changed = decided("0" * 32)
    assert changed["status"].to_pylist() == ["ok"] and changed["rerender_reason"].to_pylist() == ["spec changed"]
    both = pa.concat_tables([done, changed, done])
    assert count_work(both).to_pylist() == [{"skipped": 2, "to_render": 1}]  # what the driver learns of a block
    assert count_work(both.slice(0, 0)).to_pylist() == [{"skipped": 0, "to_render": 0}]


def test_duckdb_and_pyarrow_read_one_current_row_per_item_even_while_a_publish_is_half_done(tmp_path, monkeypatch):
    """The readers of docs/reference/outputs.md, without svdbatch: a glob of plain Parquet files. A publish replaces
    bucket files one by one, each atomically, so a reader between two of them sees some items at their new row and
    the rest at their old one: never a duplicate, never a torn file."""
    import duckdb

    keys = [f"k{i}" for i in range(40)]
    _commit_file(tmp_path, _rows(keys, "r1", 1), "r1-000000.parquet")
    commit.publish(str(tmp_path))
    _commit_file(tmp_path, _rows(keys, "r2", 2, fingerprint="g"), "r2-000000.parquet")
    glob = str(tmp_path / "metadata" / "*.parquet")
    seen: list[tuple[int, int, int]] = []
    merge = commit._merge_bucket

    def reading_between_buckets(*args, **kwargs):
        merge(*args, **kwargs)
        query = (f"SELECT count(*), count(DISTINCT (key, variant)), count(*) FILTER (fingerprint = 'g') "
                 f"FROM read_parquet('{glob}')")
        seen.append(duckdb.sql(query).fetchall()[0])

    monkeypatch.setattr(commit, "_merge_bucket", reading_between_buckets)
    commit.publish(str(tmp_path))
    assert all(total == distinct == 40 for total, distinct, _ in seen)
    assert [new for _, _, new in seen] == sorted(new for _, _, new in seen) and seen[0][2] < 40 == seen[-1][2]
    table = pq.read_table(tmp_path / "metadata")
    assert table.num_rows == 40 and set(table["run_id"].to_pylist()) == {"r2"}
