"""The report's charts: matplotlib figures rendered to SVG and inlined in the page, so it reads with no network.

Text stays text (``svg.fonttype: none``): the browser draws the labels in its own sans-serif, and they can be
searched and read by a test. The figures are narrow (4.6 in) with 10 pt text and every SVG keeps its viewBox, so the
page can scale a chart to a phone's width and its text still reads at about 11 px; the quality signals stack in one
column for the same reason. Count axes tick at whole numbers only. What shows data carries an id
``data-<chart>-<n>``, so a test can tell a drawn chart from empty axes. Every chart takes the metadata rows as the
report reads them and returns None when it has nothing to show.
"""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from svdbatch.items.metadata import ERROR, OK, REJECTED
from svdbatch.render.quality import failed_gates
from svdbatch.run.metrics import STAGES, error_cause

matplotlib.rcParams.update(
    {"svg.fonttype": "none", "svg.hashsalt": "svdbatch", "font.size": 10, "legend.fontsize": 10, "axes.titlesize": 11}
)
WIDTH, HEIGHT = 4.6, 3.0  # inches
BINS = 20
PER_BIN = 10  # videos a throughput bin holds on average: counting noise about 1/sqrt(10), a third of the rate
QUALITY = [  # column, axis label, the gate that bounds it from below
    ("motion_mean", "mean motion (luma change per frame, 0-255)", "min_motion"),
    ("first_frame_psnr", "first-frame PSNR (dB)", "min_first_frame_psnr"),
    ("first_frame_ssim", "first-frame SSIM", "min_first_frame_ssim"),
]


