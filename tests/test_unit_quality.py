"""Quality signals on synthetic videos, the NaN count taken before the uint8 cast, and the gates in the writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import TEST_RENDER

from svdbatch.demo import sample_image
from svdbatch.items.expand import expand_row
from svdbatch.items.metadata import to_table
from svdbatch.model.provenance import PROVENANCE_COLUMNS
from svdbatch.render import quality
from svdbatch.render.generate import nonfinite_frames, to_uint8
from svdbatch.render.stages import WriteVideos
from svdbatch.render.video import probe
from svdbatch.report.page import write_report
from svdbatch.spec.load import build_spec
from svdbatch.store.commit import read_rows

FRAMES, SIZE = 8, 64


@pytest.fixture()
def image() -> np.ndarray:
    return np.asarray(sample_image(3, SIZE, SIZE))


def _moving(image: np.ndarray) -> np.ndarray:
    return np.stack([np.roll(image, 4 * index, axis=1) for index in range(FRAMES)])


def test_a_moving_video_that_starts_on_its_image_is_clean(image):
    stats = quality.measure(_moving(image), image, 0)
    assert stats["black_frames"] == stats["constant_frames"] == stats["nonfinite_frames"] == 0
    assert stats["motion_mean"] > 5
    assert stats["first_frame_psnr"] == quality.PSNR_CAP and stats["first_frame_ssim"] == pytest.approx(1.0)
    assert quality.rejection(stats, {"max_black_frames": 0, "min_motion": 1.0, "min_first_frame_ssim": 0.9}) is None


def test_all_black_video_is_flagged_black_constant_frozen_and_far_from_its_image(image):
    stats = quality.measure(np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8), image, 0)
    assert stats["black_frames"] == stats["constant_frames"] == FRAMES
    assert stats["motion_mean"] == 0.0
    assert stats["first_frame_psnr"] < 15 and stats["first_frame_ssim"] < 0.1
    reason = quality.rejection(stats, {"max_black_frames": 0})
    assert reason == "rejected: black frames 8 > quality.max_black_frames=0"


def test_constant_grey_video_is_constant_but_not_black(image):
    stats = quality.measure(np.full((FRAMES, SIZE, SIZE, 3), 128, np.uint8), image, 0)
    assert (stats["black_frames"], stats["constant_frames"], stats["motion_mean"]) == (0, FRAMES, 0.0)


def test_all_nan_output_is_counted_before_the_cast_hides_it(image):
    floats = torch.full((2, FRAMES, 3, SIZE, SIZE), float("nan"))
    floats[1] = 0.5
    floats[1, 2, 0, 5, 5] = float("inf")
    assert nonfinite_frames(floats) == [FRAMES, 1]
    frames = to_uint8(floats)
    assert frames.shape == (2, FRAMES, SIZE, SIZE, 3)
    stats = quality.measure(frames[0], image, nonfinite_frames(floats)[0])
    assert stats["nonfinite_frames"] == FRAMES
    assert "non-finite frames 8 > quality.max_nonfinite_frames=0" in quality.rejection(
        stats, {"max_nonfinite_frames": 0}
    )


def test_ssim_orders_distortions_and_psnr_drops_with_noise(image):
    rng = np.random.default_rng(0)
    light = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(image + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)
    assert 1.0 > quality.ssim(light, image) > quality.ssim(heavy, image) > 0
    assert quality.PSNR_CAP > quality.psnr(light, image) > quality.psnr(heavy, image)
    assert quality.ssim(image, light) == pytest.approx(quality.ssim(light, image))


def _rows(tmp_path, frames: dict[str, np.ndarray], image: np.ndarray, nonfinite: dict[str, int], **sections):
    spec = build_spec({"manifest": {"path": "m"}, "output": {"url": str(tmp_path)}, "render": TEST_RENDER, **sections})
    rows = []
    for key, video in frames.items():
        (item,) = expand_row({"key": key, "image": f"/{key}.png"}, spec, "run", str(tmp_path))
        item.update(frames=video.tobytes(), image=image.tobytes(), nonfinite_frames=nonfinite.get(key, 0))
        rows.append(item)
    return spec, to_table(rows)


def test_writer_adds_numeric_quality_columns_and_gates_reject_with_the_reason(tmp_path, image):
    black = np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8)
    videos = {"good": _moving(image), "black": black, "nan": black}
    spec, batch = _rows(tmp_path, videos, image, {"nan": FRAMES})
    ungated = {row["key"]: row for row in WriteVideos(spec)(batch).to_pylist()}
    assert {row["status"] for row in ungated.values()} == {"ok"}
    for row in ungated.values():
        for column in quality.QUALITY_COLUMNS:
            assert isinstance(row[column], (int, float)) and np.isfinite(row[column])
    assert (ungated["black"]["black_frames"], ungated["nan"]["nonfinite_frames"]) == (FRAMES, FRAMES)

    gates = {"max_black_frames": 0, "max_nonfinite_frames": 0}
    spec, batch = _rows(tmp_path, videos, image, {"nan": FRAMES}, quality=gates)
    gated = {row["key"]: row for row in WriteVideos(spec)(batch).to_pylist()}
    assert gated["good"]["status"] == "ok" and gated["good"]["error"] is None
    assert gated["black"]["status"] == "rejected" and "black frames 8" in gated["black"]["error"]
    assert gated["nan"]["status"] == "rejected" and "non-finite frames 8" in gated["nan"]["error"]
    assert probe(gated["black"]["video_uri"]).frames == FRAMES  # kept for inspection, just not sharded


def test_quality_gates_are_off_by_default_and_typos_fail():
    spec = build_spec({"manifest": {"path": "m"}, "output": {"url": "o"}})
    assert all(value is None for value in spec.quality.model_dump().values())
    with pytest.raises(ValueError, match="quality.max_blak_frames: unknown field"):
        build_spec({"manifest": {"path": "m"}, "output": {"url": "o"}, "quality": {"max_blak_frames": 0}})


def test_report_filters_rejected_items_and_reads_tables_written_before_quality_columns(tmp_path, image):
    black = np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8)
    spec, batch = _rows(tmp_path, {"good": _moving(image), "black": black}, image, {}, quality={"max_black_frames": 0})
    table = WriteVideos(spec)(batch)
    (tmp_path / "metadata").mkdir()
    pq.write_table(table, tmp_path / "metadata" / "metadata.parquet")
    page = Path(write_report(str(tmp_path))).read_text()
    assert "1 ok · 0 failed · 1 rejected" in page and 'data-filter="rejected"' in page
    assert "black frames 8 &gt; quality.max_black_frames=0" in page and "SSIM 1.00" in page

    old = table.drop_columns([*quality.QUALITY_COLUMNS, *PROVENANCE_COLUMNS, "shard"])
    pq.write_table(old, tmp_path / "metadata" / "metadata.parquet")
    rows = read_rows(str(tmp_path)).to_pylist()
    assert {row["motion_mean"] for row in rows} == {None}
    assert "quality not measured" in Path(write_report(str(tmp_path))).read_text()
