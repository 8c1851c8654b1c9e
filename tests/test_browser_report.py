"""The report as a user sees it: served over HTTP and opened in a real headless Chromium (posters render, a video
plays, card text wraps between words, the input sits level with its poster, ``#play=20`` scrolls to card 20, charts
read at 390 px); screenshots are kept under test-artifacts/.

The long report (24 videos of a CPU run, no gate, nothing failed) is written without Ray: real MP4s, commit files, a
run record and ``write_report``, as a run leaves them, so the page's layout is measured in seconds."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import make_spec, write_images

from svdbatch.items.metadata import OK, blank_row, to_table
from svdbatch.render.video import encode_mp4
from svdbatch.report.page import write_report
from svdbatch.run.record import RunSummary, job_record, write_job_record
from svdbatch.spec.config import TINY_MODEL, VideoSpec
from svdbatch.store.commit import publish
from svdbatch.store.committer import Committer

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


# Opens the report in a narrow and a wide frame and measures it: words of card text split over two lines, the
# largest height difference between a poster and its input, whether the tiny-model note sits above the cards.
PROBE = b"""<!doctype html><html><body>
<iframe src="report/index.html" style="width:360px;height:3000px;border:0"></iframe>
<iframe src="report/index.html" style="width:1280px;height:3000px;border:0"></iframe>
<script>
function measure(doc) {
  const broken = [];
  for (const caption of doc.querySelectorAll(".card figcaption")) {
    const walker = doc.createTreeWalker(caption, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const word of node.data.matchAll(/\\S+/g)) {
        const range = doc.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        if (new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size > 1) broken.push(word[0]);
      }
    }
  }
  const gaps = [...doc.querySelectorAll(".pair")].map((pair) => {
    const [poster, input] = pair.querySelectorAll("img");
    return Math.abs(poster.getBoundingClientRect().height - input.getBoundingClientRect().height);
  });
  const note = doc.getElementById("model-note");
  const above = note !== null && note.getBoundingClientRect().top < doc.getElementById("videos").offsetTop;
  return {broken: broken.join(" "), gap: Math.max(...gaps), note: above};
}
function loaded(doc) {
  if (!doc || doc.readyState !== "complete" || doc.location.href === "about:blank") return false;
  const images = [...doc.querySelectorAll(".pair img")];
  return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
}
const timer = setInterval(() => {
  const docs = [...document.querySelectorAll("iframe")].map((frame) => frame.contentDocument);
  if (!docs.every(loaded)) return;  // each frame parsed to its end, every image decoded
  clearInterval(timer);
  try {
    docs.forEach((doc, index) => {
      const found = measure(doc);
      document.body.dataset["broken" + index] = found.broken;
      document.body.dataset["gap" + index] = found.gap;
      document.body.dataset["note" + index] = found.note;
    });
    document.body.dataset.measured = "yes";
  } catch (error) {
    document.body.dataset.measured = "error: " + error;
  }
}, 100);
</script></body></html>"""


# Opens the report and lists each chart as drawn: its id, its size on screen, how many of its data marks (steps, bars)
# cover some area, and the axis labels it shows.
CHART_PROBE = b"""<!doctype html><html><body>
<iframe src="report/index.html" style="width:1280px;height:3000px;border:0"></iframe>
<script>
const timer = setInterval(() => {
  const doc = document.querySelector("iframe").contentDocument;
  if (!doc || doc.readyState !== "complete" || doc.location.href === "about:blank") return;
  clearInterval(timer);
  const charts = [...doc.querySelectorAll(".chart")].map((chart) => {
    const box = chart.querySelector("svg").getBoundingClientRect();
    const marks = [...chart.querySelectorAll("[id^=data-]")].filter((mark) => {
      const drawn = mark.getBoundingClientRect();
      return drawn.width > 0 && drawn.height > 0;
    }).length;
    const labels = [...chart.querySelectorAll("[id^=text_] text")].map((text) => text.textContent);
    return `${chart.id}:${Math.round(box.width)}x${Math.round(box.height)}:${marks}:${labels.join("|")}`;
  });
  document.body.dataset.charts = charts.join(";");
}, 100);
</script></body></html>"""

# Opens the long report at 390 and 1400 px, 800 px tall, at #play=20, and measures each: how far the frame scrolled
# and where card 20 sits, whether the page is wider than the frame, the smallest chart text as drawn (its font size
# times the SVG's scale), each chart's tick labels, the quality chart's title, and the text of the two tables' sections.
LONG_PROBE = b"""<!doctype html><html><body>
<iframe src="report/index.html#play=20" style="width:390px;height:800px;border:0"></iframe>
<iframe src="report/index.html#play=20" style="width:1400px;height:800px;border:0"></iframe>
<script>
function measure(frame) {
  const doc = frame.contentDocument, view = frame.contentWindow;
  const card = doc.getElementById("card-20").getBoundingClientRect();
  const sizes = [...doc.querySelectorAll(".chart svg text")].map((text) => {
    const matrix = text.getScreenCTM();
    return parseFloat(view.getComputedStyle(text).fontSize) * Math.hypot(matrix.a, matrix.b);
  });
  const labels = (chart, axis) => [...doc.querySelectorAll(`#chart-${chart} [id^=${axis}tick] text`)]
    .map((text) => text.textContent).join(",");
  return {
    scrolled: view.scrollY, cardtop: Math.round(card.top), cardbottom: Math.round(card.bottom),
    height: view.innerHeight, overflow: doc.documentElement.scrollWidth - view.innerWidth,
    smallest: Math.min(...sizes).toFixed(1), texts: sizes.length,
    secondsy: labels("seconds", "y"), qualityy: labels("quality", "y"),
    quality: doc.querySelector("#chart-quality svg").textContent.includes("dashed") ? "dashed" : "plain",
    failures: doc.getElementById("failures").innerText.replace(/\\s+/g, " "),
    rejections: doc.getElementById("rejections").innerText.replace(/\\s+/g, " "),
  };
}
const timer = setInterval(() => {
  const frames = [...document.querySelectorAll("iframe")];
  const ready = (frame) => {
    const doc = frame.contentDocument;
    if (!doc || doc.readyState !== "complete" || doc.location.href === "about:blank") return false;
    const card = doc.getElementById("card-20");
    return card !== null && card.dataset.played === "true";
  };
  if (!frames.every(ready)) return;  // each frame loaded its own page and card 20's video plays
  clearInterval(timer);
  try {
    frames.forEach((frame, index) => {
      for (const [name, value] of Object.entries(measure(frame))) document.body.dataset[name + index] = value;
    });
    document.body.dataset.measured = "yes";
  } catch (error) {
    document.body.dataset.measured = "error: " + error;
  }
}, 100);
</script></body></html>"""
# The same two frames with no script, for the screenshot: with the probe's timer running, Chromium's --screenshot of
# the scrolled frames came out blank about one time in three.
PLAY_FRAMES = b"""<!doctype html><html><body style="margin:0">
<iframe src="report/index.html#play=20" style="width:390px;height:800px;border:0"></iframe>
<iframe src="report/index.html#play=20" style="width:1400px;height:800px;border:0"></iframe>
</body></html>"""
PAGES = {
    "/probe.html": PROBE,
    "/charts-probe.html": CHART_PROBE,
    "/long-probe.html": LONG_PROBE,
    "/play-frames.html": PLAY_FRAMES,
}


class ReportServer(SimpleHTTPRequestHandler):
    """The output folder, plus the probe pages."""

    def do_GET(self):
        if self.path not in PAGES:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(PAGES[self.path])


def serve(output: Path, profile: Path):
    """An output folder over HTTP (its base URL), and a fresh Chromium profile."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(ReportServer, directory=str(output)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", ["--user-data-dir=" + str(profile)]
    server.shutdown()


