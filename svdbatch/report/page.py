"""``svdbatch report OUTPUT``: a static HTML gallery written next to the outputs, local or on object storage.

``{output}/report/index.html`` shows the totals across every run and the figures of the last run that rendered, the
rate both over the wall clock and after the first video (the start-up before it, model loads, said apart), per-stage
timings and device-seconds, named for what rendered (GPU or CPU; cost with a price per GPU-hour), charts (throughput
per node and GPU, seconds per video, quality signals against their gates, errors by cause: inline SVG, charts.py),
one poster per video (its first frame, which plays the MP4 on click) beside the fitted input image it was rendered
from, the failed items with their errors (or "none"), the items the quality gates rejected with their reasons (or
"none"), and links a PNG contact sheet (each poster labelled with its key and variant). ``#play=N`` plays card N and
scrolls to it. When the videos come from the embedded tiny model (random weights) the page says so at the top, so
its noise is not taken for a failed job. Every path in the page is relative (videos are always directly under
``{output}/videos/``), so the folder works from disk, behind any static web server, or from a bucket's website
endpoint, whatever form of the output path the command was given. Everything taken from the table is HTML-escaped:
keys and errors come from untrusted manifests.
"""

from __future__ import annotations

import html
import io
import json
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import imageio_ffmpeg
import numpy as np
import pyarrow.compute as pc
from PIL import Image, ImageDraw, ImageFont

from svdbatch import storage
from svdbatch.items.metadata import OK, REJECTED, REMOVED
from svdbatch.render.images import ImageError, load_image
from svdbatch.report import charts
from svdbatch.run.record import money
from svdbatch.spec.config import TINY_MODELS
from svdbatch.store import commit

POSTER_WIDTH = 320
SHEET_COLUMNS = 8
SHEET_MAX = 96
SHEET_GAP = 8  # pixels between the contact sheet's cells
SHEET_LABEL = 24  # pixels of label under each poster


def first_frame(data: bytes) -> Image.Image:
    with tempfile.TemporaryDirectory(prefix="svdbatch-report-") as folder:
        path = os.path.join(folder, "video.mp4")
        with open(path, "wb") as handle:
            handle.write(data)
        reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
        meta = next(reader)
        width, height = meta["size"]
        frame = np.frombuffer(next(reader), dtype=np.uint8).reshape(height, width, 3)
        reader.close()
    return Image.fromarray(frame)


def _poster(frame: Image.Image) -> Image.Image:
    scale = POSTER_WIDTH / frame.width
    return frame.resize((POSTER_WIDTH, max(1, round(frame.height * scale))), Image.Resampling.LANCZOS)


def encode_image(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=85) if fmt == "JPEG" else image.save(buffer, fmt)
    return buffer.getvalue()


def _relative_video(row: dict[str, Any]) -> str:
    """The link from report/index.html to the video: every video sits directly under {output}/videos/."""
    return "../videos/" + row["video_uri"].rsplit("/", 1)[-1]


def fitted_input(row: dict[str, Any], options: dict[str, Any]) -> Image.Image | None:
    """The input image as the model saw it (fitted to the render size), or None when it can no longer be read."""
    try:
        data = storage.read_bytes(row["source_uri"], options)
        fitted = load_image(data, row["width"], row["height"], row["fit"], 10**9)
    except (OSError, ImageError, storage.StorageError):
        return None
    return Image.fromarray(fitted)


def run_totals(output: str, options: dict[str, Any]) -> dict[str, Any]:
    """Counts summed over every run's record, the last run that rendered anything (a no-op rerun has no rate), and
    the latest run's quality gates."""
    fs, runs = storage.filesystem(storage.join(output, "_job", "runs"), options)
    names = sorted(name for name in fs.find(runs) if name.endswith(".json")) if fs.exists(runs) else []
    records = [json.loads(fs.cat_file(name)) for name in names]
    totals = {"runs": len(records), "rendered": 0, "failed": 0, "last_rendering": None, "gates": {}}
    for record in sorted(records, key=lambda record: record["started_at"]):
        totals["gates"] = record["spec"].get("quality") or {}
        summary = record["summary"]
        totals["rendered"] += summary["rendered"]
        totals["failed"] += summary["failed"]
        if summary["rendered"]:
            totals["last_rendering"] = {
                **summary,
                "started_at": record["started_at"],
                "environments": record.get("environments", []),
            }
    return totals


def seconds_unit(environments: list[dict[str, str]]) -> str:
    """What the run's device-seconds were, from the provenance of what rendered (``gpu_name`` is "cpu" on a CPU):
    GPU-s or CPU-s when every environment agrees, device-s when they are mixed or the record has none (formats.py)."""
    kinds = {"CPU" if environment.get("gpu_name") == "cpu" else "GPU" for environment in environments}
    return f"{kinds.pop()}-s" if len(kinds) == 1 else "device-s"


