"""The report as a user sees it: served over HTTP and opened in a real headless Chromium (posters render, a video
plays, card text wraps between words, the input sits level with its poster); screenshots are kept under
test-artifacts/."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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
PAGES = {"/probe.html": PROBE, "/charts-probe.html": CHART_PROBE}


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
    assert {"videos / min", "minutes since the first video of the run"} <= set(drawn["chart-throughput"][2].split("|"))
    assert {"seconds per video", "videos"} <= set(drawn["chart-seconds"][2].split("|"))
    assert {"first-frame PSNR (dB)", "min_first_frame_psnr = 8.0"} <= set(drawn["chart-quality"][2].split("|"))
    assert {"items", "cause", "image", "rejected: min_first_frame_psnr"} <= set(drawn["chart-failures"][2].split("|"))
    assert screenshot(profile, base + "/report/index.html", "report-charts.png", "1280,1400").stat().st_size > 10_000
