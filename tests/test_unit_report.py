"""The report's pure parts, without Ray: throughput bins, whole-number count ticks, the quality chart's wording, the
device-seconds label, the steady rate and the contact sheet."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from PIL import Image

from svdbatch.items.metadata import OK, blank_row
from svdbatch.report import charts
from svdbatch.report.images import SHEET_GAP, SHEET_LABEL, contact_sheet
from svdbatch.report.page import steady_rate
from svdbatch.run.record import seconds_unit

START = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def rows_finished_every(seconds: float, count: int, **values) -> list[dict]:
    """``count`` generated rows on one CPU actor, one finished every ``seconds`` from START."""
    found = []
    for index in range(count):
        row = blank_row()
        row.update(status=OK, node_id="node-one", gpu_id=None, finished_at=START + timedelta(seconds=index * seconds))
        row.update(load_seconds=0.01, generate_seconds=0.5 + index % 3, encode_seconds=0.1, write_seconds=0.02)
        row.update(motion_mean=20.0 + index % 4, first_frame_psnr=9.0 + index % 2, first_frame_ssim=0.3, **values)
        found.append(row)
    return found


def tick_labels(svg: str, axis: str) -> list[str]:
    """The tick labels matplotlib wrote for every ``axis`` ("xtick" or "ytick") of the chart."""
    root = ET.fromstring(svg)
    return [
        text.text
        for group in root.iter(f"{SVG}g")
        if group.get("id", "").startswith(axis)
        for text in group.iter(f"{SVG}text")
        if text.text
    ]


def test_rate_bins_hold_about_ten_videos_each_not_one_or_two():
    steady = [index / 60 for index in range(121)]  # a video a second for two minutes
    count, width = charts.rate_bins(steady)
    assert count == 12 and abs(width * 60 - 10) < 1e-9  # 10 s bins of 10 videos, not 20 bins of 6 s
    assert charts.rate_bins(steady, series=4)[0] == 3  # four actors share the videos: each bin still holds ~10
    assert charts.rate_bins([0.0, 0.01, 0.02])[0] == 1  # too few videos for a second bin
    assert charts.rate_bins([index / 600 for index in range(10_000)])[0] == charts.BINS


def test_throughput_of_a_steady_stream_draws_a_steady_rate():
    rows = rows_finished_every(1.0, 121)  # 60 videos/min, bins of 10 s
    _, series = charts.binned_rates(*charts.finish_minutes(rows))
    (rates,) = series.values()
    assert all(abs(rate - 60) < 1e-6 for rate in rates), rates  # 2-s bins drew 60, 120, 0, 60 ...
    assert "minutes after the first video" in charts.throughput(rows)


def test_count_axes_tick_at_whole_numbers_only():
    rows = rows_finished_every(1.0, 3)  # 3 videos: matplotlib's default ticks would be 0, 0.25, 0.5 ...
    for svg, axis in (
        (charts.seconds_per_video(rows), "ytick"),
        (charts.quality(rows, {}), "ytick"),
    ):
        labels = tick_labels(svg, axis)
        assert labels and all(float(label.replace("−", "-")).is_integer() for label in labels), labels


def test_quality_chart_mentions_the_gate_only_when_one_is_set():
    rows = rows_finished_every(1.0, 4)
    assert "dashed" not in charts.quality(rows, {})
    assert "dashed" not in charts.quality(rows, {"min_motion": None})
    gated = charts.quality(rows, {"min_first_frame_psnr": 8.0})
    assert "(dashed: the gate's threshold)" in gated and "min_first_frame_psnr = 8.0" in gated


def test_seconds_unit_names_what_rendered():
    cpu, gpu = {"gpu_name": "cpu"}, {"gpu_name": "NVIDIA H100 80GB HBM3"}
    assert seconds_unit([cpu]) == "CPU-s"
    assert seconds_unit([gpu, {"gpu_name": "NVIDIA L4"}]) == "GPU-s"
    assert seconds_unit([cpu, gpu]) == "device-s"  # mixed
    assert seconds_unit([]) == "device-s"  # a record from before environments were kept


def test_steady_rate_leaves_the_start_up_out():
    finished = [START + timedelta(seconds=13 + index) for index in range(31)]  # 13 s start-up, then one a second
    assert steady_rate(finished) == 60.0
    assert steady_rate(finished[:1]) is None and steady_rate([START, START]) is None


def test_contact_sheet_has_gaps_and_a_label_under_each_poster():
    posters = [Image.new("RGB", (320, 180), (200, 40 * index, 40)) for index in range(3)]
    sheet = contact_sheet(posters, ["shoes/red_left.png · v0", "b · v1", "x" * 200 + " · v0"])
    assert sheet.size == (8 * (320 + SHEET_GAP) + SHEET_GAP, 180 + SHEET_LABEL + 2 * SHEET_GAP)
    background = (20, 20, 20)
    assert sheet.getpixel((SHEET_GAP + 320 + SHEET_GAP // 2, 50)) == background  # the gap between two posters
    for column in range(3):
        left = SHEET_GAP + column * (320 + SHEET_GAP)
        assert sheet.getpixel((left + 10, SHEET_GAP + 10)) == posters[column].getpixel((0, 0))
        strip = sheet.crop((left, SHEET_GAP + 180, left + 320, SHEET_GAP + 180 + SHEET_LABEL))
        assert strip.getextrema()[0][1] > 150  # light text drawn on the dark strip
    right = SHEET_GAP + 2 * (320 + SHEET_GAP) + 320
    right_of_long_label = sheet.crop((right, SHEET_GAP + 180, sheet.width, sheet.height))
    assert right_of_long_label.getextrema() == ((20, 20), (20, 20), (20, 20))  # cut to its poster's width


def test_the_model_note_names_each_embedded_tiny_model_that_rendered():
    from svdbatch.report.page import _model_note

    rows = [{"model_source": source} for source in ("svdbatch:tiny-wan", "svdbatch:tiny", "org/real-model")]
    assert "<b>svdbatch:tiny, svdbatch:tiny-wan</b>, embedded tiny models" in _model_note(rows)
    assert _model_note([{"model_source": "org/real-model"}]) == ""
