"""Seeds, output keys and row expansion: pure functions, no Ray."""

from __future__ import annotations

import hashlib
import itertools
import math

import pyarrow as pa
import pytest

from svdbatch.items.decide import resume
from svdbatch.items.expand import expand_batch, expand_row
from svdbatch.items.keys import derive_seed, safe_key, video_key
from svdbatch.items.metadata import to_table
from svdbatch.items.params import effective_decode_chunk
from svdbatch.spec.load import build_spec

SPEC = build_spec(
    {"manifest": {"path": "m.parquet"}, "output": {"url": "/out"}, "seeds": {"base_seed": 11, "variants": 3}}
)


def test_seed_is_the_documented_function():
    # docs/guides/dataset-augmentation.md's formula, computed independently; changing it changes every user's videos.
    digest = hashlib.sha256(b"svdbatch-seed-v1\x000\x00sku-1\x000").digest()
    assert derive_seed(0, "sku-1", 0) == int.from_bytes(digest[:8], "big") & (2**63 - 1)


def test_seed_depends_on_each_input_and_fits_int63():
    seed = derive_seed(1, "a", 0)
    assert seed != derive_seed(2, "a", 0)
    assert seed != derive_seed(1, "b", 0)
    assert seed != derive_seed(1, "a", 1)
    assert 0 <= seed < 2**63


def test_seeds_collision_free_across_keys_and_variants():
    seeds = {derive_seed(5, f"key-{index}", variant) for index in range(5000) for variant in range(4)}
    assert len(seeds) == 20000


def test_seeds_are_well_spread():
    seeds = [derive_seed(0, str(index), 0) for index in range(4000)]
    high_bit_share = sum(seed >> 62 for seed in seeds) / len(seeds)
    assert 0.45 < high_bit_share < 0.55
    assert abs(sum(seed % 1000 for seed in seeds) / len(seeds) - 499.5) < 20


@pytest.mark.parametrize("key", ["a/b", "a_b", "../etc/passwd", "x\\y", "spaces and ünïcödé", "..", "", "a" * 500])
def test_safe_key_is_safe_and_bounded(key):
    name = safe_key(key)
    assert len(name) <= 80 + 17
    assert all(char.isalnum() or char in "._-" for char in name)
    assert not name.startswith(".")


def test_safe_key_is_injective_on_lookalikes():
    keys = ["a/b", "a_b", "a b", "a\\b", "a:b", "A/B", "a/b/"]
    assert len({safe_key(key) for key in keys}) == len(keys)


def test_video_key_is_under_videos_and_names_variant():
    assert video_key("sku/1", 2).startswith("videos/sku_1-")
    assert video_key("sku/1", 2).endswith("_v0002.mp4")


@pytest.mark.parametrize(
    ("frames", "requested", "expected"), [(25, 8, 5), (14, 8, 7), (8, 8, 8), (7, 100, 7), (13, 4, 1)]
)
def test_decode_chunk_divides_frames(frames, requested, expected):
    assert effective_decode_chunk(frames, requested) == expected


def test_row_expands_into_variants_with_derived_seeds():
    items = expand_row({"key": "k1", "image": "/img.png"}, SPEC, "run", "/out")
    assert [item["variant"] for item in items] == [0, 1, 2]
    assert [item["seed"] for item in items] == [derive_seed(11, "k1", v) for v in range(3)]
    assert items[0]["video_uri"] == "/out/" + video_key("k1", 0)
    assert items[0]["width"] == 1024 and items[0]["num_frames"] == 25 and items[0]["decode_chunk_size"] == 5


def test_row_overrides_params_seed_and_variants():
    row = {"key": "k", "image": "/i.png", "fps": 12, "motion_bucket_id": 30, "seed": 100, "variants": 2, "width": None}
    items = expand_row(row, SPEC, "run", "/out")
    assert [item["seed"] for item in items] == [100, 101]
    assert items[0]["fps"] == 12 and items[0]["motion_bucket_id"] == 30 and items[0]["width"] == 1024


@pytest.mark.parametrize(
    ("column", "value", "cause"),
    [
        ("fps", -1, "fps"),
        ("num_frames", 0, "num_frames"),
        ("noise_aug_strength", math.nan, "noise_aug_strength"),
        ("width", "wide", "width"),
        ("seed", -5, "seed"),
        ("variants", 0, "variants"),
    ],
)
def test_bad_override_becomes_one_error_row_naming_row_and_column(column, value, cause):
    items = expand_row({"key": "bad", "image": "/i.png", column: value}, SPEC, "run", "/out")
    assert len(items) == 1
    assert items[0]["status"] == "error"
    assert "'bad'" in items[0]["error"] and cause in items[0]["error"]


def test_missing_key_or_image_is_an_error_row():
    assert expand_row({"key": None, "image": "/i.png"}, SPEC, "r", "/o")[0]["error"].endswith("column key is empty")
    assert "column image is empty" in expand_row({"key": "k", "image": ""}, SPEC, "r", "/o")[0]["error"]


