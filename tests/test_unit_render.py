"""RenderVideos without Ray or a model: load -> generate -> write in one process, one generation at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from helpers import TEST_RENDER

from svdbatch.demo import sample_image
from svdbatch.items.expand import expand_row
from svdbatch.items.metadata import OK, to_rows, to_table
from svdbatch.render.stages import RenderVideos
from svdbatch.render.video import probe
from svdbatch.spec.load import build_spec


class StillGenerator:
    """Stands in for VideoGenerator: frames that repeat the loaded image, and a record of overlapping calls."""

    def __init__(self):
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, batch: pa.Table) -> pa.Table:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.05)
        rows = to_rows(batch)
        for row in rows:
            if row["status"] == OK:
                still = np.frombuffer(row["image"], np.uint8).reshape(row["height"], row["width"], 3)
                row.update(frames=np.stack([still] * row["num_frames"]).tobytes(), nonfinite_frames=0)
        with self.lock:
            self.running -= 1
        return to_table(rows)


def test_render_videos_loads_generates_and_writes_one_generation_at_a_time(tmp_path: Path):
    spec = build_spec({"manifest": {"path": "m"}, "output": {"url": str(tmp_path / "out")}, "render": TEST_RENDER})
    batches = []
    for index in range(4):
        image = tmp_path / f"k{index}.png"
        sample_image(index, 64, 48).save(image)
        batches.append(to_table(expand_row({"key": f"k{index}", "image": str(image)}, spec, "run", spec.output.url)))
    missing = to_table(expand_row({"key": "gone", "image": str(tmp_path / "gone.png")}, spec, "run", spec.output.url))
    generator = StillGenerator()
    render = RenderVideos(spec, generator)
    results: list[pa.Table] = []
    threads = [threading.Thread(target=lambda batch=batch: results.append(render(batch))) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = [row for table in [*results, render(missing)] for row in table.to_pylist()]
    assert generator.most_at_once == 1  # the device lock: loading and writing overlap, generation does not
    done = {row["key"]: row for row in rows}
    assert {key for key, row in done.items() if row["status"] == OK} == {"k0", "k1", "k2", "k3"}
    for key in ("k0", "k1", "k2", "k3"):
        assert probe(done[key]["video_uri"]).frames == TEST_RENDER["num_frames"]  # written at its final key
        assert "frames" not in done[key] and done[key]["bytes"] > 0  # the frames stay in the process
    assert done["gone"]["status"] == "error" and "gone.png" in done["gone"]["error"]
