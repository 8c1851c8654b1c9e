"""The committed state as pieces, without Ray: the lookup joins every item with its own committed row (as a plain
dict join would), whatever the number of pieces and even when two items' hashes collide; pieces read from an output
hold each item once, its latest row; the prune anti-join finds exactly the live keys that left the manifest; the
manifest is read in parts of bounded rows."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_spec, write_manifest

from svdbatch import formats
from svdbatch.items import manifest
from svdbatch.items.decide import COMMITTED, RESUME_COLUMNS
from svdbatch.items.metadata import METADATA_SCHEMA
from svdbatch.store import commit, state

WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
KEYS = ["a", "b", "ü/ñ", "", "x" * 300, "row-0001", "row 2", "\x01odd", "k9", "k10"]


def _row(key: str, variant: int, fingerprint: str, status: str = "ok", run_id: str = "r1", hours: int = 0) -> dict:
    return {"key": key, "variant": variant, "fingerprint": fingerprint, "status": status, "run_id": run_id,
            "source_uri": f"/img/{key}.png", "source_version": f"v-{key}", "model_identity": "m1",
            "finished_at": WHEN + dt.timedelta(hours=hours)}


def _committed(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, pa.schema([METADATA_SCHEMA.field(name) for name in state.STATE_COLUMNS]))


def _pieces(rows: list[dict], count: int) -> list[pa.Table]:
    """The rows split into ``count`` pieces as read_piece splits them: by bucket."""
    groups: list[list[dict]] = [[] for _ in range(count)]
    for row in rows:
        groups[commit.bucket_of(row["key"]) % count].append(row)
    return [state.index(_committed(group)) for group in groups]


def _reference(items: pa.Table, rows: list[dict]) -> list[dict]:
    by_item = {(row["key"], row["variant"]): row for row in rows}
    joined = []
    for item in items.to_pylist():
        row = by_item.get((item["key"], item["variant"]), {})
        joined.append({**item, **{COMMITTED + name: row.get(name) for name in RESUME_COLUMNS}})
    return joined


def test_the_lookup_joins_each_item_with_its_own_row_whatever_the_pieces():
    generator = random.Random(7)
    rows = [_row(key, variant, f"f{key}{variant}") for key in KEYS for variant in range(3) if generator.random() < 0.6]
    wanted = [(key, variant) for key in [*KEYS, "new", None] for variant in range(4)]
    generator.shuffle(wanted)
    items = pa.table({"key": pa.array([key for key, _ in wanted], pa.string()),
                      "variant": pa.array([variant for _, variant in wanted], pa.int32()),
                      "own": pa.array(range(len(wanted)))})
    expected = _reference(items, rows)
    for count in (1, 3, 8):
        assert state.join(items, _pieces(rows, count)).to_pylist() == expected, count
    assert any(row[COMMITTED + "fingerprint"] for row in expected) and any(
        row[COMMITTED + "fingerprint"] is None for row in expected
    )


def test_two_items_with_the_same_hash_are_told_apart_by_their_key():
    piece = state.index(_committed([_row("a", 0, "fa"), _row("b", 0, "fb"), _row("c", 0, "fc")]))
    same = np.full(piece.num_rows, 42, dtype=np.uint64)  # every row collides
    piece = piece.set_column(piece.schema.get_field_index(state.HASH), state.HASH, pa.array(same, pa.uint64()))
    items = pa.table({"key": ["c", "a", "z"], "variant": pa.array([0, 0, 0], pa.int32())})
    original = state.item_hashes
    try:
        state.item_hashes = lambda keys, variants: np.full(len(keys), 42, dtype=np.uint64)
        joined = state.join(items, [piece])
    finally:
        state.item_hashes = original
    assert joined[COMMITTED + "fingerprint"].to_pylist() == ["fc", "fa", None]


def test_a_single_hash_match_is_confirmed_on_the_key():
    piece = state.index(_committed([_row("a", 0, "fa")]))
    piece = piece.set_column(piece.schema.get_field_index(state.HASH), state.HASH, pa.array([42], pa.uint64()))
    original = state.item_hashes
    try:
        state.item_hashes = lambda keys, variants: np.full(len(keys), 42, dtype=np.uint64)
        joined = state.join(pa.table({"key": ["b"], "variant": pa.array([0], pa.int32())}), [piece])
    finally:
        state.item_hashes = original
    assert joined[COMMITTED + "fingerprint"].to_pylist() == [None]


def _publish(output, rows: list[dict], name: str) -> None:
    folder = output / commit.COMMITS
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, METADATA_SCHEMA), folder / f"{name}.parquet")


@pytest.mark.parametrize("pieces", [1, 4])
def test_pieces_of_an_output_hold_each_item_once_with_its_latest_row(tmp_path, pieces):
    rows = [_row(key, 0, f"f-{key}") for key in KEYS]
    _publish(tmp_path, rows, "r1")
    commit.publish(str(tmp_path))
    _publish(tmp_path, [_row("a", 0, "newer", status="error", run_id="killed", hours=2)], "killed")  # not merged
    files = commit.state_files(str(tmp_path))
    read = [state.read_piece(str(tmp_path), files, piece, pieces) for piece in range(pieces)]
    for number, piece in enumerate(read):
        assert all(commit.bucket_of(key) % pieces == number for key in piece["key"].to_pylist())
        assert piece[state.HASH].to_pylist() == sorted(piece[state.HASH].to_pylist())
    every = pa.concat_tables(read).to_pylist()
    assert sorted(row["key"] for row in every) == sorted(KEYS)
    latest = {row["key"]: row for row in every}
    assert (latest["a"][COMMITTED + "fingerprint"], latest["a"][COMMITTED + "status"]) == ("newer", "error")
    assert latest["b"][COMMITTED + "source_version"] == "v-b"


def test_pieces_read_the_single_file_table_of_an_earlier_layout(tmp_path):
    (tmp_path / "metadata").mkdir()
    old = [_row(key, 0, f"f-{key}") for key in KEYS[:5]]
    pq.write_table(pa.Table.from_pylist(old, METADATA_SCHEMA).drop_columns(["model_identity"]),
                   tmp_path / formats.TABLE_1)
    files = commit.state_files(str(tmp_path))
    every = pa.concat_tables([state.read_piece(str(tmp_path), files, piece, 2) for piece in range(2)])
    assert sorted(every["key"].to_pylist()) == sorted(KEYS[:5])
    assert set(every[COMMITTED + "model_identity"].to_pylist()) == {None}  # the column it lacked reads as null


def test_the_anti_join_finds_the_live_keys_that_left_the_manifest(tmp_path):
    rows = [_row(key, variant, "f") for key in KEYS for variant in range(2)]
    rows += [_row("gone", 0, "f"), _row("gone", 1, "f"), _row("removed-already", 0, "f", status="removed")]
    listed = [key for key in KEYS if key != "b"]
    path = write_manifest(tmp_path / "m.parquet", {"key": listed, "image": ["/i.png"] * len(listed)})
    spec = make_spec(path, tmp_path / "out")
    info = manifest.inspect(spec)
    keys = state.listed(state.present(spec, info.parts[:1]), state.present(spec, info.parts[1:]))
    absent = pa.concat_tables([state.absent(piece, keys) for piece in _pieces(rows, 3)])
    assert sorted((row["key"], row["variant"]) for row in absent.to_pylist()) == [
        ("b", 0), ("b", 1), ("gone", 0), ("gone", 1)
    ]
    assert set(absent.column_names) == {"key", "variant", *(COMMITTED + name for name in RESUME_COLUMNS)}


def test_a_manifest_is_read_in_parts_of_bounded_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "PART_ROWS", 25)
    monkeypatch.setattr(manifest, "SLICE_ROWS", 7)
    keys = [f"k{index}" for index in range(100)]
    table = pa.table({"key": keys, "image": ["/i.png"] * 100, "other": list(range(100))})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=10)
    pq.write_table(table.slice(0, 5), tmp_path / "small.parquet")
    spec = make_spec(tmp_path, tmp_path / "out")
    info = manifest.inspect(spec)
    big = [part for part in info.parts if part[0].endswith("big.parquet")]
    assert [(first, end) for _, first, end in big] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert len(info.parts) == 6
    read = manifest.ReadParts(spec, ["key"])
    slices = [
        batch
        for file, first, end in info.parts
        for batch in read(pa.table({"file": [file], "first": [first], "end": [end]}))
    ]
    assert max(batch.num_rows for batch in slices) <= 7 and all(batch.column_names == ["key"] for batch in slices)
    assert sorted(pa.concat_tables(slices)["key"].to_pylist()) == sorted(keys + keys[:5])