@pytest.mark.parametrize(
    ("committed", "retry_errors", "status", "reason"),
    [
        (None, True, "ok", None),
        ({"fingerprint": "f", "status": "ok"}, True, "skipped", None),
        ({"fingerprint": "old", "status": "ok"}, True, "ok", "spec changed"),
        ({"fingerprint": "f", "status": "error"}, True, "ok", "failed before"),
        ({"fingerprint": "f", "status": "error"}, False, "skipped", None),
    ],
)
def test_resume_decides_from_the_committed_row(committed, retry_errors, status, reason):
    identities = {"source_version": "ETag=1", "model_identity": "m"}  # unchanged; test_unit_catalog.py varies them
    item = {"status": "ok", "fingerprint": "f", "rerender_reason": None, **identities}
    resume(item, committed and {**identities, **committed}, retry_errors)
    assert (item["status"], item["rerender_reason"]) == (status, reason)


def test_resume_leaves_invalid_rows_alone():
    item = {"status": "error", "fingerprint": None, "rerender_reason": None}
    resume(item, {"fingerprint": "f", "status": "ok"}, True)
    assert item["status"] == "error"


def _per_row(table: pa.Table, spec, duplicates=None) -> list[dict]:
    items = [item for row in table.to_pylist() for item in expand_row(row, spec, "r", "/out", duplicates)]
    return to_table(items).to_pylist()


def _ordered(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda row: (str(row["key"]), row["variant"], row["error"] or ""))


@pytest.mark.parametrize("sweep", [[], [10, 200]])
def test_batch_expansion_is_bit_identical_to_the_per_row_formula(sweep):
    spec = build_spec(
        {
            "manifest": {"path": "/m.parquet"},
            "output": {"url": "/out/"},
            "seeds": {"base_seed": 2**62 + 5, "variants": 3, "motion_sweep": sweep},
            "model": {"source": 'odd "model" \\\\ name'},
        }
    )
    table = pa.table(
        {
            "key": ["a", "b/c ü", "", None, "dup", "dup", "x" * 200, "q"],
            "image": ["/i/a.png", '/i/"quoted"\\ é.png', "/i/e.png", "/i/n.png", "/i/d.png", "/i/d.png", "/i/x.png",
                      "http://no/q.png"],
        }
    )
    fast = expand_batch(table, spec, "r", "/out/", {"dup": 2}).to_pylist()
    assert _ordered(fast) == _ordered(_per_row(table, spec, {"dup": 2}))
    assert sum(row["status"] == "ok" for row in fast) == 9


def test_batch_expansion_with_integer_keys_and_overrides_matches_per_row():
    integer_keys = pa.table({"key": [1, 2], "image": ["/i/1.png", "/i/2.png"]})
    assert expand_batch(integer_keys, SPEC, "r", "/out").to_pylist() == _per_row(integer_keys, SPEC)
    overrides = pa.table({"key": ["a", "b"], "image": ["/i/a.png", "/i/b.png"], "fps": [None, 12]})
    assert expand_batch(overrides, SPEC, "r", "/out").to_pylist() == _per_row(overrides, SPEC)


@pytest.mark.parametrize("retry_errors", [True, False])
def test_the_decision_column_wise_and_for_one_item_agree_on_every_case(retry_errors):
    """``decide`` over a batch (Arrow, what the feed runs) against ``resume`` item by item, for every combination of
    item status, committed fingerprint, status and identities: the two forms of the one rule."""
    from svdbatch.items.decide import COMMITTED, RESUME_COLUMNS, decide

    spec = build_spec({"manifest": {"path": "/m.parquet"}, "output": {"url": "/out"},
                       "failures": {"retry_errors": retry_errors}})
    identities = {"model": "m", "sources": {"/i/k.png": "v1"}}
    item = expand_batch(pa.table({"key": ["k"], "image": ["/i/k.png"]}), spec, "r", "/out", identities=identities)
    combos = list(itertools.product(
        ["ok", "error"],
        [None, item["fingerprint"][0].as_py(), "other"],
        [None, "ok", "error", "rejected", "removed"],
        [None, "v1", "v2"],
        [None, "m", "m2"],
    ))
    rows, expected = [], []
    for status, fingerprint, committed_status, source_version, model_identity in combos:
        if fingerprint is not None and source_version is None and model_identity is None:
            continue  # row format 1, which only the batch form knows: test_unit_formats.py
        row = item.to_pylist()[0] | {"status": status}
        committed = {"fingerprint": fingerprint, "status": committed_status, "source_version": source_version,
                     "model_identity": model_identity}
        row.update({COMMITTED + name: value for name, value in committed.items()})
        rows.append(row)
        one = dict(row)
        resume(one, committed if any(value is not None for value in committed.values()) else None, retry_errors)
        expected.append((one["status"], one["rerender_reason"]))
    schema = item.schema
    for name in RESUME_COLUMNS:
        schema = schema.append(pa.field(COMMITTED + name, pa.string()))
    decided = decide(pa.Table.from_pylist(rows, schema=schema), spec)
    assert list(zip(decided["status"].to_pylist(), decided["rerender_reason"].to_pylist(), strict=True)) == expected
    assert {"skipped", "ok", "error"} <= set(decided["status"].to_pylist())
    assert not any(name.startswith(COMMITTED) for name in decided.column_names)
