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
const timer = setInterval(() => {
  const docs = [...document.querySelectorAll("iframe")].map((frame) => frame.contentDocument);
  const images = docs.flatMap((doc) => [...doc.querySelectorAll(".pair img")]);
  if (images.length === 0 || images.some((img) => !img.complete || img.naturalWidth === 0)) return;
  clearInterval(timer);
  docs.forEach((doc, index) => {
    const found = measure(doc);
    document.body.dataset["broken" + index] = found.broken;
    document.body.dataset["gap" + index] = found.gap;
    document.body.dataset["note" + index] = found.note;
  });
  document.body.dataset.measured = "yes";
}, 100);
</script></body></html>"""


class ReportServer(SimpleHTTPRequestHandler):
    """The output folder, plus the probe page at /probe.html."""

    def do_GET(self):
        if self.path != "/probe.html":
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(PROBE)


@pytest.fixture
def served(operator_output, tmp_path):
    """The operator run's output over HTTP (its base URL), and a fresh Chromium profile."""
    handler = functools.partial(ReportServer, directory=str(operator_output / "out"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", ["--user-data-dir=" + str(tmp_path / "profile")]
    server.shutdown()


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
