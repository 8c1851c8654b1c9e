"""Never hang without a word: say what the job waits for, and end it when nothing moves for too long.

Plain state over a clock, fed by ray/watch.py with items finished and generation actors up, so every rule is
unit-tested without Ray. While a GPU job has no actor yet it is waiting for GPU workers (the autoscaler adding nodes,
then the model loading), bounded by ``compute.gpu_wait_s``; afterwards any stretch without a finished item is a
stall, reported every ``compute.stall_report_s`` and fatal after ``compute.stall_timeout_s``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from svdbatch.spec.config import ComputeSpec

WAIT_REPORT_S = 10.0


@dataclass
class Verdict:
    line: str | None = None  # a report for stderr
    fatal: str | None = None  # the one line that ends the job


class Watchdog:
    def __init__(self, compute: ComputeSpec, gpu: bool, wanted: int, now: float):
        self.compute = compute
        self.gpu = gpu
        self.wanted = wanted
        self.started = self.last_event = self.last_line = now
        self.done = 0
        self.up = 0

    def finished(self, items: int, now: float) -> None:
        self.done += items
        self.last_event = now

    def check(self, up: int, now: float, pending: Callable[[], str]) -> Verdict:
        """``up``: actors that loaded their model so far; ``pending`` describes what waits on which resource."""
        if up != self.up:
            self.up, self.last_event = up, now
        if self.gpu and self.done == 0 and self.up < self.wanted:
            waited = now - self.started
            if self.up == 0 and waited >= self.compute.gpu_wait_s:
                return Verdict(
                    fatal=f"no GPU worker came up within {self.compute.gpu_wait_s:g} s (compute.gpu_wait_s); "
                    f"{pending()}; add GPU nodes, check the autoscaler, or set model.device: cpu"
                )
            if self.up == 0 or now - self.last_event < self.compute.stall_report_s:
                line = f"waiting for GPU workers: {self.up}/{self.wanted} up, {waited:.0f} s"
                return self._every(WAIT_REPORT_S, now, line)
        idle = now - self.last_event
        if idle >= self.compute.stall_timeout_s:
            return Verdict(fatal=f"no item finished for {idle:.0f} s (compute.stall_timeout_s); {pending()}")
        if idle >= self.compute.stall_report_s:
            return self._every(self.compute.stall_report_s, now, f"no item finished for {idle:.0f} s; {pending()}")
        return Verdict()

    def _every(self, interval: float, now: float, line: str) -> Verdict:
        if now - self.last_line < interval:
            return Verdict()
        self.last_line = now
        return Verdict(line=f"svdbatch: {line}")
