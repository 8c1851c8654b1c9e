"""WebDataset shards without Ray: round trip through the webdataset library, orphans and superseded samples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import webdataset as wds
from helpers import TEST_RENDER, shard_samples

from svdbatch.demo import sample_image
from svdbatch.items.expand import expand_row
from svdbatch.items.metadata import to_table
from svdbatch.render.shards import WriteShards, reconcile, sample_key
from svdbatch.render.stages import WriteVideos
from svdbatch.render.video import probe
from svdbatch.spec.load import build_spec
from svdbatch.store import commit
from svdbatch.store.committer import Committer

FRAMES, SIZE = TEST_RENDER["num_frames"], TEST_RENDER["width"]


def _spec(output: Path, **shards):
    return build_spec(
        {
            "manifest": {"path": "m"},
            "output": {"url": str(output), "shards": {"enabled": True, **shards}},
            "render": TEST_RENDER,
        }
    )


def _render(spec, run_id: str, keys: list[str], shift: int = 0):
    """What the writer and shard stages emit for these keys: real MP4s, quality columns, shard names."""
    rows = []
    for index, key in enumerate(keys):
        (item,) = expand_row({"key": key, "image": f"/{key}.png"}, spec, run_id, spec.output.url)
        image = np.asarray(sample_image(index, SIZE, SIZE))
        frames = np.stack([np.roll(image, 3 * (frame + shift), axis=0) for frame in range(FRAMES)])
        item.update(image=image.tobytes(), frames=frames.tobytes(), nonfinite_frames=0)
        rows.append(item)
    return WriteShards(spec)(WriteVideos(spec)(to_table(rows)))


def _commit(spec, run_id: str, table) -> None:
    committer = Committer(spec.output.url, run_id, {}, 1.0)
    committer.add(table)
    committer.finish()
    commit.publish(spec.output.url, {}, shards=True)


def test_shards_round_trip_through_the_webdataset_library(tmp_path):
    output = tmp_path / "out"
    spec = _spec(output, samples_per_shard=2)
    keys = ["shoes/a.png", "shoes/b.png", "c", "d", "e"]
    table = _render(spec, "run1", keys)
    _commit(spec, "run1", table)
    index = json.loads((output / "shards" / "index.json").read_text())
    assert index["samples"] == 5 and sorted(len(keys) for keys in index["shards"].values()) == [1, 2, 2]
    rows = {row["key"]: row for row in commit.read_rows(str(output)).to_pylist()}
    assert all(sample_key(key, 0) in index["shards"][rows[key]["shard"]] for key in keys)

    urls = [str(output / "shards" / name) for name in index["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert len(samples) == 5
    for sample in samples:
        row = sample["json"]
        assert sample["__key__"] == sample_key(row["key"], row["variant"]) and row["status"] == "ok"
        assert sample["jpg"].shape == (SIZE, SIZE, 3) and sample["jpg"].dtype == np.uint8
        video = tmp_path / f"{sample['__key__']}.mp4"
        video.write_bytes(sample["mp4"])
        assert probe(str(video)).frames == FRAMES == row["num_frames"]
        assert row["shard"] == rows[row["key"]]["shard"] and row["first_frame_ssim"] > 0.9


def test_shard_size_limit_closes_a_shard_before_it_grows_past_max_bytes(tmp_path):
    table = _render(_spec(tmp_path, samples_per_shard=100, max_shard_bytes=1), "run1", ["a", "b", "c"])
    assert len(set(table.column("shard").to_pylist())) == 3  # each MP4 alone exceeds 1 byte: one per shard


def test_orphans_are_deleted_and_superseded_samples_rewritten_so_each_sample_is_in_one_shard(tmp_path):
    output = tmp_path / "out"
    spec = _spec(output, samples_per_shard=10)
    _commit(spec, "run1", _render(spec, "run1", ["a", "b"]))
    _render(spec, "run2", ["c"])  # a killed run: its shard was written, its rows never committed
    assert shard_samples(output) == Counter({sample_key("a", 0): 1, sample_key("b", 0): 1, sample_key("c", 0): 1})
    commit.publish(str(output), {}, shards=True)  # the next run starts: nothing pending, the orphan goes
    assert shard_samples(output) == Counter({sample_key("a", 0): 1, sample_key("b", 0): 1})
    _render(spec, "run2", ["c"])  # killed again

    rerendered = _render(spec, "run3", ["a", "c"], shift=5)  # a changed, c rendered again after the kill
    _commit(spec, "run3", rerendered)
    assert shard_samples(output) == Counter({sample_key(key, 0): 1 for key in "abc"})
    index = json.loads((output / "shards" / "index.json").read_text())
    assert sorted(len(keys) for keys in index["shards"].values()) == [1, 2] and index["samples"] == 3
    newest = {row["key"]: row["shard"] for row in rerendered.to_pylist()}
    assert sample_key("a", 0) in index["shards"][newest["a"]]
    assert sorted(path.name for path in (output / "shards").iterdir()) == sorted([*index["shards"], "index.json"])

    # A publish killed after the index was written applies the same commit files again: nothing changes.
    assert reconcile(str(output), rerendered, commit.latest(rerendered).to_pylist(), {}) == index
    assert shard_samples(output) == Counter({sample_key(key, 0): 1 for key in "abc"})


def test_rejected_and_error_rows_are_not_sharded(tmp_path):
    spec = build_spec(
        {
            **_spec(tmp_path).model_dump(mode="json"),
            "quality": {"min_first_frame_psnr": 99.0, "max_black_frames": 0},
        }
    )
    table = _render(spec, "run1", ["a"], shift=1)  # the first frame is shifted: PSNR far below 99
    (row,) = table.to_pylist()
    assert row["status"] == "rejected" and row["shard"] is None
    assert not (tmp_path / "shards").exists()
