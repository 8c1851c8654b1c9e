"""Operator flow as a new user runs it: ``manifest`` on a folder, ``run``, then ``report`` (the run is the
session's ``operator_output``; tests/test_browser_report.py opens the same report in Chromium)."""

from __future__ import annotations

import re

import pyarrow.parquet as pq


def test_manifest_from_a_folder_is_accepted_by_run(operator_output):
    rows = pq.read_table(operator_output / "m.parquet").to_pylist()
    assert sorted(row["key"] for row in rows) == ["broken.png", *(f"shoes/img-00{i}.png" for i in range(3))]
    assert {row["fps"] for row in rows} == {5}
    table = pq.read_table(operator_output / "out" / "metadata").to_pylist()
    assert sorted(row["status"] for row in table) == ["error", "ok", "ok", "ok"]
    assert {row["fps"] for row in table if row["status"] == "ok"} == {5}


def test_report_files_are_written(operator_output):
    report = operator_output / "out" / "report"
    assert len(list((report / "posters").glob("*.jpg"))) == 3
    assert (report / "contact_sheet.png").stat().st_size > 0
    assert len(list((report / "inputs").glob("*.jpg"))) == 3  # each poster has its input beside it
    page = (report / "index.html").read_text()
    assert "3 ok · 1 failed" in page and "broken.png" in page and "not a readable image" in page


def test_report_counts_every_run_not_just_the_last(operator_output):
    page = (operator_output / "out" / "report" / "index.html").read_text()
    runs = re.search(r'<p id="runs">([^<]*)</p>', page).group(1)
    assert runs.startswith("2 run(s): 3 rendered, 2 failed in all · last rendering run ")
    assert ": 3 videos at " in runs  # the first run, not the no-op rerun's 0 videos/min


def test_report_links_are_relative_and_resolve(operator_output):
    report = operator_output / "out" / "report"
    page = (report / "index.html").read_text()
    links = re.findall(r'(?:src|href|data-video)="([^"#]+)"', page)
    assert len(links) >= 3 * 3 + 1  # poster, input and video per card, plus the contact sheet
    for link in links:
        assert not link.startswith("/") and "://" not in link, link
        assert (report / link).resolve().is_file(), link
