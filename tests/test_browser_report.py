"""The report as a user sees it: served over HTTP and opened in a real headless Chromium (posters render, a video
plays); the screenshot is kept under test-artifacts/."""

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


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (installed by .ci/run)")
def test_report_renders_and_plays_in_headless_chromium(operator_output, tmp_path):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(operator_output / "out"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/report/index.html"
    try:
        profile = ["--user-data-dir=" + str(tmp_path / "profile")]
        dom = subprocess.run(
            [CHROMIUM, *FLAGS, *profile, "--virtual-time-budget=8000", "--dump-dom", url + "#play=0"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        body = re.search(r"<body[^>]*>", dom).group(0)
        assert 'data-posters-loaded="3"' in body and 'data-videos="3"' in body
        assert 'data-played="card-0"' in body  # the first video element fired "playing"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report.png"
        subprocess.run(
            [
                CHROMIUM,
                *FLAGS,
                *profile,
                "--window-size=1280,900",
                "--virtual-time-budget=5000",
                f"--screenshot={shot}",
                url,
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
        assert shot.stat().st_size > 10_000
    finally:
        server.shutdown()