def to_svg(figure: Figure) -> str:
    """The figure as an inline <svg> element (no XML prologue or DOCTYPE)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _mark(chart: str, artists) -> None:
    for index, artist in enumerate(artists):
        artist.set_gid(f"data-{chart}-{index}")


def _generated(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row["status"] in (OK, REJECTED)]


def rate_bins(minutes: list[float], series: int = 1) -> tuple[int, float]:
    """How many bins of what width (minutes) cover ``minutes`` (finish times, the first at 0) so that each series'
    bin holds about ``PER_BIN`` videos on average: 2-second bins counted 1, 2 or 3 videos and drew 60/120/180 per
    minute for a steady rate. Between 1 and ``BINS`` bins, each at least a second; the last one ends at the last
    video, so no bin is partly empty."""
    span = max(minutes)
    count = max(1, min(BINS, int(len(minutes) / series / PER_BIN)))
    width = max(span / count, 1 / 60)
    return count, width


def finish_minutes(rows: list[dict[str, Any]]) -> tuple[list[float], list[str]]:
    """When each generated video finished, in minutes after the first one, in that order, and where it was made
    (node and GPU, or CPU)."""
    done = sorted((row for row in _generated(rows) if row["finished_at"] is not None), key=_finished)
    minutes = [(row["finished_at"] - done[0]["finished_at"]).total_seconds() / 60 for row in done]
    where = [
        f"node {(row['node_id'] or '?')[:8]} · " + (f"GPU {row['gpu_id']}" if row["gpu_id"] else "CPU") for row in done
    ]
    return minutes, where


def binned_rates(minutes: list[float], where: list[str]) -> tuple[list[float], dict[str, list[float]]]:
    """The bin edges (``rate_bins``) and each place's videos per minute in every bin. The first video is the time
    origin and is not counted: it marks the end of the start-up."""
    count, width = rate_bins(minutes, len(set(where)))
    series: dict[str, Counter] = defaultdict(Counter)
    for name, minute in zip(where[1:], minutes[1:], strict=True):
        series[name][min(max(math.ceil(minute / width - 1e-9) - 1, 0), count - 1)] += 1  # bins are (start, end]
    rates = {name: [counts[index] / width for index in range(count)] for name, counts in sorted(series.items())}
    return [index * width for index in range(count + 1)], rates


def throughput(rows: list[dict[str, Any]]) -> str | None:
    """Videos per minute over the run, one line per node and GPU, in bins of about ``PER_BIN`` videos, from the
    first video on: the start-up before it (model load, warm-up) is not in the chart; the page says how long it was."""
    minutes, where = finish_minutes(rows)
    if not minutes:
        return None
    edges, rates = binned_rates(minutes, where)
    figure = Figure(figsize=(WIDTH, HEIGHT))
    axes = figure.subplots()
    steps = [axes.stairs(values, edges, label=name) for name, values in rates.items()]
    _mark("throughput", steps)
    axes.set(xlabel="minutes after the first video", ylabel="videos / min", title="Throughput")
    axes.set_ylim(bottom=0)
    if steps:
        axes.legend()
    return to_svg(figure)


def _finished(row: dict[str, Any]):
    return row["finished_at"]


def _whole_numbers(axis) -> None:
    """Ticks of a count axis at integers: half a video is not a count."""
    axis.set_major_locator(MaxNLocator(integer=True))


def seconds_per_video(rows: list[dict[str, Any]]) -> str | None:
    """How the seconds per video spread, per stage, on a log scale (loads take milliseconds, generation seconds)."""
    values = {stage: [row[f"{stage}_seconds"] for row in _generated(rows)] for stage in STAGES}
    values = {stage: [v for v in found if v is not None and v > 0] for stage, found in values.items()}
    every = [v for found in values.values() for v in found]
    if not every:
        return None
    low, high = math.log10(min(every)), math.log10(max(every))
    edges = [10 ** (low + (high - low + 1e-9) * step / BINS) for step in range(BINS + 1)]
    figure = Figure(figsize=(WIDTH, HEIGHT))
    axes = figure.subplots()
    for stage, found in values.items():
        if found:
            _mark(stage, axes.hist(found, bins=edges, histtype="step", linewidth=1.5, label=stage)[2])
    axes.set_xscale("log")
    axes.set(xlabel="seconds per video", ylabel="videos", title="Seconds per video, by stage")
    _whole_numbers(axes.yaxis)
    axes.legend()
    return to_svg(figure)


def quality(rows: list[dict[str, Any]], gates: dict[str, Any]) -> str | None:
    """The quality signals of the generated videos as histograms, one above the other, each gate's threshold marked
    (and the title saying so) only where one is set."""
    measured = [row for row in _generated(rows) if row["motion_mean"] is not None]
    if not measured:
        return None
    figure = Figure(figsize=(WIDTH, HEIGHT * len(QUALITY) * 0.8))
    panels: list[Axes] = figure.subplots(len(QUALITY), 1)
    for axes, (column, label, gate) in zip(panels, QUALITY, strict=True):
        _mark(column, axes.hist([row[column] for row in measured], bins=BINS, color="#4c72b0")[2])
        axes.set(xlabel=label, ylabel="videos")
        _whole_numbers(axes.yaxis)
        if gates.get(gate) is not None:
            axes.axvline(gates[gate], color="#c44e52", linestyle="--", label=f"{gate} = {gates[gate]}")
            axes.legend()
    gated = any(gates.get(gate) is not None for _, _, gate in QUALITY)
    figure.suptitle("Quality signals" + (" (dashed: the gate's threshold)" if gated else ""))
    figure.tight_layout()
    return to_svg(figure)


def failures(rows: list[dict[str, Any]], gates: dict[str, Any]) -> str | None:
    """Failed items by the stage they failed in, and rejected videos by the gate that rejected them."""
    causes = Counter(error_cause(row["error"]) for row in rows if row["status"] == ERROR)
    causes.update(f"rejected: {gate}" for row in rows if row["status"] == REJECTED for gate in failed_gates(row, gates))
    if not causes:
        return None
    names = sorted(causes, key=lambda name: (causes[name], name))
    figure = Figure(figsize=(WIDTH, max(1.6, 0.35 * len(names) + 1)))
    axes = figure.subplots()
    _mark("failures", axes.barh(names, [causes[name] for name in names], color="#c44e52"))
    axes.set(xlabel="items", ylabel="cause", title="Errors by cause, rejections by gate")
    _whole_numbers(axes.xaxis)
    return to_svg(figure)