def steady_rate(finished: list[datetime]) -> float | None:
    """Videos per minute after the first video finished: the run's rate without its start-up (model loads,
    warm-up). None with fewer than two videos or no time between them."""
    if len(finished) < 2:
        return None
    span = (max(finished) - min(finished)).total_seconds()
    return (len(finished) - 1) / span * 60 if span > 0 else None


def contact_sheet(posters: list[Image.Image], labels: list[str]) -> Image.Image:
    """The posters in rows of ``SHEET_COLUMNS``, ``SHEET_GAP`` apart, each with its label (key · variant) under it,
    cut short with an ellipsis to the poster's width."""
    shown = posters[:SHEET_MAX]
    cell_height = max(poster.height for poster in shown) + SHEET_LABEL
    rows = (len(shown) + SHEET_COLUMNS - 1) // SHEET_COLUMNS
    step_x, step_y = POSTER_WIDTH + SHEET_GAP, cell_height + SHEET_GAP
    sheet = Image.new("RGB", (SHEET_COLUMNS * step_x + SHEET_GAP, rows * step_y + SHEET_GAP), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=SHEET_LABEL * 2 // 3)
    for index, (poster, label) in enumerate(zip(shown, labels, strict=False)):
        left, top = SHEET_GAP + (index % SHEET_COLUMNS) * step_x, SHEET_GAP + (index // SHEET_COLUMNS) * step_y
        sheet.paste(poster, (left, top))
        draw.text((left + 4, top + poster.height + 4), _fit(label, draw, font), fill=(235, 235, 235), font=font)
    return sheet


def _fit(label: str, draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont) -> str:
    """The label, cut short with an ellipsis until it fits a poster's width."""
    shown = label
    while draw.textlength(shown, font=font) > POSTER_WIDTH - 8 and len(label) > 1:
        label = label[:-1]
        shown = label + "…"
    return shown


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are set (None: not measured), or None when none is: the report's and tune's."""
    values = [value for value in values if value is not None]
    return sum(values) / len(values) if values else None


def write_report(output: str, options: dict[str, Any] | None = None) -> str:
    """Build the gallery under ``{output}/report/`` and return the URL of its index.html."""
    options = options or {}
    latest = commit.latest(commit.read_rows(output, options))
    latest = latest.filter(pc.not_equal(latest["status"], REMOVED))  # pruned: no video to show
    rows = latest.sort_by([("key", "ascending"), ("variant", "ascending")]).to_pylist()
    if not rows:
        raise ValueError(f"{output}: no metadata rows to report on")
    totals = run_totals(output, options)
    report = storage.join(output, "report")
    ok = [row for row in rows if row["status"] == OK]
    rejected = [row for row in rows if row["status"] == REJECTED]
    failed = [row for row in rows if row["status"] not in (OK, REJECTED)]
    posters = []
    cards = []
    for index, row in enumerate(ok):
        poster = _poster(first_frame(storage.read_bytes(row["video_uri"], options)))
        posters.append(poster)
        name = f"posters/{index:06d}.jpg"
        storage.write_bytes(storage.join(report, name), encode_image(poster, "JPEG"), options)
        source = fitted_input(row, options)
        source = _poster(source) if source is not None else None
        source_name = f"inputs/{index:06d}.jpg" if source is not None else None
        if source is not None:
            storage.write_bytes(storage.join(report, source_name), encode_image(source, "JPEG"), options)
        shown_source = (source_name, source.size) if source is not None else None
        cards.append(_card(index, row, (name, poster.size), shown_source, _relative_video(row)))
    if posters:
        sheet = contact_sheet(posters, [f"{row['key']} · v{row['variant']}" for row in ok])
        storage.write_bytes(storage.join(report, "contact_sheet.png"), encode_image(sheet, "PNG"), options)
    last = totals["last_rendering"]
    finished = [row["finished_at"] for row in rows if last and row["run_id"] == last["run_id"] and row["finished_at"]]
    rate = _rate_line(totals, finished)
    page = _page(rows, ok, failed, rejected, rate, cards, bool(posters), _charts(rows, totals))
    storage.write_bytes(storage.join(report, "index.html"), page.encode("utf-8"), options)
    return storage.join(report, "index.html")


def _charts(rows: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    """The charts section: throughput over the last rendering run; the rest over every row of the table."""
    last = totals["last_rendering"]
    shown = [
        (
            "throughput",
            "Videos per minute, per node and GPU (last rendering run)",
            charts.throughput([row for row in rows if last and row["run_id"] == last["run_id"]]),
        ),
        ("seconds", "Seconds per video", charts.seconds_per_video(rows)),
        ("quality", "Quality signals and gates", charts.quality(rows, totals["gates"])),
        ("failures", "Errors by cause", charts.failures(rows, totals["gates"])),
    ]
    figures = "".join(
        f'<figure class="chart" id="chart-{name}">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, caption, svg in shown
        if svg is not None
    )
    return f'<section id="charts">{figures}</section>'


def _image(kind: str, image: tuple[str, tuple[int, int]], alt: str) -> str:
    """An <img> with its size, so the grid's layout is final before images load: a ``#play=N`` link scrolls to
    where card N stays."""
    (src, (width, height)) = image
    return f'<img class="{kind}" src="{src}" alt="{alt}" width="{width}" height="{height}" loading="lazy">'


Shown = tuple[str, tuple[int, int]]  # an image's path under report/ and its size


def _card(index: int, row: dict[str, Any], poster: Shown, source: Shown | None, video: str) -> str:
    label = html.escape(f"{row['key']} · v{row['variant']}")
    facts = [
        f"seed {row['seed']}",
        f"{row['width']}x{row['height']}",
        f"{row['num_frames']} frames @ {row['fps']} fps",
        f"motion {row['motion_bucket_id']}" if row.get("prompt") is None else f"prompt {row['prompt'][:60]!r}",
        *_quality(row),
    ]
    # Each fact wraps as a whole: "8 frames" or "mean motion 26.1" is never split across lines.
    details = " · ".join(f'<span class="fact">{html.escape(fact)}</span>' for fact in facts)
    missing = '<span class="input missing">input unavailable</span>'
    source_cell = _image("input", source, f"input of {label}") if source else missing
    return (
        f'<figure class="card" id="card-{index}" data-status="ok" data-video="{html.escape(video)}">'
        f'<div class="pair">{_image("poster", poster, label)}{source_cell}</div>'
        f"<figcaption><b>{label}</b><br><small>{details}</small></figcaption></figure>"
    )


def _rate_line(totals: dict[str, Any], finished: list[datetime]) -> str:
    """Totals, then the last rendering run's rate over its wall clock (start-up included, and said how long it
    was) and its steady rate after the first video (``finished``: when each of its videos was done)."""
    last = totals["last_rendering"]
    runs = f"{totals['runs']} run(s): {totals['rendered']} rendered, {totals['failed']} failed in all"
    if last is None:
        return runs
    rate = (
        f"{runs} · last rendering run {last['run_id']}: {last['rendered']} videos at "
        f"{last['videos_per_minute']:.1f} videos/min over {last['wall_seconds']:.0f}s of wall clock"
    )
    if finished:
        started = datetime.strptime(last["started_at"], "%Y-%m-%dT%H:%M:%S%z")
        rate += f" (~{max(0.0, (min(finished) - started).total_seconds()):.0f}s of it start-up, until the first video)"
    steady = steady_rate(finished)
    if steady is not None:
        rate += f", {steady:.1f} videos/min after the first video"
    return rate + _spent(last)


def _spent(summary: dict[str, Any]) -> str:
    """Device-seconds per video (GPU-s or CPU-s, for what rendered) and cost, from a run record's summary; nothing
    where the record has neither (svdbatch/formats.py: run records)."""
    if not summary.get("gpu_seconds"):
        return ""
    spent = f", {summary['gpu_seconds_per_video']:.2f} {seconds_unit(summary['environments'])}/video"
    if summary.get("cost") is None:
        return spent
    return f"{spent}, {money(summary['cost_per_video'])}/video, {money(summary['cost'])} for the run"


def _quality(row: dict[str, Any]) -> list[str]:
    if row["motion_mean"] is None:  # a row without the quality columns (svdbatch/formats.py)
        return ["quality not measured"]
    return [
        f"mean motion {row['motion_mean']:.1f}",
        f"first frame {row['first_frame_psnr']:.1f} dB, SSIM {row['first_frame_ssim']:.2f}",
    ]


def _model_note(ok: list[dict[str, Any]]) -> str:
    """A line at the top when the videos come from an embedded tiny model: random weights make noise, by design."""
    if not (tiny := sorted({row["model_source"] for row in ok} & set(TINY_MODELS))):
        return ""
    return (
        f'<p id="model-note" class="note">These videos come from <b>{", ".join(tiny)}</b>, embedded tiny models with '
        "random weights used by the demo and the tests: coloured noise is what they make. Set model.source to a real "
        "checkpoint (e.g. stabilityai/stable-video-diffusion-img2vid-xt) for real videos.</p>"
    )


# The report page's style and script (the grid, the cards that play on a click, the filters, #play=N links).
_STYLE = f"""<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, {POSTER_WIDTH}px), 1fr));
  gap: 1rem; }}
