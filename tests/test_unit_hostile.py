"""Hostile input without Ray: manifests that must fail before any work, and property tests of keys and seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_spec
from hypothesis import given, settings
from hypothesis import strategies as st

from svdbatch.errors import JobError
from svdbatch.items.keys import derive_seed, safe_key, video_key
from svdbatch.ray import driver


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"image": ["a.png"]}), "no key column 'key'"),
        (pa.table({"key": ["a"]}), "no image column 'image'"),
        (pa.table({"key": [1.5], "image": ["a.png"]}), "is double, expected string"),
        (pa.table({"key": ["a"], "image": [3]}), "expected string URIs"),
        (pa.table({"key": pa.array([], pa.string()), "image": pa.array([], pa.string())}), "has no rows"),
    ],
)
def test_bad_manifests_fail_before_any_work(tmp_path, table, message):
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(JobError, match=message):
        driver.preflight(make_spec(tmp_path / "m.parquet", tmp_path / "out"))
    assert not (tmp_path / "out" / "videos").exists()


def test_a_file_that_is_not_parquet_fails_before_any_work(tmp_path):
    (tmp_path / "m.parquet").write_bytes(b"key,image\na,b\n")
    with pytest.raises(JobError, match="not a readable Parquet file"):
        driver.preflight(make_spec(tmp_path / "m.parquet", tmp_path / "out"))


@pytest.mark.parametrize("key_type", [pa.string(), pa.int64()])
def test_duplicate_keys_are_counted_exactly_across_files_and_row_groups(tmp_path, key_type):
    from svdbatch.items import manifest

    (tmp_path / "m").mkdir()
    first = pa.table({"key": pa.array(["1", "2", "3", None, "2"] + [str(n) for n in range(10, 5000)]),
                      "image": ["a.png"] * 4995})
    second = pa.table({"key": pa.array(["3", "2", None, "4"]), "image": ["b.png"] * 4})
    pq.write_table(first.cast(pa.schema([("key", key_type), ("image", pa.string())])), tmp_path / "m" / "1.parquet",
                   row_group_size=1000)
    pq.write_table(second.cast(pa.schema([("key", key_type), ("image", pa.string())])), tmp_path / "m" / "2.parquet")
    info = manifest.inspect(make_spec(tmp_path / "m", tmp_path / "out"))
    assert info.duplicate_keys == {"2": 3, "3": 2}
    assert info.rows == 4999


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=300), min_size=2, max_size=20, unique=True))
def test_safe_key_is_injective_bounded_and_contained(keys):
    names = [video_key(key, 0) for key in keys]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= 120
        assert name.startswith("videos/") and "/" not in name.removeprefix("videos/")
        assert ".." not in name.split("/") and "\x00" not in name
        assert Path("/out", name).resolve().is_relative_to("/out/videos")
    assert all(safe_key(key) == safe_key(key) for key in keys)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**63 - 1), st.text(max_size=100), st.integers(0, 10_000))
def test_seed_derivation_is_stable_and_in_range(base, key, variant):
    seed = derive_seed(base, key, variant)
    assert seed == derive_seed(base, key, variant) and 0 <= seed < 2**63
    assert seed != derive_seed(base, key, variant + 1)


def test_seed_derivation_is_well_spread():
    seeds = np.array([derive_seed(0, f"k{i}", 0) for i in range(20_000)], dtype=np.float64)
    buckets = np.histogram(seeds, bins=16, range=(0.0, float(2**63)))[0]
    expected = len(seeds) / 16
    chi_square = ((buckets - expected) ** 2 / expected).sum()
    assert chi_square < 40  # 15 degrees of freedom: p < 0.001 above ~37.7
