"""The report's charts: matplotlib figures rendered to SVG and inlined in the page, so it reads with no network.

Text stays text (``svg.fonttype: none``): the browser draws the labels in its own sans-serif, and they can be searched
and read by a test. What shows data carries an id ``data-<chart>-<n>``, so a test can tell a drawn chart from empty
axes. Every chart takes the metadata rows as the report reads them and returns None when it has
nothing to show.
"""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from svdbatch.metadata import ERROR, OK, REJECTED
from svdbatch.metrics import STAGES, error_cause
from svdbatch.quality import failed_gates

matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "svdbatch", "font.size": 9})
WIDTH, HEIGHT = 6.4, 3.0  # inches
BINS = 20
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


def throughput(rows: list[dict[str, Any]]) -> str | None:
    """Videos per minute over the run, one line per node and GPU (from when each video was finished)."""
    done = [row for row in _generated(rows) if row["finished_at"] is not None]
    if not done:
        return None
    start = min(row["finished_at"] for row in done)
    minutes = [(row["finished_at"] - start).total_seconds() / 60 for row in done]
    width = max(max(minutes) / BINS, 1 / 60)  # at least a second per bin
    series: dict[str, Counter] = defaultdict(Counter)
    for row, minute in zip(done, minutes, strict=True):
        where = f"node {(row['node_id'] or '?')[:8]} · " + (f"GPU {row['gpu_id']}" if row["gpu_id"] else "CPU")
        series[where][int(minute // width)] += 1
    figure = Figure(figsize=(WIDTH, HEIGHT))
    axes = figure.subplots()
    bins = range(int(max(minutes) // width) + 1)
    edges = [b * width for b in [*bins, len(bins)]]
    steps = [
        axes.stairs([counts[b] / width for b in bins], edges, label=where) for where, counts in sorted(series.items())
    ]
    _mark("throughput", steps)
    axes.set(xlabel="minutes since the first video of the run", ylabel="videos / min", title="Throughput")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=7)
    return to_svg(figure)


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
    axes.legend(fontsize=7)
    return to_svg(figure)


def quality(rows: list[dict[str, Any]], gates: dict[str, Any]) -> str | None:
    """The quality signals of the generated videos as histograms, each gate's threshold marked where one is set."""
    measured = [row for row in _generated(rows) if row["motion_mean"] is not None]
    if not measured:
        return None
    figure = Figure(figsize=(WIDTH * 1.5, HEIGHT))
    for axes, (column, label, gate) in zip(figure.subplots(1, len(QUALITY)), QUALITY, strict=True):
        _mark(column, axes.hist([row[column] for row in measured], bins=BINS, color="#4c72b0")[2])
        axes.set(xlabel=label, ylabel="videos")
        if gates.get(gate) is not None:
            axes.axvline(gates[gate], color="#c44e52", linestyle="--", label=f"{gate} = {gates[gate]}")
            axes.legend(fontsize=7)
    figure.suptitle("Quality signals (dashed: the gate's threshold)")
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
    axes.xaxis.get_major_locator().set_params(integer=True)
    return to_svg(figure)