.card {{ margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; overflow: hidden; cursor: pointer; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 2px; align-items: start; }}
.card img, .card video {{ width: 100%; height: auto; display: block; }}
.missing {{ font-size: .8rem; color: #888; padding: .3rem; }}
figcaption {{ padding: .4rem .6rem; overflow-wrap: anywhere; }}
.fact {{ white-space: nowrap; }}
.note {{ background: #fff4d6; border: 1px solid #e8c66a; border-radius: 6px; padding: .5rem .8rem; }}
#charts {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
.chart {{ margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .4rem; max-width: 100%; }}
.chart svg {{ max-width: 100%; height: auto; display: block; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ border: 1px solid #ddd; padding: .3rem; }}
.hidden {{ display: none; }}
.none {{ color: #666; font-style: italic; }}
@media (max-width: 600px) {{ body {{ margin: .5rem; }} .chart {{ padding: .1rem; }} }}
</style>"""
_SCRIPT = """<script>
let loaded = 0;
document.querySelectorAll("img.poster").forEach((img) => {
  const count = () => { if (img.naturalWidth > 0) document.body.dataset.postersLoaded = ++loaded; };
  if (img.complete) count(); else img.addEventListener("load", count);
});
function play(card) {
  if (card.querySelector("video")) return;
  const video = document.createElement("video");
  video.src = card.dataset.video; video.controls = true; video.muted = true; video.loop = true; video.autoplay = true;
  video.addEventListener("playing", () => { card.dataset.played = "true"; document.body.dataset.played = card.id; });
  card.querySelector("img.poster").replaceWith(video);
  video.play().catch(() => {});
}
document.querySelectorAll(".card").forEach((card) => card.addEventListener("click", () => play(card)));
document.querySelectorAll("button[data-filter]").forEach((button) => button.addEventListener("click", () => {
  const wanted = button.dataset.filter;
  const shown = { videos: "ok", failures: "error", rejections: "rejected" };
  for (const [id, status] of Object.entries(shown)) {
    document.getElementById(id).classList.toggle("hidden", wanted !== "all" && wanted !== status);
  }
}));
const deepLink = location.hash.match(/^#play=(\\d+)$/);
if (deepLink) {
  const card = document.getElementById("card-" + deepLink[1]);
  if (card) { play(card); card.scrollIntoView({ block: "center" }); }
}
</script>"""


def _error_rows(failed: list[dict[str, Any]]) -> str:
    """The failed items' table rows: key, variant, source, error."""
    return "".join(
        f"<tr data-status='error'><td>{html.escape(str(row['key']))}</td><td>{row['variant']}</td>"
        f"<td>{html.escape(str(row['source_uri']))}</td><td>{html.escape(str(row['error']))}</td></tr>"
        for row in failed
    )


def _rejection_rows(rejected: list[dict[str, Any]]) -> str:
    """The rejected items' table rows: key, variant, a link to the video, the gate's reason."""
    return "".join(
        f"<tr data-status='rejected'><td>{html.escape(str(row['key']))}</td><td>{row['variant']}</td>"
        f'<td><a href="{html.escape(_relative_video(row))}">video</a></td>'
        f"<td>{html.escape(str(row['error']))}</td></tr>"
        for row in rejected
    )


def _table(head: list[str], body: str) -> str:
    """A table of items, or "none" when there is none: bare headers read like a page still loading."""
    if not body:
        return '<p class="none">none</p>'
    return f"<table><tr>{''.join(f'<th>{name}</th>' for name in head)}</tr>{body}</table>"


def _page(rows, ok, failed, rejected, rate: str, cards, has_sheet: bool, charts_section: str) -> str:
    timings = " · ".join(
        f"{stage} {mean(row[column] for row in ok) or 0.0:.2f}s"
        for stage, column in (
            ("load", "load_seconds"),
            ("generate", "generate_seconds"),
            ("encode", "encode_seconds"),
            ("write", "write_seconds"),
        )
    )
    sheet = '<a href="contact_sheet.png">contact sheet (PNG)</a>' if has_sheet else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>svdbatch report</title>
{_STYLE}</head>
<body data-posters-loaded="0" data-videos="{len(ok)}">
<h1>svdbatch report</h1>
{_model_note(ok)}
<p id="summary">{len(ok)} ok · {len(failed)} failed · {len(rejected)} rejected · {len(rows)} items</p>
<p id="runs">{html.escape(rate)}</p>
<p id="timings">mean per item: {html.escape(timings)} · {sheet}</p>
{charts_section}
<p><button data-filter="all">all</button> <button data-filter="ok">ok</button>
<button data-filter="error">failed ({len(failed)})</button>
<button data-filter="rejected">rejected ({len(rejected)})</button></p>
<section class="grid" id="videos">{"".join(cards)}</section>
<section id="failures"><h2>Failed items</h2>
{_table(["key", "variant", "source", "error"], _error_rows(failed))}</section>
<section id="rejections"><h2>Rejected by the quality gates</h2>
{_table(["key", "variant", "video", "reason"], _rejection_rows(rejected))}</section>
{_SCRIPT}</body></html>
"""
