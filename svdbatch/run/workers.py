"""Where a job's generation actors report: when each was ready (the watchdog and the job record read it) and how
many actors each item has cost by losing their device (faults.MAX_ACTORS_LOST).

Its own module, free of torch and Ray, because it runs as a Ray actor of its own: an actor process imports the module
that defines its class, and a module that brought the generation stage (ray/video_generator.py) would cost it torch
(seconds of CPU) on every run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class Workers:
    def __init__(self):
        self.loaded: list[dict[str, Any]] = []
        self.lost: Counter = Counter()

    def add(self, record: dict[str, Any]) -> None:
        self.loaded.append(record)

    def records(self) -> list[dict[str, Any]]:
        return self.loaded

    def lose(self, item_ids: list[str]) -> int:
        """Count one lost actor against each item; returns the most any of them has cost."""
        self.lost.update(item_ids)
        return max(self.lost[item] for item in item_ids)
