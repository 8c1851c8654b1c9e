"""The generation stage on the real tiny pipeline, called directly (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TEST_RENDER

from svdbatch.demo import sample_image
from svdbatch.items.expand import expand_row
from svdbatch.items.metadata import fail, to_table
from svdbatch.render.generate import VideoGenerator
from svdbatch.render.images import load_image
from svdbatch.spec.load import build_spec


def _items(spec, keys, **overrides):
    rows = []
    for index, key in enumerate(keys):
        for item in expand_row({"key": key, "image": f"/{key}.png", **overrides}, spec, "run", "/out"):
            image = np.asarray(sample_image(index, item["width"], item["height"]))
            item["image"] = load_image(_png(image), item["width"], item["height"], "crop", 10**8).tobytes()
            rows.append(item)
    return rows


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _spec(batch_size: int):
    return build_spec(
        {
            "manifest": {"path": "m"},
            "output": {"url": "/out"},
            "render": TEST_RENDER,
            "compute": {"batch_size": batch_size, "torch_threads": 2},
        }
    )


@pytest.fixture(scope="module")
def generators():
    return {size: VideoGenerator(_spec(size)) for size in (1, 3)}


def _frames(table):
    return {(row["key"], row["variant"]): np.frombuffer(row["frames"], np.uint8) for row in table.to_pylist()}


def test_batched_and_single_calls_give_the_same_frames(generators):
    spec = _spec(1)
    rows = _items(spec, ["a", "b", "c"])
    single = generators[1](to_table(rows))
    batched = generators[3](to_table(rows))
    assert set(batched.column("batch_items").to_pylist()) == {3}
    assert set(single.column("batch_items").to_pylist()) == {1}
    for key, frames in _frames(single).items():
        assert frames.size == 8 * 64 * 64 * 3
        assert np.abs(frames.astype(int) - _frames(batched)[key].astype(int)).max() <= 1


def test_mixed_params_split_into_groups_and_error_rows_pass_through(generators):
    spec = _spec(3)
    rows = _items(spec, ["a", "b"]) + _items(spec, ["c"], motion_bucket_id=10)
    rows.append(fail(dict(rows[0], key="dead"), "image gone"))
    out = generators[3](to_table(rows)).to_pylist()
    by_key = {row["key"]: row for row in out}
    assert by_key["a"]["batch_items"] == 2 and by_key["c"]["batch_items"] == 1
    assert by_key["dead"]["status"] == "error" and by_key["dead"]["frames"] is None
    assert all(row["device"] == "cpu" and row["model_dtype"] == "fp32" for row in out)
    assert all(row["gpu_name"] == row["cuda_version"] == "cpu" and row["torch_version"] for row in out)
    assert by_key["a"]["nonfinite_frames"] == 0 and by_key["a"]["image"]  # the writer measures against the image


def test_a_failing_item_does_not_take_its_batch_down(generators):
    spec = _spec(3)
    rows = _items(spec, ["a", "b", "c"])
    rows[1]["image"] = rows[1]["image"][:-10]  # wrong size: this item's call raises
    out = {row["key"]: row for row in generators[3](to_table(rows)).to_pylist()}
    assert out["b"]["status"] == "error" and "generate 'b'" in out["b"]["error"]
    assert out["a"]["status"] == out["c"]["status"] == "ok"
    assert out["a"]["batch_items"] == 1  # retried one by one after the batch failed


def test_a_lost_cuda_context_ends_the_call_instead_of_failing_every_item(generators, monkeypatch):
    from svdbatch.render import generate

    def poisoned(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(generate, "call_pipeline", poisoned)
    rows = _items(_spec(3), ["a", "b"])
    with pytest.raises(generate.DeviceLost, match="illegal memory access"):
        generators[3](to_table(rows))

