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
keys and errors come from untrusted manifests. The pictures are made in images.py, the items' HTML in cards.py, the
page's skeleton (shared with svdbatch tune) in shell.py; the run records are read through run/record.py.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pyarrow.compute as pc

from svdbatch import storage
from svdbatch.items.metadata import OK, REJECTED, REMOVED
from svdbatch.report import cards, charts, images, shell
from svdbatch.report.images import POSTER_WIDTH
from svdbatch.run.record import money, read_records, seconds_unit
from svdbatch.spec.config import TINY_MODELS
from svdbatch.store import commit


def run_totals(output: str, options: dict[str, Any]) -> dict[str, Any]:
    """Counts summed over every run's record, the last run that rendered anything (a no-op rerun has no rate), and
    the latest run's quality gates."""
    records = read_records(output, options)
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


def steady_rate(finished: list[datetime]) -> float | None:
    """Videos per minute after the first video finished: the run's rate without its start-up (model loads,
    warm-up). None with fewer than two videos or no time between them."""
    if len(finished) < 2:
        return None
    span = (max(finished) - min(finished)).total_seconds()
    return (len(finished) - 1) / span * 60 if span > 0 else None


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
    figures = []
    for index, row in enumerate(ok):
        poster = images.poster(images.first_frame(storage.read_bytes(row["video_uri"], options)))
        posters.append(poster)
        name = f"posters/{index:06d}.jpg"
        storage.write_bytes(storage.join(report, name), images.encode_image(poster, "JPEG"), options)
        source = images.fitted_input(row, options)
        source = images.poster(source) if source is not None else None
        source_name = f"inputs/{index:06d}.jpg" if source is not None else None
        if source is not None:
            storage.write_bytes(storage.join(report, source_name), images.encode_image(source, "JPEG"), options)
        shown_source = (source_name, source.size) if source is not None else None
        figures.append(cards.card(index, row, (name, poster.size), shown_source, cards.relative_video(row)))
    if posters:
        sheet = images.contact_sheet(posters, [f"{row['key']} · v{row['variant']}" for row in ok])
        storage.write_bytes(storage.join(report, "contact_sheet.png"), images.encode_image(sheet, "PNG"), options)
    last = totals["last_rendering"]
    finished = [row["finished_at"] for row in rows if last and row["run_id"] == last["run_id"] and row["finished_at"]]
    rate = _rate_line(totals, finished)
    page = _page(rows, ok, failed, rejected, rate, figures, bool(posters), _charts(rows, totals))
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


def _model_note(ok: list[dict[str, Any]]) -> str:
    """A line at the top when the videos come from an embedded tiny model: random weights make noise, by design."""
    if not (tiny := sorted({row["model_source"] for row in ok} & set(TINY_MODELS))):
        return ""
    return shell.tiny_note(
        ", ".join(tiny),
        "embedded tiny models with random weights used by the demo and the tests: coloured noise is what they make. "
        "Set model.source to a real checkpoint (e.g. stabilityai/stable-video-diffusion-img2vid-xt) for real videos.",
    )


# The report page's style and script (the grid, the cards that play on a click, the filters, #play=N links).
_STYLE = f""".grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, {POSTER_WIDTH}px), 1fr));
  gap: 1rem; }}
.card {{ margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; overflow: hidden; cursor: pointer; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 2px; align-items: start; }}
.card img, .card video {{ width: 100%; height: auto; display: block; }}
.missing {{ font-size: .8rem; color: #888; padding: .3rem; }}
figcaption {{ padding: .4rem .6rem; overflow-wrap: anywhere; }}
.fact {{ white-space: nowrap; }}
#charts {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
.chart {{ margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .4rem; max-width: 100%; }}
.chart svg {{ max-width: 100%; height: auto; display: block; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ border: 1px solid #ddd; padding: .3rem; }}
.hidden {{ display: none; }}
.none {{ color: #666; font-style: italic; }}
@media (max-width: 600px) {{ body {{ margin: .5rem; }} .chart {{ padding: .1rem; }} }}"""
_SCRIPT = """countLoaded("img.poster", "postersLoaded", (img) => img.complete && img.naturalWidth > 0, "load");
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
}"""


def _page(rows, ok, failed, rejected, rate: str, figures, has_sheet: bool, charts_section: str) -> str:
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
    body = f"""{_model_note(ok)}
<p id="summary">{len(ok)} ok · {len(failed)} failed · {len(rejected)} rejected · {len(rows)} items</p>
<p id="runs">{html.escape(rate)}</p>
<p id="timings">mean per item: {html.escape(timings)} · {sheet}</p>
{charts_section}
<p><button data-filter="all">all</button> <button data-filter="ok">ok</button>
<button data-filter="error">failed ({len(failed)})</button>
<button data-filter="rejected">rejected ({len(rejected)})</button></p>
<section class="grid" id="videos">{"".join(figures)}</section>
<section id="failures"><h2>Failed items</h2>
{cards.table(["key", "variant", "source", "error"], cards.error_rows(failed))}</section>
<section id="rejections"><h2>Rejected by the quality gates</h2>
{cards.table(["key", "variant", "video", "reason"], cards.rejection_rows(rejected))}</section>"""
    return shell.page("svdbatch report", _STYLE, body, _SCRIPT, {"posters-loaded": 0, "videos": len(ok)})
