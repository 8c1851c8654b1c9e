"""``svdbatch demo`` exactly as the README runs it: its own process, its own local Ray cluster."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq

from svdbatch.render.video import probe


def test_demo_command_from_the_readme(tmp_path):
    """``svdbatch demo`` in its own process, starting its own Ray cluster, exactly as a new user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "svdbatch.cli", "demo", "--dir", str(tmp_path / "demo"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "12 ok, 0 failed, 0 already done" in result.stdout
    rows = pq.read_table(tmp_path / "demo" / "output" / "metadata").to_pylist()
    assert len(rows) == 12
    for row in rows:
        info = probe(row["video_uri"])
        assert (info.codec, info.frames, info.width, info.height, info.fps) == ("h264", 8, 128, 64, 7)
