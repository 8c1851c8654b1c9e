"""The page of ``svdbatch tune`` (conftest.tune_run) in headless Chromium: every video loads, and each item's videos
under the three settings sit side by side, the reference first, at 360 and 1280 px."""

from __future__ import annotations

import functools
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_browser_report import CHROMIUM, body_after_scripts, screenshot

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")

# For each frame: how many videos loaded, and whether in every item row the videos share one top edge and run left
# to right under the column heads in the order of the settings.
PROBE = b"""<!doctype html><html><body>
<iframe src="index.html" style="width:360px;height:2000px;border:0"></iframe>
<iframe src="index.html" style="width:1280px;height:2000px;border:0"></iframe>
<script>
function sideBySide(doc) {
  const heads = [...doc.querySelectorAll(".heads .head b")].map((head) => head.textContent);
  return heads[0] === "reference" && [...doc.querySelectorAll(".item")].every((item) => {
    const boxes = [...item.querySelectorAll("video")].map((video) => video.getBoundingClientRect());
    return boxes.length === heads.length && boxes.every((box, index) =>
      Math.abs(box.top - boxes[0].top) < 2 && box.width > 0 && (index === 0 || box.left >= boxes[index - 1].right));
  });
}
const timer = setInterval(() => {
  const docs = [...document.querySelectorAll("iframe")].map((frame) => frame.contentDocument);
  // a frame not yet navigated holds an empty about:blank document, where both counts are undefined
  const ready = (doc) => doc && doc.body && doc.body.dataset.videos !== undefined
    && doc.body.dataset.loaded === doc.body.dataset.videos;
  if (!docs.every(ready)) return;
  clearInterval(timer);
  docs.forEach((doc, index) => {
    document.body.dataset["loaded" + index] = doc.body.dataset.loaded;
    document.body.dataset["side" + index] = sideBySide(doc);
  });
  document.body.dataset.measured = "yes";
}, 100);
</script></body></html>"""


class TuneServer(SimpleHTTPRequestHandler):
    """The tune folder, plus the probe page at /probe.html."""

    def do_GET(self):
        if self.path != "/probe.html":
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(PROBE)


def test_tune_page_plays_every_sample_video_side_by_side(tune_run, tmp_path):
    handler = functools.partial(TuneServer, directory=str(tune_run["tune"]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base, profile = f"http://127.0.0.1:{server.server_address[1]}", ["--user-data-dir=" + str(tmp_path / "profile")]
    try:
        tag = body_after_scripts(profile, base + "/probe.html", "--window-size=1700,2100")
        body = dict(re.findall(r'data-([a-z0-9]+)="([^"]*)"', tag))
        assert body.get("measured") == "yes", body
        for frame in ("0", "1"):  # 360 px and 1280 px wide
            assert body["loaded" + frame] == "9"  # 3 items x 3 settings, every one decoded by Chromium
            assert body["side" + frame] == "true"
        assert screenshot(profile, base + "/index.html", "tune.png", "1280,900").stat().st_size > 10_000
    finally:
        server.shutdown()
