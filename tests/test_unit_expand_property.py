"""Row-wise and batch-wise expansion give the same items, on generated manifests and specs (hypothesis): keys with
odd characters or integer keys, empty, missing and duplicate keys, refused and quoted image URIs, listed and looked-up
image versions, per-row parameters (valid and not), variants and motion sweeps, step cache and sampler on or off.
Each item's fingerprint is also checked against the plain formula: sha256 of ``json.dumps(shaping, sort_keys=True)``."""

from __future__ import annotations

import collections
import hashlib
import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svdbatch.items.expand import expand_batch, expand_row
from svdbatch.items.fingerprint import shared_shaping
from svdbatch.items.keys import derive_seed, video_key
from svdbatch.spec.load import build_spec

ODD = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # quotes, backslashes, NUL, any script
KEY = st.one_of(st.none(), st.just(""), st.sampled_from(["a", "a/b", "a_b", 'q"uote', "back\\slash", "dup"]), ODD)
IMAGE = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(["/i/a.png", '/i/"q" \\ é.png', "/i/shared.png", "http://elsewhere/x.png", "/i/nul\0.png"]),
    ODD.map(lambda text: "/i/" + text),
)
VERSION = st.one_of(st.none(), st.sampled_from(["v1", 'ETag="x"', "size=1,modified=2.5"]))
# Per-row parameters: null (the job's), valid ones, and ones a row must fail on.
OVERRIDES = {
    "fps": st.one_of(st.none(), st.integers(1, 30), st.just(0)),
    "motion_bucket_id": st.one_of(st.none(), st.integers(0, 1023)),
    "noise_aug_strength": st.one_of(st.none(), st.floats(0, 1), st.just(float("nan"))),
    "seed": st.one_of(st.none(), st.integers(0, 2**63 - 1), st.just(-1)),
    "variants": st.one_of(st.none(), st.integers(1, 3)),
}


@st.composite
def specs(draw):
    model = {"source": draw(st.sampled_from(["svdbatch:tiny", 'odd "model" \\\\ ü']))}
    if draw(st.booleans()):
        model["step_cache"] = {"enabled": True, "interval": draw(st.integers(1, 4))}
    if draw(st.booleans()):
        model["scheduler"] = {"name": "dpmpp-2m", "config": {"rho": 7.0}}
    return build_spec(
        {
            "manifest": {"path": "/m.parquet"},
            "output": {"url": draw(st.sampled_from(["/out", "/out/", "file:///out"]))},
            "model": model,
            "seeds": {
                "base_seed": draw(st.integers(0, 2**63 - 1)),
                "variants": draw(st.integers(1, 3)),
                "motion_sweep": draw(st.lists(st.integers(0, 1023), max_size=3)),
            },
        }
    )


@st.composite
def manifests(draw):
    size = draw(st.integers(1, 8))
    if draw(st.booleans()):
        keys = pa.array(draw(st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=size, max_size=size)))
    else:
        keys = pa.array(draw(st.lists(KEY, min_size=size, max_size=size)), pa.string())
    columns = {"key": keys, "image": pa.array(draw(st.lists(IMAGE, min_size=size, max_size=size)), pa.string())}
    if draw(st.booleans()):
        columns["image_version"] = pa.array(draw(st.lists(VERSION, min_size=size, max_size=size)), pa.string())
    for name in draw(st.lists(st.sampled_from(sorted(OVERRIDES)), unique=True, max_size=3)):
        columns[name] = draw(st.lists(OVERRIDES[name], min_size=size, max_size=size))
    return pa.table(columns)


def _duplicates(table: pa.Table) -> dict[str, int]:
    counts = collections.Counter(key for key in table["key"].cast(pa.string()).to_pylist() if key)
    return {key: count for key, count in counts.items() if count > 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), manifests(), st.one_of(st.none(), st.just('weights "w" é')), st.booleans())
def test_row_wise_and_batch_wise_expansion_give_identical_items(spec, table, weights, look_up):
    sources = {uri: f"looked-up {uri}" for uri in table["image"].to_pylist() if uri and look_up}
    identities = {"model": weights, "sources": sources}
    duplicates = _duplicates(table)
    batch = expand_batch(table, spec, "run", spec.output.url, duplicates, identities).to_pylist()
    rows = [item for row in table.to_pylist() for item in expand_row(row, spec, "run", spec.output.url, duplicates,
                                                                       identities)]
    # The batch puts its error rows last, in manifest order; otherwise the order is the manifest's.
    assert batch == [row for row in rows if row["status"] == "ok"] + [row for row in rows if row["status"] != "ok"]
    for item in batch:
        if item["status"] != "ok":
            assert item["error"] and item["video_uri"] is None
            continue
        shaping = shared_shaping(spec, item, weights) | {
            "seed": item["seed"], "source": item["source_uri"], "source_version": item["source_version"]
        }
        text = json.dumps(shaping, sort_keys=True)
        assert item["fingerprint"] == hashlib.sha256(text.encode()).hexdigest()[:32]
        assert item["video_uri"] == spec.output.url.rstrip("/") + "/" + video_key(item["key"], item["variant"])
    own_seed = "seed" in table.column_names
    for item in batch:
        if item["status"] == "ok" and not own_seed:
            assert item["seed"] == derive_seed(spec.seeds.base_seed, item["key"], item["variant"])


@pytest.mark.parametrize(
    ("model", "fingerprints"),
    [
        ({}, ["887f3d89cba7462e4476c1cfbc260348", "4d328252db313b3410d51c05134e692d"]),
        ({"step_cache": {"enabled": True}, "scheduler": {"name": "dpmpp-2m"}},
         ["9e5d9c2333409b16c69848545e105419", "0f213e07b327b66b72d8550a34db3209"]),
    ],
)
def test_seeds_keys_and_fingerprints_are_those_outputs_already_hold(model, fingerprints):
    """Pinned: the values committed rows already carry (printed by the expansion before it was one rule); a change
    here renders every existing output again."""
    spec = build_spec({"manifest": {"path": "/m.parquet"}, "output": {"url": "/out"}, "model": model,
                       "seeds": {"base_seed": 7, "variants": 2, "motion_sweep": [30, 200]}})
    identities = {"model": "m", "sources": {"/i/sku-1.png": "v1"}}
    for items in (expand_batch(pa.table({"key": ["sku-1"], "image": ["/i/sku-1.png"]}), spec, "r", "/out", None,
                               identities).to_pylist(),
                  expand_row({"key": "sku-1", "image": "/i/sku-1.png"}, spec, "r", "/out", None, identities)):
        assert [item["fingerprint"] for item in items] == fingerprints
        assert [item["seed"] for item in items] == [1824723774632765782, 2149429786277379402]
        assert [item["video_uri"] for item in items] == [
            f"/out/videos/sku-1-57156ade504c73c5_v000{variant}.mp4" for variant in range(2)]