@pytest.fixture
def served(operator_output, tmp_path):
    """The operator run's report."""
    yield from serve(operator_output / "out", tmp_path / "profile")


@pytest.fixture
def served_observed(observed_run, tmp_path):
    """The report of the session's run with ok, failed and rejected items (conftest.observed_run)."""
    yield from serve(observed_run.folder / "out", tmp_path / "profile")


def body_after_scripts(profile: list[str], url: str, *flags: str) -> str:
    """The page's <body> tag once its scripts ran (8 s of virtual time): the tests' results are data attributes."""
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, *profile, *flags, "--virtual-time-budget=8000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return re.search(r"<body[^>]*>", dom).group(0)


def screenshot(profile: list[str], url: str, name: str, size: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    subprocess.run(
        [CHROMIUM, *FLAGS, *profile, f"--window-size={size}", "--virtual-time-budget=5000", f"--screenshot={shot}"]
        + [url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return shot


def test_report_renders_and_plays_in_headless_chromium(served):
    base, profile = served
    body = body_after_scripts(profile, base + "/report/index.html#play=0")
    assert 'data-posters-loaded="3"' in body and 'data-videos="3"' in body
    assert 'data-played="card-0"' in body  # the first video element fired "playing"
    assert screenshot(profile, base + "/report/index.html", "report.png", "1280,900").stat().st_size > 10_000


def test_report_cards_wrap_between_words_and_say_the_model_is_the_tiny_one(served):
    base, profile = served
    tag = body_after_scripts(profile, base + "/probe.html", "--window-size=1700,3100")  # both frames in view
    body = dict(re.findall(r'data-([a-z0-9]+)="([^"]*)"', tag))
    assert body.get("measured") == "yes", body
    for frame in ("0", "1"):  # 360 px and 1280 px wide
        assert body["broken" + frame] == ""  # no word split over two lines
        assert float(body["gap" + frame]) < 2  # the input is as tall as its poster: no empty block under it
        assert body["note" + frame] == "true"  # the tiny-model note is above the cards
    assert screenshot(profile, base + "/report/index.html", "report-narrow.png", "400,900").stat().st_size > 10_000


def test_report_charts_are_drawn_with_labelled_axes(served_observed):
    base, profile = served_observed
    tag = body_after_scripts(profile, base + "/charts-probe.html", "--window-size=1300,3100")
    charts = re.search(r'data-charts="([^"]*)"', tag).group(1).split(";")
    drawn = {chart.split(":")[0]: chart.split(":", 3)[1:] for chart in charts}
    assert set(drawn) == {"chart-throughput", "chart-seconds", "chart-quality", "chart-failures"}
    for size, marks, _ in drawn.values():
        width, height = map(int, size.split("x"))
        assert width > 200 and height > 100 and int(marks) > 0, drawn
    assert {"videos / min", "minutes after the first video"} <= set(drawn["chart-throughput"][2].split("|"))
    assert {"seconds per video", "videos"} <= set(drawn["chart-seconds"][2].split("|"))
    assert {"first-frame PSNR (dB)", "min_first_frame_psnr = 8.0"} <= set(drawn["chart-quality"][2].split("|"))
    assert {"items", "cause", "image", "rejected: min_first_frame_psnr"} <= set(drawn["chart-failures"][2].split("|"))
    assert screenshot(profile, base + "/report/index.html", "report-charts.png", "1280,1400").stat().st_size > 10_000


LONG_VIDEOS = 24
START_UP_S = 13


def write_long_output(folder: Path) -> Path:
    """An output folder as a CPU run of ``LONG_VIDEOS`` tiny-model videos leaves it, with no quality gate and
    nothing failed: 13 s of start-up, then a video every 0.5 s. Returns the output's path."""
    out = folder / "out"
    images = write_images(folder / "images", 4)
    spec = make_spec(folder / "m.parquet", out)
    started = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
    committer = Committer(str(out), "run-long", {}, max_error_fraction=0.0)
    rows = []
    for index in range(LONG_VIDEOS):
        ramp = np.linspace(0, 255, 64, dtype=np.uint8)[None, None, :, None]
        frames = np.broadcast_to(ramp, (4, 64, 64, 3)).copy()
        frames[..., index % 3] = (index * 10) % 256
        video = out / "videos" / f"shoe_{index:02d}-v0.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(encode_mp4(frames, 6, VideoSpec()))
        row = blank_row()
        row.update(run_id="run-long", key=f"shoes/red_shoe_{index:02d}.png", variant=0, seed=index, status=OK)
        row.update(source_uri=images[index % 4], video_uri=str(video), model_source=TINY_MODEL, fit="crop")
        row.update(width=64, height=64, num_frames=4, num_inference_steps=2, fps=6, motion_bucket_id=127)
        row.update(min_guidance_scale=1.0, max_guidance_scale=3.0, decode_chunk_size=4)
        row.update(node_id="a1b2c3d4e5", gpu_id=None, gpu_name="cpu", cuda_version="cpu")
        row.update(motion_mean=20.0 + index % 5, first_frame_psnr=9.0 + index % 3, first_frame_ssim=0.3)
        row.update(load_seconds=0.01, generate_seconds=0.4 + index % 3 / 10, encode_seconds=0.05, write_seconds=0.01)
        row.update(finished_at=started + timedelta(seconds=START_UP_S + index / 2))
        rows.append(row)
    committer.add(to_table(rows))
    committer.finish()
    publish(str(out))
    wall = START_UP_S + LONG_VIDEOS / 2 + 1
    summary = RunSummary("run-long", str(out), LONG_VIDEOS, 0, 0, 0, 0, wall, gpu_seconds=LONG_VIDEOS * 0.5)
    record = job_record(spec, summary, started.timestamp(), [{"gpu_name": "cpu", "cuda_version": "cpu"}])
    write_job_record(spec, record)
    write_report(str(out))
    return out


@pytest.fixture(scope="module")
def long_report(tmp_path_factory):
    """The long report (``write_long_output``), served, with its page's HTML."""
    folder = tmp_path_factory.mktemp("long")
    out = write_long_output(folder)
    for base, profile in serve(out, folder / "profile"):
        yield SimpleNamespace(base=base, profile=profile, page=(out / "report" / "index.html").read_text())


def test_long_report_says_its_start_up_its_steady_rate_and_its_device(long_report):
    runs = re.search(r'<p id="runs">([^<]*)</p>', long_report.page).group(1)
    assert f"{LONG_VIDEOS} videos at " in runs and "videos/min over" in runs
    assert f"(~{START_UP_S}s of it start-up, until the first video)" in runs
    assert "120.0 videos/min after the first video" in runs  # one every 0.5 s once started
    assert "0.50 CPU-s/video" in runs and "GPU-s" not in runs  # the record says a CPU rendered
    assert "dashed" not in long_report.page  # no gate: no threshold to explain


def test_play_link_scrolls_to_its_card_and_charts_read_at_390_px(long_report):
    base, profile = long_report.base, long_report.profile
    tag = body_after_scripts(profile, base + "/long-probe.html", "--window-size=1820,900")
    body = dict(re.findall(r'data-([a-z0-9]+)="([^"]*)"', tag))
    assert body.get("measured") == "yes", body
    for frame in ("0", "1"):  # 390 px and 1400 px wide
        assert float(body["scrolled" + frame]) > 0, body  # #play=20 scrolled down to card 20 ...
        assert 0 <= int(body["cardtop" + frame]) and int(body["cardbottom" + frame]) <= int(body["height" + frame])
        assert int(body["overflow" + frame]) <= 0, body  # nothing wider than the frame
        assert int(body["texts" + frame]) > 20 and float(body["smallest" + frame]) >= 9, body
        for axis in ("secondsy", "qualityy"):  # count axes: whole numbers only
            labels = body[axis + frame].replace("−", "-").split(",")
            assert labels and all(float(label).is_integer() for label in labels), (axis, labels)
        assert body["quality" + frame] == "plain"  # no gate set: no "(dashed: the gate's threshold)"
        assert body["failures" + frame] == "Failed items none", body
        assert body["rejections" + frame] == "Rejected by the quality gates none", body
    for name, size in (("report-long-1400.png", "1400,2400"), ("report-long-390.png", "390,2400")):
        assert screenshot(profile, base + "/report/index.html", name, size).stat().st_size > 10_000
    # both frames, scrolled to card 20 (a screenshot of a scrolled top-level page comes out blank)
    assert screenshot(profile, base + "/play-frames.html", "report-play20.png", "1820,820").stat().st_size > 100_000
