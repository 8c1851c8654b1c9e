"""The page of ``svdbatch tune`` in headless Chromium: every video loads, each item's input image and its videos under
the three settings sit side by side, the reference first, at 360 and 1280 px (conftest.tune_run), the tiny model's
note is on top; and long keys wrap only after a separator at 390 px (a page written by ``tune.page`` without Ray)."""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image
from test_browser_report import CHROMIUM, body_after_scripts, screenshot

from svdbatch.cli.tune_page import REFERENCE, Sample, Setting, input_path, page, preview_path
from svdbatch.render.video import encode_mp4
from svdbatch.spec.config import VideoSpec

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")

# For each frame: how many videos loaded, whether in every item row the input image and then the videos share one top
# edge and run left to right (the videos under the column heads in the order of the settings), whether the tiny
# model's note is above the items, and each key's line breaks that do not follow a separator (_ - . /).
PROBE = b"""<!doctype html><html><body>
<iframe src="index.html" style="width:360px;height:2000px;border:0"></iframe>
<iframe src="index.html" style="width:1280px;height:2000px;border:0"></iframe>
<iframe src="index.html" style="width:390px;height:2000px;border:0"></iframe>
<script>
function sideBySide(doc) {
  const heads = [...doc.querySelectorAll(".heads .head b")].map((head) => head.textContent);
  return heads[0] === "reference" && [...doc.querySelectorAll(".item")].every((item) => {
    const input = item.querySelector(".input img");
    const boxes = [input, ...item.querySelectorAll("video")].map((element) => element.getBoundingClientRect());
    return input.naturalWidth > 0 && boxes.length === heads.length + 1 && boxes.every((box, index) =>
      Math.abs(box.top - boxes[0].top) < 2 && box.width > 0 && (index === 0 || box.left >= boxes[index - 1].right));
  });
}
function badBreaks(doc) {
  const bad = [];
  for (const key of doc.querySelectorAll(".key")) {
    const walker = doc.createTreeWalker(key, NodeFilter.SHOW_TEXT);
    let previous = null;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (let index = 0; index < node.data.length; index++) {
        const range = doc.createRange();
        range.setStart(node, index);
        range.setEnd(node, index + 1);
        const top = Math.round(range.getBoundingClientRect().top);
        if (previous && top > previous.top + 2 && !"_-./".includes(previous.char)) {
          bad.push(key.textContent + "@" + previous.char + node.data[index]);
        }
        previous = { top: top, char: node.data[index] };
      }
    }
  }
  return bad.join(" ");
}
const timer = setInterval(() => {
  const docs = [...document.querySelectorAll("iframe")].map((frame) => frame.contentDocument);
  // a frame not yet navigated holds an empty about:blank document, where both counts are undefined
  const ready = (doc) => doc && doc.body && doc.body.dataset.videos !== undefined
    && doc.body.dataset.loaded === doc.body.dataset.videos
    && [...doc.images].every((image) => image.complete);
  if (!docs.every(ready)) return;
  clearInterval(timer);
  docs.forEach((doc, index) => {
    const note = doc.getElementById("model-note");
    document.body.dataset["loaded" + index] = doc.body.dataset.loaded;
    document.body.dataset["side" + index] = sideBySide(doc);
    document.body.dataset["note" + index] = note !== null && note.getBoundingClientRect().bottom
      < doc.getElementById("items").getBoundingClientRect().top;
    document.body.dataset["bad" + index] = badBreaks(doc);
    document.body.dataset["wrapped" + index] = [...doc.querySelectorAll(".key")].some((key) =>
      key.getClientRects().length > 0 && key.getBoundingClientRect().height > 30);
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


@contextlib.contextmanager
def measured(folder, profile_dir):
    """While the tune page in ``folder`` is served: the probe's findings, the base URL and the Chromium profile."""
    handler = functools.partial(TuneServer, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base, profile = f"http://127.0.0.1:{server.server_address[1]}", ["--user-data-dir=" + str(profile_dir)]
    try:
        tag = body_after_scripts(profile, base + "/probe.html", "--window-size=2200,2100")
        yield dict(re.findall(r'data-([a-z0-9]+)="([^"]*)"', tag)), base, profile
    finally:
        server.shutdown()


def test_tune_page_plays_every_sample_video_beside_its_input(tune_run, tmp_path):
    with measured(tune_run["tune"], tmp_path / "profile") as (body, base, profile):
        assert body.get("measured") == "yes", body
        for frame in ("0", "1", "2"):  # 360, 1280 and 390 px wide
            assert body["loaded" + frame] == "9"  # 3 items x 3 settings, every one decoded by Chromium
            assert body["side" + frame] == "true"  # the input image, then the videos, in one row
            assert body["note" + frame] == "true"  # the tiny model's note above the items
            assert body["bad" + frame] == ""
        for name, size in (("tune.png", "1400,900"), ("tune-390.png", "390,1200")):
            assert screenshot(profile, base + "/index.html", name, size).stat().st_size > 10_000


KEYS = ["motorcycle_right.png", "catalog/2024-spring/sneakers_high-top_white.jpg", "a.png"]


def write_page(folder) -> None:
    """A tune page of two settings over ``KEYS``, with real previews and inputs, as ``tune.tune`` writes it."""
    settings = [Setting(REFERENCE, [], "s0"), Setting("render.num_inference_steps=1", [], "s1")]
    distance = {}
    for index, key in enumerate(KEYS):
        frames = np.zeros((4, 64, 64, 3), np.uint8) + np.uint8(60 * index)
        for setting in settings:
            path = folder / preview_path(setting, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_mp4(frames, 6, VideoSpec()))
            distance[setting.folder, key] = {"psnr": 30.0, "ssim": 0.9}
        (folder / input_path(index)).parent.mkdir(exist_ok=True)
        Image.fromarray(frames[0]).save(folder / input_path(index))
    figures = dict.fromkeys(["seconds_per_video", "pflop_per_video", "peak_gpu_bytes", "psnr", "ssim"], None)
    figures.update(dict.fromkeys(["motion_mean", "black_frames", "first_frame_psnr"], None))
    lines = [{**figures, "setting": setting.name} for setting in settings]
    (folder / "index.html").write_text(page(settings, lines, Sample(KEYS, set(KEYS), tiny=False), distance))


def test_tune_page_wraps_long_keys_only_after_a_separator(tmp_path):
    (tmp_path / "page").mkdir()
    write_page(tmp_path / "page")
    with measured(tmp_path / "page", tmp_path / "profile") as (body, base, profile):
        assert body.get("measured") == "yes", body
        for frame in ("0", "1", "2"):
            assert body["loaded" + frame] == "6" and body["side" + frame] == "true"
            assert body["bad" + frame] == "", body  # no "motorcycle_ri / ght.png"
            assert body["note" + frame] == "false"  # a real model: no note
        assert body["wrapped2"] == "true"  # at 390 px the long keys did wrap, at their separators
        assert screenshot(profile, base + "/index.html", "tune-keys-390.png", "390,900").stat().st_size > 5_000
