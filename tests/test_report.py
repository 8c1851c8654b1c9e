"""Operator flow as a new user runs it: ``manifest`` on a folder, ``run``, then ``report`` checked in a real
headless Chromium (posters render, a video plays); the screenshot is kept under test-artifacts/."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from helpers import TEST_COMPUTE, TEST_RENDER, write_images

from svdbatch.cli import main

pytestmark = pytest.mark.integration
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


@pytest.fixture(scope="module")
def rendered(ray_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("operator")
    write_images(folder / "images" / "shoes", 3)
    (folder / "images" / "broken.png").write_bytes(b"not a png")
    (folder / "images" / "readme.txt").write_text("not an image, not listed")
    assert main(["manifest", str(folder / "images"), "-o", str(folder / "m.parquet"), "--column", "fps=5"]) == 0
    job = {
        "manifest": {"path": str(folder / "m.parquet")},
        "output": {"url": str(folder / "out")},
        "render": {key: value for key, value in TEST_RENDER.items() if key != "fps"},
        "compute": TEST_COMPUTE,
        "failures": {"max_error_fraction": 1.0},  # the rerun retries only the broken image: it fails again
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(folder / "job.yaml"), "--quiet"]) == 1  # one item failed: exit status says so
    assert main(["run", str(folder / "job.yaml"), "--quiet"]) == 1  # a rerun: only the failed item, failing again
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # a relative output path, as in the README's `svdbatch report demo-output/output`
        assert main(["report", "out"]) == 0
    return folder


def test_manifest_from_a_folder_is_accepted_by_run(rendered):
    rows = pq.read_table(rendered / "m.parquet").to_pylist()
    assert sorted(row["key"] for row in rows) == ["broken.png", *(f"shoes/img-00{i}.png" for i in range(3))]
    assert {row["fps"] for row in rows} == {5}
    table = pq.read_table(rendered / "out" / "metadata").to_pylist()
    assert sorted(row["status"] for row in table) == ["error", "ok", "ok", "ok"]
    assert {row["fps"] for row in table if row["status"] == "ok"} == {5}


def test_report_files_are_written(rendered):
    report = rendered / "out" / "report"
    assert len(list((report / "posters").glob("*.jpg"))) == 3
    assert (report / "contact_sheet.png").stat().st_size > 0
    assert len(list((report / "inputs").glob("*.jpg"))) == 3  # each poster has its input beside it
    page = (report / "index.html").read_text()
    assert "3 ok · 1 failed" in page and "broken.png" in page and "not a readable image" in page


def test_report_counts_every_run_not_just_the_last(rendered):
    page = (rendered / "out" / "report" / "index.html").read_text()
    runs = re.search(r'<p id="runs">([^<]*)</p>', page).group(1)
    assert runs.startswith("2 run(s): 3 rendered, 2 failed in all · last rendering run ")
    assert ": 3 videos at " in runs  # the first run, not the no-op rerun's 0 videos/min


def test_report_links_are_relative_and_resolve(rendered):
    report = rendered / "out" / "report"
    page = (report / "index.html").read_text()
    links = re.findall(r'(?:src|href|data-video)="([^"#]+)"', page)
    assert len(links) >= 3 * 3 + 1  # poster, input and video per card, plus the contact sheet
    for link in links:
        assert not link.startswith("/") and "://" not in link, link
        assert (report / link).resolve().is_file(), link


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (installed by .ci/run)")
def test_report_renders_and_plays_in_headless_chromium(rendered, tmp_path):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(rendered / "out"))
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
