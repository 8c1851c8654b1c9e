"""What several benchmarks measure the same way: the peak memory of a driver and the Ray processes below it.

The video comparisons use the package's own measures (``svdbatch.render.quality.psnr``: capped at 100 dB for equal
frames, as the table's first_frame_psnr and svdbatch tune report it) and the package's builders
(``svdbatch.model.loading.build_svd_pipeline``), so a benchmark measures what svdbatch runs.
"""

from __future__ import annotations

import threading
import time

import psutil

SAMPLE_EVERY_S = 0.2


def _is_ray_worker(process: psutil.Process) -> bool:
    """Ray names its worker processes ``ray::<task or actor>`` in their command line."""
    try:
        return " ".join(process.cmdline()[:1]).startswith("ray::")
    except psutil.Error:
        return False


class Peaks:
    """Peak RSS, in bytes, sampled in a thread every 0.2 s from start to ``stop``: of this process (``driver``), of the
    largest Ray worker (``worker``), of the Ray workers together (``workers``), and of this process plus every process
    below it (``cluster``: raylet, object store, workers)."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.driver = self.worker = self.workers = self.cluster = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self._measure()
            except psutil.Error:  # this process's own reading failed: try again at the next sample
                pass
            time.sleep(SAMPLE_EVERY_S)

    def _measure(self) -> None:
        own = self.me.memory_info().rss
        everyone, workers = [], []
        for process in self.me.children(recursive=True):
            try:
                rss = process.memory_info().rss
            except psutil.Error:  # it ended between the listing and the reading
                continue
            everyone.append(rss)
            workers += [rss] if _is_ray_worker(process) else []
        self.driver, self.cluster = max(self.driver, own), max(self.cluster, own + sum(everyone))
        self.worker, self.workers = max([self.worker, *workers]), max(self.workers, sum(workers))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def mib(self) -> dict[str, float]:
        return {name: getattr(self, name) / 2**20 for name in ("driver", "worker", "workers", "cluster")}
