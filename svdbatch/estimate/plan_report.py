"""PlanReport: what ``svdbatch plan`` reports, free of Ray and torch. The Ray plan (svdbatch/ray/driver.py) fills
in the counts, plan.py the estimate: both import it from here, so neither imports the other back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PlanReport:
    """What a run would do, counted before any image is read: items per ``items.Category``, the render shapes of
    the items to render (``shapes``: width, height, num_frames, num_inference_steps, max_guidance_scale and items),
    the first problems, what ``--prune`` would remove, and the GPU time estimate."""

    files: int = 0
    rows: int = 0
    counts: Counter = field(default_factory=Counter)
    shapes: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: tuple[float, float] = (0.0, 0.0)  # (optimistic, typical) GPU seconds of the items to render
    estimate: str = ""
    assumed: str = ""  # what the estimate took as given because plan was not told: printed with it
    basis: str = ""
    to_remove: int = 0
    prune: bool = False

    @property
    def items(self) -> int:
        return sum(self.counts.values())

    @property
    def to_render(self) -> int:
        from svdbatch.items.decide import TO_RENDER

        return sum(self.counts[category] for category in TO_RENDER)

    def lines(self) -> list[str]:
        from svdbatch.items.decide import Category

        counts = self.counts
        lines = [
            f"manifest: {self.files} file(s), {self.rows} rows -> {self.items} items",
            f"to render: {counts[Category.NEW]} new, {counts[Category.CHANGED]} changed spec, "
            f"{counts[Category.SOURCE_CHANGED]} source changed, {counts[Category.MODEL_CHANGED]} model changed, "
            f"{counts[Category.RETRY]} failed before; {counts[Category.DONE]} already done; "
            f"{counts[Category.INVALID]} invalid",
            f"to remove: {self.to_remove} no longer in the manifest"
            + ("" if self.prune else " (kept: output.prune is off; run --prune to remove them)"),
            self.estimate,
            *([self.assumed] if self.assumed else []),
            self.basis,
        ]
        if self.problems:
            lines.append(f"problems ({len(self.problems)} shown):")
            lines.extend(f"  {problem}" for problem in self.problems)
        return lines
